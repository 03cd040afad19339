/* moegate — tensor types, quantised block layouts and compute kernels.
 *
 * Type ids and block layouts are exactly those of the GGUF ecosystem (ggml),
 * so published GGUF files load unchanged. The table knows every ggml type id
 * (so the GGUF reader can size any tensor); tensor_type_info.computable says
 * which ones our kernels run: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K.
 *
 * Kernels come in dispatch tables, one per instruction-set level (scalar,
 * AVX2/FMA, AVX-512 with VNNI). The scalar table is the specification;
 * every other table must agree with it (tests/unit/test_tensor.c). The table
 * is chosen at start-up from the CPU's features (tensor_kernels_best), and a
 * caller may force a lower level (tensor_kernels_get).
 *
 * Matrix products go through two calls:
 *   1. tensor_act_prepare() converts an f32 activation row into the format
 *      the weight type's kernel consumes (f32 for float weights, 8-bit blocks
 *      for quantised weights — the format is private to this module; only its
 *      size, tensor_act_row_bytes(), is public);
 *   2. tensor_gemm() computes a tile y[t][r] = dot(W row r, X row t).
 * The caller (core/matmul) splits rows across threads and tiles tokens.
 *
 * Thread safety: all functions are pure or read-only on their inputs; the
 * tables are const. Any thread may call anything concurrently.
 */
#ifndef MOEGATE_CORE_TENSOR_H
#define MOEGATE_CORE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml type ids (as stored in GGUF tensor infos). */
enum tensor_type {
    TENSOR_F32 = 0,
    TENSOR_F16 = 1,
    TENSOR_Q4_0 = 2,
    TENSOR_Q4_1 = 3,
    TENSOR_Q5_0 = 6,
    TENSOR_Q5_1 = 7,
    TENSOR_Q8_0 = 8,
    TENSOR_Q8_1 = 9,
    TENSOR_Q2_K = 10,
    TENSOR_Q3_K = 11,
    TENSOR_Q4_K = 12,
    TENSOR_Q5_K = 13,
    TENSOR_Q6_K = 14,
    TENSOR_Q8_K = 15,
    TENSOR_IQ2_XXS = 16,
    TENSOR_IQ2_XS = 17,
    TENSOR_IQ3_XXS = 18,
    TENSOR_IQ1_S = 19,
    TENSOR_IQ4_NL = 20,
    TENSOR_IQ3_S = 21,
    TENSOR_IQ2_S = 22,
    TENSOR_IQ4_XS = 23,
    TENSOR_I8 = 24,
    TENSOR_I16 = 25,
    TENSOR_I32 = 26,
    TENSOR_I64 = 27,
    TENSOR_F64 = 28,
    TENSOR_IQ1_M = 29,
    TENSOR_BF16 = 30,
    TENSOR_TQ1_0 = 34,
    TENSOR_TQ2_0 = 35,
    TENSOR_MXFP4 = 39,
    TENSOR_TYPE_COUNT = 40
};

typedef struct tensor_type_info {
    const char *name;     /* as the ecosystem prints it: "f32", "q4_K", ... */
    int64_t block_elems;  /* elements per block (1 for plain types) */
    size_t block_bytes;   /* bytes per block */
    bool computable;      /* our kernels can dequantise and multiply it */
} tensor_type_info;

/* NULL for ids that are not ggml types (including retired ids 4, 5, 31..33,
 * 36..38). */
const tensor_type_info *tensor_type_get(uint32_t type);

/* Bytes of a row of n elements of type t. Returns 0 on success, MG_EINVAL when
 * t is unknown or n is not a multiple of the block size, MG_ERANGE on
 * overflow. */
int tensor_row_bytes(uint32_t type, int64_t n, size_t *out);

/* Bytes of a whole tensor ne[0] x ne[1] x ... (n_dims dims); same errors. */
int tensor_bytes(uint32_t type, const int64_t *ne, int n_dims, size_t *out);

/* ---- scalar conversions ------------------------------------------------ */

float tensor_f16_to_f32(uint16_t h);
uint16_t tensor_f32_to_f16(float f); /* round to nearest even */
float tensor_bf16_to_f32(uint16_t h);
uint16_t tensor_f32_to_bf16(float f); /* round to nearest even */

/* ---- dispatch tables --------------------------------------------------- */

enum tensor_isa {
    TENSOR_ISA_SCALAR = 0,
    TENSOR_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    TENSOR_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ + VNNI */
    TENSOR_ISA_COUNT
};

typedef struct tensor_kernels tensor_kernels;

/* Table for isa, or NULL when this CPU (or this build) lacks it. */
const tensor_kernels *tensor_kernels_get(enum tensor_isa isa);
/* Highest level the CPU supports; never NULL (scalar at worst). Honours the
 * environment variable MOEGATE_ISA=scalar|avx2|avx512 as an upper bound. */
const tensor_kernels *tensor_kernels_best(void);
const char *tensor_kernels_name(const tensor_kernels *kt); /* "scalar", ... */
enum tensor_isa tensor_kernels_isa(const tensor_kernels *kt);

/* ---- row operations ---------------------------------------------------- */

/* dst[0..n) = dequantised src row. n must be a multiple of the block size and
 * type computable (callers check with tensor_type_get). */
void tensor_dequant_row(const tensor_kernels *kt, uint32_t type, float *dst, const void *src,
                        int64_t n);

/* Quantise an f32 row into a weight type (F32, F16, BF16, Q8_0, Q4_0, Q4_K,
 * Q5_K, Q6_K). Used by tests, fixtures and merge-at-load; not a hot path and
 * not required to match the ecosystem's quantiser bit for bit, only to
 * produce valid blocks with small error. Returns MG_EINVAL for other types or
 * a bad n. */
int tensor_quantize_row(uint32_t type, void *dst, const float *src, int64_t n);

/* ---- matrix products --------------------------------------------------- */

/* Bytes of one activation row of k elements prepared for weight type wtype.
 * For F32, F16 and BF16 weights the prepared row IS the f32 row (4k bytes,
 * a plain copy), so callers may pass f32 rows to tensor_gemm directly. */
size_t tensor_act_row_bytes(uint32_t wtype, int64_t k);

/* dst = src (f32 row of k elements) converted for products with wtype.
 * k must be a multiple of wtype's block size. */
void tensor_act_prepare(const tensor_kernels *kt, uint32_t wtype, void *dst, const float *src,
                        int64_t k);

/* out[0..n) += w * src[0..n), src a row of F32, F16 or BF16 values (LoRA
 * factors, cached values); SIMD per the table. Other types: no-op. */
void tensor_axpy(const tensor_kernels *kt, uint32_t type, float *out, float w, const void *src, int64_t n);

/* y[t*ldy + r] = sum_{i<k} W[r][i] * X[t][i]   for r < nr, t < nt.
 *   w:  row r at (const char *)w + r*w_stride, nr rows of wtype, k elements
 *   xa: row t at (const char *)xa + t*xa_stride, prepared by
 *       tensor_act_prepare for wtype
 * Overwrites y (does not accumulate). Any nr, nt >= 1. */
void tensor_gemm(const tensor_kernels *kt, uint32_t wtype, float *y, int64_t ldy, const void *w,
                 size_t w_stride, int64_t nr, const void *xa, size_t xa_stride, int64_t nt,
                 int64_t k);

#endif
