/* moegate — GGUF v2/v3 reader (format and API in gguf.h).
 *
 * How it works. gguf_open maps the file read-only (gguf_open_memory borrows
 * the caller's buffer) and parse() walks the header once, front to back,
 * with a bounds-checked cursor. It builds, and copies nothing else:
 *   - kvs[]: one record per key (name, type, file offset of the value);
 *     scalars are decoded on demand from the mapping;
 *   - for each top-level array of strings or of arrays, an index holding the
 *     file offset of every element, so element i is O(1): a 150k-token
 *     vocabulary costs one pass and 8 bytes per token at open;
 *   - kv_sorted[]: the keys sorted by name, for O(log n) lookup and to find
 *     duplicates;
 *   - tensors[] with names copied (NUL-terminated) into one arena, and
 *     tensor_sorted[] by name for O(log n) lookup.
 * Deeper arrays are not indexed: element i of a nested array is found by
 * skipping i elements (the header allows it; nested arrays are rare and
 * small). Versions 2 and 3 share this layout (3 only added big-endian
 * files, which we refuse: their version field reads as 0x03000000); v1 had
 * 32-bit counts and is refused.
 *
 * Invariants after a successful open (accessors rely on them, and re-check
 * nothing but their own arguments):
 *   - every value, string and array element lies inside [0, size); value
 *     types are < GGUF_TYPE_COUNT; bools are 0 or 1; arrays nest at most
 *     MAX_NESTING levels (a top-level array is level 1);
 *   - keys are unique, 1..MAX_KEY_LEN bytes, no NUL byte (the specification's
 *     limit is 65535); tensor names are unique, 1..MAX_NAME_LEN bytes, no
 *     NUL byte (the specification says 64; we accept up to 256 so that a
 *     file from a lenient writer still loads);
 *   - each tensor has a known type, 1..4 dims, every ne >= 0 (zero-sized
 *     tensors are accepted: nbytes 0), ne[0] a multiple of the type's block,
 *     an element count that fits int64, an offset that is a multiple of the
 *     alignment, data inside the file, and no overlap with another tensor.
 *
 * Untrusted counts. A count read from the file is first checked against the
 * bytes that remain (each element needs at least its minimum encoded size:
 * 1 byte for a uint8, 8 for a string, 12 for a nested array, 14 for a
 * key/value, 33 for a tensor info), so an absurd count fails at once with a
 * clear message. Arrays indexed at open then grow with the elements actually
 * parsed, never to the claimed count, so memory stays proportional to the
 * header bytes read even when a huge file carries a corrupt count. Bounds
 * are always tested as "n <= size - pos", which cannot overflow.
 *
 * Errors: the first problem stops the parse; its one message names the key
 * or tensor, the field and the byte offset. Names that come from the file
 * are shown at most 64 bytes long with non-printable bytes as '?'.
 *
 * Ownership and threads: a gguf object owns its indexes and the mapping it
 * made; it is immutable after open, so accessors are safe from any thread.
 * Fields are decoded as little-endian from possibly unaligned bytes, so
 * host endianness and field alignment do not matter. A mapped file that
 * another process truncates while it is open raises SIGBUS on access, as
 * with any mmap.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.h"
#include "tensor.h"

#define MAX_KEY_LEN  65535u
#define MAX_NAME_LEN 256u
#define MAX_NESTING  8
/* Smallest encodings: a key/value is a u64 length, >= 1 key byte, a u32
 * type and >= 1 value byte; a tensor info a u64 length, >= 1 name byte, a
 * u32 n_dims, >= 1 u64 ne, a u32 type and a u64 offset. */
#define MIN_KV_BYTES          14
#define MIN_TENSOR_INFO_BYTES 33
#define SHOW_BUF              72 /* a name as shown: 64 bytes, "...", NUL */

struct kv {
    const char *key; /* in the mapping, NOT NUL-terminated */
    uint32_t key_len;
    enum gguf_type type;
    size_t val; /* file offset of the value */
    /* arrays only (type == GGUF_TYPE_ARRAY) */
    enum gguf_type elem_type;
    uint64_t n;
    size_t first;    /* file offset of the first element */
    uint64_t *index; /* string/array elements: file offset of each; else NULL */
};

struct gguf {
    const unsigned char *base;
    size_t size;
    bool mapped; /* base is our mapping of size bytes: munmap at close */
    uint32_t version;
    size_t alignment;
    size_t data_off;
    int64_t n_kv;
    struct kv *kvs;        /* [n_kv], file order */
    struct kv **kv_sorted; /* [n_kv], by key bytes */
    int64_t n_tensors;
    gguf_tensor *tensors;              /* [n_tensors], file order */
    const gguf_tensor **tensor_sorted; /* [n_tensors], by name */
    char *names;                       /* arena of the NUL-terminated tensor names */
};

/* ---- little-endian decoding and type table ------------------------------ */

static uint16_t le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/* On little-endian hosts one unaligned load (memcpy) is both the fastest
 * form and a single access for the sanitizers; elsewhere, bytes. */
static uint32_t le32(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#else
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

static uint64_t le64(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
#endif
}

static const char *const type_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

const char *gguf_type_name(enum gguf_type t)
{
    if ((unsigned)t >= GGUF_TYPE_COUNT)
        return "unknown";
    return type_names[t];
}

/* Encoded size of a fixed-size scalar; 0 for string and array. */
static size_t type_size(uint32_t t)
{
    static const unsigned char size[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_TYPE_COUNT ? size[t] : 0;
}

/* Smallest encoding of one value of type t: a string is at least its u64
 * length, an array its u32 element type and u64 count. */
static size_t type_min_size(uint32_t t)
{
    if (t == GGUF_TYPE_STRING)
        return 8;
    if (t == GGUF_TYPE_ARRAY)
        return 12;
    return type_size(t);
}

/* ---- errors ------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int code,
                                                      const char *fmt, ...)
{
    if (err && errlen) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        mg_err_set(err, errlen, "gguf: %s", msg);
    }
    return code;
}

/* A name from the file, made safe to print: at most 64 bytes, non-printable
 * bytes as '?', "..." when cut. */
static const char *show(char out[SHOW_BUF], const char *p, uint64_t len)
{
    size_t n = len > 64 ? 64 : (size_t)len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    strcpy(out + n, len > 64 ? "..." : "");
    return out;
}

/* ---- the cursor --------------------------------------------------------- */

struct parser {
    gguf *g;
    const unsigned char *base;
    size_t size;
    size_t pos; /* invariant: pos <= size */
    char *err;
    size_t errlen;
};

static size_t remain(const struct parser *ps)
{
    return ps->size - ps->pos;
}

static bool rd_u32(struct parser *ps, uint32_t *v)
{
    if (remain(ps) < 4)
        return false;
    *v = le32(ps->base + ps->pos);
    ps->pos += 4;
    return true;
}

static bool rd_u64(struct parser *ps, uint64_t *v)
{
    if (remain(ps) < 8)
        return false;
    *v = le64(ps->base + ps->pos);
    ps->pos += 8;
    return true;
}

/* "gguf: truncated at offset AT reading WHAT". */
__attribute__((format(printf, 3, 4))) static int truncated(struct parser *ps, size_t at,
                                                           const char *fmt, ...)
{
    if (ps->err && ps->errlen) {
        char what[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        fail(ps->err, ps->errlen, MG_EFORMAT, "truncated at offset %zu reading %s", at, what);
    }
    return MG_EFORMAT;
}

/* arr (elem-byte elements, capacity *cap) grown to hold at least need
 * elements, doubling from min(hint, 65536): memory follows the elements
 * actually parsed, not the count the file claims. NULL when out of memory
 * (arr is then still valid and still owned by the caller). */
static void *grow(void *arr, size_t *cap, size_t need, size_t elem, uint64_t hint)
{
    if (need <= *cap)
        return arr;
    size_t c = *cap ? *cap * 2 : (hint < 65536 ? (size_t)hint : 65536);
    if (c < need)
        c = need;
    if (c > SIZE_MAX / elem)
        return NULL;
    void *p = realloc(arr, c * elem);
    if (p)
        *cap = c;
    return p;
}

/* ---- metadata values ---------------------------------------------------- */

static int parse_value(struct parser *ps, struct kv *kv, uint32_t type, int level, uint64_t idx);

/* What a value read is, for messages: the key's value itself (level 0) or
 * element idx of an array at nesting level `level`. */
static void describe(char *out, size_t outlen, const struct kv *kv, int level, uint64_t idx)
{
    char kb[SHOW_BUF];
    show(kb, kv->key, kv->key_len);
    if (level == 0)
        snprintf(out, outlen, "the value of key '%s'", kb);
    else if (level == 1)
        snprintf(out, outlen, "element %llu of the array value of key '%s'",
                 (unsigned long long)idx, kb);
    else
        snprintf(out, outlen, "element %llu of a level-%d nested array in key '%s'",
                 (unsigned long long)idx, level, kb);
}

/* An array value at nesting level `level` (1 = the key's own value); idx is
 * its position in the enclosing array, for messages. Indexes the elements
 * of a top-level array of strings or arrays. */
static int parse_array(struct parser *ps, struct kv *kv, int level, uint64_t idx)
{
    char kb[SHOW_BUF], what[300];
    size_t at = ps->pos;
    uint32_t et;
    uint64_t n;

    if (!rd_u32(ps, &et)) {
        describe(what, sizeof what, kv, level - 1, idx);
        return truncated(ps, at, "the element type of %s", what);
    }
    if (et >= GGUF_TYPE_COUNT)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "key '%s': array at offset %zu has unknown element type %u",
                    show(kb, kv->key, kv->key_len), at, et);
    if (et == GGUF_TYPE_ARRAY && level >= MAX_NESTING)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "key '%s': arrays nested deeper than %d levels at offset %zu",
                    show(kb, kv->key, kv->key_len), MAX_NESTING, at);
    if (!rd_u64(ps, &n)) {
        describe(what, sizeof what, kv, level - 1, idx);
        return truncated(ps, at + 4, "the element count of %s", what);
    }
    size_t min = type_min_size(et);
    if (n > remain(ps) / min)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "key '%s': array at offset %zu claims %llu elements of type %s, more than "
                    "the %zu bytes left in the file can hold",
                    show(kb, kv->key, kv->key_len), at, (unsigned long long)n, type_names[et],
                    remain(ps));
    if (level == 1) {
        kv->elem_type = (enum gguf_type)et;
        kv->n = n;
        kv->first = ps->pos;
    }

    size_t sz = type_size(et);
    if (sz) { /* packed scalars: n * sz <= remain, checked above */
        if (et == GGUF_TYPE_BOOL) {
            const unsigned char *p = ps->base + ps->pos;
            for (uint64_t i = 0; i < n; i++)
                if (p[i] > 1)
                    return fail(ps->err, ps->errlen, MG_EFORMAT,
                                "key '%s': bool array element %llu at offset %zu is %u, not 0 "
                                "or 1",
                                show(kb, kv->key, kv->key_len), (unsigned long long)i,
                                ps->pos + (size_t)i, p[i]);
        }
        ps->pos += (size_t)n * sz;
        return 0;
    }

    size_t cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (level == 1) {
            uint64_t *index = grow(kv->index, &cap, (size_t)i + 1, sizeof *index, n);
            if (!index)
                return fail(ps->err, ps->errlen, MG_ENOMEM, "out of memory indexing key '%s'",
                            show(kb, kv->key, kv->key_len));
            kv->index = index;
            index[i] = ps->pos;
        }
        if (et == GGUF_TYPE_STRING && remain(ps) >= 8) { /* fast path: vocabularies */
            uint64_t len = le64(ps->base + ps->pos);
            if (len <= remain(ps) - 8) {
                ps->pos += 8 + (size_t)len;
                continue;
            }
        } /* else parse_value finds the fault and words the message */
        int rc = parse_value(ps, kv, et, level, i);
        if (rc)
            return rc;
    }
    return 0;
}

/* One value of `type` at the cursor; level is the number of arrays that
 * enclose it (0 for a key's own value). */
static int parse_value(struct parser *ps, struct kv *kv, uint32_t type, int level, uint64_t idx)
{
    char kb[SHOW_BUF], what[300];
    size_t at = ps->pos;

    if (type == GGUF_TYPE_ARRAY)
        return parse_array(ps, kv, level + 1, idx);

    size_t need = type_size(type);
    uint64_t len = 0;
    if (type == GGUF_TYPE_STRING) {
        if (!rd_u64(ps, &len)) {
            describe(what, sizeof what, kv, level, idx);
            return truncated(ps, at, "the string length of %s", what);
        }
        if (len > remain(ps)) {
            describe(what, sizeof what, kv, level, idx);
            return truncated(ps, at, "%s (a string of %llu bytes, %zu left)", what,
                             (unsigned long long)len, remain(ps));
        }
        need = (size_t)len;
    } else if (remain(ps) < need) {
        describe(what, sizeof what, kv, level, idx);
        return truncated(ps, at, "%s", what);
    }
    if (type == GGUF_TYPE_BOOL && ps->base[at] > 1)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "key '%s': bool value at offset %zu is %u, not 0 or 1",
                    show(kb, kv->key, kv->key_len), at, ps->base[at]);
    ps->pos += need;
    return 0;
}

static int kv_cmp(const void *a, const void *b)
{
    const struct kv *x = *(const struct kv *const *)a, *y = *(const struct kv *const *)b;
    int c = memcmp(x->key, y->key, x->key_len < y->key_len ? x->key_len : y->key_len);
    if (c)
        return c;
    return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static int parse_kvs(struct parser *ps, uint64_t n_kv)
{
    gguf *g = ps->g;
    char kb[SHOW_BUF];
    size_t cap = 0;

    for (uint64_t i = 0; i < n_kv; i++) {
        size_t at = ps->pos;
        uint64_t len;
        if (!rd_u64(ps, &len))
            return truncated(ps, at, "the length of key #%llu", (unsigned long long)i);
        if (len == 0 || len > MAX_KEY_LEN)
            return fail(ps->err, ps->errlen, MG_EFORMAT,
                        "key #%llu at offset %zu has length %llu (must be 1..%u)",
                        (unsigned long long)i, at, (unsigned long long)len, MAX_KEY_LEN);
        if (len > remain(ps))
            return truncated(ps, ps->pos, "the name of key #%llu (%llu bytes)",
                             (unsigned long long)i, (unsigned long long)len);
        const char *key = (const char *)ps->base + ps->pos;
        if (memchr(key, 0, (size_t)len))
            return fail(ps->err, ps->errlen, MG_EFORMAT,
                        "key #%llu at offset %zu contains a NUL byte", (unsigned long long)i, at);
        ps->pos += (size_t)len;

        struct kv *kvs = grow(g->kvs, &cap, (size_t)i + 1, sizeof *kvs, n_kv);
        if (!kvs)
            return fail(ps->err, ps->errlen, MG_ENOMEM, "out of memory reading key #%llu",
                        (unsigned long long)i);
        g->kvs = kvs;
        struct kv *kv = &kvs[i];
        memset(kv, 0, sizeof *kv);
        kv->key = key;
        kv->key_len = (uint32_t)len;
        g->n_kv = (int64_t)i + 1; /* so that close frees kv->index on failure */

        uint32_t type;
        at = ps->pos;
        if (!rd_u32(ps, &type))
            return truncated(ps, at, "the type of key '%s'", show(kb, key, len));
        if (type >= GGUF_TYPE_COUNT)
            return fail(ps->err, ps->errlen, MG_EFORMAT,
                        "key '%s' at offset %zu has unknown value type %u", show(kb, key, len), at,
                        type);
        kv->type = (enum gguf_type)type;
        kv->val = ps->pos;
        int rc = parse_value(ps, kv, type, 0, 0);
        if (rc)
            return rc;
    }

    if (g->n_kv == 0)
        return 0;
    g->kv_sorted = malloc((size_t)g->n_kv * sizeof *g->kv_sorted);
    if (!g->kv_sorted)
        return fail(ps->err, ps->errlen, MG_ENOMEM, "out of memory sorting keys");
    for (int64_t i = 0; i < g->n_kv; i++)
        g->kv_sorted[i] = &g->kvs[i];
    qsort(g->kv_sorted, (size_t)g->n_kv, sizeof *g->kv_sorted, kv_cmp);
    for (int64_t i = 1; i < g->n_kv; i++) {
        const struct kv *a = g->kv_sorted[i - 1], *b = g->kv_sorted[i];
        if (kv_cmp(&a, &b) == 0) {
            size_t oa = (size_t)((const unsigned char *)a->key - ps->base) - 8;
            size_t ob = (size_t)((const unsigned char *)b->key - ps->base) - 8;
            return fail(ps->err, ps->errlen, MG_EFORMAT,
                        "duplicate key '%s' (at offsets %zu and %zu)", show(kb, a->key, a->key_len),
                        oa < ob ? oa : ob, oa < ob ? ob : oa);
        }
    }
    return 0;
}

/* Index of the key of len bytes, or -1; binary search in kv_sorted. */
static int64_t find_key(const gguf *g, const char *key, size_t len)
{
    int64_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        const struct kv *kv = g->kv_sorted[mid];
        int c = memcmp(kv->key, key, kv->key_len < len ? kv->key_len : len);
        if (c == 0)
            c = (kv->key_len > len) - (kv->key_len < len);
        if (c == 0)
            return kv - g->kvs;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static int parse_alignment(struct parser *ps)
{
    gguf *g = ps->g;
    const char *name = "general.alignment";
    int64_t i = find_key(g, name, strlen(name));
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (i < 0)
        return 0;
    const struct kv *kv = &g->kvs[i];
    if (kv->type != GGUF_TYPE_UINT32)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "general.alignment at offset %zu has type %s, expected uint32", kv->val,
                    type_names[kv->type]);
    uint32_t a = le32(g->base + kv->val);
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "general.alignment = %u at offset %zu is not a nonzero power of two", a,
                    kv->val);
    g->alignment = a;
    return 0;
}

/* ---- tensor infos ------------------------------------------------------- */

/* Reads one tensor info into *t (name still pointing into the mapping, its
 * length in *name_len) and checks everything that does not depend on where
 * the data section starts. */
static int parse_tensor_info(struct parser *ps, uint64_t i, gguf_tensor *t, uint32_t *name_len)
{
    char nb[SHOW_BUF];
    size_t at = ps->pos;
    uint64_t len;

    if (!rd_u64(ps, &len))
        return truncated(ps, at, "the name length of tensor #%llu", (unsigned long long)i);
    if (len == 0 || len > MAX_NAME_LEN)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "tensor #%llu at offset %zu has name length %llu (must be 1..%u)",
                    (unsigned long long)i, at, (unsigned long long)len, MAX_NAME_LEN);
    if (len > remain(ps))
        return truncated(ps, ps->pos, "the name of tensor #%llu (%llu bytes)",
                         (unsigned long long)i, (unsigned long long)len);
    const char *name = (const char *)ps->base + ps->pos;
    if (memchr(name, 0, (size_t)len))
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "tensor #%llu at offset %zu: name contains a NUL byte", (unsigned long long)i,
                    at);
    ps->pos += (size_t)len;
    show(nb, name, len);
    t->name = name;
    *name_len = (uint32_t)len;

    at = ps->pos;
    if (!rd_u32(ps, &t->n_dims))
        return truncated(ps, at, "n_dims of tensor '%s'", nb);
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "tensor '%s': n_dims %u at offset %zu is out of range 1..%d", nb, t->n_dims, at,
                    GGUF_MAX_DIMS);
    int64_t nel = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        uint64_t v;
        at = ps->pos;
        if (!rd_u64(ps, &v))
            return truncated(ps, at, "ne[%u] of tensor '%s'", d, nb);
        if (v > (uint64_t)INT64_MAX)
            return fail(ps->err, ps->errlen, MG_EFORMAT,
                        "tensor '%s': ne[%u] = %llu at offset %zu is out of range", nb, d,
                        (unsigned long long)v, at);
        t->ne[d] = (int64_t)v;
        if (v != 0 && nel > INT64_MAX / (int64_t)v)
            return fail(ps->err, ps->errlen, MG_EFORMAT,
                        "tensor '%s': element count overflows int64 (ne[%u] = %llu)", nb, d,
                        (unsigned long long)v);
        nel *= (int64_t)v;
    }

    at = ps->pos;
    if (!rd_u32(ps, &t->type))
        return truncated(ps, at, "the type of tensor '%s'", nb);
    const tensor_type_info *ti = tensor_type_get(t->type);
    if (!ti)
        return fail(ps->err, ps->errlen, MG_EUNSUPPORTED,
                    "tensor '%s': unknown tensor type id %u at offset %zu", nb, t->type, at);
    if (t->ne[0] % ti->block_elems != 0)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "tensor '%s': ne[0] = %lld is not a multiple of the %s block size %lld", nb,
                    (long long)t->ne[0], ti->name, (long long)ti->block_elems);
    if (tensor_bytes(t->type, t->ne, (int)t->n_dims, &t->nbytes) != 0)
        return fail(ps->err, ps->errlen, MG_EFORMAT, "tensor '%s': byte size overflows", nb);

    at = ps->pos;
    if (!rd_u64(ps, &t->offset))
        return truncated(ps, at, "the data offset of tensor '%s'", nb);
    return 0;
}

static int tensor_name_cmp(const void *a, const void *b)
{
    return strcmp((*(const gguf_tensor *const *)a)->name, (*(const gguf_tensor *const *)b)->name);
}

static int tensor_offset_cmp(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Copies the names out of the mapping (NUL-terminated, one arena), sorts
 * them for lookup and refuses duplicates. */
static int index_tensor_names(struct parser *ps, const uint32_t *name_len)
{
    gguf *g = ps->g;
    size_t arena = 0;
    for (int64_t i = 0; i < g->n_tensors; i++)
        arena += name_len[i] + 1u; /* <= the header bytes read: cannot overflow */
    g->names = malloc(arena);
    g->tensor_sorted = malloc((size_t)g->n_tensors * sizeof *g->tensor_sorted);
    if (!g->names || !g->tensor_sorted)
        return fail(ps->err, ps->errlen, MG_ENOMEM, "out of memory indexing tensors");
    char *np = g->names;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        memcpy(np, g->tensors[i].name, name_len[i]);
        np[name_len[i]] = '\0';
        g->tensors[i].name = np;
        np += name_len[i] + 1u;
        g->tensor_sorted[i] = &g->tensors[i];
    }
    qsort(g->tensor_sorted, (size_t)g->n_tensors, sizeof *g->tensor_sorted, tensor_name_cmp);
    for (int64_t i = 1; i < g->n_tensors; i++) {
        const char *nm = g->tensor_sorted[i]->name;
        if (strcmp(g->tensor_sorted[i - 1]->name, nm) == 0) {
            char nb[SHOW_BUF];
            return fail(ps->err, ps->errlen, MG_EFORMAT, "duplicate tensor name '%s'",
                        show(nb, nm, strlen(nm)));
        }
    }
    return 0;
}

/* Places every tensor in the data section (which starts at g->data_off):
 * aligned, inside the file, no two sharing a byte. */
static int place_tensors(struct parser *ps)
{
    gguf *g = ps->g;
    char na[SHOW_BUF], nb[SHOW_BUF];
    size_t data_len = ps->size - g->data_off;

    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            return fail(ps->err, ps->errlen, MG_EFORMAT,
                        "tensor '%s': data offset %llu is not a multiple of the alignment %zu",
                        show(nb, t->name, strlen(t->name)), (unsigned long long)t->offset,
                        g->alignment);
        if (t->offset > data_len || t->nbytes > data_len - (size_t)t->offset)
            return fail(ps->err, ps->errlen, MG_EFORMAT,
                        "tensor '%s': data [offset %llu, %zu bytes] runs past end of file "
                        "(size %zu, data section at %zu)",
                        show(nb, t->name, strlen(t->name)), (unsigned long long)t->offset,
                        t->nbytes, ps->size, g->data_off);
        t->data = g->base + g->data_off + (size_t)t->offset;
    }

    const gguf_tensor **by_off = malloc((size_t)g->n_tensors * sizeof *by_off);
    if (!by_off)
        return fail(ps->err, ps->errlen, MG_ENOMEM, "out of memory checking tensor overlaps");
    for (int64_t i = 0; i < g->n_tensors; i++)
        by_off[i] = &g->tensors[i];
    qsort(by_off, (size_t)g->n_tensors, sizeof *by_off, tensor_offset_cmp);
    const gguf_tensor *prev = NULL;
    int rc = 0;
    for (int64_t i = 0; i < g->n_tensors && rc == 0; i++) {
        const gguf_tensor *t = by_off[i];
        if (t->nbytes == 0) /* zero-sized tensors own no byte */
            continue;
        if (prev && prev->offset + prev->nbytes > t->offset)
            rc = fail(ps->err, ps->errlen, MG_EFORMAT,
                      "tensors '%s' [offset %llu, %zu bytes] and '%s' [offset %llu, %zu bytes] "
                      "overlap",
                      show(na, prev->name, strlen(prev->name)), (unsigned long long)prev->offset,
                      prev->nbytes, show(nb, t->name, strlen(t->name)),
                      (unsigned long long)t->offset, t->nbytes);
        prev = t;
    }
    free(by_off);
    return rc;
}

/* The tensor infos, then the data section. */
static int parse_tensors(struct parser *ps, uint64_t n_tensors)
{
    gguf *g = ps->g;
    uint32_t *name_len = NULL; /* [n_tensors]: names are not NUL-terminated yet */
    size_t cap = 0, lcap = 0;
    int rc = 0;

    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor *ts = grow(g->tensors, &cap, (size_t)i + 1, sizeof *ts, n_tensors);
        if (ts)
            g->tensors = ts;
        uint32_t *nl = ts ? grow(name_len, &lcap, (size_t)i + 1, sizeof *nl, n_tensors) : NULL;
        if (nl)
            name_len = nl;
        if (!ts || !nl) {
            rc = fail(ps->err, ps->errlen, MG_ENOMEM, "out of memory reading tensor #%llu",
                      (unsigned long long)i);
            goto done;
        }
        memset(&g->tensors[i], 0, sizeof g->tensors[i]);
        rc = parse_tensor_info(ps, i, &g->tensors[i], &name_len[i]);
        if (rc)
            goto done;
        g->n_tensors = (int64_t)i + 1;
    }
    if (g->n_tensors > 0 && (rc = index_tensor_names(ps, name_len)) != 0)
        goto done;

    /* the data section starts at the next multiple of the alignment */
    size_t pad = (g->alignment - ps->pos % g->alignment) % g->alignment;
    if (pad > SIZE_MAX - ps->pos) {
        rc = fail(ps->err, ps->errlen, MG_EFORMAT, "data section offset overflows");
        goto done;
    }
    g->data_off = ps->pos + pad;
    if (g->n_tensors == 0)
        goto done; /* nothing points into it: the file may end before the padding */
    if (g->data_off > ps->size) {
        rc = fail(ps->err, ps->errlen, MG_EFORMAT,
                  "data section (aligned to %zu) would start at offset %zu, past end of file "
                  "(size %zu)",
                  g->alignment, g->data_off, ps->size);
        goto done;
    }
    rc = place_tensors(ps);

done:
    free(name_len);
    return rc;
}

/* ---- open / close ------------------------------------------------------- */

static int parse_header(struct parser *ps, uint64_t *n_tensors, uint64_t *n_kv)
{
    const unsigned char *b = ps->base;
    if (ps->size < 4)
        return truncated(ps, 0, "the magic");
    if (memcmp(b, "GGUF", 4) != 0)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "bad magic %02x %02x %02x %02x at offset 0 (not a GGUF file)", b[0], b[1], b[2],
                    b[3]);
    ps->pos = 4;
    uint32_t v;
    if (!rd_u32(ps, &v))
        return truncated(ps, 4, "the version");
    if (v != 2 && v != 3) {
        const char *why = "";
        if (v == 1)
            why = " (GGUF v1 has 32-bit counts; convert the file)";
        else if ((v & 0xffffff) == 0 && (v >> 24 == 2 || v >> 24 == 3))
            why = " (a big-endian file?)";
        return fail(ps->err, ps->errlen, MG_EUNSUPPORTED,
                    "version %u at offset 4 is not supported (only 2 and 3)%s", v, why);
    }
    ps->g->version = v;
    if (!rd_u64(ps, n_tensors))
        return truncated(ps, 8, "the tensor count");
    if (!rd_u64(ps, n_kv))
        return truncated(ps, 16, "the key/value count");
    if (*n_kv > remain(ps) / MIN_KV_BYTES)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "key/value count %llu at offset 16 is more than the %zu bytes left can hold",
                    (unsigned long long)*n_kv, remain(ps));
    if (*n_tensors > remain(ps) / MIN_TENSOR_INFO_BYTES)
        return fail(ps->err, ps->errlen, MG_EFORMAT,
                    "tensor count %llu at offset 8 is more than the %zu bytes left can hold",
                    (unsigned long long)*n_tensors, remain(ps));
    return 0;
}

/* Validates base[0..size) and builds the indexes; the constructor behind
 * both open functions. Does not own base. */
static int parse(gguf **out, const unsigned char *base, size_t size, char *err, size_t errlen)
{
    gguf *g = calloc(1, sizeof *g);
    if (!g)
        return fail(err, errlen, MG_ENOMEM, "out of memory");
    g->base = base;
    g->size = size;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;

    struct parser ps = {.g = g, .base = base, .size = size, .err = err, .errlen = errlen};
    uint64_t n_tensors = 0, n_kv = 0;
    int rc;
    if ((rc = parse_header(&ps, &n_tensors, &n_kv)) || (rc = parse_kvs(&ps, n_kv)) ||
        (rc = parse_alignment(&ps)) || (rc = parse_tensors(&ps, n_tensors)))
        goto fail;
    *out = g;
    return 0;

fail:
    gguf_close(g);
    return rc;
}

int gguf_open_memory(gguf **out, const void *buf, size_t len, char *err, size_t errlen)
{
    if (!out || (!buf && len))
        return fail(err, errlen, MG_EINVAL, "gguf_open_memory: NULL argument");
    static const unsigned char empty[1];
    return parse(out, buf ? buf : empty, len, err, errlen);
}

int gguf_open(gguf **out, const char *path, char *err, size_t errlen)
{
    static const unsigned char empty[1];
    const unsigned char *map = NULL;
    size_t size = 0;
    gguf *g = NULL;
    int rc;

    if (!out || !path)
        return fail(err, errlen, MG_EINVAL, "gguf_open: NULL argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, MG_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = fail(err, errlen, MG_EIO, "cannot stat '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fail(err, errlen, MG_EIO, "'%s' is not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = fail(err, errlen, MG_EIO, "'%s' is too large to map", path);
        goto fail;
    }
    size = (size_t)st.st_size;
    if (size > 0) { /* mmap refuses length 0; an empty file parses (and fails) as "" */
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = fail(err, errlen, MG_EIO, "cannot mmap '%s' (%zu bytes): %s", path, size,
                      strerror(errno));
            goto fail;
        }
        map = m;
    }
    close(fd);
    fd = -1;
    rc = parse(&g, map ? map : empty, size, err, errlen);
    if (rc)
        goto fail;
    g->mapped = map != NULL;
    *out = g;
    return 0;

fail:
    if (map)
        munmap((void *)map, size);
    if (fd >= 0)
        close(fd);
    return rc;
}

void gguf_close(gguf *g)
{
    if (!g)
        return;
    for (int64_t i = 0; i < g->n_kv; i++)
        free(g->kvs[i].index);
    free(g->kvs);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->tensor_sorted);
    free(g->names);
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g);
}

uint32_t gguf_version(const gguf *g)
{
    return g->version;
}

size_t gguf_alignment(const gguf *g)
{
    return g->alignment;
}

size_t gguf_file_size(const gguf *g)
{
    return g->size;
}

size_t gguf_data_offset(const gguf *g)
{
    return g->data_off;
}

/* ---- metadata accessors ------------------------------------------------- */

int64_t gguf_key_count(const gguf *g)
{
    return g->n_kv;
}

int64_t gguf_find_key(const gguf *g, const char *key)
{
    if (!g || !key)
        return -1;
    return find_key(g, key, strlen(key));
}

gguf_str gguf_key_name(const gguf *g, int64_t i)
{
    gguf_str s = {NULL, 0};
    if (i >= 0 && i < g->n_kv) {
        s.ptr = g->kvs[i].key;
        s.len = g->kvs[i].key_len;
    }
    return s;
}

enum gguf_type gguf_key_type(const gguf *g, int64_t i)
{
    if (i < 0 || i >= g->n_kv)
        return GGUF_TYPE_COUNT;
    return g->kvs[i].type;
}

static const struct kv *lookup(const gguf *g, const char *key)
{
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kvs[i];
}

/* An integer (or bool) value: signed types in s, unsigned in u. */
struct intval {
    bool is_signed;
    int64_t s;
    uint64_t u;
};

static bool kv_int(const gguf *g, const struct kv *kv, struct intval *v)
{
    const unsigned char *p = g->base + kv->val;
    size_t w = type_size(kv->type);
    switch (kv->type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_BOOL:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_UINT64:
        v->is_signed = false;
        v->u = w == 1 ? p[0] : w == 2 ? le16(p) : w == 4 ? le32(p) : le64(p);
        return true;
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32: {
        /* sign-extend the w-byte two's complement value, in exact arithmetic */
        uint64_t u = w == 1 ? p[0] : w == 2 ? le16(p) : le32(p), m = 1ull << (8 * w - 1);
        v->is_signed = true;
        v->s = (int64_t)(u ^ m) - (int64_t)m;
        return true;
    }
    case GGUF_TYPE_INT64: {
        uint64_t u = le64(p);
        v->is_signed = true;
        memcpy(&v->s, &u, 8);
        return true;
    }
    default: return false;
    }
}

int gguf_get_int(const gguf *g, const char *key, int64_t *out)
{
    const struct kv *kv = lookup(g, key);
    struct intval v;
    if (!kv)
        return MG_ENOTFOUND;
    if (!kv_int(g, kv, &v) || (!v.is_signed && v.u > (uint64_t)INT64_MAX))
        return MG_EFORMAT;
    *out = v.is_signed ? v.s : (int64_t)v.u;
    return 0;
}

int gguf_get_uint(const gguf *g, const char *key, uint64_t *out)
{
    const struct kv *kv = lookup(g, key);
    struct intval v;
    if (!kv)
        return MG_ENOTFOUND;
    if (!kv_int(g, kv, &v) || (v.is_signed && v.s < 0))
        return MG_EFORMAT;
    *out = v.is_signed ? (uint64_t)v.s : v.u;
    return 0;
}

int gguf_get_float(const gguf *g, const char *key, double *out)
{
    const struct kv *kv = lookup(g, key);
    struct intval v;
    if (!kv)
        return MG_ENOTFOUND;
    const unsigned char *p = g->base + kv->val;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        uint32_t b = le32(p);
        float f;
        memcpy(&f, &b, 4);
        *out = f;
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        uint64_t b = le64(p);
        memcpy(out, &b, 8);
    } else if (kv->type != GGUF_TYPE_BOOL && kv_int(g, kv, &v)) {
        *out = v.is_signed ? (double)v.s : (double)v.u;
    } else {
        return MG_EFORMAT;
    }
    return 0;
}

int gguf_get_bool(const gguf *g, const char *key, bool *out)
{
    const struct kv *kv = lookup(g, key);
    if (!kv)
        return MG_ENOTFOUND;
    if (kv->type != GGUF_TYPE_BOOL)
        return MG_EFORMAT;
    *out = g->base[kv->val] != 0;
    return 0;
}

int gguf_get_str(const gguf *g, const char *key, gguf_str *out)
{
    const struct kv *kv = lookup(g, key);
    if (!kv)
        return MG_ENOTFOUND;
    if (kv->type != GGUF_TYPE_STRING)
        return MG_EFORMAT;
    out->len = le64(g->base + kv->val);
    out->ptr = (const char *)g->base + kv->val + 8;
    return 0;
}

int gguf_get_cstr(const gguf *g, const char *key, char *buf, size_t buflen)
{
    gguf_str s;
    int rc = gguf_get_str(g, key, &s);
    if (rc)
        return rc;
    if (memchr(s.ptr, 0, (size_t)s.len))
        return MG_EFORMAT; /* would be silently cut short */
    if (!buf || s.len >= buflen)
        return MG_ERANGE;
    memcpy(buf, s.ptr, (size_t)s.len);
    buf[s.len] = '\0';
    return 0;
}

/* ---- arrays ------------------------------------------------------------- */

/* Past the end of the value of type t at p. Only for validated values. */
static const unsigned char *skip_value(const unsigned char *p, uint32_t t)
{
    if (t == GGUF_TYPE_STRING)
        return p + 8 + le64(p);
    if (t != GGUF_TYPE_ARRAY)
        return p + type_size(t);
    uint32_t et = le32(p);
    uint64_t n = le64(p + 4);
    p += 12;
    if (type_size(et))
        return p + n * type_size(et);
    for (uint64_t i = 0; i < n; i++)
        p = skip_value(p, et);
    return p;
}

/* Element i (< a->n) of a: O(1) with an index, else a walk. */
static const unsigned char *elem_at(const gguf_arr *a, uint64_t i)
{
    if (a->priv)
        return a->g->base + ((const uint64_t *)a->priv)[i];
    const unsigned char *p = a->first;
    for (uint64_t k = 0; k < i; k++)
        p = skip_value(p, a->elem_type);
    return p;
}

int gguf_get_arr(const gguf *g, const char *key, enum gguf_type *elem_type, uint64_t *n,
                 const void **raw)
{
    const struct kv *kv = lookup(g, key);
    if (!kv)
        return MG_ENOTFOUND;
    if (kv->type != GGUF_TYPE_ARRAY)
        return MG_EFORMAT;
    if (elem_type)
        *elem_type = kv->elem_type;
    if (n)
        *n = kv->n;
    if (raw)
        *raw = type_size(kv->elem_type) ? g->base + kv->first : NULL;
    return 0;
}

int gguf_arr_get(const gguf *g, const char *key, gguf_arr *out)
{
    const struct kv *kv = lookup(g, key);
    if (!kv)
        return MG_ENOTFOUND;
    if (kv->type != GGUF_TYPE_ARRAY)
        return MG_EFORMAT;
    out->g = g;
    out->elem_type = kv->elem_type;
    out->n = kv->n;
    out->first = g->base + kv->first;
    out->priv = kv->index;
    return 0;
}

int gguf_arrh_str(const gguf_arr *a, uint64_t i, gguf_str *out)
{
    if (!a || a->elem_type != GGUF_TYPE_STRING || i >= a->n)
        return MG_EINVAL;
    const unsigned char *p = elem_at(a, i);
    out->len = le64(p);
    out->ptr = (const char *)p + 8;
    return 0;
}

int gguf_arr_str(const gguf *g, const char *key, uint64_t i, gguf_str *out)
{
    gguf_arr a;
    int rc = gguf_arr_get(g, key, &a);
    if (rc == MG_EFORMAT)
        return MG_EINVAL;
    if (rc)
        return rc;
    return gguf_arrh_str(&a, i, out);
}

int gguf_arrh_sub(const gguf_arr *a, uint64_t i, gguf_arr *out)
{
    if (!a || a->elem_type != GGUF_TYPE_ARRAY || i >= a->n)
        return MG_EINVAL;
    const unsigned char *p = elem_at(a, i);
    out->g = a->g;
    out->elem_type = (enum gguf_type)le32(p);
    out->n = le64(p + 4);
    out->first = p + 12;
    out->priv = NULL;
    return 0;
}

/* ---- tensors ------------------------------------------------------------ */

int64_t gguf_tensor_count(const gguf *g)
{
    return g->n_tensors;
}

const gguf_tensor *gguf_tensor_at(const gguf *g, int64_t i)
{
    if (i < 0 || i >= g->n_tensors)
        return NULL;
    return &g->tensors[i];
}

const gguf_tensor *gguf_tensor_find(const gguf *g, const char *name)
{
    if (!g || !name)
        return NULL;
    int64_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensor_sorted[mid]->name, name);
        if (c == 0)
            return g->tensor_sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
