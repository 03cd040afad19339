/* unicode.c — UTF-8 decoding (WHATWG), NFC composition (UAX #15).
 *
 * NFC runs in three passes over a code point buffer: full canonical
 * decomposition (tables; Hangul algorithmically), canonical ordering of each
 * run of non-starters (a stable insertion sort by combining class: runs are
 * short), and canonical composition with the blocking rule. A quick check
 * first scans for any code point that could make NFC change the text
 * (unicode_nfc_unsafe); most text — ASCII, CJK, already-composed Latin —
 * has none and is copied as is.
 */
#include "core/unicode.h"

#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/unicode_internal.h"

/* ---- UTF-8 ---------------------------------------------------------------- */

size_t unicode_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    uint32_t c;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = b & 0x0F;
        if (b == 0xE0)
            lo = 0xA0; /* no overlongs */
        if (b == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = b & 0x07;
        if (b == 0xF0)
            lo = 0x90;
        if (b == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        *cp = UNICODE_REPLACEMENT;
        return 1;
    }
    size_t i = 1;
    for (; need > 0; need--, i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            /* The maximal subpart ends before the offending byte, which
             * starts the next decode. */
            *cp = UNICODE_REPLACEMENT;
            return i;
        }
        c = (c << 6) | (s[i] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = c;
    return i;
}

int unicode_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool unicode_utf8_valid(const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = unicode_utf8_decode(p + i, n - i, &cp);
        /* U+FFFD itself is valid: it is 3 bytes; a replacement for an
         * error never consumes exactly the 3 bytes of EF BF BD. */
        if (cp == UNICODE_REPLACEMENT && !(k == 3 && p[i] == 0xEF && p[i + 1] == 0xBF && p[i + 2] == 0xBD))
            return false;
        i += k;
    }
    return true;
}

size_t unicode_utf8_complete_prefix(const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    /* Look back at most 3 bytes for the start of a multi-byte sequence. */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t b = p[n - back];
        if ((b & 0xC0) == 0x80)
            continue; /* continuation byte: keep looking */
        if (b >= 0x80 && (b < 0xC2 || b > 0xF4))
            return n; /* not a lead byte: nothing to wait for */
        int len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        if (len <= (int)back)
            return n; /* complete (or ASCII) */
        /* Incomplete: hold it back only if it is a valid prefix so far,
         * otherwise it can never complete and is emitted (as U+FFFD later). */
        uint32_t cp;
        size_t k = unicode_utf8_decode(p + n - back, back, &cp);
        if (k == back && cp == UNICODE_REPLACEMENT)
            return n - back;
        return n;
    }
    return n;
}

/* ---- tables ---------------------------------------------------------------- */

int unicode_ccc(uint32_t cp)
{
    if (cp < 0x300)
        return 0;
    int lo = 0, hi = unicode_ccc_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < unicode_ccc_ranges[mid].first)
            hi = mid - 1;
        else if (cp > unicode_ccc_ranges[mid].last)
            lo = mid + 1;
        else
            return unicode_ccc_ranges[mid].ccc;
    }
    return 0;
}

static const unicode_decomp *find_decomp(uint32_t cp)
{
    int lo = 0, hi = unicode_decomp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < unicode_decomps[mid].cp)
            hi = mid - 1;
        else if (cp > unicode_decomps[mid].cp)
            lo = mid + 1;
        else
            return &unicode_decomps[mid];
    }
    return NULL;
}

/* Hangul syllable arithmetic (Unicode chapter 3.12). */
enum {
    HANGUL_S = 0xAC00,
    HANGUL_L = 0x1100,
    HANGUL_V = 0x1161,
    HANGUL_T = 0x11A7,
    HANGUL_LCOUNT = 19,
    HANGUL_VCOUNT = 21,
    HANGUL_TCOUNT = 28,
    HANGUL_NCOUNT = HANGUL_VCOUNT * HANGUL_TCOUNT,
    HANGUL_SCOUNT = HANGUL_LCOUNT * HANGUL_NCOUNT,
};

static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LCOUNT && b >= HANGUL_V && b < HANGUL_V + HANGUL_VCOUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_VCOUNT + (b - HANGUL_V)) * HANGUL_TCOUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SCOUNT && (a - HANGUL_S) % HANGUL_TCOUNT == 0 &&
        b > HANGUL_T && b < HANGUL_T + HANGUL_TCOUNT)
        return a + (b - HANGUL_T);
    int lo = 0, hi = unicode_comp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const unicode_comp *c = &unicode_comps[mid];
        if (a < c->first || (a == c->first && b < c->second))
            hi = mid - 1;
        else if (a > c->first || b > c->second)
            lo = mid + 1;
        else
            return c->composite;
    }
    return 0;
}

static bool nfc_unsafe(uint32_t cp)
{
    if (cp < 0x300)
        return false;
    int lo = 0, hi = unicode_nfc_unsafe_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < unicode_nfc_unsafe[mid].first)
            hi = mid - 1;
        else if (cp > unicode_nfc_unsafe[mid].last)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

bool unicode_nfc_quick(const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0xCC) { /* below U+0300 */
            i += p[i] < 0x80 ? 1 : 2;
            continue;
        }
        uint32_t cp;
        i += unicode_utf8_decode(p + i, n - i, &cp);
        if (nfc_unsafe(cp))
            return false;
    }
    return true;
}

/* ---- NFC ------------------------------------------------------------------ */

int unicode_nfc(const char *s, size_t n, char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    /* Every input byte yields at most one code point before decomposition;
     * a full canonical decomposition is at most 4 code points in this UCD,
     * Hangul at most 3: 4n is a safe bound. */
    uint32_t *cps = malloc((n * 4 + 1) * sizeof *cps);
    if (!cps)
        return MG_ENOMEM;
    const uint8_t *p = (const uint8_t *)s;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += unicode_utf8_decode(p + i, n - i, &cp);
        if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_SCOUNT) {
            uint32_t si = cp - HANGUL_S;
            cps[m++] = HANGUL_L + si / HANGUL_NCOUNT;
            cps[m++] = HANGUL_V + (si % HANGUL_NCOUNT) / HANGUL_TCOUNT;
            if (si % HANGUL_TCOUNT)
                cps[m++] = HANGUL_T + si % HANGUL_TCOUNT;
            continue;
        }
        const unicode_decomp *d = cp >= 0xC0 ? find_decomp(cp) : NULL;
        if (d) {
            for (int k = 0; k < d->len; k++)
                cps[m++] = unicode_decomp_data[d->off + k];
        } else {
            cps[m++] = cp;
        }
    }
    /* canonical ordering: stable sort of each run of non-starters */
    for (size_t i = 1; i < m; i++) {
        int c = unicode_ccc(cps[i]);
        if (c == 0)
            continue;
        size_t j = i;
        uint32_t x = cps[i];
        while (j > 0) {
            int cj = unicode_ccc(cps[j - 1]);
            if (cj <= c) /* includes cj == 0: a starter ends the run */
                break;
            cps[j] = cps[j - 1];
            j--;
        }
        cps[j] = x;
    }
    /* canonical composition */
    size_t w = 0;
    if (m > 0) {
        size_t starter = 0;
        int last = unicode_ccc(cps[0]);
        if (last != 0)
            last = 256; /* text starting with a non-starter: nothing composes onto it */
        w = 1;
        for (size_t i = 1; i < m; i++) {
            uint32_t c = cps[i];
            int cc = unicode_ccc(c);
            uint32_t comp = compose_pair(cps[starter], c);
            if (comp && (last < cc || last == 0)) {
                cps[starter] = comp;
                continue;
            }
            if (cc == 0)
                starter = w;
            last = cc;
            cps[w++] = c;
        }
    }
    char *dst = malloc(w * 4 + 1);
    if (!dst) {
        free(cps);
        return MG_ENOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < w; i++)
        o += (size_t)unicode_utf8_encode(cps[i], dst + o);
    dst[o] = '\0';
    free(cps);
    *out = dst;
    *outlen = o;
    return 0;
}

const char *unicode_version(void)
{
    return unicode_data_version;
}
