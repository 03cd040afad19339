/* moegate — token id -> bytes (see vocab.h).
 *
 * GPT-2's byte-to-unicode table maps every byte to a printable code point:
 * bytes 33..126, 161..172 and 174..255 map to themselves, the other 68 bytes
 * to 256, 257, ... in increasing byte order. We invert it once at open into
 * a table indexed by code point (0..323).
 */
#include "vocab.h"

#include <stdlib.h>
#include <string.h>

#include "errors.h"

enum { VOCAB_GPT2, VOCAB_SPM };
enum { TOKEN_TYPE_CONTROL = 3, TOKEN_TYPE_BYTE = 6 };

struct vocab {
    const gguf *g;
    int kind;
    int64_t n;
    const uint8_t *types; /* [n] token types, or NULL */
    int16_t cp_to_byte[324];
};

int vocab_open(vocab **out, const gguf *g, char *err, size_t errlen)
{
    char model[32];
    int rc = gguf_get_cstr(g, "tokenizer.ggml.model", model, sizeof model);
    if (rc) {
        mg_err_set(err, errlen, "vocab: metadata key 'tokenizer.ggml.model' is missing or bad");
        return rc == MG_ENOTFOUND ? rc : MG_EFORMAT;
    }
    int kind;
    if (!strcmp(model, "gpt2"))
        kind = VOCAB_GPT2;
    else if (!strcmp(model, "llama"))
        kind = VOCAB_SPM;
    else {
        mg_err_set(err, errlen, "vocab: tokenizer model '%s' is not supported (gpt2, llama)",
                   model);
        return MG_EUNSUPPORTED;
    }
    enum gguf_type et;
    uint64_t n;
    const void *raw;
    rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &raw);
    if (rc || et != GGUF_TYPE_STRING) {
        mg_err_set(err, errlen, "vocab: 'tokenizer.ggml.tokens' is missing or not a string array");
        return rc ? rc : MG_EFORMAT;
    }
    vocab *v = calloc(1, sizeof *v);
    if (!v) {
        mg_err_set(err, errlen, "vocab: out of memory");
        return MG_ENOMEM;
    }
    v->g = g;
    v->kind = kind;
    v->n = (int64_t)n;
    uint64_t nt;
    if (gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &nt, &raw) == MG_OK && nt == n &&
        (et == GGUF_TYPE_INT32 || et == GGUF_TYPE_UINT32)) {
        uint8_t *types = malloc(n ? n : 1);
        if (!types) {
            free(v);
            mg_err_set(err, errlen, "vocab: out of memory");
            return MG_ENOMEM;
        }
        for (uint64_t i = 0; i < n; i++) {
            int32_t t;
            memcpy(&t, (const char *)raw + 4 * i, 4);
            types[i] = (uint8_t)(t >= 0 && t < 256 ? t : 0);
        }
        v->types = types;
    }
    /* invert GPT-2's byte-to-unicode table */
    for (int i = 0; i < 324; i++)
        v->cp_to_byte[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        v->cp_to_byte[self ? b : next++] = (int16_t)b;
    }
    *out = v;
    return MG_OK;
}

void vocab_free(vocab *v)
{
    if (!v)
        return;
    free((void *)v->types);
    free(v);
}

int64_t vocab_size(const vocab *v)
{
    return v->n;
}

bool vocab_is_control(const vocab *v, int32_t id)
{
    return v->types && id >= 0 && id < v->n && v->types[id] == TOKEN_TYPE_CONTROL;
}

/* Decodes one UTF-8 code point; returns its length or 0 when malformed. */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || (size_t)len > n)
        return 0;
    uint32_t v = len == 1 ? c : c & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    *cp = v;
    return len;
}

static size_t put(char *buf, size_t cap, size_t at, const void *src, size_t n)
{
    if (at < cap)
        memcpy(buf + at, src, n < cap - at ? n : cap - at);
    return at + n;
}

int vocab_decode(const vocab *v, int32_t id, bool show_control, char *buf, size_t cap)
{
    if (id < 0 || id >= v->n)
        return -1;
    gguf_str piece;
    if (gguf_arr_str(v->g, "tokenizer.ggml.tokens", (uint64_t)id, &piece))
        return -1;
    uint8_t type = v->types ? v->types[id] : 1;
    size_t at = 0;
    if (type == TOKEN_TYPE_CONTROL) {
        if (show_control)
            at = put(buf, cap, 0, piece.ptr, piece.len);
        return (int)(at < cap ? at : cap);
    }
    const unsigned char *s = (const unsigned char *)piece.ptr;
    size_t n = piece.len;
    if (v->kind == VOCAB_SPM && type == TOKEN_TYPE_BYTE && n == 6 && s[0] == '<' && s[5] == '>') {
        unsigned byte = (unsigned)strtoul((const char *)s + 3, NULL, 16) & 0xff;
        unsigned char b = (unsigned char)byte;
        at = put(buf, cap, 0, &b, 1);
        return (int)(at < cap ? at : cap);
    }
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int len = utf8_next(s + i, n - i, &cp);
        if (len == 0) { /* malformed piece: copy the byte as is */
            at = put(buf, cap, at, s + i, 1);
            i++;
            continue;
        }
        if (v->kind == VOCAB_GPT2 && cp < 324 && v->cp_to_byte[cp] >= 0) {
            unsigned char b = (unsigned char)v->cp_to_byte[cp];
            at = put(buf, cap, at, &b, 1);
        } else if (v->kind == VOCAB_SPM && cp == 0x2581) {
            at = put(buf, cap, at, " ", 1);
        } else {
            at = put(buf, cap, at, s + i, (size_t)len);
        }
        i += (size_t)len;
    }
    return (int)(at < cap ? at : cap);
}
