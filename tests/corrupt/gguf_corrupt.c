/* moegate — GGUF corruption test.
 *
 *   gguf_corrupt [-n COUNT] [-s SEED] [-o SEEDFILE] [FILE]
 *
 * (-o writes the seed described below to SEEDFILE and exits: a starting
 * corpus for the fuzz target.)
 * Takes a valid GGUF seed, then COUNT times (default 10000) makes a corrupted
 * copy with a seeded PRNG (bit flips, random bytes, u64/u32 fields overwritten
 * with boundary values or nudged by a few, truncation, duplicated, deleted
 * and inserted byte ranges), opens it with gguf_open_memory from an exactly
 * sized malloc'd buffer (so ASan flags any over-read), and on success walks
 * everything through the public API: every key with every getter, every
 * array element down through nested arrays, every tensor (first and last
 * byte of its data). Every pointer an accessor returns is checked to lie in
 * the buffer and every answer to agree with the others; a disagreement, an
 * unexpected error code or a message without the "gguf: " prefix is a
 * failure. Every 100th iteration also goes through gguf_open on a temp file,
 * which must give the same answer as the memory open.
 *
 * The seed. Without FILE it is a rich file built here: every value type,
 * nested arrays, a small vocabulary, tensors of seven types. With FILE (for
 * example a generated model fixture) the seed is FILE re-encoded small
 * through the reader's own API: every key kept but arrays cut to their first
 * 512 elements, every tensor kept with its type, rank and leading data bytes
 * but its shape cut to a few KiB. That keeps FILE's real structure while an
 * iteration costs microseconds, not the ~10 ms (under ASan) of parsing a
 * 150k-token vocabulary twice over. The full FILE is exercised as well: once
 * every 100 iterations it is opened whole after size-preserving mutations of
 * its first MiB (undone afterwards) or a truncation anywhere.
 *
 * The last line is "gguf_corrupt: N passed, M failed"; exit 0 when M is 0.
 * A failing input is written to $TMPDIR/gguf_corrupt_fail_SEED_ITER.gguf.
 *
 * tests/fuzz/fuzz_gguf.c includes this file with GGUF_CORRUPT_NO_MAIN
 * defined to reuse the walker (gguf_walk), which comes first.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/gguf.h"
#include "core/tensor.h"

/* ---- the walker: every accessor, every element ------------------------- */

struct walk {
    const unsigned char *buf; /* the bytes the gguf was opened on */
    size_t len;
    uint64_t max_elems; /* arrays longer than this are sampled, not walked whole */
    uint64_t fp;        /* fingerprint of everything read */
    const char *key;    /* the key being walked, for messages */
    char *why;
    size_t whylen;
};

__attribute__((format(printf, 2, 3))) static int walk_bad(struct walk *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->why, w->whylen, fmt, ap);
    va_end(ap);
    return -1;
}

static void walk_mix(struct walk *w, uint64_t v)
{
    w->fp = (w->fp ^ v) * 0x100000001b3ull;
}

/* p[0..n) inside the buffer. */
static bool walk_in(const struct walk *w, const void *p, uint64_t n)
{
    const unsigned char *q = p;
    if (!q || q < w->buf || q > w->buf + w->len)
        return false;
    return n <= (uint64_t)(w->buf + w->len - q);
}

static int walk_str(struct walk *w, gguf_str s, const char *what)
{
    if (!walk_in(w, s.ptr, s.len))
        return walk_bad(w, "key '%s': %s [%p, %llu bytes] outside the buffer", w->key, what,
                        (const void *)s.ptr, (unsigned long long)s.len);
    walk_mix(w, s.len);
    if (s.len) /* touch both ends */
        walk_mix(w, (unsigned char)s.ptr[0] * 256u + (unsigned char)s.ptr[s.len - 1]);
    return 0;
}

static size_t walk_type_size(enum gguf_type t)
{
    static const size_t sz[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return (unsigned)t < GGUF_TYPE_COUNT ? sz[t] : 0;
}

/* k-th index to visit of an array of n (k < walk_count(w, n)): all of them,
 * or for a long array the first 64, the last 64 and 64 spread between. */
static uint64_t walk_count(const struct walk *w, uint64_t n)
{
    return n <= w->max_elems ? n : 192;
}

static uint64_t walk_index(const struct walk *w, uint64_t n, uint64_t k)
{
    if (n <= w->max_elems || k < 64)
        return k;
    if (k < 128)
        return n - 128 + k;
    return (k * 0x9e3779b97f4a7c15ull) % n;
}

static int walk_arr(struct walk *w, const gguf_arr *a, int depth)
{
    gguf_arr sub;
    gguf_str s;
    if (depth > 8)
        return walk_bad(w, "key '%s': arrays nested %d deep", w->key, depth);
    if ((unsigned)a->elem_type >= GGUF_TYPE_COUNT)
        return walk_bad(w, "key '%s': element type %d", w->key, (int)a->elem_type);
    walk_mix(w, a->elem_type * 1000003ull + a->n);
    size_t sz = walk_type_size(a->elem_type);
    if (sz) {
        if (a->n > w->len / sz || !walk_in(w, a->first, a->n * sz))
            return walk_bad(w, "key '%s': %llu elements of %zu bytes outside the buffer", w->key,
                            (unsigned long long)a->n, sz);
        for (uint64_t k = 0; k < walk_count(w, a->n); k++) {
            uint64_t i = walk_index(w, a->n, k);
            const unsigned char *e = a->first + i * sz;
            if (a->elem_type == GGUF_TYPE_BOOL && e[0] > 1)
                return walk_bad(w, "key '%s': bool element %llu is %u", w->key,
                                (unsigned long long)i, e[0]);
            uint64_t v = 0;
            memcpy(&v, e, sz);
            walk_mix(w, v);
        }
        if (gguf_arrh_str(a, 0, &s) != MG_EINVAL || gguf_arrh_sub(a, 0, &sub) != MG_EINVAL)
            return walk_bad(w, "key '%s': string/sub access to a scalar array", w->key);
        return 0;
    }
    if (a->n > w->len / 8)
        return walk_bad(w, "key '%s': %llu elements cannot fit", w->key, (unsigned long long)a->n);
    for (uint64_t k = 0; k < walk_count(w, a->n); k++) {
        uint64_t i = walk_index(w, a->n, k);
        if (a->elem_type == GGUF_TYPE_STRING) {
            if (gguf_arrh_str(a, i, &s) != 0)
                return walk_bad(w, "key '%s': string element %llu refused", w->key,
                                (unsigned long long)i);
            if (walk_str(w, s, "string element"))
                return -1;
        } else {
            if (gguf_arrh_sub(a, i, &sub) != 0)
                return walk_bad(w, "key '%s': array element %llu refused", w->key,
                                (unsigned long long)i);
            if (sub.g != a->g || !walk_in(w, sub.first, 0))
                return walk_bad(w, "key '%s': bad handle for element %llu", w->key,
                                (unsigned long long)i);
            if (walk_arr(w, &sub, depth + 1))
                return -1;
        }
    }
    if (gguf_arrh_str(a, a->n, &s) != MG_EINVAL || gguf_arrh_sub(a, a->n, &sub) != MG_EINVAL)
        return walk_bad(w, "key '%s': element n accepted", w->key);
    if (a->elem_type == GGUF_TYPE_STRING && gguf_arrh_sub(a, 0, &sub) != MG_EINVAL)
        return walk_bad(w, "key '%s': sub-array access to a string array", w->key);
    return 0;
}

/* Every getter on key i; they must agree with its type and each other. */
static int walk_key(struct walk *w, const gguf *g, int64_t i, char *key)
{
    gguf_str nm = gguf_key_name(g, i), s;
    if (!walk_in(w, nm.ptr, nm.len) || nm.len == 0 || nm.len > 65535 || memchr(nm.ptr, 0, nm.len))
        return walk_bad(w, "key #%lld: bad name", (long long)i);
    memcpy(key, nm.ptr, nm.len);
    key[nm.len] = '\0';
    w->key = key;
    if (gguf_find_key(g, key) != i)
        return walk_bad(w, "key '%s': find gives %lld, not %lld", key,
                        (long long)gguf_find_key(g, key), (long long)i);
    enum gguf_type t = gguf_key_type(g, i);
    if ((unsigned)t >= GGUF_TYPE_COUNT)
        return walk_bad(w, "key '%s': type %d", key, (int)t);
    walk_mix(w, t);

    int64_t iv = 0;
    uint64_t uv = 0;
    double dv = 0;
    bool bv = false;
    int ri = gguf_get_int(g, key, &iv), ru = gguf_get_uint(g, key, &uv);
    int rf = gguf_get_float(g, key, &dv), rb = gguf_get_bool(g, key, &bv);
    int rs = gguf_get_str(g, key, &s);
    bool is_int = t <= GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
    bool is_float = t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64;
    if (is_int || t == GGUF_TYPE_BOOL) {
        if ((ri && ri != MG_EFORMAT) || (ru && ru != MG_EFORMAT) || (ri && ru) ||
            (!ri && !ru && (uint64_t)iv != uv))
            return walk_bad(w, "key '%s': int/uint disagree (%d %d)", key, ri, ru);
        walk_mix(w, ri ? uv : (uint64_t)iv);
    } else if (ri != MG_EFORMAT || ru != MG_EFORMAT) {
        return walk_bad(w, "key '%s': %s read as an integer", key, gguf_type_name(t));
    }
    if ((rf == 0) != (is_int || is_float))
        return walk_bad(w, "key '%s': float getter gives %d for %s", key, rf, gguf_type_name(t));
    if (rf == 0 && dv == dv)
        walk_mix(w, (uint64_t)(int64_t)(dv > 1e18 || dv < -1e18 ? 0 : dv));
    if ((rb == 0) != (t == GGUF_TYPE_BOOL) || (rb == 0 && (int64_t)bv != iv))
        return walk_bad(w, "key '%s': bool getter gives %d for %s", key, rb, gguf_type_name(t));
    if ((rs == 0) != (t == GGUF_TYPE_STRING))
        return walk_bad(w, "key '%s': string getter gives %d for %s", key, rs, gguf_type_name(t));
    if (rs == 0) {
        if (walk_str(w, s, "string value"))
            return -1;
        char small[32];
        int rc = gguf_get_cstr(g, key, small, sizeof small);
        int want = memchr(s.ptr, 0, s.len) ? MG_EFORMAT : s.len < sizeof small ? 0 : MG_ERANGE;
        if (rc != want || (rc == 0 && (strlen(small) != s.len || memcmp(small, s.ptr, s.len))))
            return walk_bad(w, "key '%s': cstr gives %d, want %d", key, rc, want);
    }

    enum gguf_type et;
    uint64_t n;
    const void *raw;
    gguf_arr a;
    int ra = gguf_get_arr(g, key, &et, &n, &raw), rh = gguf_arr_get(g, key, &a);
    if (t != GGUF_TYPE_ARRAY) {
        if (ra != MG_EFORMAT || rh != MG_EFORMAT || gguf_arr_str(g, key, 0, &s) != MG_EINVAL)
            return walk_bad(w, "key '%s': %s accepted as an array", key, gguf_type_name(t));
        return 0;
    }
    if (ra || rh || a.g != g || a.elem_type != et || a.n != n)
        return walk_bad(w, "key '%s': array getters disagree", key);
    if ((raw != NULL) != (walk_type_size(et) != 0) || (raw && raw != (const void *)a.first))
        return walk_bad(w, "key '%s': raw pointer wrong for %s elements", key, gguf_type_name(et));
    if (walk_arr(w, &a, 1))
        return -1;
    if (et == GGUF_TYPE_STRING) {
        for (uint64_t k = 0; k < walk_count(w, n); k++) {
            uint64_t j = walk_index(w, n, k);
            gguf_str s2;
            if (gguf_arr_str(g, key, j, &s) || gguf_arrh_str(&a, j, &s2) || s.ptr != s2.ptr ||
                s.len != s2.len)
                return walk_bad(w, "key '%s': arr_str(%llu) disagrees", key, (unsigned long long)j);
        }
    }
    if (gguf_arr_str(g, key, n, &s) != MG_EINVAL)
        return walk_bad(w, "key '%s': arr_str(n) accepted", key);
    return 0;
}

static int cmp_data(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    const char *px = x->data, *py = y->data;
    return (px > py) - (px < py);
}

/* Every tensor: shape, type, size, placement; first and last data byte. */
static int walk_tensors(struct walk *w, const gguf *g)
{
    int64_t n = gguf_tensor_count(g);
    size_t align = gguf_alignment(g), data_off = gguf_data_offset(g);
    w->key = "(tensors)";
    if (align == 0 || (align & (align - 1)))
        return walk_bad(w, "alignment %zu", align);
    if (n == 0)
        return 0;
    if (n < 0 || (uint64_t)n > w->len / 32 || data_off > w->len || data_off % align)
        return walk_bad(w, "%lld tensors, data section at %zu", (long long)n, data_off);
    const gguf_tensor **by = malloc((size_t)n * sizeof *by);
    if (!by)
        return walk_bad(w, "out of memory");
    int rc = -1;
    for (int64_t i = 0; i < n; i++) {
        const gguf_tensor *t = by[i] = gguf_tensor_at(g, i);
        if (!t || !t->name || strnlen(t->name, 257) == 0 || strnlen(t->name, 257) > 256) {
            walk_bad(w, "tensor #%lld: bad name", (long long)i);
            goto done;
        }
        if (gguf_tensor_find(g, t->name) != t) {
            walk_bad(w, "tensor '%s': find gives another", t->name);
            goto done;
        }
        const tensor_type_info *ti = tensor_type_get(t->type);
        size_t nbytes = 0;
        bool dims_ok = t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS && dims_ok; d++)
            dims_ok = d < t->n_dims ? t->ne[d] >= 0 : t->ne[d] == 1;
        if (!ti || !dims_ok || t->ne[0] % ti->block_elems ||
            tensor_bytes(t->type, t->ne, (int)t->n_dims, &nbytes) || nbytes != t->nbytes) {
            walk_bad(w, "tensor '%s': type %u, shape or size (%zu) inconsistent", t->name, t->type,
                     t->nbytes);
            goto done;
        }
        const unsigned char *p = t->data;
        if (t->offset % align || t->offset > w->len - data_off ||
            p != w->buf + data_off + t->offset || !walk_in(w, p, t->nbytes)) {
            walk_bad(w, "tensor '%s': data [offset %llu, %zu bytes] outside the buffer (%zu)",
                     t->name, (unsigned long long)t->offset, t->nbytes, w->len);
            goto done;
        }
        walk_mix(w, t->offset ^ t->nbytes ^ t->type);
        if (t->nbytes) /* touch the first and the last byte */
            walk_mix(w, p[0] * 256u + p[t->nbytes - 1]);
    }
    if (gguf_tensor_at(g, n) || gguf_tensor_at(g, -1)) {
        walk_bad(w, "tensor_at out of range gives a tensor");
        goto done;
    }
    qsort(by, (size_t)n, sizeof *by, cmp_data);
    const unsigned char *end = NULL;
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = by[i]->data;
        if (by[i]->nbytes == 0)
            continue;
        if (end && p < end) {
            walk_bad(w, "tensor '%s' overlaps the one before it", by[i]->name);
            goto done;
        }
        end = p + by[i]->nbytes;
    }
    rc = 0;
done:
    free(by);
    return rc;
}

/* Walks g, opened on buf[0..len). Returns 0 when every accessor is
 * consistent, else -1 with the reason in why. *fp: a fingerprint of what
 * was read (equal for equal files). */
static int gguf_walk(const gguf *g, const unsigned char *buf, size_t len, uint64_t max_elems,
                     uint64_t *fp, char *why, size_t whylen)
{
    struct walk w = {.buf = buf,
                     .len = len,
                     .max_elems = max_elems,
                     .fp = 14695981039346656037ull,
                     .key = "",
                     .why = why,
                     .whylen = whylen};
    why[0] = '\0';
    if (gguf_file_size(g) != len || (gguf_version(g) != 2 && gguf_version(g) != 3))
        return walk_bad(&w, "file size %zu / version %u", gguf_file_size(g), gguf_version(g));
    int64_t n = gguf_key_count(g);
    if (n < 0 || (uint64_t)n > len / 14)
        return walk_bad(&w, "key count %lld", (long long)n);
    char *key = malloc(65537);
    if (!key)
        return walk_bad(&w, "out of memory");
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i++)
        rc = walk_key(&w, g, i, key);
    /* a name one byte over the limit cannot be a key (any shorter one can:
     * the fuzzer found a file holding the key we used to probe with) */
    memset(key, 'k', 65536);
    key[65536] = '\0';
    if (rc == 0 && (gguf_key_name(g, n).ptr || gguf_key_type(g, n) != GGUF_TYPE_COUNT ||
                    gguf_find_key(g, key) != -1))
        rc = walk_bad(&w, "key accessors out of range");
    free(key);
    if (rc == 0)
        rc = walk_tensors(&w, g);
    if (fp)
        *fp = w.fp ^ (uint64_t)n;
    return rc;
}

#ifndef GGUF_CORRUPT_NO_MAIN

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

/* ---- PRNG (splitmix64) -------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return n ? rng_next(s) % n : 0;
}

/* ---- byte buffers and a small GGUF writer ------------------------------- */

struct wb {
    unsigned char *p;
    size_t len, cap;
};

static void die(const char *msg)
{
    fprintf(stderr, "gguf_corrupt: %s\n", msg);
    exit(2);
}

static void wb_put(struct wb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->len + n)
            c *= 2;
        b->p = realloc(b->p, c);
        if (!b->p)
            die("out of memory");
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void wb_le(struct wb *b, uint64_t v, size_t bytes)
{
    unsigned char t[8];
    for (size_t i = 0; i < bytes; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    wb_put(b, t, bytes);
}

static void wb_str(struct wb *b, const char *s, uint64_t n)
{
    wb_le(b, n, 8);
    wb_put(b, s, (size_t)n);
}

/* An exactly-sized malloc'd copy (ASan then sees any read past its end). */
static unsigned char *exact_copy(const unsigned char *p, size_t n)
{
    unsigned char *c = malloc(n ? n : 1);
    if (!c)
        die("out of memory");
    memcpy(c, p, n);
    return c;
}

/* A file under construction: encoded key/values, tensor infos, data. */
struct gw {
    struct wb kv, ti, data;
    uint64_t n_kv, n_t;
    size_t align;
};

static struct wb *gw_key(struct gw *w, const char *key, enum gguf_type t)
{
    wb_str(&w->kv, key, strlen(key));
    wb_le(&w->kv, t, 4);
    w->n_kv++;
    return &w->kv;
}

static void gw_tensor(struct gw *w, const char *name, uint32_t type, uint32_t n_dims,
                      const int64_t *ne, const void *data, size_t nbytes)
{
    size_t off = (w->data.len + w->align - 1) / w->align * w->align;
    unsigned char zero[64] = {0};
    while (w->data.len < off)
        wb_put(&w->data, zero, off - w->data.len < 64 ? off - w->data.len : 64);
    wb_put(&w->data, data, nbytes);
    wb_str(&w->ti, name, strlen(name));
    wb_le(&w->ti, n_dims, 4);
    for (uint32_t d = 0; d < n_dims; d++)
        wb_le(&w->ti, (uint64_t)ne[d], 8);
    wb_le(&w->ti, type, 4);
    wb_le(&w->ti, off, 8);
    w->n_t++;
}

static unsigned char *gw_finish(struct gw *w, size_t *len)
{
    struct wb b = {0};
    wb_put(&b, "GGUF", 4);
    wb_le(&b, 3, 4);
    wb_le(&b, w->n_t, 8);
    wb_le(&b, w->n_kv, 8);
    wb_put(&b, w->kv.p, w->kv.len);
    wb_put(&b, w->ti.p, w->ti.len);
    if (w->n_t) {
        unsigned char zero = 0;
        while (b.len % w->align)
            wb_put(&b, &zero, 1);
        wb_put(&b, w->data.p, w->data.len);
    }
    unsigned char *out = exact_copy(b.p, b.len);
    *len = b.len;
    free(b.p);
    free(w->kv.p), free(w->ti.p), free(w->data.p);
    return out;
}

/* ---- the seed ----------------------------------------------------------- */

/* Built-in: every value type, nested arrays, a vocabulary, seven tensor
 * types (one zero-sized), alignment 64. */
static unsigned char *seed_builtin(size_t *len)
{
    struct gw w = {.align = 64};
    struct wb *b;
    uint64_t r = 42;
    char tok[64];

    b = gw_key(&w, "general.architecture", GGUF_TYPE_STRING), wb_str(b, "qwen3moe", 8);
    b = gw_key(&w, "general.alignment", GGUF_TYPE_UINT32), wb_le(b, 64, 4);
    b = gw_key(&w, "general.name", GGUF_TYPE_STRING), wb_str(b, "corrupt \xe2\x9c\x93", 11);
    static const enum gguf_type scalars[] = {GGUF_TYPE_UINT8,   GGUF_TYPE_INT8,   GGUF_TYPE_UINT16,
                                             GGUF_TYPE_INT16,   GGUF_TYPE_UINT32, GGUF_TYPE_INT32,
                                             GGUF_TYPE_FLOAT32, GGUF_TYPE_BOOL,   GGUF_TYPE_UINT64,
                                             GGUF_TYPE_INT64,   GGUF_TYPE_FLOAT64};
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++) {
        enum gguf_type t = scalars[i];
        snprintf(tok, sizeof tok, "qwen3moe.%s_value", gguf_type_name(t));
        b = gw_key(&w, tok, t);
        wb_le(b, t == GGUF_TYPE_BOOL ? 1 : 0x8877665544332211ull, (size_t)walk_type_size(t));
        snprintf(tok, sizeof tok, "arr.%s", gguf_type_name(t));
        b = gw_key(&w, tok, GGUF_TYPE_ARRAY);
        wb_le(b, t, 4), wb_le(b, 5, 8);
        for (int k = 0; k < 5; k++)
            wb_le(b, t == GGUF_TYPE_BOOL ? (uint64_t)(k & 1) : rng_next(&r),
                  (size_t)walk_type_size(t));
    }
    b = gw_key(&w, "qwen3moe.block_count", GGUF_TYPE_UINT32), wb_le(b, 2, 4);
    /* names one bit apart ('a' 0x61, 'c' 0x63), bools: a single flip makes
     * a duplicate key or a bool that is neither 0 nor 1 */
    b = gw_key(&w, "bit.a", GGUF_TYPE_BOOL), wb_le(b, 0, 1);
    b = gw_key(&w, "bit.c", GGUF_TYPE_BOOL), wb_le(b, 1, 1);
    b = gw_key(&w, "empty.string", GGUF_TYPE_STRING), wb_str(b, "", 0);
    b = gw_key(&w, "empty.array", GGUF_TYPE_ARRAY), wb_le(b, GGUF_TYPE_STRING, 4), wb_le(b, 0, 8);

    /* a vocabulary with scores, types and merges */
    enum { N_VOCAB = 300 };
    b = gw_key(&w, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    wb_le(b, GGUF_TYPE_STRING, 4), wb_le(b, N_VOCAB, 8);
    for (int i = 0; i < N_VOCAB; i++) {
        int n = i == 7 ? 0 : snprintf(tok, sizeof tok, "%.*s\xc4\xa0t%d", i % 5, "abcde", i);
        wb_str(b, tok, (uint64_t)n);
    }
    b = gw_key(&w, "tokenizer.ggml.scores", GGUF_TYPE_ARRAY);
    wb_le(b, GGUF_TYPE_FLOAT32, 4), wb_le(b, N_VOCAB, 8);
    for (int i = 0; i < N_VOCAB; i++) {
        float f = -(float)i;
        uint32_t u;
        memcpy(&u, &f, 4);
        wb_le(b, u, 4);
    }
    b = gw_key(&w, "tokenizer.ggml.token_type", GGUF_TYPE_ARRAY);
    wb_le(b, GGUF_TYPE_INT32, 4), wb_le(b, N_VOCAB, 8);
    for (int i = 0; i < N_VOCAB; i++)
        wb_le(b, 1 + (uint64_t)(i % 6), 4);
    b = gw_key(&w, "tokenizer.ggml.merges", GGUF_TYPE_ARRAY);
    wb_le(b, GGUF_TYPE_STRING, 4), wb_le(b, 40, 8);
    for (int i = 0; i < 40; i++) {
        int n = snprintf(tok, sizeof tok, "t%d t%d", i, i + 1);
        wb_str(b, tok, (uint64_t)n);
    }

    /* nested: [[u16 x3], [], [[str, str], [str]], [[[bool]]]] — mixed element
     * types are not allowed within one array, so each level is one type */
    b = gw_key(&w, "nested.u16", GGUF_TYPE_ARRAY);
    wb_le(b, GGUF_TYPE_ARRAY, 4), wb_le(b, 3, 8);
    wb_le(b, GGUF_TYPE_UINT16, 4), wb_le(b, 3, 8), wb_le(b, 1, 2), wb_le(b, 2, 2), wb_le(b, 3, 2);
    wb_le(b, GGUF_TYPE_UINT16, 4), wb_le(b, 0, 8);
    wb_le(b, GGUF_TYPE_UINT16, 4), wb_le(b, 1, 8), wb_le(b, 65535, 2);
    b = gw_key(&w, "nested.str", GGUF_TYPE_ARRAY);
    wb_le(b, GGUF_TYPE_ARRAY, 4), wb_le(b, 2, 8);
    wb_le(b, GGUF_TYPE_ARRAY, 4), wb_le(b, 2, 8);
    wb_le(b, GGUF_TYPE_STRING, 4), wb_le(b, 2, 8), wb_str(b, "ab", 2), wb_str(b, "", 0);
    wb_le(b, GGUF_TYPE_STRING, 4), wb_le(b, 1, 8), wb_str(b, "xyz", 3);
    wb_le(b, GGUF_TYPE_ARRAY, 4), wb_le(b, 1, 8);
    wb_le(b, GGUF_TYPE_ARRAY, 4), wb_le(b, 1, 8);
    wb_le(b, GGUF_TYPE_BOOL, 4), wb_le(b, 2, 8), wb_le(b, 1, 1), wb_le(b, 0, 1);

    /* tensors: data is random bytes (the reader never looks inside) */
    static const struct {
        const char *name;
        uint32_t type, n_dims;
        int64_t ne[4];
    } ts[] = {
        {"token_embd.weight", TENSOR_F32, 2, {16, 4, 1, 1}},
        {"blk.0.attn_norm.weight", TENSOR_F16, 1, {32, 1, 1, 1}},
        {"blk.1.attn_norm.weight", TENSOR_F16, 1, {32, 1, 1, 1}}, /* '0'/'1': one bit */
        {"blk.0.attn_q.weight", TENSOR_Q8_0, 2, {64, 2, 1, 1}},
        {"blk.0.ffn_gate_exps.weight", TENSOR_Q4_K, 3, {256, 2, 2, 1}},
        {"blk.0.ffn_down_exps.weight", TENSOR_Q6_K, 3, {256, 1, 2, 1}},
        {"blk.0.ffn_up_exps.weight", TENSOR_Q4_0, 4, {32, 2, 1, 2}},
        {"blk.0.empty", TENSOR_F32, 2, {16, 0, 1, 1}},
        {"output_norm.weight", TENSOR_BF16, 1, {8, 1, 1, 1}},
    };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        size_t nbytes;
        if (tensor_bytes(ts[i].type, ts[i].ne, (int)ts[i].n_dims, &nbytes))
            die("bad built-in tensor");
        unsigned char *data = malloc(nbytes ? nbytes : 1);
        for (size_t k = 0; k < nbytes; k++)
            data[k] = (unsigned char)rng_next(&r);
        gw_tensor(&w, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne, data, nbytes);
        free(data);
    }
    return gw_finish(&w, len);
}

/* Re-encodes array a with at most cut elements per level. */
static void enc_arr(struct wb *b, const gguf_arr *a, uint64_t cut)
{
    uint64_t n = a->n < cut ? a->n : cut;
    wb_le(b, a->elem_type, 4);
    wb_le(b, n, 8);
    size_t sz = walk_type_size(a->elem_type);
    if (sz) {
        wb_put(b, a->first, (size_t)n * sz);
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        gguf_arr sub;
        if (a->elem_type == GGUF_TYPE_STRING && gguf_arrh_str(a, i, &s) == 0)
            wb_str(b, s.ptr, s.len);
        else if (gguf_arrh_sub(a, i, &sub) == 0)
            enc_arr(b, &sub, cut);
        else
            die("re-encoding: element refused");
    }
}

/* FILE's seed: every key (arrays cut to 512 elements) and every tensor
 * (type, rank, leading data bytes; shape cut to a few KiB). */
static unsigned char *seed_from(const gguf *g, size_t *len)
{
    struct gw w = {.align = gguf_alignment(g)};
    char key[65536];
    for (int64_t i = 0; i < gguf_key_count(g); i++) {
        gguf_str nm = gguf_key_name(g, i), s;
        snprintf(key, sizeof key, "%.*s", (int)nm.len, nm.ptr);
        enum gguf_type t = gguf_key_type(g, i);
        struct wb *b = gw_key(&w, key, t);
        int64_t iv = 0;
        uint64_t uv = 0;
        double dv = 0;
        gguf_arr a;
        if (t == GGUF_TYPE_STRING && gguf_get_str(g, key, &s) == 0) {
            wb_str(b, s.ptr, s.len);
        } else if (t == GGUF_TYPE_ARRAY && gguf_arr_get(g, key, &a) == 0) {
            enc_arr(b, &a, 512);
        } else if (t == GGUF_TYPE_FLOAT32 && gguf_get_float(g, key, &dv) == 0) {
            float f = (float)dv;
            uint32_t u;
            memcpy(&u, &f, 4);
            wb_le(b, u, 4);
        } else if (t == GGUF_TYPE_FLOAT64 && gguf_get_float(g, key, &dv) == 0) {
            memcpy(&uv, &dv, 8);
            wb_le(b, uv, 8);
        } else if (gguf_get_uint(g, key, &uv) == 0) {
            wb_le(b, uv, walk_type_size(t));
        } else if (gguf_get_int(g, key, &iv) == 0) {
            wb_le(b, (uint64_t)iv, walk_type_size(t));
        } else {
            die("re-encoding: key refused");
        }
    }
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const tensor_type_info *ti = tensor_type_get(t->type);
        int64_t ne[GGUF_MAX_DIMS];
        size_t nbytes;
        ne[0] = t->ne[0] > 1024 ? 1024 / ti->block_elems * ti->block_elems : t->ne[0];
        if (ne[0] == 0 && t->ne[0] > 0)
            ne[0] = ti->block_elems;
        for (int d = 1; d < GGUF_MAX_DIMS; d++)
            ne[d] = t->ne[d] < 2 ? t->ne[d] : 2;
        if (tensor_bytes(t->type, ne, (int)t->n_dims, &nbytes) || nbytes > t->nbytes)
            die("re-encoding: tensor shape");
        gw_tensor(&w, t->name, t->type, t->n_dims, ne, t->data, nbytes);
    }
    return gw_finish(&w, len);
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct wb b = {0};
    unsigned char chunk[1 << 16];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        wb_put(&b, chunk, n);
    fclose(f);
    unsigned char *out = exact_copy(b.p, b.len);
    *len = b.len;
    free(b.p);
    return out;
}

/* ---- mutations ---------------------------------------------------------- */

struct corpus {
    const unsigned char *seed;
    size_t len;
    size_t hdr;     /* bytes before the data section: most mutations go here */
    size_t *fields; /* offsets in the seed that hold a small u64: counts, lengths */
    size_t n_fields;
};

/* clang-format off */
static const uint64_t u64_edges[] = {
    0, 1, 2, 7, 8, 12, 13, 31, 32, 33, 63, 64, 255, 256, 257, 65535, 65536, 0x7fffffffu,
    0xffffffffu, 1ull << 32, (1ull << 32) + 1, 1ull << 62, (1ull << 63) - 1, 1ull << 63,
    UINT64_MAX - 7, UINT64_MAX - 1, UINT64_MAX};
static const uint32_t u32_edges[] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 24, 29, 30, 39, 40, 255,
    0x80000000u, 0xffffffffu};
/* clang-format on */

/* A mutation position: usually in the header, sometimes anywhere. */
static size_t pick_pos(uint64_t *r, size_t len, size_t hdr)
{
    if (len == 0)
        return 0;
    if (hdr && hdr < len && rng_below(r, 8) != 0)
        return (size_t)rng_below(r, hdr);
    return (size_t)rng_below(r, len);
}

static size_t pick_field(uint64_t *r, const struct corpus *c, size_t len)
{
    if (c->n_fields && rng_below(r, 4) != 0) {
        size_t p = c->fields[rng_below(r, c->n_fields)];
        if (p < len)
            return p;
    }
    return pick_pos(r, len, c->hdr);
}

static void put_le(unsigned char *p, size_t room, uint64_t v, size_t bytes)
{
    for (size_t i = 0; i < bytes && i < room; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* One size-preserving mutation of m[0..len) at positions below lim (0: the
 * whole buffer). Appends (pos, old 8 bytes) to undo when undo is not NULL. */
static void mutate_inplace(uint64_t *r, const struct corpus *c, unsigned char *m, size_t len,
                           size_t lim, struct wb *undo)
{
    if (len == 0)
        return;
    size_t pos = lim ? (size_t)rng_below(r, lim < len ? lim : len) : pick_field(r, c, len);
    if (undo) {
        uint64_t p64 = pos, old = 0;
        memcpy(&old, m + pos, len - pos < 8 ? len - pos : 8);
        wb_put(undo, &p64, 8);
        wb_put(undo, &old, 8);
    }
    switch (rng_below(r, 6)) {
    case 0: /* bit flip */ m[pos] ^= (unsigned char)(1u << rng_below(r, 8)); break;
    case 1: /* random bytes */
        put_le(m + pos, len - pos, rng_next(r), 1 + (size_t)rng_below(r, 8));
        break;
    case 2: /* a u64 at a boundary value, or relative to the size */
    case 3: {
        uint64_t v = u64_edges[rng_below(r, sizeof u64_edges / sizeof u64_edges[0])];
        if (rng_below(r, 4) == 0)
            v = (uint64_t)(len - pos) - 8 + rng_below(r, 3);
        put_le(m + pos, len - pos, v, 8);
        break;
    }
    case 4: /* a u32: a type id, n_dims or alignment */
        put_le(m + pos, len - pos, u32_edges[rng_below(r, sizeof u32_edges / sizeof u32_edges[0])],
               4);
        break;
    default: { /* nudge a u64 by -16..+16 */
        uint64_t v = 0;
        memcpy(&v, m + pos, len - pos < 8 ? len - pos : 8);
        v += rng_below(r, 33) - 16;
        put_le(m + pos, len - pos, v, 8);
        break;
    }
    }
}

/* A corrupted copy of the seed: 1..4 mutations, size-changing ones
 * included. Returns an exactly-sized malloc'd buffer. */
static unsigned char *mutate(uint64_t *r, const struct corpus *c, size_t *out_len)
{
    struct wb m = {0};
    wb_put(&m, c->seed, c->len);
    int ops = 1 + (int)rng_below(r, 4);
    for (int op = 0; op < ops; op++) {
        uint64_t kind = rng_below(r, 16);
        if (kind < 10) {
            mutate_inplace(r, c, m.p, m.len, 0, NULL);
        } else if (kind < 12) { /* truncate: usually inside the header */
            m.len = rng_below(r, 2) ? pick_pos(r, m.len, c->hdr) : (size_t)rng_below(r, m.len);
        } else if (kind < 14 && m.len) { /* duplicate a range into another place */
            size_t a = pick_pos(r, m.len, c->hdr), k = 1 + (size_t)rng_below(r, 64);
            size_t at = pick_pos(r, m.len, c->hdr);
            if (k > m.len - a)
                k = m.len - a;
            unsigned char *dup = exact_copy(m.p + a, k);
            wb_put(&m, dup, k); /* grow, then shift the tail */
            memmove(m.p + at + k, m.p + at, m.len - k - at);
            memcpy(m.p + at, dup, k);
            free(dup);
        } else if (kind < 15 && m.len) { /* delete a range */
            size_t a = pick_pos(r, m.len, c->hdr), k = 1 + (size_t)rng_below(r, 64);
            if (k > m.len - a)
                k = m.len - a;
            memmove(m.p + a, m.p + a + k, m.len - a - k);
            m.len -= k;
        } else { /* insert random bytes */
            size_t at = pick_pos(r, m.len, c->hdr), k = 1 + (size_t)rng_below(r, 16);
            unsigned char rnd[16];
            for (size_t i = 0; i < k; i++)
                rnd[i] = (unsigned char)rng_next(r);
            wb_put(&m, rnd, k);
            memmove(m.p + at + k, m.p + at, m.len - k - at);
            memcpy(m.p + at, rnd, k);
        }
    }
    unsigned char *out = exact_copy(m.p, m.len);
    *out_len = m.len;
    free(m.p);
    return out;
}

/* Offsets of the header's u64 fields that hold small values: counts, string
 * lengths, dims, offsets (text bytes make large values, so few false hits). */
static void find_fields(struct corpus *c)
{
    c->n_fields = 0;
    c->fields = malloc((c->hdr + 1) * sizeof *c->fields);
    if (!c->fields)
        die("out of memory");
    for (size_t p = 0; p + 8 <= c->hdr; p++) {
        uint64_t v = 0;
        memcpy(&v, c->seed + p, 8);
        if (v > 0 && v < (1u << 24) && (p == 0 || c->seed[p - 1] != 0 || v > 255))
            c->fields[c->n_fields++] = p;
    }
}

/* ---- running one input -------------------------------------------------- */

struct stats {
    long ok, by_code[16], unexpected;
    long file_runs, full_runs;
    long failed_prints;
};

static void save_failure(const unsigned char *p, size_t n, uint64_t seed, long it)
{
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/gguf_corrupt_fail_%llu_%ld.gguf", dir ? dir : "/tmp",
             (unsigned long long)seed, it);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
        fprintf(stderr, "gguf_corrupt: input saved as %s\n", path);
    }
}

/* Opens p[0..n) from memory (and from a temp file when path is set) and
 * walks it. Returns true when everything was consistent. */
static bool run_one(const unsigned char *p, size_t n, uint64_t max_elems, const char *path,
                    struct stats *st, char *why, size_t whylen)
{
    gguf *g = NULL;
    char err[512] = "";
    uint64_t fp = 0;
    int rc = gguf_open_memory(&g, p, n, err, sizeof err);
    why[0] = '\0';
    if (rc == 0) {
        st->ok++;
        int w = gguf_walk(g, p, n, max_elems, &fp, why, whylen);
        gguf_close(g);
        if (w)
            return false;
    } else {
        st->by_code[-rc < 16 ? -rc : 15]++;
        if (g || (rc != MG_EFORMAT && rc != MG_EUNSUPPORTED) || strncmp(err, "gguf: ", 6) != 0 ||
            strlen(err) < 12) {
            st->unexpected++;
            snprintf(why, whylen, "open gave %s \"%s\"", mg_err_name(rc), err);
            return false;
        }
    }
    if (!path)
        return true;

    /* the same bytes through a file and mmap: same answer, same content */
    st->file_runs++;
    int fd = open(path, O_WRONLY | O_TRUNC);
    bool wrote = fd >= 0 && write(fd, p, n) == (ssize_t)n;
    if (fd >= 0)
        close(fd);
    if (!wrote) {
        snprintf(why, whylen, "cannot write %s", path);
        return false;
    }
    gguf *gf = NULL;
    char err2[512] = "";
    int rc2 = gguf_open(&gf, path, err2, sizeof err2);
    if (rc2 != rc || strcmp(err, err2) != 0) {
        snprintf(why, whylen, "file open gave %s \"%s\", memory %s \"%s\"", mg_err_name(rc2), err2,
                 mg_err_name(rc), err);
        gguf_close(gf);
        return false;
    }
    if (rc2 != 0)
        return true;
    /* where the mapping starts: the first key's name is at offset 32 */
    const unsigned char *base = NULL;
    if (gguf_key_count(gf) > 0)
        base = (const unsigned char *)gguf_key_name(gf, 0).ptr - 32;
    else if (gguf_tensor_count(gf) > 0)
        base = (const unsigned char *)gguf_tensor_at(gf, 0)->data - gguf_data_offset(gf) -
               gguf_tensor_at(gf, 0)->offset;
    uint64_t fp2 = fp;
    bool ok = base == NULL || gguf_walk(gf, base, n, max_elems, &fp2, why, whylen) == 0;
    if (ok && fp2 != fp) {
        snprintf(why, whylen, "the file and the memory open read different contents");
        ok = false;
    }
    gguf_close(gf);
    return ok;
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    long count = 10000;
    uint64_t seed = 1;
    const char *file = NULL, *seed_out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            count = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            seed_out = argv[++i];
        } else if (argv[i][0] != '-' && !file) {
            file = argv[i];
        } else {
            fprintf(stderr, "usage: gguf_corrupt [-n COUNT] [-s SEED] [-o SEEDFILE] [FILE]\n");
            return 2;
        }
    }

    /* the seed, and FILE whole for the full-file iterations */
    struct corpus c = {0};
    unsigned char *seed_buf, *full = NULL;
    size_t full_len = 0, full_hdr = 0;
    char err[512];
    if (file) {
        full = read_file(file, &full_len);
        gguf *g = NULL;
        int rc = full ? gguf_open_memory(&g, full, full_len, err, sizeof err) : MG_EIO;
        if (rc) {
            fprintf(stderr, "gguf_corrupt: %s: %s\n", file, full ? err : "cannot read");
            return 2;
        }
        full_hdr = gguf_tensor_count(g) ? gguf_data_offset(g) : full_len;
        seed_buf = seed_from(g, &c.len);
        gguf_close(g);
    } else {
        seed_buf = seed_builtin(&c.len);
    }
    c.seed = seed_buf;
    if (seed_out) {
        FILE *f = fopen(seed_out, "wb");
        if (!f || fwrite(c.seed, 1, c.len, f) != c.len || fclose(f) != 0)
            die("cannot write the seed file");
        free(seed_buf);
        free(full);
        return 0;
    }
    gguf *g = NULL;
    char why[1024];
    if (gguf_open_memory(&g, c.seed, c.len, err, sizeof err)) {
        fprintf(stderr, "gguf_corrupt: the seed does not open: %s\n", err);
        return 2;
    }
    c.hdr = gguf_tensor_count(g) ? gguf_data_offset(g) : c.len;
    if (gguf_walk(g, c.seed, c.len, UINT64_MAX, NULL, why, sizeof why)) {
        fprintf(stderr, "gguf_corrupt: the seed walks inconsistently: %s\n", why);
        return 2;
    }
    printf("gguf_corrupt: seed %s: %zu bytes, %lld keys, %lld tensors, header %zu bytes\n",
           file ? file : "(built-in)", c.len, (long long)gguf_key_count(g),
           (long long)gguf_tensor_count(g), c.hdr);
    gguf_close(g);
    find_fields(&c);

    char path[512];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/gguf_corrupt_XXXXXX", dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        die("cannot create a temp file");
    close(fd);

    struct stats st = {0};
    long passed = 0, failed = 0;
    uint64_t r = seed;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long it = 0; it < count; it++) {
        size_t n;
        unsigned char *m = mutate(&r, &c, &n);
        bool ok = run_one(m, n, UINT64_MAX, it % 100 == 0 ? path : NULL, &st, why, sizeof why);
        if (!ok && st.failed_prints++ < 10) {
            fprintf(stderr, "gguf_corrupt: FAIL iteration %ld (seed %llu): %s\n", it,
                    (unsigned long long)seed, why);
            save_failure(m, n, seed, it);
        }
        free(m);

        /* FILE whole, once every 100 iterations: size-preserving mutations
         * of its first MiB (undone after), or a truncation anywhere */
        if (ok && full && it % 100 == 50) {
            st.full_runs++;
            size_t lim = full_hdr < ((size_t)1 << 20) ? full_hdr : ((size_t)1 << 20);
            if (rng_below(&r, 2)) {
                size_t cut = (size_t)rng_below(&r, full_len);
                unsigned char *tc = cut <= ((size_t)4 << 20) ? exact_copy(full, cut) : NULL;
                ok = run_one(tc ? tc : full, cut, 4096, NULL, &st, why, sizeof why);
                free(tc);
            } else {
                struct wb undo = {0};
                int ops = 1 + (int)rng_below(&r, 3);
                for (int k = 0; k < ops; k++)
                    mutate_inplace(&r, &c, full, full_len, lim, &undo);
                ok = run_one(full, full_len, 4096, NULL, &st, why, sizeof why);
                for (size_t u = undo.len; u >= 16; u -= 16) { /* restore, last first */
                    uint64_t pos, old;
                    memcpy(&pos, undo.p + u - 16, 8);
                    memcpy(&old, undo.p + u - 8, 8);
                    memcpy(full + pos, &old, full_len - pos < 8 ? full_len - pos : 8);
                }
                free(undo.p);
            }
            if (!ok && st.failed_prints++ < 10)
                fprintf(stderr,
                        "gguf_corrupt: FAIL iteration %ld on the full file (seed %llu): %s\n", it,
                        (unsigned long long)seed, why);
        }
        if (ok)
            passed++;
        else
            failed++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unlink(path);

    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("gguf_corrupt: seed %llu, %ld iterations in %.1f s (%ld through a file, %ld on the "
           "full FILE): ok %ld",
           (unsigned long long)seed, count, secs, st.file_runs, st.full_runs, st.ok);
    for (int k = 1; k < 16; k++)
        if (st.by_code[k])
            printf(", %s %ld", mg_err_name(-k), st.by_code[k]);
    printf(", unexpected %ld\n", st.unexpected);
    printf("gguf_corrupt: %ld passed, %ld failed\n", passed, failed);
    free(seed_buf);
    free(full);
    free(c.fields);
    return failed ? 1 : 0;
}

#endif /* GGUF_CORRUPT_NO_MAIN */
