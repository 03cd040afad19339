/* moegate — GGUF v3 reader.
 *
 * Opens a GGUF file (mmap'd read-only; nothing is copied) or a caller-owned
 * memory buffer, validates every count, offset and size against the buffer
 * length with overflow-safe arithmetic, and exposes the metadata key/values
 * and the tensor index. A corrupt or truncated file is refused with one error
 * naming the field and its byte offset; the reader never crashes and never
 * allocates more than a small multiple of the file size.
 *
 * Format (little-endian): magic "GGUF", u32 version (2 or 3), u64 n_tensors,
 * u64 n_kv; n_kv × {string key, u32 type, value}; n_tensors × {string name,
 * u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset}; padding to
 * general.alignment (default 32); tensor data. Strings are u64 length + bytes
 * (no NUL). Arrays are u32 element type + u64 count + elements, and may nest.
 *
 * Limits this reader enforces (beyond the bounds checks): keys 1..65535
 * bytes; tensor names 1..256 bytes (the specification says 64; we are
 * lenient); neither may contain a NUL byte; keys and tensor names unique;
 * bools 0 or 1; arrays nested at most 8 levels (a key's own array is level
 * 1); general.alignment a uint32 power of two; tensors with 1..4 dims, a
 * known type, ne[0] a multiple of the type's block, an element count that
 * fits int64, an aligned offset, data inside the file and overlapping no
 * other tensor. Zero-sized tensors (some ne == 0) are accepted, nbytes 0.
 *
 * Thread safety: a gguf object is immutable after open; every accessor may be
 * called concurrently from any thread.
 */
#ifndef MOEGATE_CORE_GGUF_H
#define MOEGATE_CORE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gguf gguf;

/* Metadata value types, numbered as the GGUF specification numbers them. */
enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

#define GGUF_MAX_DIMS          4
#define GGUF_DEFAULT_ALIGNMENT 32

/* A string inside the mapped file: NOT NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

/* One entry of the tensor index. name is NUL-terminated (owned by the gguf
 * object). ne[0] is the fastest-varying dimension (the row length); unused
 * dimensions are 1. data points into the mapping, nbytes is its exact size
 * for the tensor's type (validated to lie inside the data section). */
typedef struct gguf_tensor {
    const char *name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint32_t type;   /* tensor type id (enum tensor_type in tensor.h) */
    uint64_t offset; /* relative to the start of the data section */
    size_t nbytes;
    const void *data;
} gguf_tensor;

/* Opens and validates path. *out is set only on success. Errors:
 * MG_EIO (open/stat/mmap, not a regular file; err names the path),
 * MG_EFORMAT (corrupt/truncated; err names the field and offset),
 * MG_EUNSUPPORTED (version, unknown tensor type), MG_ENOMEM, MG_EINVAL (NULL
 * out or path). */
int gguf_open(gguf **out, const char *path, char *err, size_t errlen);

/* Same, over a caller-owned buffer that must outlive the gguf object. */
int gguf_open_memory(gguf **out, const void *buf, size_t len, char *err, size_t errlen);

/* Unmaps and frees; accepts NULL. */
void gguf_close(gguf *g);

uint32_t gguf_version(const gguf *g);
size_t gguf_alignment(const gguf *g);
size_t gguf_file_size(const gguf *g);
/* Byte offset of the data section (a multiple of the alignment). In a file
 * without tensors it may equal or exceed the file size. */
size_t gguf_data_offset(const gguf *g);

/* ---- metadata ---------------------------------------------------------- */

int64_t gguf_key_count(const gguf *g);
/* Index of key, or -1 when absent. Keys are unique (duplicates are refused
 * at open). */
int64_t gguf_find_key(const gguf *g, const char *key);
/* Key i in file order; {NULL, 0} / GGUF_TYPE_COUNT when i is out of range. */
gguf_str gguf_key_name(const gguf *g, int64_t i);
enum gguf_type gguf_key_type(const gguf *g, int64_t i);

/* Typed getters by key name. Return 0 on success; MG_ENOTFOUND when the key
 * is absent; MG_EFORMAT when the stored type does not fit (e.g. a string
 * asked for as an int, a negative value as unsigned, a value that overflows
 * int64). Integer getters accept any integer type (and bool); gguf_get_float
 * accepts float32, float64 and any integer type (not bool); gguf_get_bool
 * only bool. *out is untouched on failure, so callers may pre-load a
 * default. */
int gguf_get_int(const gguf *g, const char *key, int64_t *out);
int gguf_get_uint(const gguf *g, const char *key, uint64_t *out);
int gguf_get_float(const gguf *g, const char *key, double *out);
int gguf_get_bool(const gguf *g, const char *key, bool *out);
int gguf_get_str(const gguf *g, const char *key, gguf_str *out);

/* Arrays. gguf_get_arr gives the element type and count. For arrays of
 * fixed-size scalars, *raw points at the packed little-endian elements in
 * the mapping (may be unaligned: read with memcpy). For arrays of strings
 * use gguf_arr_str; for nested arrays use gguf_arr_sub, which returns a
 * handle usable with the gguf_arrh_* functions. Any of elem_type, n, raw
 * may be NULL; *raw is set to NULL for arrays of strings or arrays.
 * MG_ENOTFOUND when absent, MG_EFORMAT when the value is not an array. */
int gguf_get_arr(const gguf *g, const char *key, enum gguf_type *elem_type, uint64_t *n,
                 const void **raw);
/* i-th string of a string array; MG_EINVAL when i is out of range or the key
 * is not a string array, MG_ENOTFOUND when absent. O(1). */
int gguf_arr_str(const gguf *g, const char *key, uint64_t i, gguf_str *out);

/* Nested arrays: an opaque handle to one array value anywhere in the tree. */
typedef struct gguf_arr {
    const gguf *g;
    enum gguf_type elem_type;
    uint64_t n;
    const unsigned char *first; /* first element in the mapping */
    const void *priv;           /* reader-private index, may be NULL */
} gguf_arr;
/* Top-level array value of key; MG_ENOTFOUND, or MG_EFORMAT when not an
 * array. Element access is O(1) for a key's own array of strings or arrays. */
int gguf_arr_get(const gguf *g, const char *key, gguf_arr *out);
/* i-th element of an array of arrays. May be O(i) for nested arrays.
 * gguf_arrh_sub and gguf_arrh_str return MG_EINVAL when the element type is
 * not the one asked for or i >= n. */
int gguf_arrh_sub(const gguf_arr *a, uint64_t i, gguf_arr *out);
/* i-th element of an array of strings. */
int gguf_arrh_str(const gguf_arr *a, uint64_t i, gguf_str *out);

/* Convenience: copy key's string value into buf (NUL-terminated); returns
 * MG_ERANGE when it does not fit (or buf is NULL), MG_ENOTFOUND / MG_EFORMAT
 * as above; MG_EFORMAT too when the string holds a NUL byte (it would be
 * silently cut short). */
int gguf_get_cstr(const gguf *g, const char *key, char *buf, size_t buflen);

/* ---- tensors ----------------------------------------------------------- */

int64_t gguf_tensor_count(const gguf *g);
/* Tensor i in file order; NULL when i is out of range. */
const gguf_tensor *gguf_tensor_at(const gguf *g, int64_t i);
/* NULL when absent. O(log n) or O(1). */
const gguf_tensor *gguf_tensor_find(const gguf *g, const char *name);

/* Name of a metadata type ("uint32", "array", ...); never NULL. */
const char *gguf_type_name(enum gguf_type t);

#endif
