/* tokenizer_internal.h — the tokenizer object, shared by the encoder
 * (core/tokenizer.c) and the loaders (core/tokenizer_load.c).
 *
 * A loader allocates with tok_create, sets every token with tok_set_token,
 * adds merges with tok_add_merge (ranks: lower merges first), describes the
 * normaliser and pre-tokenizer, then calls tok_finish, which builds the hash
 * tables and checks that the vocabulary can encode every input.
 */
#ifndef MOEGATE_CORE_TOKENIZER_INTERNAL_H
#define MOEGATE_CORE_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/tokenizer.h"

#define TOK_MAX_REGEX 4

typedef struct tok_added {
    int32_t id;
    uint32_t off, len; /* content in arena */
    bool special;      /* control: matched only with TOKENIZER_PARSE_SPECIAL */
    bool lstrip, rstrip;
} tok_added;

typedef struct tok_merge_slot {
    uint64_t key; /* (a + 1) << 32 | (b + 1); 0 = empty */
    int32_t rank;
    int32_t merged;
} tok_merge_slot;

struct tokenizer {
    enum tokenizer_kind kind;
    int32_t n_vocab;
    uint8_t *type; /* [n_vocab] TOKENIZER_TYPE_* */

    /* Each token has two strings in the arena: its text (the bytes it
     * decodes to; an added token's content) and its key (how BPE looks it
     * up: the raw bytes for byte-level BPE, the piece with U+2581 for
     * SentencePiece). Strings are NUL-terminated in the arena. */
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *text_off, *text_len; /* [n_vocab] */
    uint32_t *key_off, *key_len;   /* [n_vocab]; key_len 0 = not a BPE piece */
    size_t max_piece;

    /* key -> id, open addressing, -1 empty; only BPE pieces (not added tokens) */
    int32_t *piece_map;
    uint32_t piece_mask;

    /* self[id]: BPE of the piece's own key gives exactly [id], so a
     * pre-token equal to the key needs no merging (computed at load) */
    uint8_t *self;

    /* (left id, right id) -> (rank, merged id) */
    tok_merge_slot *merges;
    uint32_t merge_mask;
    uint32_t n_merges;

    /* byte-level: the piece of each single byte; SentencePiece: the <0xNN>
     * byte-fallback piece, or -1 */
    int32_t byte_id[256];
    bool byte_fallback;

    /* added tokens, sorted by (first byte, length descending) */
    tok_added *added;
    int32_t n_added;
    int32_t added_first[257]; /* added[added_first[b] .. added_first[b+1]) start with byte b */

    /* normaliser */
    bool nfc;
    bool spm_prefix;  /* put U+2581 before each text segment */
    bool spm_spaces;  /* ' ' -> U+2581 */
    bool spm_strip_leading; /* decoder drops one leading space */
    bool spm_word_split;    /* no piece has U+2581 after another character */

    /* pre-tokenizer: regex splits applied in order (behaviour Isolated) */
    pcre2_code *re[TOK_MAX_REGEX];
    int n_re;

    int32_t bos, eos, unk, pad;
    bool add_bos, add_eos;
    int32_t eog[8];
    int n_eog;

    char pre[32];
    char *chat_template;
};

int tok_create(tokenizer **out, enum tokenizer_kind kind, int32_t n_vocab, char *err, size_t errlen);
/* piece: the vocabulary's spelling (byte-level characters, or U+2581 form). */
int tok_set_token(tokenizer *t, int32_t id, const char *piece, size_t len, int type, char *err,
                  size_t errlen);
/* Merge of pieces a and b (vocabulary spellings). Merges whose pieces or
 * result are not in the vocabulary are ignored, as the reference does. */
int tok_add_merge(tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, int32_t rank);
/* Marks id as an added token matched before BPE. */
int tok_add_added(tokenizer *t, int32_t id, bool special, bool lstrip, bool rstrip);
/* Compiles a pre-tokenizer pattern written for JS/Rust regex engines
 * (tokenizer.json "Split" patterns) into PCRE2 with JS semantics. */
int tok_add_regex(tokenizer *t, const char *pattern, char *err, size_t errlen);
/* Pre-tokenizer by GGUF name ("qwen2", "deepseek-v3", ...); MG_EUNSUPPORTED
 * for names we do not know. */
int tok_set_pre(tokenizer *t, const char *name, char *err, size_t errlen);
/* After all tokens: builds the tables, checks the byte coverage. For
 * SentencePiece vocabularies without merges, derives merges from scores
 * (scores may be NULL otherwise). */
int tok_finish(tokenizer *t, const float *spm_scores, char *err, size_t errlen);
int32_t tok_lookup_key(const tokenizer *t, const char *s, size_t len);

#endif
