/* moegate gateway — a growable byte buffer, JSON string escaping and the
 * OpenAI error object.
 *
 * Responses are written by hand into a gw_buf rather than built as jansson
 * trees: key order is fixed (what OpenAI sends), nothing is allocated per
 * field, and the string escaper is also the place where generated text that
 * is not valid UTF-8 (a byte-fallback token the model never completed)
 * becomes U+FFFD, so every body we send is valid JSON.
 *
 * A failed allocation marks the buffer (oom) and later appends do nothing;
 * the caller checks once at the end.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway_internal.h"

void gw_buf_free(gw_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static bool grow(gw_buf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)1 << 40)) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void gw_buf_put(gw_buf *b, const char *s, size_t n)
{
    if (!grow(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void gw_buf_puts(gw_buf *b, const char *s)
{
    gw_buf_put(b, s, strlen(s));
}

void gw_buf_printf(gw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        gw_buf_put(b, small, (size_t)n);
        return;
    }
    if (!grow(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s[0..n), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t k;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        k = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        k = 4, min = 0x10000;
    else
        return 0;
    if (n < k)
        return 0;
    unsigned cp = c & (0x7f >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

void gw_buf_json(gw_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!grow(b, n + 2))
        return;
    b->p[b->len++] = '"';
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* a run of bytes that need no escaping */
        size_t j = i;
        while (j < n && u[j] >= 0x20 && u[j] < 0x80 && u[j] != '"' && u[j] != '\\')
            j++;
        if (j > i) {
            gw_buf_put(b, s + i, j - i);
            i = j;
            continue;
        }
        unsigned c = u[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            gw_buf_put(b, e, 2);
            i++;
        } else if (c < 0x20) {
            const char *e = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (e)
                gw_buf_put(b, e, 2);
            else {
                char x[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                gw_buf_put(b, x, 6);
            }
            i++;
        } else {
            size_t k = utf8_len(u + i, n - i);
            if (k) {
                gw_buf_put(b, s + i, k);
                i += k;
            } else {
                gw_buf_put(b, "\xef\xbf\xbd", 3); /* U+FFFD for one invalid byte */
                i++;
            }
        }
    }
    gw_buf_put(b, "\"", 1);
}

void gw_buf_jsonz(gw_buf *b, const char *s)
{
    if (s)
        gw_buf_json(b, s, strlen(s));
    else
        gw_buf_puts(b, "null");
}

void gw_buf_utf8(gw_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && u[j] < 0x80)
            j++;
        if (j > i) {
            gw_buf_put(b, s + i, j - i);
            i = j;
            continue;
        }
        size_t k = utf8_len(u + i, n - i);
        if (k) {
            gw_buf_put(b, s + i, k);
            i += k;
        } else {
            gw_buf_put(b, "\xef\xbf\xbd", 3);
            i++;
        }
    }
}

char *gw_buf_take(gw_buf *b, size_t *len)
{
    if (b->oom || !grow(b, 0)) {
        gw_buf_free(b);
        return NULL;
    }
    char *p = b->p;
    if (len)
        *len = b->len;
    memset(b, 0, sizeof *b);
    return p;
}

const char *gw_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    case 500:
    case 503:
    case 504: return "server_error";
    default: return "invalid_request_error";
    }
}

void gw_encode_error(gw_buf *b, const char *message, const char *type, const char *param, const char *code)
{
    gw_buf_puts(b, "{\"error\":{\"message\":");
    gw_buf_jsonz(b, message);
    gw_buf_puts(b, ",\"type\":");
    gw_buf_jsonz(b, type);
    gw_buf_puts(b, ",\"param\":");
    gw_buf_jsonz(b, param && param[0] ? param : NULL);
    gw_buf_puts(b, ",\"code\":");
    gw_buf_jsonz(b, code && code[0] ? code : NULL);
    gw_buf_puts(b, "}}");
}
