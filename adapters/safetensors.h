/* moegate — safetensors reader (the adapters module's file format for PEFT
 * LoRA weights).
 *
 * Format (https://github.com/huggingface/safetensors, "Format"): an 8-byte
 * little-endian unsigned header length N, then N bytes of UTF-8 JSON, then
 * the byte buffer. The JSON is one object:
 *   {"NAME": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [B, E]},
 *    ..., "__metadata__": {"key": "value", ...}}
 * Offsets are relative to the start of the byte buffer (8 + N); a tensor's
 * bytes are [B, E), row-major, little-endian. The JSON starts with '{' and
 * may be padded with spaces.
 *
 * What this reader enforces (a file that breaks any rule is refused with one
 * message naming the file and the tensor or field):
 *   - 8 <= file size; N <= SAFETENSORS_MAX_HEADER (100 MB) and 8 + N <= file
 *     size; the header starts with '{', is valid UTF-8 JSON without NUL
 *     characters and without duplicate keys (jansson's parser);
 *   - every entry but __metadata__ is an object with exactly the fields
 *     dtype, shape and data_offsets; tensor names are 1..SAFETENSORS_MAX_NAME
 *     bytes; __metadata__, when present, maps strings to strings;
 *   - dtype is F32, F16 or BF16; any other dtype (F64, I8, ..., F8_E4M3) is
 *     refused by name;
 *   - shape has 0..SAFETENSORS_MAX_DIMS non-negative integer dimensions whose
 *     product (64-bit, overflow-checked) times the dtype's size equals E - B;
 *   - 0 <= B <= E <= buffer length; tensors do not overlap and, as the
 *     format's reference implementation requires, cover the buffer exactly
 *     (no gap between them, nothing after the last one).
 *
 * The file is mmap'd read-only; nothing is copied. Tensor data may be
 * unaligned (the header length is arbitrary): read it with memcpy.
 *
 * Thread safety: immutable after open; accessors may run concurrently.
 */
#ifndef MOEGATE_ADAPTERS_SAFETENSORS_H
#define MOEGATE_ADAPTERS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)
#define SAFETENSORS_MAX_NAME   1024
#define SAFETENSORS_MAX_DIMS   8

typedef struct safetensors safetensors;

typedef struct safetensors_tensor {
    const char *name;    /* NUL-terminated, owned by the safetensors object */
    uint32_t type;       /* TENSOR_F32, TENSOR_F16 or TENSOR_BF16 (core/tensor.h) */
    int n_dims;          /* 0..SAFETENSORS_MAX_DIMS (0: a scalar) */
    int64_t shape[SAFETENSORS_MAX_DIMS]; /* shape[0] the slowest-varying, as in numpy */
    uint64_t begin, end; /* data_offsets, relative to the byte buffer */
    const void *data;    /* inside the mapping; may be unaligned */
    size_t nbytes;       /* end - begin */
} safetensors_tensor;

/* Opens and validates path. *out is set only on success. Errors: MG_EIO
 * (open, stat, mmap, not a regular file), MG_EFORMAT (any rule above),
 * MG_EUNSUPPORTED (a dtype other than F32/F16/BF16), MG_ENOMEM, MG_EINVAL
 * (NULL arguments). Messages start "safetensors: PATH: ". */
int safetensors_open(safetensors **out, const char *path, char *err, size_t errlen);

/* Same over a caller-owned buffer that must outlive the object; label names
 * it in messages (NULL: "<memory>"). */
int safetensors_open_memory(safetensors **out, const void *buf, size_t len, const char *label,
                            char *err, size_t errlen);

/* Unmaps and frees; accepts NULL. */
void safetensors_close(safetensors *st);

/* Tensors in ascending data offset order. */
int64_t safetensors_count(const safetensors *st);
const safetensors_tensor *safetensors_at(const safetensors *st, int64_t i); /* NULL out of range */
const safetensors_tensor *safetensors_find(const safetensors *st, const char *name); /* NULL absent */

/* A __metadata__ value, or NULL when absent. */
const char *safetensors_metadata(const safetensors *st, const char *key);

/* Bytes of one element of a dtype this reader accepts (4 or 2); 0 otherwise. */
size_t safetensors_type_size(uint32_t type);

#endif
