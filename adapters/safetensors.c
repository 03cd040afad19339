/* moegate — safetensors reader (format and rules in safetensors.h).
 *
 * How it works. safetensors_open maps the file read-only and parse() checks
 * the 8-byte header length against the bounds, hands the JSON to jansson
 * (JSON_REJECT_DUPLICATES: a name given twice is an error, not "the last
 * one wins"), then walks the top-level object once, validating each entry
 * into a safetensors_tensor. The tensors are then sorted by data offset and
 * checked to tile the byte buffer exactly: each begins where the previous
 * one ended (begin < previous end: overlap; begin > previous end: a gap),
 * and the last ends at the end of the file. A second index sorted by name
 * serves safetensors_find.
 *
 * Ownership: the object owns the mapping (unless opened over memory), the
 * parsed JSON tree (tensor names and metadata values point into it, so it
 * lives as long as the object) and its two index arrays. Names coming from
 * the file are shown in messages at most 64 bytes long, non-printable bytes
 * as '?'.
 */
#include "adapters/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/tensor.h"

struct safetensors {
    const unsigned char *buf; /* the whole file */
    size_t len;
    void *map;                /* our mapping, or NULL (memory buffer) */
    json_t *root;             /* parsed header; names and metadata point into it */
    json_t *meta;             /* __metadata__ object, or NULL */
    safetensors_tensor *t;    /* [n], sorted by data offset */
    const safetensors_tensor **by_name; /* [n], sorted by name */
    int64_t n;
};

/* ---- messages ---------------------------------------------------------------- */

/* A file-supplied name, printable and short, for messages. */
static const char *show(const char *s, char *buf, size_t cap)
{
    size_t n = 0, i = 0;
    for (; s[i] && n + 4 < cap && i < 64; i++)
        buf[n++] = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?';
    if (s[i] && n + 4 <= cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
    return buf;
}

__attribute__((format(printf, 5, 6))) static int fail(char *err, size_t errlen, int code,
                                                      const char *label, const char *fmt, ...)
{
    if (err && errlen) {
        int k = snprintf(err, errlen, "safetensors: %s: ", label);
        if (k >= 0 && (size_t)k < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

/* ---- dtypes ------------------------------------------------------------------ */

size_t safetensors_type_size(uint32_t type)
{
    switch (type) {
    case TENSOR_F32: return 4;
    case TENSOR_F16:
    case TENSOR_BF16: return 2;
    default: return 0;
    }
}

/* The dtype names of the format; only the first three are accepted. */
static const char *const known_dtypes[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16",
                                           "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3",
                                           "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};

/* 0 and *type for F32/F16/BF16; MG_EUNSUPPORTED for the format's other
 * dtypes; MG_EFORMAT for a string that is no dtype at all. */
static int parse_dtype(const char *s, uint32_t *type)
{
    if (!strcmp(s, "F32"))
        *type = TENSOR_F32;
    else if (!strcmp(s, "F16"))
        *type = TENSOR_F16;
    else if (!strcmp(s, "BF16"))
        *type = TENSOR_BF16;
    else {
        for (size_t i = 0; i < sizeof known_dtypes / sizeof known_dtypes[0]; i++)
            if (!strcmp(s, known_dtypes[i]))
                return MG_EUNSUPPORTED;
        return MG_EFORMAT;
    }
    return MG_OK;
}

/* ---- parsing ----------------------------------------------------------------- */

/* A non-negative JSON integer as uint64. */
static bool get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static int one_tensor(safetensors_tensor *t, const char *name, json_t *v, size_t buf_len,
                      const char *label, char *err, size_t errlen)
{
    char nb[80];
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > SAFETENSORS_MAX_NAME)
        return fail(err, errlen, MG_EFORMAT, label, "tensor name of %zu bytes (1..%d allowed)",
                    name_len, SAFETENSORS_MAX_NAME);
    for (size_t i = 0; i < name_len; i++)
        if ((unsigned char)name[i] < 0x20)
            return fail(err, errlen, MG_EFORMAT, label,
                        "tensor '%s': name holds a control character", show(name, nb, sizeof nb));
    if (!json_is_object(v))
        return fail(err, errlen, MG_EFORMAT, label, "tensor '%s': entry is not an object",
                    show(name, nb, sizeof nb));
    const char *key;
    json_t *f;
    json_object_foreach(v, key, f)
    {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets")) {
            char kb[80];
            return fail(err, errlen, MG_EFORMAT, label, "tensor '%s': unknown field '%s'",
                        show(name, nb, sizeof nb), show(key, kb, sizeof kb));
        }
    }
    t->name = name;
    /* dtype */
    json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt))
        return fail(err, errlen, MG_EFORMAT, label, "tensor '%s': field 'dtype' %s",
                    show(name, nb, sizeof nb), dt ? "is not a string" : "is missing");
    int rc = parse_dtype(json_string_value(dt), &t->type);
    if (rc) {
        char db[80];
        return fail(err, errlen, rc, label,
                    rc == MG_EUNSUPPORTED ? "tensor '%s': dtype %s is not supported (F32, F16 or BF16)"
                                          : "tensor '%s': unknown dtype '%s'",
                    show(name, nb, sizeof nb), show(json_string_value(dt), db, sizeof db));
    }
    /* shape */
    json_t *sh = json_object_get(v, "shape");
    if (!json_is_array(sh))
        return fail(err, errlen, MG_EFORMAT, label, "tensor '%s': field 'shape' %s",
                    show(name, nb, sizeof nb), sh ? "is not an array" : "is missing");
    size_t nd = json_array_size(sh);
    if (nd > SAFETENSORS_MAX_DIMS)
        return fail(err, errlen, MG_EFORMAT, label, "tensor '%s': shape has %zu dimensions (at most %d)",
                    show(name, nb, sizeof nb), nd, SAFETENSORS_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t count = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!get_u64(json_array_get(sh, i), &d) || d > (uint64_t)INT64_MAX)
            return fail(err, errlen, MG_EFORMAT, label,
                        "tensor '%s': shape[%zu] is not a non-negative integer", show(name, nb, sizeof nb), i);
        t->shape[i] = (int64_t)d;
        if (d && count > UINT64_MAX / d)
            overflow = true;
        count *= d;
    }
    size_t es = safetensors_type_size(t->type);
    if (overflow || count > (UINT64_MAX / es) || count * es > (uint64_t)SIZE_MAX)
        return fail(err, errlen, MG_EFORMAT, label, "tensor '%s': shape's size overflows",
                    show(name, nb, sizeof nb));
    uint64_t nbytes = count * es;
    /* data_offsets */
    json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2)
        return fail(err, errlen, MG_EFORMAT, label, "tensor '%s': field 'data_offsets' %s",
                    show(name, nb, sizeof nb), off ? "is not an array of two integers" : "is missing");
    if (!get_u64(json_array_get(off, 0), &t->begin) || !get_u64(json_array_get(off, 1), &t->end))
        return fail(err, errlen, MG_EFORMAT, label,
                    "tensor '%s': data_offsets are not non-negative integers", show(name, nb, sizeof nb));
    if (t->begin > t->end)
        return fail(err, errlen, MG_EFORMAT, label, "tensor '%s': data_offsets [%llu, %llu] run backwards",
                    show(name, nb, sizeof nb), (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > buf_len)
        return fail(err, errlen, MG_EFORMAT, label,
                    "tensor '%s': data_offsets [%llu, %llu] end outside the data (%zu bytes)",
                    show(name, nb, sizeof nb), (unsigned long long)t->begin, (unsigned long long)t->end,
                    buf_len);
    if (t->end - t->begin != nbytes)
        return fail(err, errlen, MG_EFORMAT, label,
                    "tensor '%s': shape and dtype make %llu bytes, data_offsets [%llu, %llu] hold %llu",
                    show(name, nb, sizeof nb), (unsigned long long)nbytes, (unsigned long long)t->begin,
                    (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
    t->nbytes = (size_t)nbytes;
    return MG_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const safetensors_tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b)
{
    const safetensors_tensor *x = *(const safetensors_tensor *const *)a;
    const safetensors_tensor *y = *(const safetensors_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int parse(safetensors *st, const char *label, char *err, size_t errlen)
{
    char nb[80], nb2[80];
    if (st->len < 8)
        return fail(err, errlen, MG_EFORMAT, label, "%zu bytes: too short for the 8-byte header length",
                    st->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | st->buf[i];
    if (hlen > SAFETENSORS_MAX_HEADER)
        return fail(err, errlen, MG_EFORMAT, label, "header length %llu exceeds the limit of %u bytes",
                    (unsigned long long)hlen, SAFETENSORS_MAX_HEADER);
    if (hlen > st->len - 8)
        return fail(err, errlen, MG_EFORMAT, label,
                    "header length %llu runs past the end of the file (%zu bytes)", (unsigned long long)hlen,
                    st->len);
    if (hlen < 2 || st->buf[8] != '{')
        return fail(err, errlen, MG_EFORMAT, label, "the header does not start with '{'");
    json_error_t je;
    st->root = json_loadb((const char *)st->buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!st->root)
        return fail(err, errlen, MG_EFORMAT, label, "header JSON: %s at byte %d", je.text,
                    je.position + 8);
    if (!json_is_object(st->root))
        return fail(err, errlen, MG_EFORMAT, label, "the header is not a JSON object");
    size_t data_off = 8 + (size_t)hlen, data_len = st->len - data_off;
    size_t n = json_object_size(st->root);
    st->t = calloc(n ? n : 1, sizeof *st->t);
    st->by_name = calloc(n ? n : 1, sizeof *st->by_name);
    if (!st->t || !st->by_name)
        return fail(err, errlen, MG_ENOMEM, label, "out of memory for %zu tensors", n);
    const char *key;
    json_t *v;
    json_object_foreach(st->root, key, v)
    {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v))
                return fail(err, errlen, MG_EFORMAT, label, "__metadata__ is not an object");
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv))
                    return fail(err, errlen, MG_EFORMAT, label, "__metadata__ '%s' is not a string",
                                show(mk, nb, sizeof nb));
            }
            st->meta = v;
            continue;
        }
        safetensors_tensor *t = &st->t[st->n];
        int rc = one_tensor(t, key, v, data_len, label, err, errlen);
        if (rc)
            return rc;
        t->data = st->buf + data_off + t->begin;
        st->n++;
    }
    /* the tensors must tile the byte buffer */
    qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_offset);
    uint64_t at = 0;
    for (int64_t i = 0; i < st->n; i++) {
        const safetensors_tensor *t = &st->t[i];
        if (t->begin < at)
            return fail(err, errlen, MG_EFORMAT, label,
                        "tensor '%s' (data_offsets [%llu, %llu]) overlaps tensor '%s' (ends at %llu)",
                        show(t->name, nb, sizeof nb), (unsigned long long)t->begin, (unsigned long long)t->end,
                        show(st->t[i - 1].name, nb2, sizeof nb2), (unsigned long long)at);
        if (t->begin > at)
            return fail(err, errlen, MG_EFORMAT, label,
                        "tensor '%s' starts at %llu: %llu bytes after the previous tensor unused",
                        show(t->name, nb, sizeof nb), (unsigned long long)t->begin,
                        (unsigned long long)(t->begin - at));
        at = t->end;
    }
    if (at != data_len)
        return fail(err, errlen, MG_EFORMAT, label, "%llu bytes after the last tensor are not any tensor's",
                    (unsigned long long)(data_len - at));
    for (int64_t i = 0; i < st->n; i++)
        st->by_name[i] = &st->t[i];
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, cmp_name);
    return MG_OK;
}

/* ---- open / close ------------------------------------------------------------- */

int safetensors_open_memory(safetensors **out, const void *buf, size_t len, const char *label,
                            char *err, size_t errlen)
{
    if (!out || (!buf && len))
        return fail(err, errlen, MG_EINVAL, label ? label : "<memory>", "bad arguments");
    safetensors *st = calloc(1, sizeof *st);
    if (!st)
        return fail(err, errlen, MG_ENOMEM, label ? label : "<memory>", "out of memory");
    st->buf = buf;
    st->len = len;
    int rc = parse(st, label ? label : "<memory>", err, errlen);
    if (rc) {
        safetensors_close(st);
        return rc;
    }
    *out = st;
    return MG_OK;
}

int safetensors_open(safetensors **out, const char *path, char *err, size_t errlen)
{
    if (!out || !path)
        return fail(err, errlen, MG_EINVAL, "?", "bad arguments");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, MG_EIO, path, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return fail(err, errlen, MG_EIO, path, "not a regular file");
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return fail(err, errlen, MG_EIO, path, "cannot mmap %zu bytes: %s", size, strerror(e));
        }
    }
    close(fd);
    safetensors *st = calloc(1, sizeof *st);
    if (!st) {
        if (map)
            munmap(map, size);
        return fail(err, errlen, MG_ENOMEM, path, "out of memory");
    }
    st->map = map;
    st->buf = map;
    st->len = size;
    int rc = parse(st, path, err, errlen);
    if (rc) {
        safetensors_close(st);
        return rc;
    }
    *out = st;
    return MG_OK;
}

void safetensors_close(safetensors *st)
{
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->len);
    json_decref(st->root);
    free(st->t);
    free(st->by_name);
    free(st);
}

/* ---- accessors ---------------------------------------------------------------- */

int64_t safetensors_count(const safetensors *st)
{
    return st ? st->n : 0;
}

const safetensors_tensor *safetensors_at(const safetensors *st, int64_t i)
{
    return st && i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const safetensors_tensor *safetensors_find(const safetensors *st, const char *name)
{
    if (!st || !name)
        return NULL;
    int64_t lo = 0, hi = st->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_name[mid]->name, name);
        if (c == 0)
            return st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *safetensors_metadata(const safetensors *st, const char *key)
{
    if (!st || !st->meta || !key)
        return NULL;
    return json_string_value(json_object_get(st->meta, key));
}
