/* tokenizer.c — encoding and decoding (see tokenizer.h); the loaders live in
 * tokenizer_load.c.
 *
 * Encoding, in data-flow order:
 *   1. invalid UTF-8 is replaced with U+FFFD (WHATWG maximal subparts);
 *   2. added tokens are cut out, longest match first at each position
 *      (control tokens only with TOKENIZER_PARSE_SPECIAL), honouring their
 *      lstrip/rstrip flags;
 *   3. each remaining segment is normalised (NFC; or SentencePiece's U+2581
 *      prefix and spaces), then split by the pre-tokenizer's regexes in
 *      order, each split keeping matches and the text between them;
 *   4. each piece is merged by BPE: symbols start as bytes (byte-level) or
 *      characters (SentencePiece); the adjacent pair with the lowest merge
 *      rank is merged first, the leftmost on ties, until no pair merges.
 *      SentencePiece characters the vocabulary lacks become <0xNN> pieces.
 * Step 4 keeps candidate pairs in a binary heap and checks them lazily when
 * popped (a pair is stale once either side has merged), so a piece of n
 * symbols costs O(n log n) even for a 10,000-character run of CJK text.
 *
 * The regexes are the tokenizer.json patterns, written for JS and Rust
 * engines, translated to PCRE2 with JS semantics (\s is JS's whitespace set,
 * (?i:'s|...) is spelt out as the JS port does); see tok_add_regex.
 */
#include "core/tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/unicode.h"

/* ---- building ------------------------------------------------------------- */

/* GPT-2's byte-to-unicode table: bytes 33..126, 161..172 and 174..255 stand
 * for themselves; the other 68 bytes map to U+0100.. in increasing order. */
static int byte_level_cp_to_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp < 256 || cp >= 256 + 68)
        return -1;
    int k = (int)cp - 256, seen = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
            continue;
        if (seen++ == k)
            return b;
    }
    return -1;
}

/* "4F" -> 0x4F; -1 unless two upper- or lower-case hex digits. */
static int hex_byte(const char *p)
{
    int v = 0;
    for (int i = 0; i < 2; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static uint32_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static int arena_put(tokenizer *t, const char *s, size_t n, uint32_t *off)
{
    if (n > UINT32_MAX / 2 || t->arena_len + n + 1 > UINT32_MAX)
        return MG_ERANGE;
    if (t->arena_len + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + n + 1)
            cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a)
            return MG_ENOMEM;
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, s, n);
    t->arena[t->arena_len + n] = '\0';
    *off = (uint32_t)t->arena_len;
    t->arena_len += n + 1;
    return 0;
}

int tok_create(tokenizer **out, enum tokenizer_kind kind, int32_t n_vocab, char *err, size_t errlen)
{
    if (n_vocab <= 0 || n_vocab > (1 << 24)) {
        mg_err_set(err, errlen, "tokenizer: vocabulary size %d is out of range (1..16777216)",
                   (int)n_vocab);
        return MG_ERANGE;
    }
    tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        goto oom;
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->type = calloc((size_t)n_vocab, 1);
    t->text_off = calloc((size_t)n_vocab, sizeof *t->text_off);
    t->text_len = calloc((size_t)n_vocab, sizeof *t->text_len);
    t->key_off = calloc((size_t)n_vocab, sizeof *t->key_off);
    t->key_len = calloc((size_t)n_vocab, sizeof *t->key_len);
    if (!t->type || !t->text_off || !t->text_len || !t->key_off || !t->key_len)
        goto oom;
    for (int i = 0; i < 256; i++)
        t->byte_id[i] = -1;
    t->bos = t->eos = t->unk = t->pad = -1;
    *out = t;
    return 0;
oom:
    tokenizer_free(t);
    mg_err_set(err, errlen, "tokenizer: out of memory");
    return MG_ENOMEM;
}

int tok_set_token(tokenizer *t, int32_t id, const char *piece, size_t len, int type, char *err,
                  size_t errlen)
{
    if (id < 0 || id >= t->n_vocab)
        return MG_EINVAL;
    if (len > 4096) {
        mg_err_set(err, errlen, "tokenizer: token %d is %zu bytes long (limit 4096)", (int)id, len);
        return MG_ERANGE;
    }
    if (type < TOKENIZER_TYPE_NORMAL || type > TOKENIZER_TYPE_BYTE)
        type = TOKENIZER_TYPE_NORMAL;
    t->type[id] = (uint8_t)type;
    char buf[4096];
    size_t n = 0;
    int rc;
    bool piece_is_bpe = type == TOKENIZER_TYPE_NORMAL || type == TOKENIZER_TYPE_BYTE;
    if (!piece_is_bpe) {
        /* control, user-defined, unknown, unused: the text is the content */
        rc = arena_put(t, piece, len, &t->text_off[id]);
        t->text_len[id] = (uint32_t)len;
    } else if (t->kind == TOKENIZER_BYTE_BPE) {
        /* characters of the byte-level alphabet -> the bytes they stand for */
        const uint8_t *p = (const uint8_t *)piece;
        bool ok = true;
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            i += unicode_utf8_decode(p + i, len - i, &cp);
            int b = byte_level_cp_to_byte(cp);
            if (b < 0) {
                ok = false;
                break;
            }
            buf[n++] = (char)b;
        }
        if (!ok) {
            /* Not spelt in the byte-level alphabet: BPE can never produce it;
             * keep its text so that decoding shows it. */
            rc = arena_put(t, piece, len, &t->text_off[id]);
            t->text_len[id] = (uint32_t)len;
        } else {
            rc = arena_put(t, buf, n, &t->text_off[id]);
            t->text_len[id] = (uint32_t)n;
            t->key_off[id] = t->text_off[id];
            t->key_len[id] = (uint32_t)n;
        }
    } else {
        /* SentencePiece: key = piece; text = piece with U+2581 as a space,
         * or the byte of a <0xNN> piece */
        int hex = len == 6 && !memcmp(piece, "<0x", 3) && piece[5] == '>' ? hex_byte(piece + 3) : -1;
        if (type == TOKENIZER_TYPE_BYTE && hex >= 0) {
            buf[n++] = (char)hex;
            t->byte_id[hex] = id;
        } else {
            for (size_t i = 0; i < len; i++) {
                if (i + 2 < len && (uint8_t)piece[i] == 0xE2 && (uint8_t)piece[i + 1] == 0x96 &&
                    (uint8_t)piece[i + 2] == 0x81) {
                    buf[n++] = ' ';
                    i += 2;
                } else {
                    buf[n++] = piece[i];
                }
            }
        }
        rc = arena_put(t, buf, n, &t->text_off[id]);
        t->text_len[id] = (uint32_t)n;
        if (!rc && type == TOKENIZER_TYPE_NORMAL) {
            rc = arena_put(t, piece, len, &t->key_off[id]);
            t->key_len[id] = (uint32_t)len;
        }
    }
    if (rc) {
        mg_err_set(err, errlen, "tokenizer: out of memory");
        return rc;
    }
    if (t->text_len[id] > t->max_piece)
        t->max_piece = t->text_len[id];
    return 0;
}

int32_t tok_lookup_key(const tokenizer *t, const char *s, size_t len)
{
    if (!t->piece_map || len == 0)
        return -1;
    uint32_t h = hash_bytes(s, len) & t->piece_mask;
    for (;;) {
        int32_t id = t->piece_map[h];
        if (id < 0)
            return -1;
        if (t->key_len[id] == len && !memcmp(t->arena + t->key_off[id], s, len))
            return id;
        h = (h + 1) & t->piece_mask;
    }
}

static int merge_insert(tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
    /* load factor at most 1/2: most probes are for pairs that do not merge,
     * and unsuccessful linear probing lengthens fast above that */
    if ((t->n_merges + 1) * 2 > t->merge_mask + 1 || !t->merges) {
        uint32_t cap = t->merge_mask ? (t->merge_mask + 1) * 2 : 1 << 16;
        tok_merge_slot *m = calloc(cap, sizeof *m);
        if (!m)
            return MG_ENOMEM;
        for (uint32_t i = 0; t->merges && i <= t->merge_mask; i++) {
            if (!t->merges[i].key)
                continue;
            uint32_t h = hash_u64(t->merges[i].key) & (cap - 1);
            while (m[h].key)
                h = (h + 1) & (cap - 1);
            m[h] = t->merges[i];
        }
        free(t->merges);
        t->merges = m;
        t->merge_mask = cap - 1;
    }
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    uint32_t h = hash_u64(key) & t->merge_mask;
    while (t->merges[h].key) {
        if (t->merges[h].key == key)
            return 0; /* first (best) rank wins, as in a rank table */
        h = (h + 1) & t->merge_mask;
    }
    t->merges[h].key = key;
    t->merges[h].rank = rank;
    t->merges[h].merged = merged;
    t->n_merges++;
    return 0;
}

static const tok_merge_slot *merge_find(const tokenizer *t, int32_t a, int32_t b)
{
    if (!t->merges)
        return NULL;
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    uint32_t h = hash_u64(key) & t->merge_mask;
    while (t->merges[h].key) {
        if (t->merges[h].key == key)
            return &t->merges[h];
        h = (h + 1) & t->merge_mask;
    }
    return NULL;
}

static int build_piece_map(tokenizer *t)
{
    if (t->piece_map)
        return 0;
    uint32_t cap = 1;
    while (cap < (uint32_t)t->n_vocab * 2u)
        cap <<= 1;
    t->piece_map = malloc(cap * sizeof *t->piece_map);
    if (!t->piece_map)
        return MG_ENOMEM;
    memset(t->piece_map, 0xff, cap * sizeof *t->piece_map);
    t->piece_mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!t->key_len[id])
            continue;
        const char *k = t->arena + t->key_off[id];
        uint32_t h = hash_bytes(k, t->key_len[id]) & t->piece_mask;
        bool dup = false;
        while (t->piece_map[h] >= 0) {
            int32_t o = t->piece_map[h];
            if (t->key_len[o] == t->key_len[id] && !memcmp(t->arena + t->key_off[o], k, t->key_len[id])) {
                dup = true; /* the lower id keeps the spelling */
                break;
            }
            h = (h + 1) & t->piece_mask;
        }
        if (!dup)
            t->piece_map[h] = id;
    }
    return 0;
}

int tok_add_merge(tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, int32_t rank)
{
    int rc = build_piece_map(t);
    if (rc)
        return rc;
    /* byte-level merges are spelt in the byte-level alphabet: map to bytes */
    char ka[4096], kb[4096], kab[8192];
    size_t na = 0, nb = 0;
    if (alen > sizeof ka || blen > sizeof kb)
        return 0;
    if (t->kind == TOKENIZER_BYTE_BPE) {
        const char *src[2] = {a, b};
        size_t len[2] = {alen, blen};
        char *dst[2] = {ka, kb};
        size_t *dn[2] = {&na, &nb};
        for (int s = 0; s < 2; s++) {
            const uint8_t *p = (const uint8_t *)src[s];
            for (size_t i = 0; i < len[s];) {
                uint32_t cp;
                i += unicode_utf8_decode(p + i, len[s] - i, &cp);
                int by = byte_level_cp_to_byte(cp);
                if (by < 0)
                    return 0; /* not in the alphabet: cannot apply */
                dst[s][(*dn[s])++] = (char)by;
            }
        }
    } else {
        memcpy(ka, a, alen);
        memcpy(kb, b, blen);
        na = alen;
        nb = blen;
    }
    int32_t ia = tok_lookup_key(t, ka, na), ib = tok_lookup_key(t, kb, nb);
    memcpy(kab, ka, na);
    memcpy(kab + na, kb, nb);
    int32_t iab = tok_lookup_key(t, kab, na + nb);
    if (ia < 0 || ib < 0 || iab < 0)
        return 0;
    return merge_insert(t, ia, ib, rank, iab);
}

int tok_add_added(tokenizer *t, int32_t id, bool special, bool lstrip, bool rstrip)
{
    if (id < 0 || id >= t->n_vocab || t->text_len[id] == 0)
        return MG_EINVAL;
    for (int32_t i = 0; i < t->n_added; i++)
        if (t->added[i].id == id)
            return 0;
    tok_added *a = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *a);
    if (!a)
        return MG_ENOMEM;
    t->added = a;
    a[t->n_added++] = (tok_added){.id = id,
                                  .off = t->text_off[id],
                                  .len = t->text_len[id],
                                  .special = special,
                                  .lstrip = lstrip,
                                  .rstrip = rstrip};
    return 0;
}

/* Added tokens are sorted through a key tuple: a qsort comparator cannot
 * reach the arena. */
typedef struct {
    uint8_t first;
    uint32_t len;
    int32_t idx;
} added_key;

static int cmp_added_key(const void *pa, const void *pb)
{
    const added_key *a = pa, *b = pb;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

typedef struct {
    float score;
    int32_t id;
} scored;

static int cmp_scored(const void *pa, const void *pb)
{
    const scored *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* SentencePiece BPE without a merge list merges the adjacent pair whose
 * concatenation is the highest-scoring piece. Expressed as merge ranks: every
 * split of a piece into two pieces is a merge, ranked by the piece's score
 * (equal scores share a rank, so position breaks ties, as in SentencePiece). */
static int merges_from_scores(tokenizer *t, const float *scores)
{
    scored *s = malloc((size_t)t->n_vocab * sizeof *s);
    if (!s)
        return MG_ENOMEM;
    int32_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->type[id] == TOKENIZER_TYPE_NORMAL && t->key_len[id] > 1)
            s[n++] = (scored){scores[id], id};
    qsort(s, (size_t)n, sizeof *s, cmp_scored);
    int32_t rank = -1;
    int rc = 0;
    for (int32_t i = 0; i < n && !rc; i++) {
        if (i == 0 || s[i].score != s[i - 1].score)
            rank++;
        int32_t id = s[i].id;
        const char *k = t->arena + t->key_off[id];
        uint32_t len = t->key_len[id];
        for (uint32_t cut = 1; cut < len && !rc; cut++) {
            if (((uint8_t)k[cut] & 0xC0) == 0x80)
                continue; /* not a character boundary */
            int32_t a = tok_lookup_key(t, k, cut), b = tok_lookup_key(t, k + cut, len - cut);
            if (a >= 0 && b >= 0)
                rc = merge_insert(t, a, b, rank, id);
        }
    }
    free(s);
    return rc;
}

typedef struct scratch scratch;
static int bpe_piece(const tokenizer *t, scratch *s, const char *w, size_t n, tokenizer_ids *out);
static void scratch_free(scratch *s);
static int compute_self(tokenizer *t);

static void add_eog(tokenizer *t, int32_t id)
{
    if (id < 0 || t->n_eog >= (int)(sizeof t->eog / sizeof t->eog[0]))
        return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return;
    t->eog[t->n_eog++] = id;
}

int tok_finish(tokenizer *t, const float *spm_scores, char *err, size_t errlen)
{
    int rc = build_piece_map(t);
    if (rc)
        goto oom;
    if (t->kind == TOKENIZER_BYTE_BPE) {
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            t->byte_id[b] = tok_lookup_key(t, &c, 1);
            if (t->byte_id[b] < 0) {
                mg_err_set(err, errlen,
                           "tokenizer: the byte-level vocabulary has no token for byte 0x%02X", b);
                return MG_EFORMAT;
            }
        }
        t->byte_fallback = true;
    } else {
        t->byte_fallback = true;
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0)
                t->byte_fallback = false;
        /* may BPE run word by word? (see bpe_spm_words) */
        t->spm_word_split = t->spm_spaces;
        for (int32_t id = 0; id < t->n_vocab && t->spm_word_split; id++) {
            const char *k = t->arena + t->key_off[id];
            uint32_t len = t->key_len[id], i = 0;
            while (i + 3 <= len && !memcmp(k + i, "\xe2\x96\x81", 3))
                i += 3; /* the leading run */
            for (; i + 3 <= len; i++)
                if (!memcmp(k + i, "\xe2\x96\x81", 3))
                    t->spm_word_split = false;
        }
        if (t->n_merges == 0 && spm_scores) {
            rc = merges_from_scores(t, spm_scores);
            if (rc)
                goto oom;
        }
    }
    if ((rc = compute_self(t)))
        goto oom;
    /* added tokens: sorted by first byte, longest first */
    if (t->n_added) {
        added_key *k = malloc((size_t)t->n_added * sizeof *k);
        tok_added *sorted = malloc((size_t)t->n_added * sizeof *sorted);
        if (!k || !sorted) {
            free(k);
            free(sorted);
            goto oom;
        }
        for (int32_t i = 0; i < t->n_added; i++)
            k[i] = (added_key){(uint8_t)t->arena[t->added[i].off], t->added[i].len, i};
        qsort(k, (size_t)t->n_added, sizeof *k, cmp_added_key);
        for (int32_t i = 0; i < t->n_added; i++)
            sorted[i] = t->added[k[i].idx];
        free(k);
        free(t->added);
        t->added = sorted;
    }
    int32_t j = 0;
    for (int b = 0; b <= 256; b++) {
        while (j < t->n_added && (uint8_t)t->arena[t->added[j].off] < b)
            j++;
        t->added_first[b] = j;
    }
    t->added_first[256] = t->n_added;
    /* end-of-generation tokens */
    add_eog(t, t->eos);
    static const char *const eog_names[] = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>",
                                            "</s>", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81"
                                            "sentence\xef\xbd\x9c>"};
    for (size_t i = 0; i < sizeof eog_names / sizeof eog_names[0]; i++) {
        int32_t id = tokenizer_find(t, eog_names[i]);
        if (id >= 0 && t->type[id] == TOKENIZER_TYPE_CONTROL)
            add_eog(t, id);
    }
    return 0;
oom:
    mg_err_set(err, errlen, "tokenizer: out of memory");
    return MG_ENOMEM;
}

/* ---- regex translation ------------------------------------------------------ */

/* JS's \s: WhiteSpace and LineTerminator code points. PCRE2's \s differs
 * (it has U+0085 and lacks U+FEFF), so it is spelt out. */
#define JS_SPACE_RANGES "\\t-\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}\\x{feff}"

int tok_add_regex(tokenizer *t, const char *pattern, char *err, size_t errlen)
{
    if (t->n_re >= TOK_MAX_REGEX) {
        mg_err_set(err, errlen, "tokenizer: more than %d pre-tokenizer splits", TOK_MAX_REGEX);
        return MG_EUNSUPPORTED;
    }
    /* The contraction group with an inline case-insensitive flag is spelt
     * out with explicit case pairs, as the JS port does: PCRE2's caseless
     * matching would also fold U+017F (long s) into 's'. */
    static const char ci_from[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
    static const char ci_to[] = "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))";
    size_t plen = strlen(pattern);
    size_t cap = plen * 8 + sizeof ci_to + 256;
    char *p = malloc(cap);
    if (!p) {
        mg_err_set(err, errlen, "tokenizer: out of memory");
        return MG_ENOMEM;
    }
    size_t o = 0;
    bool in_class = false;
    for (size_t i = 0; i < plen;) {
        if (!in_class && !strncmp(pattern + i, ci_from, sizeof ci_from - 1)) {
            memcpy(p + o, ci_to, sizeof ci_to - 1);
            o += sizeof ci_to - 1;
            i += sizeof ci_from - 1;
            continue;
        }
        char c = pattern[i];
        if (c == '\\' && i + 1 < plen) {
            char d = pattern[i + 1];
            if (d == 's' || d == 'S') {
                if (in_class && d == 'S') {
                    free(p);
                    mg_err_set(err, errlen, "tokenizer: \\S inside a character class is not supported");
                    return MG_EUNSUPPORTED;
                }
                const char *r = in_class ? JS_SPACE_RANGES : d == 's' ? "[" JS_SPACE_RANGES "]" : "[^" JS_SPACE_RANGES "]";
                size_t rl = strlen(r);
                memcpy(p + o, r, rl);
                o += rl;
                i += 2;
                continue;
            }
            if (d == 'd' || d == 'w' || d == 'b' || d == 'D' || d == 'W' || d == 'B') {
                /* ASCII in JS without the i flag; PCRE2 without UCP agrees */
            }
            p[o++] = c;
            p[o++] = d;
            i += 2;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = true;
            p[o++] = c;
            i++;
            if (i < plen && pattern[i] == '^')
                p[o++] = pattern[i++];
            if (i < plen && pattern[i] == ']')
                p[o++] = pattern[i++]; /* literal ] first in class */
            continue;
        }
        if (c == ']' && in_class)
            in_class = false;
        p[o++] = c;
        i++;
    }
    p[o] = '\0';
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)p, o, PCRE2_UTF | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
    free(p);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        mg_err_set(err, errlen, "tokenizer: pre-tokenizer pattern does not compile: %s", (char *)msg);
        return MG_EFORMAT;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if unavailable */
    t->re[t->n_re++] = re;
    return 0;
}

/* The pre-tokenizers of the GGUF names we know, as tokenizer.json spells
 * them (published with each model). */
static const char PAT_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char PAT_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_DSV3_DIGITS[] = "\\p{N}{1,3}";
static const char PAT_DSV3_CJK[] = "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+";
static const char PAT_DSV3_MAIN[] =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

int tok_set_pre(tokenizer *t, const char *name, char *err, size_t errlen)
{
    int rc = 0;
    snprintf(t->pre, sizeof t->pre, "%s", name);
    if (!strcmp(name, "qwen2")) {
        t->nfc = true;
        rc = tok_add_regex(t, PAT_QWEN2, err, errlen);
    } else if (!strcmp(name, "deepseek-v3")) {
        rc = tok_add_regex(t, PAT_DSV3_DIGITS, err, errlen);
        if (!rc)
            rc = tok_add_regex(t, PAT_DSV3_CJK, err, errlen);
        if (!rc)
            rc = tok_add_regex(t, PAT_DSV3_MAIN, err, errlen);
    } else if (!strcmp(name, "llama-bpe") || !strcmp(name, "llama3")) {
        rc = tok_add_regex(t, PAT_LLAMA3, err, errlen);
    } else if (!strcmp(name, "gpt-2") || !strcmp(name, "gpt2")) {
        rc = tok_add_regex(t, PAT_GPT2, err, errlen);
    } else {
        mg_err_set(err, errlen,
                   "tokenizer: pre-tokenizer '%s' is not supported (qwen2, deepseek-v3, llama-bpe, gpt-2)",
                   name);
        return MG_EUNSUPPORTED;
    }
    return rc;
}

void tokenizer_free(tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    free(t->type);
    free(t->arena);
    free(t->text_off);
    free(t->text_len);
    free(t->key_off);
    free(t->key_len);
    free(t->piece_map);
    free(t->merges);
    free(t->self);
    free(t->added);
    free(t->chat_template);
    free(t);
}

/* ---- encoding -------------------------------------------------------------- */

void tokenizer_ids_free(tokenizer_ids *v)
{
    if (!v)
        return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

static int ids_push(tokenizer_ids *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        int32_t *p = realloc(v->ids, cap * sizeof *p);
        if (!p)
            return MG_ENOMEM;
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

typedef struct {
    uint32_t off, len;
} span;

/* Scratch buffers for one encode call, grown as needed. */
struct scratch {
    char *norm;
    size_t norm_cap;
    span *sp[2];
    size_t sp_cap[2];
    struct bpe_sym *sym;
    size_t sym_cap;
    struct bpe_cand *heap;
    size_t heap_cap;
    pcre2_match_data *md;
    /* Word cache for long inputs: the same words recur (Zipf), and looking
     * a word up costs far less than merging it again. Per call, so the
     * tokenizer stays immutable and shareable. */
    struct cache_slot *cache; /* CACHE_SLOTS entries, or NULL */
    char *cbytes;             /* words, back to back */
    size_t cbytes_n, cbytes_cap;
    int32_t *cids; /* their tokens, back to back */
    size_t cids_n, cids_cap;
};

enum { CACHE_SLOTS = 1 << 14, CACHE_MAX_WORD = 64, CACHE_MIN_INPUT = 4096 };

typedef struct cache_slot {
    uint32_t hash;
    uint16_t len;  /* 0: empty */
    uint16_t nids;
    uint32_t off;  /* into cbytes */
    uint32_t ids;  /* into cids */
} cache_slot;

typedef struct bpe_sym {
    int32_t id; /* -1: a SentencePiece character the vocabulary lacks */
    int32_t prev, next;
    uint32_t off, len; /* bytes in the piece */
} bpe_sym;

typedef struct bpe_cand {
    int32_t rank;
    int32_t left; /* symbol index = original position of its first character */
    int32_t left_id, right_id;
    int32_t merged;
} bpe_cand;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return MG_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static bool cand_less(const bpe_cand *a, const bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_cand *h, size_t *n, bpe_cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static bpe_cand heap_pop(bpe_cand *h, size_t *n)
{
    bpe_cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bpe_cand *best = &last;
        if (l < *n && cand_less(&h[l], best)) {
            m = l;
            best = &h[l];
        }
        if (r < *n && cand_less(&h[r], best))
            m = r;
        if (m == i)
            break;
        h[i] = h[m];
        i = m;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

static void try_pair(const tokenizer *t, const bpe_sym *sym, int32_t left, bpe_cand *heap, size_t *nh)
{
    int32_t right = sym[left].next;
    if (right < 0 || sym[left].id < 0 || sym[right].id < 0)
        return;
    const tok_merge_slot *m = merge_find(t, sym[left].id, sym[right].id);
    if (m)
        heap_push(heap, nh, (bpe_cand){m->rank, left, sym[left].id, sym[right].id, m->merged});
}

/* BPE of one pre-token w[0..n) (bytes for byte-level; characters of the
 * U+2581-normalised text for SentencePiece). */
static int bpe_piece(const tokenizer *t, scratch *s, const char *w, size_t n, tokenizer_ids *out)
{
    if (grow((void **)&s->sym, &s->sym_cap, n, sizeof *s->sym) ||
        grow((void **)&s->heap, &s->heap_cap, 2 * n + 2, sizeof *s->heap))
        return MG_ENOMEM;
    bpe_sym *sym = s->sym;
    int32_t m = 0;
    if (t->kind == TOKENIZER_BYTE_BPE) {
        for (size_t i = 0; i < n; i++, m++)
            sym[m] = (bpe_sym){t->byte_id[(uint8_t)w[i]], m - 1, m + 1, (uint32_t)i, 1};
    } else {
        for (size_t i = 0; i < n; m++) {
            uint32_t cp;
            size_t k = unicode_utf8_decode((const uint8_t *)w + i, n - i, &cp);
            sym[m] = (bpe_sym){tok_lookup_key(t, w + i, k), m - 1, m + 1, (uint32_t)i, (uint32_t)k};
            i += k;
        }
    }
    if (m == 0)
        return 0;
    sym[m - 1].next = -1;
    /* Heap bound: n - 1 initial pairs; each merge pops one and pushes at
     * most two, and there are at most n - 1 merges: <= 2n entries. */
    size_t nh = 0;
    bpe_cand *heap = s->heap;
    for (int32_t i = 0; i + 1 < m; i++)
        try_pair(t, sym, i, heap, &nh);
    while (nh > 0) {
        bpe_cand c = heap_pop(heap, &nh);
        int32_t l = c.left, r = sym[l].next;
        /* stale: either side merged since this pair was pushed */
        if (sym[l].id != c.left_id || r < 0 || sym[r].id != c.right_id || sym[l].len == 0)
            continue;
        sym[l].id = c.merged;
        sym[l].len += sym[r].len;
        sym[l].next = sym[r].next;
        if (sym[r].next >= 0)
            sym[sym[r].next].prev = l;
        sym[r].len = 0; /* dead */
        sym[r].id = -2;
        if (sym[l].prev >= 0)
            try_pair(t, sym, sym[l].prev, heap, &nh);
        try_pair(t, sym, l, heap, &nh);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        int rc;
        if (sym[i].id >= 0) {
            rc = ids_push(out, sym[i].id);
        } else if (t->byte_fallback) {
            rc = 0;
            for (uint32_t k = 0; k < sym[i].len && !rc; k++)
                rc = ids_push(out, t->byte_id[(uint8_t)w[sym[i].off + k]]);
        } else {
            rc = ids_push(out, t->unk >= 0 ? t->unk : 0);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static void scratch_free(scratch *s)
{
    pcre2_match_data_free(s->md);
    free(s->cache);
    free(s->cbytes);
    free(s->cids);
    free(s->norm);
    free(s->sp[0]);
    free(s->sp[1]);
    free(s->sym);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static int compute_self(tokenizer *t)
{
    t->self = calloc((size_t)t->n_vocab, 1);
    if (!t->self)
        return MG_ENOMEM;
    scratch s = {0};
    tokenizer_ids ids = {0};
    int rc = 0;
    for (int32_t id = 0; id < t->n_vocab && !rc; id++) {
        if (t->key_len[id] < 2 || tok_lookup_key(t, t->arena + t->key_off[id], t->key_len[id]) != id)
            continue;
        ids.n = 0;
        rc = bpe_piece(t, &s, t->arena + t->key_off[id], t->key_len[id], &ids);
        t->self[id] = !rc && ids.n == 1 && ids.ids[0] == id;
    }
    tokenizer_ids_free(&ids);
    scratch_free(&s);
    return rc;
}

/* BPE through the word cache when the call has one. */
static int bpe_cached(const tokenizer *t, scratch *s, const char *w, size_t n, tokenizer_ids *out)
{
    if (t->self && n > 1) {
        int32_t id = tok_lookup_key(t, w, n);
        if (id >= 0 && t->self[id])
            return ids_push(out, id);
    }
    if (!s->cache || n > CACHE_MAX_WORD)
        return bpe_piece(t, s, w, n, out);
    uint32_t h = hash_bytes(w, n), i = h & (CACHE_SLOTS - 1);
    for (int probe = 0; probe < 8; probe++, i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_slot *c = &s->cache[i];
        if (c->len == 0)
            break;
        if (c->hash == h && c->len == n && !memcmp(s->cbytes + c->off, w, n)) {
            for (uint32_t k = 0; k < c->nids; k++)
                if (ids_push(out, s->cids[c->ids + k]))
                    return MG_ENOMEM;
            return 0;
        }
    }
    size_t before = out->n;
    int rc = bpe_piece(t, s, w, n, out);
    if (rc)
        return rc;
    size_t nids = out->n - before;
    cache_slot *c = &s->cache[i];
    if (c->len != 0 || nids > UINT16_MAX || s->cbytes_n + n > UINT32_MAX || s->cids_n + nids > UINT32_MAX)
        return 0; /* probe run full: just not cached */
    if (grow((void **)&s->cbytes, &s->cbytes_cap, s->cbytes_n + n, 1) ||
        grow((void **)&s->cids, &s->cids_cap, s->cids_n + nids, sizeof *s->cids))
        return 0;
    memcpy(s->cbytes + s->cbytes_n, w, n);
    memcpy(s->cids + s->cids_n, out->ids + before, nids * sizeof *s->cids);
    *c = (cache_slot){h, (uint16_t)n, (uint16_t)nids, (uint32_t)s->cbytes_n, (uint32_t)s->cids_n};
    s->cbytes_n += n;
    s->cids_n += nids;
    return 0;
}

/* SentencePiece has no pre-tokenizer: BPE runs over the whole segment. When
 * no piece of the vocabulary has U+2581 after another character (checked at
 * load: spm_word_split), no merge can cross the start of a "▁word", so the
 * segment is merged word by word with the same result, in far less time. */
static int bpe_spm_words(const tokenizer *t, scratch *s, const char *w, size_t n, tokenizer_ids *out)
{
    size_t start = 0;
    for (size_t i = 3; i + 3 <= n; i++) {
        if (memcmp(w + i, "\xe2\x96\x81", 3))
            continue;
        if (!memcmp(w + i - 3, "\xe2\x96\x81", 3))
            continue; /* inside a run of U+2581 */
        int rc = bpe_cached(t, s, w + start, i - start, out);
        if (rc)
            return rc;
        start = i;
        i += 2;
    }
    return bpe_cached(t, s, w + start, n - start, out);
}

/* Splits every span of in[] by re, keeping matches and the text between them
 * (behaviour "Isolated"); empty pieces are dropped. */
static int regex_split(const tokenizer *t, scratch *s, pcre2_code *re, const char *buf, span *in, size_t nin,
                       span **outp, size_t *outcap, size_t *nout)
{
    size_t no = 0;
    for (size_t k = 0; k < nin; k++) {
        const char *subj = buf + in[k].off;
        size_t len = in[k].len, pos = 0, last = 0;
        while (pos <= len) {
            int rc = pcre2_match(re, (PCRE2_SPTR)subj, len, pos, PCRE2_NO_UTF_CHECK, s->md, NULL);
            if (rc < 0)
                break; /* no match (or a resource limit: keep the rest whole) */
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
            size_t ms = ov[0], me = ov[1];
            if (grow((void **)outp, outcap, no + 2, sizeof **outp))
                return MG_ENOMEM;
            if (ms > last)
                (*outp)[no++] = (span){in[k].off + (uint32_t)last, (uint32_t)(ms - last)};
            if (me > ms) {
                (*outp)[no++] = (span){in[k].off + (uint32_t)ms, (uint32_t)(me - ms)};
                pos = last = me;
            } else {
                /* empty match: step over one character */
                if (ms >= len)
                    break;
                uint32_t cp;
                pos = ms + unicode_utf8_decode((const uint8_t *)subj + ms, len - ms, &cp);
                last = ms;
            }
        }
        if (last < len) {
            if (grow((void **)outp, outcap, no + 1, sizeof **outp))
                return MG_ENOMEM;
            (*outp)[no++] = (span){in[k].off + (uint32_t)last, (uint32_t)(len - last)};
        }
    }
    (void)t;
    *nout = no;
    return 0;
}

/* Normalises, pre-tokenizes and merges one segment of text between added
 * tokens. */
static int encode_segment(const tokenizer *t, scratch *s, const char *text, size_t len, tokenizer_ids *out)
{
    if (len == 0)
        return 0;
    const char *buf = text;
    size_t n = len;
    char *nfc = NULL;
    if (t->nfc && !unicode_nfc_quick(text, len)) {
        if (unicode_nfc(text, len, &nfc, &n))
            return MG_ENOMEM;
        buf = nfc;
    }
    if (t->spm_prefix || t->spm_spaces) {
        if (grow((void **)&s->norm, &s->norm_cap, 3 * n + 4, 1)) {
            free(nfc);
            return MG_ENOMEM;
        }
        size_t o = 0;
        if (t->spm_prefix) {
            memcpy(s->norm, "\xe2\x96\x81", 3);
            o = 3;
        }
        for (size_t i = 0; i < n; i++) {
            if (buf[i] == ' ' && t->spm_spaces) {
                memcpy(s->norm + o, "\xe2\x96\x81", 3);
                o += 3;
            } else {
                s->norm[o++] = buf[i];
            }
        }
        free(nfc);
        nfc = NULL;
        buf = s->norm;
        n = o;
    }
    if (n > UINT32_MAX) {
        free(nfc);
        return MG_ERANGE;
    }
    int rc = 0;
    if (grow((void **)&s->sp[0], &s->sp_cap[0], 1, sizeof(span))) {
        free(nfc);
        return MG_ENOMEM;
    }
    s->sp[0][0] = (span){0, (uint32_t)n};
    size_t ns = 1;
    int cur = 0;
    for (int r = 0; r < t->n_re && !rc; r++) {
        size_t nn = 0;
        rc = regex_split(t, s, t->re[r], buf, s->sp[cur], ns, &s->sp[1 - cur], &s->sp_cap[1 - cur], &nn);
        cur = 1 - cur;
        ns = nn;
    }
    for (size_t i = 0; i < ns && !rc; i++) {
        const char *w = buf + s->sp[cur][i].off;
        size_t wl = s->sp[cur][i].len;
        rc = t->spm_word_split ? bpe_spm_words(t, s, w, wl, out) : bpe_cached(t, s, w, wl, out);
    }
    free(nfc);
    return rc;
}

/* JS String.prototype.trim's whitespace (the same set as JS \s). */
static size_t js_space_len(const char *p, size_t n)
{
    uint32_t cp;
    size_t k = unicode_utf8_decode((const uint8_t *)p, n, &cp);
    bool sp = (cp >= 9 && cp <= 13) || cp == 0x20 || cp == 0xA0 || cp == 0x1680 ||
              (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
              cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
    return sp ? k : 0;
}

typedef struct {
    int32_t added; /* index into t->added, or -1 for text */
    size_t off, len;
} segment;

static int encode(const tokenizer *t, const char *text, size_t len, unsigned flags, const size_t *plain,
                  size_t n_plain, tokenizer_ids *out);

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, unsigned flags, tokenizer_ids *out)
{
    return encode(t, text, len, flags, NULL, 0, out);
}

int tokenizer_encode_chat(const tokenizer *t, const char *text, size_t len, const size_t *plain, size_t n_plain,
                          tokenizer_ids *out)
{
    for (size_t k = 0; k < n_plain; k++)
        if (plain[2 * k] > plain[2 * k + 1] || plain[2 * k + 1] > len || (k && plain[2 * k] < plain[2 * k - 1]))
            return MG_EINVAL;
    return encode(t, text, len, TOKENIZER_PARSE_SPECIAL, plain, n_plain, out);
}

/* True when [a, b) overlaps one of the plain ranges; *k walks forward with
 * the scan (a only grows). */
static bool in_plain(const size_t *plain, size_t n_plain, size_t *k, size_t a, size_t b)
{
    while (*k < n_plain && plain[2 * *k + 1] <= a)
        (*k)++;
    return *k < n_plain && plain[2 * *k] < b;
}

static int encode(const tokenizer *t, const char *text, size_t len, unsigned flags, const size_t *plain,
                  size_t n_plain, tokenizer_ids *out)
{
    if (!t || !out || (!text && len))
        return MG_EINVAL;
    int rc = 0;
    char *clean = NULL;
    segment *seg = NULL;
    size_t nseg = 0, segcap = 0;
    scratch s = {0};
    if (!unicode_utf8_valid(text, len)) {
        if (plain)
            return MG_EINVAL; /* a rendered prompt is built from valid UTF-8 */
        /* replace invalid subparts with U+FFFD, as JS decoding does */
        clean = malloc(len * 3 + 1);
        if (!clean)
            return MG_ENOMEM;
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            i += unicode_utf8_decode((const uint8_t *)text + i, len - i, &cp);
            o += (size_t)unicode_utf8_encode(cp, clean + o);
        }
        text = clean;
        len = o;
    }
    if ((flags & TOKENIZER_ADD_SPECIAL) && t->add_bos && t->bos >= 0 && (rc = ids_push(out, t->bos)))
        goto done;
    /* 1. cut out added tokens, longest first at each position */
    size_t start = 0, pk = 0;
    for (size_t i = 0; i < len;) {
        uint8_t b = (uint8_t)text[i];
        int32_t hit = -1;
        for (int32_t k = t->added_first[b]; k < t->added_first[b + 1]; k++) {
            const tok_added *a = &t->added[k];
            if (a->special && !(flags & TOKENIZER_PARSE_SPECIAL))
                continue;
            if (a->len <= len - i && !memcmp(text + i, t->arena + a->off, a->len)) {
                if (a->special && plain && in_plain(plain, n_plain, &pk, i, i + a->len))
                    continue;
                hit = k;
                break;
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        if (grow((void **)&seg, &segcap, nseg + 2, sizeof *seg)) {
            rc = MG_ENOMEM;
            goto done;
        }
        if (i > start)
            seg[nseg++] = (segment){-1, start, i - start};
        seg[nseg++] = (segment){hit, i, t->added[hit].len};
        i += t->added[hit].len;
        start = i;
    }
    if (len > start) {
        if (grow((void **)&seg, &segcap, nseg + 1, sizeof *seg)) {
            rc = MG_ENOMEM;
            goto done;
        }
        seg[nseg++] = (segment){-1, start, len - start};
    }
    /* 2. lstrip / rstrip trim the whitespace next to an added token */
    for (size_t k = 0; k < nseg; k++) {
        if (seg[k].added < 0)
            continue;
        const tok_added *a = &t->added[seg[k].added];
        if (a->lstrip && k > 0 && seg[k - 1].added < 0) {
            segment *p = &seg[k - 1];
            /* trim at the end: walk back over whole characters */
            for (;;) {
                size_t e = p->off + p->len, b0 = e;
                if (p->len == 0)
                    break;
                do
                    b0--;
                while (b0 > p->off && ((uint8_t)text[b0] & 0xC0) == 0x80);
                if (!js_space_len(text + b0, e - b0))
                    break;
                p->len = b0 - p->off;
            }
        }
        if (a->rstrip && k + 1 < nseg && seg[k + 1].added < 0) {
            segment *q = &seg[k + 1];
            size_t sl;
            while (q->len && (sl = js_space_len(text + q->off, q->len)) > 0) {
                q->off += sl;
                q->len -= sl;
            }
        }
    }
    /* 3. encode */
    s.md = pcre2_match_data_create(1, NULL);
    if (!s.md) {
        rc = MG_ENOMEM;
        goto done;
    }
    if (len >= CACHE_MIN_INPUT)
        s.cache = calloc(CACHE_SLOTS, sizeof *s.cache); /* NULL: no cache, still correct */
    for (size_t k = 0; k < nseg && !rc; k++) {
        if (seg[k].added >= 0)
            rc = ids_push(out, t->added[seg[k].added].id);
        else
            rc = encode_segment(t, &s, text + seg[k].off, seg[k].len, out);
    }
    if (!rc && (flags & TOKENIZER_ADD_SPECIAL) && t->add_eos && t->eos >= 0)
        rc = ids_push(out, t->eos);
done:
    scratch_free(&s);
    free(seg);
    free(clean);
    return rc;
}

/* ---- decoding -------------------------------------------------------------- */

int tokenizer_token_bytes(const tokenizer *t, int32_t id, bool show_control, char *buf, size_t cap)
{
    if (!t || id < 0 || id >= t->n_vocab)
        return -1;
    if (t->type[id] == TOKENIZER_TYPE_CONTROL && !show_control)
        return 0;
    size_t n = t->text_len[id];
    memcpy(buf, t->arena + t->text_off[id], n < cap ? n : cap);
    return (int)n;
}

int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, bool show_control, char **out,
                     size_t *outlen)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n_vocab)
            total += t->text_len[ids[i]];
    char *s = malloc(total + 1);
    if (!s)
        return MG_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int k = tokenizer_token_bytes(t, ids[i], show_control, s + o, total - o);
        if (k > 0)
            o += (size_t)k;
    }
    size_t skip = (t->spm_strip_leading && o > 0 && s[0] == ' ') ? 1 : 0;
    memmove(s, s + skip, o - skip);
    o -= skip;
    s[o] = '\0';
    *out = s;
    *outlen = o;
    return 0;
}

void tokenizer_stream_init(tokenizer_stream *s, const tokenizer *t, bool show_control)
{
    memset(s, 0, sizeof *s);
    s->t = t;
    s->show_control = show_control;
    s->strip_leading_space = t->spm_strip_leading;
}

int tokenizer_stream_push(tokenizer_stream *s, int32_t id, char *out, size_t cap)
{
    const tokenizer *t = s->t;
    if (id < 0 || id >= t->n_vocab)
        return -1;
    size_t piece = t->text_len[id];
    if (cap < s->n_pending + piece)
        return -1;
    memcpy(out, s->pending, s->n_pending);
    int k = tokenizer_token_bytes(t, id, s->show_control, out + s->n_pending, cap - s->n_pending);
    size_t n = s->n_pending + (size_t)k;
    s->n_pending = 0;
    if (s->strip_leading_space && n > 0) {
        s->strip_leading_space = false;
        if (out[0] == ' ') {
            memmove(out, out + 1, n - 1);
            n--;
        }
    }
    size_t ok = unicode_utf8_complete_prefix(out, n);
    s->n_pending = n - ok; /* at most 3 bytes */
    memcpy(s->pending, out + ok, s->n_pending);
    return (int)ok;
}

int tokenizer_stream_flush(tokenizer_stream *s, char *out, size_t cap)
{
    if (cap < s->n_pending)
        return -1;
    size_t n = s->n_pending;
    memcpy(out, s->pending, n);
    s->n_pending = 0;
    return (int)n;
}

/* ---- vocabulary ------------------------------------------------------------ */

enum tokenizer_kind tokenizer_get_kind(const tokenizer *t) { return t->kind; }
int32_t tokenizer_vocab_size(const tokenizer *t) { return t->n_vocab; }
size_t tokenizer_max_piece_bytes(const tokenizer *t) { return t->max_piece; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
bool tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
const char *tokenizer_pre(const tokenizer *t) { return t->pre; }
const char *tokenizer_chat_template(const tokenizer *t) { return t->chat_template; }

int tokenizer_token_type(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->type[id] : 0;
}

bool tokenizer_is_eog(const tokenizer *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

const char *tokenizer_piece(const tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    if (t->key_len[id] && t->kind == TOKENIZER_SPM_BPE) {
        *len = t->key_len[id];
        return t->arena + t->key_off[id];
    }
    *len = t->text_len[id];
    return t->arena + t->text_off[id];
}

int32_t tokenizer_find(const tokenizer *t, const char *s)
{
    size_t n = strlen(s);
    for (int32_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && !memcmp(t->arena + t->added[i].off, s, n))
            return t->added[i].id;
    if (t->kind == TOKENIZER_SPM_BPE) {
        int hex = n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' ? hex_byte(s + 3) : -1;
        if (hex >= 0 && t->byte_id[hex] >= 0)
            return t->byte_id[hex];
        return tok_lookup_key(t, s, n);
    }
    /* byte-level: s is spelt in the vocabulary's alphabet */
    char buf[4096];
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof buf;) {
        uint32_t cp;
        i += unicode_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        int b = byte_level_cp_to_byte(cp);
        if (b < 0)
            return -1;
        buf[o++] = (char)b;
    }
    return tok_lookup_key(t, buf, o);
}
