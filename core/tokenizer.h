/* moegate — text to tokens and back, exactly as each model's own tokenizer.
 *
 * Two families, both BPE:
 *   - byte-level BPE (GGUF tokenizer.ggml.model "gpt2"; Qwen2/3, DeepSeek-V3,
 *     Llama-3): optional NFC, a pre-tokenizer (a sequence of regex splits
 *     chosen by tokenizer.ggml.pre), then merges over the UTF-8 bytes;
 *   - SentencePiece-style BPE (model "llama"; Llama-2, Mistral, Mixtral):
 *     U+2581 for spaces and before the text, merges over characters, and
 *     <0xNN> byte pieces for characters the vocabulary lacks.
 * Added tokens (control tokens such as <|im_start|>, and user-defined ones
 * such as <think>) are matched before any of that, longest first.
 *
 * Control tokens in text from users: by default encoding treats
 * "<|im_start|>" typed by a user as plain text, so nobody can forge a turn
 * of the conversation; only the chat template (TOKENIZER_PARSE_SPECIAL)
 * produces control tokens. Non-control added tokens (<think>, <tool_call>)
 * are always matched, as the model's own tokenizer does.
 *
 * Bytes that are not valid UTF-8 are replaced, maximal subpart by maximal
 * subpart, with U+FFFD before encoding (WHATWG UTF-8 decoding, what a
 * browser or Node.js does with them).
 *
 * Thread safety: a tokenizer is immutable after open; encode and decode may
 * run on any number of threads at once. A tokenizer_stream belongs to one
 * thread.
 */
#ifndef MOEGATE_CORE_TOKENIZER_H
#define MOEGATE_CORE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct tokenizer tokenizer;

enum tokenizer_kind {
    TOKENIZER_BYTE_BPE = 1, /* "gpt2" */
    TOKENIZER_SPM_BPE = 2,  /* "llama" */
};

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
enum tokenizer_token_type {
    TOKENIZER_TYPE_NORMAL = 1,
    TOKENIZER_TYPE_UNKNOWN = 2,
    TOKENIZER_TYPE_CONTROL = 3,
    TOKENIZER_TYPE_USER_DEFINED = 4,
    TOKENIZER_TYPE_UNUSED = 5,
    TOKENIZER_TYPE_BYTE = 6,
};

/* Opens the tokenizer described by a GGUF file's metadata:
 * tokenizer.ggml.{model, pre, tokens, token_type, merges, scores,
 * bos/eos/unknown/padding_token_id, add_bos_token, add_eos_token,
 * add_space_prefix} and tokenizer.chat_template. The gguf object may be
 * closed afterwards (everything is copied). An unknown model or pre-tokenizer
 * is refused with a message naming it. */
int tokenizer_open_gguf(tokenizer **out, const gguf *g, char *err, size_t errlen);

/* Opens a Hugging Face tokenizer: tokenizer.json (normalizer, pre_tokenizer,
 * model BPE with vocab and merges, added_tokens) and, when config_path is not
 * NULL, tokenizer_config.json (bos/eos/pad tokens, add_bos_token,
 * add_eos_token, chat_template). A component we do not implement is refused
 * with a message naming it and its JSON path. */
int tokenizer_open_hf(tokenizer **out, const char *json_path, const char *config_path, char *err,
                      size_t errlen);

void tokenizer_free(tokenizer *t); /* accepts NULL */

/* ---- encoding ------------------------------------------------------------ */

enum tokenizer_flags {
    TOKENIZER_ADD_SPECIAL = 1u << 0,   /* BOS/EOS as the tokenizer's config asks */
    TOKENIZER_PARSE_SPECIAL = 1u << 1, /* control tokens in the text are matched */
};

/* A growable list of token ids; zero-initialise, free with
 * tokenizer_ids_free. */
typedef struct tokenizer_ids {
    int32_t *ids;
    size_t n, cap;
} tokenizer_ids;
void tokenizer_ids_free(tokenizer_ids *v);

/* Appends the tokens of text[0..len) to out. Returns 0, MG_ENOMEM, or
 * MG_EINVAL for NULL arguments. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, unsigned flags,
                     tokenizer_ids *out);

/* Encodes a rendered chat prompt: control tokens are matched (the template
 * wrote them) except where they would overlap one of the n_plain byte
 * ranges plain[2k] .. plain[2k+1] (sorted, disjoint): the text that came
 * from messages. Nothing else differs from encoding the whole text with
 * TOKENIZER_PARSE_SPECIAL, so the model sees exactly what its own template
 * and tokenizer would give it. */
int tokenizer_encode_chat(const tokenizer *t, const char *text, size_t len, const size_t *plain, size_t n_plain,
                          tokenizer_ids *out);

/* ---- decoding ------------------------------------------------------------ */

/* The bytes token id stands for, into buf (not NUL-terminated): a control
 * token gives its text only when show_control. Returns the byte count (may
 * exceed cap: then buf holds the first cap bytes), or -1 for an id out of
 * range. Pieces may end inside a UTF-8 sequence: use tokenizer_stream to
 * print. */
int tokenizer_token_bytes(const tokenizer *t, int32_t id, bool show_control, char *buf, size_t cap);

/* Decodes ids into a malloc'd NUL-terminated string (*outlen without the NUL),
 * as the model's decoder does: SentencePiece's one leading space (from the
 * U+2581 put before the text) is removed. Invalid UTF-8 from byte pieces is
 * kept as bytes. Returns 0 or MG_ENOMEM. */
int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, bool show_control, char **out,
                     size_t *outlen);

/* Streaming decoder for generated tokens: emits text only up to the last
 * complete UTF-8 character, holding the bytes of a character split across
 * tokens until it completes, so no client ever receives a broken character.
 * A byte sequence that can never complete is emitted as is at the next push.
 * For SentencePiece vocabularies the space U+2581 stands for at the very
 * start of the stream is dropped (strip_leading_space). */
typedef struct tokenizer_stream {
    const tokenizer *t;
    bool show_control;
    bool strip_leading_space; /* still to do */
    char pending[8];          /* bytes of an incomplete character */
    size_t n_pending;
} tokenizer_stream;

void tokenizer_stream_init(tokenizer_stream *s, const tokenizer *t, bool show_control);
/* Appends the text of token id to out (cap bytes); returns the bytes written,
 * or -1 for an id out of range or when cap is too small (a piece is at most
 * tokenizer_max_piece_bytes() bytes; cap = that + 8 always suffices). */
int tokenizer_stream_push(tokenizer_stream *s, int32_t id, char *out, size_t cap);
/* Emits whatever is still held (an incomplete character at the end). */
int tokenizer_stream_flush(tokenizer_stream *s, char *out, size_t cap);

/* ---- vocabulary ---------------------------------------------------------- */

enum tokenizer_kind tokenizer_get_kind(const tokenizer *t);
int32_t tokenizer_vocab_size(const tokenizer *t);
size_t tokenizer_max_piece_bytes(const tokenizer *t);
/* Token type of id (TOKENIZER_TYPE_*), 0 when out of range. */
int tokenizer_token_type(const tokenizer *t, int32_t id);
/* Id of the added token or vocabulary piece whose text is exactly s
 * (pieces as the vocabulary spells them, e.g. "▁the"), or -1. */
int32_t tokenizer_find(const tokenizer *t, const char *s);
/* Special ids; -1 when the tokenizer has none. */
int32_t tokenizer_bos(const tokenizer *t);
int32_t tokenizer_eos(const tokenizer *t);
bool tokenizer_add_bos(const tokenizer *t);
/* True for tokens that end a generation: EOS and the end-of-turn control
 * tokens (<|im_end|>, <|endoftext|>, <|eot_id|>, </s>,
 * <｜end▁of▁sentence｜>). */
bool tokenizer_is_eog(const tokenizer *t, int32_t id);
/* Text of an added token, or the vocabulary's spelling of a piece; NULL when
 * out of range. *len receives its length. */
const char *tokenizer_piece(const tokenizer *t, int32_t id, size_t *len);
/* GGUF tokenizer.ggml.pre (or the name we give an HF pre-tokenizer):
 * "qwen2", "deepseek-v3", "llama-bpe", "gpt-2", "default" (SentencePiece). */
const char *tokenizer_pre(const tokenizer *t);
/* tokenizer.chat_template / tokenizer_config.json chat_template, or NULL. */
const char *tokenizer_chat_template(const tokenizer *t);

#endif
