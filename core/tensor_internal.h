/* moegate — private to the tensor kernels: block layouts, activation
 * formats, the kernel table and helpers shared by tensor.c (the scalar
 * specification) and the SIMD files tensor_avx2.c / tensor_avx512.c.
 *
 * Nothing here is part of the public contract (core/tensor.h); the GGUF
 * block layouts are, and are drawn below bit by bit.
 *
 * Alignment: kernels read weight blocks through the structs below, so a
 * weight row must start on a 2-byte boundary (GGUF aligns tensor data to 32
 * bytes and every block size is even, so mmap'd rows always do). f32 weight
 * rows must be 4-byte aligned. Activation rows (our format) may sit anywhere:
 * their fields are read with memcpy or unaligned loads.
 */
#ifndef MOEGATE_CORE_TENSOR_INTERNAL_H
#define MOEGATE_CORE_TENSOR_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "tensor.h"

/* ---- GGUF block layouts (bit-exact with the ecosystem) ----------------- */

#define QK  32  /* elements per Q8_0 / Q4_0 block */
#define QKK 256 /* elements per K-quant super-block */

/* Q8_0: 32 weights  w[i] = d * qs[i].
 *   byte 0..1   d      f16 scale
 *   byte 2..33  qs[32] int8, element i at qs[i]                       */
typedef struct blk_q8_0 {
    uint16_t d;
    int8_t qs[QK];
} blk_q8_0;
_Static_assert(sizeof(blk_q8_0) == 34, "q8_0 block is 34 bytes");

/* Q4_0: 32 weights  w[i] = d * (nibble(i) - 8).
 *   byte 0..1   d      f16 scale
 *   byte 2..17  qs[16] element j (j<16) = qs[j] & 0x0F,
 *                      element j+16     = qs[j] >> 4
 *     qs[j]:  7 6 5 4 | 3 2 1 0
 *            elem j+16| elem j                                         */
typedef struct blk_q4_0 {
    uint16_t d;
    uint8_t qs[QK / 2];
} blk_q4_0;
_Static_assert(sizeof(blk_q4_0) == 18, "q4_0 block is 18 bytes");

/* Q4_K: 256 weights in 8 sub-blocks of 32; sub-block j has a 6-bit scale
 * sc[j] and a 6-bit min m[j]:  w = d*sc[j]*q - dmin*m[j],  q in 0..15.
 *   byte 0..1     d         f16
 *   byte 2..3     dmin      f16
 *   byte 4..15    scales[12] (the 16 six-bit numbers, "k4" packing)
 *   byte 16..143  qs[128]
 * scales packing (bit 7 left):
 *   scales[j],   j<4:  [m-hi(sc[j+4]) 2 bits][sc[j]     6 bits]
 *   scales[j+4], j<4:  [m-hi(m[j+4])  2 bits][m[j]      6 bits]
 *   scales[j+8], j<4:  [m[j+4] low 4 bits]   [sc[j+4] low 4 bits]
 *   i.e. for j >= 4: sc[j] = (scales[j+4] & 0xF) | (scales[j-4] >> 6) << 4
 *                    m[j]  = (scales[j+4] >> 4)  | (scales[j]   >> 6) << 4
 * qs: 4 chunks of 64 elements; chunk c uses qs[32c .. 32c+31]:
 *   element 64c + l      = qs[32c + l] & 0x0F   (sub-block 2c)
 *   element 64c + 32 + l = qs[32c + l] >> 4     (sub-block 2c+1)       */
typedef struct blk_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[QKK / 2];
} blk_q4_K;
_Static_assert(sizeof(blk_q4_K) == 144, "q4_K block is 144 bytes");

/* Q5_K: as Q4_K plus a fifth bit per weight, q in 0..31.
 *   byte 0..1 d, 2..3 dmin, 4..15 scales[12] (as Q4_K),
 *   byte 16..47   qh[32]: bit b of qh[l] is the high bit of element
 *                 32b + l  (so chunk c uses bits 2c and 2c+1)
 *   byte 48..175  qs[128]: low 4 bits, laid out as Q4_K's qs
 *   element 64c + l      = (qs[32c+l] & 0xF) | ((qh[l] >> 2c) & 1) << 4
 *   element 64c + 32 + l = (qs[32c+l] >> 4)  | ((qh[l] >> 2c+1) & 1) << 4 */
typedef struct blk_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[QKK / 8];
    uint8_t qs[QKK / 2];
} blk_q5_K;
_Static_assert(sizeof(blk_q5_K) == 176, "q5_K block is 176 bytes");

/* Q6_K: 256 weights in 16 sub-blocks of 16, w = d * sc[e/16] * (q - 32),
 * q in 0..63 (4 low bits in ql, 2 high bits in qh).
 *   byte 0..127    ql[128]
 *   byte 128..191  qh[64]
 *   byte 192..207  scales[16] int8
 *   byte 208..209  d f16
 * Two halves h = 0,1 of 128 elements use ql[64h ..] and qh[32h ..]; for
 * l < 32, with L = ql + 64h, H = qh + 32h, element 128h + ...
 *   ... + l      = (L[l]    & 0xF) | ((H[l] >> 0) & 3) << 4
 *   ... + l + 32 = (L[l+32] & 0xF) | ((H[l] >> 2) & 3) << 4
 *   ... + l + 64 = (L[l]    >> 4)  | ((H[l] >> 4) & 3) << 4
 *   ... + l + 96 = (L[l+32] >> 4)  | ((H[l] >> 6) & 3) << 4             */
typedef struct blk_q6_K {
    uint8_t ql[QKK / 2];
    uint8_t qh[QKK / 4];
    int8_t scales[QKK / 16];
    uint16_t d;
} blk_q6_K;
_Static_assert(sizeof(blk_q6_K) == 210, "q6_K block is 210 bytes");

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. */
static inline void kq_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* All 8 scales and 8 mins at once with 32-bit word operations: byte j of
 * out[0] / out[1] is sc[j] / m[j] for j < 4, of out[2] / out[3] for
 * j = 4..7. Equal to kq_scale_min (tested). */
static inline void kq_scale_min_words(const uint8_t *s, uint32_t out[4])
{
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    out[0] = u0 & 0x3f3f3f3fu;
    out[1] = u1 & 0x3f3f3f3fu;
    out[2] = (u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u);
    out[3] = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u);
}

/* ---- activation formats (private) ---------------------------------------
 *
 * F32, F16 and BF16 weights take plain f32 activation rows (4k bytes).
 * Integer weights take 8-bit rows; every value is q = round_even(clamp(
 * x * id, -127, 127)) with d = amax / 127 and id = d ? 1/d : 0 over its group
 * (NaN inputs quantise to -127: fmaxf(NaN, -127) == -127, as vmaxps does).
 * Rows are padded with zero bytes to a multiple of 64 bytes.
 *
 * ACT_Q8B, for Q8_0 and Q4_0 (group = 32 elements, nb = k/32):
 *   int8  qs[k]      @ 0
 *   f32   d[nb]      @ k
 *   int32 off[nb]    @ k + 4nb     off = -c * sum(qs of the block), with
 *                                  c = 128 for Q8_0, 8 for Q4_0: the
 *                                  correction for the unsigned weight codes
 *                                  the SIMD kernels multiply (w+128, q)
 * ACT_Q8K32, for Q4_K and Q5_K (group = 256, ns = k/256):
 *   int8  qs[k]      @ 0
 *   f32   d[ns]      @ k
 *   f32   sum32[k/32] @ k + 4ns    sum of qs over each 32 (exact in f32)
 * ACT_Q8K16, for Q6_K (group = 256):
 *   int8  qs[k]      @ 0
 *   f32   d[ns]      @ k
 *   int16 sum16[k/16] @ k + 4ns    sum of qs over each 16
 *   int32 off16[k/16] @ k + 4ns + k/8   -32 * sum16
 */
enum act_fmt { ACT_F32, ACT_Q8B, ACT_Q8K32, ACT_Q8K16, ACT_NONE };

static inline enum act_fmt act_fmt_of(uint32_t wtype)
{
    switch (wtype) {
    case TENSOR_F32:
    case TENSOR_F16:
    case TENSOR_BF16: return ACT_F32;
    case TENSOR_Q8_0:
    case TENSOR_Q4_0: return ACT_Q8B;
    case TENSOR_Q4_K:
    case TENSOR_Q5_K: return ACT_Q8K32;
    case TENSOR_Q6_K: return ACT_Q8K16;
    default: return ACT_NONE;
    }
}

/* Byte offsets of the fields of an integer activation row of k elements. */
static inline size_t act_off_d(int64_t k)
{
    return (size_t)k;
}
static inline size_t act_off_aux(enum act_fmt f, int64_t k) /* off / sum32 / sum16 */
{
    return (size_t)k + 4 * (size_t)(k / (f == ACT_Q8B ? QK : QKK));
}
static inline size_t act_off_off16(int64_t k) /* ACT_Q8K16 only */
{
    return act_off_aux(ACT_Q8K16, k) + 2 * (size_t)(k / 16);
}

static inline float ld_f32(const void *p)
{
    float v;
    memcpy(&v, p, 4);
    return v;
}
static inline int32_t ld_i32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline int16_t ld_i16(const void *p)
{
    int16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint16_t ld_u16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* ---- the kernel table ---------------------------------------------------- */

typedef void (*tensor_dequant_fn)(float *dst, const void *src, int64_t n);
typedef void (*tensor_act_fn)(void *dst, const float *src, int64_t k);
/* y[t*ldy + r] = dot(W row r, X row t); see tensor_gemm in tensor.h. */
typedef void (*tensor_gemm_fn)(float *y, int64_t ldy, const void *w, size_t w_stride, int64_t nr,
                               const void *xa, size_t xa_stride, int64_t nt, int64_t k);

struct tensor_kernels {
    const char *name;
    enum tensor_isa isa;
    tensor_dequant_fn dequant[TENSOR_TYPE_COUNT]; /* NULL: not computable */
    tensor_act_fn act[TENSOR_TYPE_COUNT];         /* indexed by weight type */
    tensor_gemm_fn gemm[TENSOR_TYPE_COUNT];
    /* out[0..n) += w * src[0..n) for an F32, F16 or BF16 row */
    void (*axpy)(uint32_t type, float *out, float w, const void *src, int64_t n);
};

void tensor_axpy_scalar(uint32_t type, float *out, float w, const void *src, int64_t n);

extern const tensor_kernels tensor_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
#define TENSOR_HAVE_X86 1
extern const tensor_kernels tensor_kernels_avx2;
extern const tensor_kernels tensor_kernels_avx512;
#endif

/* Scalar specification functions the SIMD tables reuse where SIMD buys
 * nothing (dequantisation is not a hot path). Defined in tensor.c. */
void tensor_dequant_f32_scalar(float *dst, const void *src, int64_t n);
void tensor_dequant_f16_scalar(float *dst, const void *src, int64_t n);
void tensor_dequant_bf16_scalar(float *dst, const void *src, int64_t n);
void tensor_dequant_q8_0_scalar(float *dst, const void *src, int64_t n);
void tensor_dequant_q4_0_scalar(float *dst, const void *src, int64_t n);
void tensor_dequant_q4_K_scalar(float *dst, const void *src, int64_t n);
void tensor_dequant_q5_K_scalar(float *dst, const void *src, int64_t n);
void tensor_dequant_q6_K_scalar(float *dst, const void *src, int64_t n);
void tensor_act_f32_scalar(void *dst, const float *src, int64_t k);

#endif
