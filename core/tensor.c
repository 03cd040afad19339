/* moegate — kernel dispatch and the scalar kernel table, the specification.
 *
 * Every SIMD table (tensor_avx2.c, tensor_avx512.c) must agree with the
 * functions here:
 *   - dequantisation: bit-exact (it is the ecosystem's definition: each
 *     weight is computed with the same float operations in the same order,
 *     e.g. Q4_K's (d*sc)*q - dmin*m, Q6_K's (d*sc)*q);
 *   - activation preparation: byte-identical (the rounding is defined below
 *     and uses only IEEE operations a vector unit reproduces exactly);
 *   - products: the integer dot of every block is exact everywhere; the
 *     float sums over blocks (and, for float weights, over elements) may be
 *     associated differently, so tables agree to a few ulps of the sum of
 *     |terms|, not bit for bit (tests/unit/test_tensor.c states the bound).
 *
 * Dispatch: tensor_kernels_best() reads the CPU's features with cpuid and
 * xgetbv (the OS must save the YMM / ZMM state, not only the CPU support
 * the instructions), capped by MOEGATE_ISA=scalar|avx2|avx512.
 *
 * Threading: everything is pure; the tables are const.
 */
#include "tensor_internal.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"

#ifdef TENSOR_HAVE_X86
#include <cpuid.h>
#endif

/* ---- dequantisation (the ecosystem's definitions) ------------------------ */

void tensor_dequant_f32_scalar(float *dst, const void *src, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void tensor_dequant_f16_scalar(float *dst, const void *src, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = tensor_f16_to_f32(ld_u16(p + 2 * i));
}

void tensor_dequant_bf16_scalar(float *dst, const void *src, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = tensor_bf16_to_f32(ld_u16(p + 2 * i));
}

void tensor_dequant_q8_0_scalar(float *dst, const void *src, int64_t n)
{
    const blk_q8_0 *b = src;
    for (int64_t ib = 0; ib < n / QK; ib++, b++) {
        const float d = tensor_f16_to_f32(b->d);
        for (int j = 0; j < QK; j++)
            dst[ib * QK + j] = (float)b->qs[j] * d;
    }
}

void tensor_dequant_q4_0_scalar(float *dst, const void *src, int64_t n)
{
    const blk_q4_0 *b = src;
    for (int64_t ib = 0; ib < n / QK; ib++, b++) {
        const float d = tensor_f16_to_f32(b->d);
        for (int j = 0; j < QK / 2; j++) {
            dst[ib * QK + j] = (float)((b->qs[j] & 0x0F) - 8) * d;
            dst[ib * QK + j + QK / 2] = (float)((b->qs[j] >> 4) - 8) * d;
        }
    }
}

void tensor_dequant_q4_K_scalar(float *dst, const void *src, int64_t n)
{
    const blk_q4_K *b = src;
    for (int64_t ib = 0; ib < n / QKK; ib++, b++) {
        const float d = tensor_f16_to_f32(b->d), dmin = tensor_f16_to_f32(b->dmin);
        float *y = dst + ib * QKK;
        for (int c = 0; c < 4; c++) {
            uint8_t sc, m;
            kq_scale_min(b->scales, 2 * c, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            kq_scale_min(b->scales, 2 * c + 1, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            const uint8_t *q = b->qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                y[64 * c + l] = d1 * (float)(q[l] & 0xF) - m1;
                y[64 * c + 32 + l] = d2 * (float)(q[l] >> 4) - m2;
            }
        }
    }
}

void tensor_dequant_q5_K_scalar(float *dst, const void *src, int64_t n)
{
    const blk_q5_K *b = src;
    for (int64_t ib = 0; ib < n / QKK; ib++, b++) {
        const float d = tensor_f16_to_f32(b->d), dmin = tensor_f16_to_f32(b->dmin);
        float *y = dst + ib * QKK;
        for (int c = 0; c < 4; c++) {
            uint8_t sc, m;
            kq_scale_min(b->scales, 2 * c, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            kq_scale_min(b->scales, 2 * c + 1, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            const uint8_t *q = b->qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                int lo = (q[l] & 0xF) | ((b->qh[l] >> (2 * c)) & 1) << 4;
                int hi = (q[l] >> 4) | ((b->qh[l] >> (2 * c + 1)) & 1) << 4;
                y[64 * c + l] = d1 * (float)lo - m1;
                y[64 * c + 32 + l] = d2 * (float)hi - m2;
            }
        }
    }
}

/* Q6_K code of element e (0..255) of a block, 0..63. */
static inline int q6_code(const blk_q6_K *b, int e)
{
    int h = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
    const uint8_t *L = b->ql + 64 * h, *H = b->qh + 32 * h;
    int lo = quarter & 1 ? L[l + 32] : L[l];
    lo = quarter & 2 ? lo >> 4 : lo & 0xF;
    return lo | ((H[l] >> (2 * quarter)) & 3) << 4;
}

void tensor_dequant_q6_K_scalar(float *dst, const void *src, int64_t n)
{
    const blk_q6_K *b = src;
    for (int64_t ib = 0; ib < n / QKK; ib++, b++) {
        const float d = tensor_f16_to_f32(b->d);
        for (int e = 0; e < QKK; e++)
            dst[ib * QKK + e] = d * (float)b->scales[e / 16] * (float)(q6_code(b, e) - 32);
    }
}

/* ---- weight quantisation (tests, fixtures, merge-at-load) ----------------
 * Not the ecosystem's quantisers (which search scales to minimise weighted
 * error); valid blocks with simple, documented choices. */

static inline int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Nearest integer, ties to even (current rounding mode, which is that by
 * default); v must be finite and |v| < 2^22. */
static inline float round_even(float v)
{
    return (v + 12582912.0f) - 12582912.0f; /* 1.5 * 2^23 */
}

static void quant_q8_0(void *dst, const float *x, int64_t n)
{
    blk_q8_0 *b = dst;
    for (int64_t ib = 0; ib < n / QK; ib++, b++, x += QK) {
        float amax = 0;
        for (int j = 0; j < QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = tensor_f32_to_f16(d);
        for (int j = 0; j < QK; j++)
            b->qs[j] =
                (int8_t)clampi((int)round_even(fminf(fmaxf(x[j] * id, -127), 127)), -127, 127);
    }
}

/* Q4_0 spans [-8, 7]*d: d = -max/8 for the element of largest magnitude
 * (signed), so that element lands exactly on code 0. */
static void quant_q4_0(void *dst, const float *x, int64_t n)
{
    blk_q4_0 *b = dst;
    for (int64_t ib = 0; ib < n / QK; ib++, b++, x += QK) {
        float amax = 0, vmax = 0;
        for (int j = 0; j < QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                vmax = x[j];
            }
        const float d = vmax / -8.0f;
        b->d = tensor_f32_to_f16(d);
        const float dq = tensor_f16_to_f32(b->d), id = dq != 0.0f ? 1.0f / dq : 0.0f;
        for (int j = 0; j < QK / 2; j++) {
            int q0 = clampi((int)round_even(fminf(fmaxf(x[j] * id, -9), 8)) + 8, 0, 15);
            int q1 = clampi((int)round_even(fminf(fmaxf(x[j + 16] * id, -9), 8)) + 8, 0, 15);
            b->qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

/* Codes 0..qmax of a Q4_K/Q5_K block (x = 256 values) into q[256], with its
 * scales packed into s[12], d and dmin. Sub-block j maps [lo, hi] (lo =
 * min(0, min x), hi = max(0, max x)) onto the codes; the 6-bit min and scale
 * are rounded up (first the min, then the scale that covers hi + min), so
 * no value is clipped and every error is at most half a step. */
static void kq_quant_block(const float *x, int qmax, uint8_t s[12], uint16_t *dh, uint16_t *dminh,
                           uint8_t q[QKK])
{
    float hi[8], minv[8], need[8], mmax = 0, nmax = 0;
    for (int j = 0; j < 8; j++) {
        float lo = 0;
        hi[j] = 0;
        for (int l = 0; l < 32; l++) {
            lo = fminf(lo, x[32 * j + l]);
            hi[j] = fmaxf(hi[j], x[32 * j + l]);
        }
        minv[j] = -lo;
        mmax = fmaxf(mmax, minv[j]);
    }
    *dminh = tensor_f32_to_f16(mmax / 63.0f);
    const float dmin = tensor_f16_to_f32(*dminh);
    uint8_t sc[8], m[8];
    float em[8], es[8];
    for (int j = 0; j < 8; j++) {
        m[j] = (uint8_t)(dmin > 0 ? clampi((int)ceilf(fminf(minv[j] / dmin, 63)), 0, 63) : 0);
        em[j] = dmin * (float)m[j];
        need[j] = (hi[j] + em[j]) / (float)qmax;
        nmax = fmaxf(nmax, need[j]);
    }
    *dh = tensor_f32_to_f16(nmax / 63.0f);
    const float d = tensor_f16_to_f32(*dh);
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(d > 0 ? clampi((int)ceilf(fminf(need[j] / d, 63)), 0, 63) : 0);
        es[j] = d * (float)sc[j];
    }
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)((m[j] & 63) | (m[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | (m[j + 4] & 0xF) << 4);
    }
    for (int j = 0; j < 8; j++) {
        const float id = es[j] > 0 ? 1.0f / es[j] : 0.0f;
        for (int l = 0; l < 32; l++) {
            float v = fminf(fmaxf((x[32 * j + l] + em[j]) * id, 0), (float)qmax);
            q[32 * j + l] = (uint8_t)round_even(v);
        }
    }
}

static void quant_q4_K(void *dst, const float *x, int64_t n)
{
    blk_q4_K *b = dst;
    for (int64_t ib = 0; ib < n / QKK; ib++, b++, x += QKK) {
        uint8_t q[QKK];
        kq_quant_block(x, 15, b->scales, &b->d, &b->dmin, q);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + 32 + l] << 4);
    }
}

static void quant_q5_K(void *dst, const float *x, int64_t n)
{
    blk_q5_K *b = dst;
    for (int64_t ib = 0; ib < n / QKK; ib++, b++, x += QKK) {
        uint8_t q[QKK];
        kq_quant_block(x, 31, b->scales, &b->d, &b->dmin, q);
        memset(b->qh, 0, sizeof(b->qh));
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
                b->qs[32 * c + l] = (uint8_t)((lo & 0xF) | (hi & 0xF) << 4);
                b->qh[l] |= (uint8_t)(((lo >> 4) & 1) << (2 * c) | ((hi >> 4) & 1) << (2 * c + 1));
            }
    }
}

/* Q6_K: each sub-block of 16 spans [-32, 31]*s with s = -max/32 for its
 * element of largest magnitude; the 16 signed scales are then quantised to
 * int8 against d = max|s| / 127, rounded away from zero so that the
 * largest element is not clipped. */
static void quant_q6_K(void *dst, const float *x, int64_t n)
{
    blk_q6_K *b = dst;
    for (int64_t ib = 0; ib < n / QKK; ib++, b++, x += QKK) {
        float s[16], smax = 0;
        for (int j = 0; j < 16; j++) {
            float amax = 0, vmax = 0;
            for (int l = 0; l < 16; l++)
                if (fabsf(x[16 * j + l]) > amax) {
                    amax = fabsf(x[16 * j + l]);
                    vmax = x[16 * j + l];
                }
            s[j] = vmax / -32.0f;
            smax = fmaxf(smax, fabsf(s[j]));
        }
        b->d = tensor_f32_to_f16(smax / 127.0f);
        const float d = tensor_f16_to_f32(b->d);
        uint8_t q[QKK];
        for (int j = 0; j < 16; j++) {
            const float r = fminf(fabsf(s[j]) / d, 128);
            int sc = d > 0 ? clampi(s[j] < 0 ? -(int)ceilf(r) : (int)ceilf(r), -128, 127) : 0;
            b->scales[j] = (int8_t)sc;
            const float es = d * (float)sc, id = es != 0.0f ? 1.0f / es : 0.0f;
            for (int l = 0; l < 16; l++) {
                float v = fminf(fmaxf(x[16 * j + l] * id, -32), 31);
                q[16 * j + l] = (uint8_t)((int)round_even(v) + 32);
            }
        }
        memset(b->qh, 0, sizeof(b->qh));
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t *Q = q + 128 * h;
                b->ql[64 * h + l] = (uint8_t)((Q[l] & 0xF) | (Q[l + 64] & 0xF) << 4);
                b->ql[64 * h + l + 32] = (uint8_t)((Q[l + 32] & 0xF) | (Q[l + 96] & 0xF) << 4);
                b->qh[32 * h + l] = (uint8_t)((Q[l] >> 4) | (Q[l + 32] >> 4) << 2 |
                                              (Q[l + 64] >> 4) << 4 | (Q[l + 96] >> 4) << 6);
            }
    }
}

int tensor_quantize_row(uint32_t type, void *dst, const float *src, int64_t n)
{
    const tensor_type_info *ti = tensor_type_get(type);
    if (!ti || !ti->computable || n < 0 || n % ti->block_elems != 0)
        return MG_EINVAL;
    uint8_t *p = dst;
    switch (type) {
    case TENSOR_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case TENSOR_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = tensor_f32_to_f16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    case TENSOR_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = tensor_f32_to_bf16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    case TENSOR_Q8_0: quant_q8_0(dst, src, n); break;
    case TENSOR_Q4_0: quant_q4_0(dst, src, n); break;
    case TENSOR_Q4_K: quant_q4_K(dst, src, n); break;
    case TENSOR_Q5_K: quant_q5_K(dst, src, n); break;
    case TENSOR_Q6_K: quant_q6_K(dst, src, n); break;
    default: return MG_EINVAL;
    }
    return MG_OK;
}

/* ---- activation preparation (the rounding every table reproduces) ------- */

size_t tensor_act_row_bytes(uint32_t wtype, int64_t k)
{
    size_t n;
    switch (act_fmt_of(wtype)) {
    case ACT_F32: return (size_t)k * sizeof(float);
    case ACT_Q8B: n = act_off_aux(ACT_Q8B, k) + 4 * (size_t)(k / QK); break;
    case ACT_Q8K32: n = act_off_aux(ACT_Q8K32, k) + 4 * (size_t)(k / 32); break;
    case ACT_Q8K16: n = act_off_off16(k) + 4 * (size_t)(k / 16); break;
    default: return 0;
    }
    return (n + 63) & ~(size_t)63;
}

void tensor_act_f32_scalar(void *dst, const float *src, int64_t k)
{
    memcpy(dst, src, (size_t)k * sizeof(float));
}

/* One group of g values: codes into q, returns d. This is THE rounding:
 *   amax = max |x| (NaNs ignored), d = amax / 127, id = d ? 1/d : 0,
 *   q = round_even(min(max(x * id, -127), 127))   (NaN -> -127).   */
static float act_group(int8_t *q, const float *x, int g)
{
    float amax = 0;
    for (int i = 0; i < g; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < g; i++)
        q[i] = (int8_t)(int)round_even(fminf(fmaxf(x[i] * id, -127.0f), 127.0f));
    return d;
}

static int32_t sum_i8(const int8_t *q, int n)
{
    int32_t s = 0;
    for (int i = 0; i < n; i++)
        s += q[i];
    return s;
}

static void act_q8b(void *dst, const float *x, int64_t k, int32_t c)
{
    uint8_t *row = dst;
    int8_t *qs = (int8_t *)row;
    for (int64_t b = 0; b < k / QK; b++) {
        float d = act_group(qs + b * QK, x + b * QK, QK);
        int32_t off = -c * sum_i8(qs + b * QK, QK);
        memcpy(row + act_off_d(k) + 4 * b, &d, 4);
        memcpy(row + act_off_aux(ACT_Q8B, k) + 4 * b, &off, 4);
    }
    size_t used = act_off_aux(ACT_Q8B, k) + 4 * (size_t)(k / QK);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q8_0, k) - used);
}

static void act_q8_0_scalar(void *dst, const float *x, int64_t k)
{
    act_q8b(dst, x, k, 128);
}

static void act_q4_0_scalar(void *dst, const float *x, int64_t k)
{
    act_q8b(dst, x, k, 8);
}

static void act_k32_scalar(void *dst, const float *x, int64_t k)
{
    uint8_t *row = dst;
    int8_t *qs = (int8_t *)row;
    for (int64_t s = 0; s < k / QKK; s++) {
        float d = act_group(qs + s * QKK, x + s * QKK, QKK);
        memcpy(row + act_off_d(k) + 4 * s, &d, 4);
    }
    for (int64_t j = 0; j < k / 32; j++) {
        float sum = (float)sum_i8(qs + 32 * j, 32);
        memcpy(row + act_off_aux(ACT_Q8K32, k) + 4 * j, &sum, 4);
    }
    size_t used = act_off_aux(ACT_Q8K32, k) + 4 * (size_t)(k / 32);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q4_K, k) - used);
}

static void act_k16_scalar(void *dst, const float *x, int64_t k)
{
    uint8_t *row = dst;
    int8_t *qs = (int8_t *)row;
    for (int64_t s = 0; s < k / QKK; s++) {
        float d = act_group(qs + s * QKK, x + s * QKK, QKK);
        memcpy(row + act_off_d(k) + 4 * s, &d, 4);
    }
    for (int64_t j = 0; j < k / 16; j++) {
        int16_t sum = (int16_t)sum_i8(qs + 16 * j, 16);
        int32_t off = -32 * (int32_t)sum;
        memcpy(row + act_off_aux(ACT_Q8K16, k) + 2 * j, &sum, 2);
        memcpy(row + act_off_off16(k) + 4 * j, &off, 4);
    }
    size_t used = act_off_off16(k) + 4 * (size_t)(k / 16);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q6_K, k) - used);
}

/* ---- products ------------------------------------------------------------
 * For float weights: y = sum_i w[i]*x[i] accumulated in order in f32.
 * For integer weights, per group (block or super-block) an exact integer
 * dot, scaled in f32 and accumulated in order:
 *   Q8_0, Q4_0: acc += (dw*dx) * (float)sum_i w_i*x_i      (w_i = code)
 *   Q4_K, Q5_K: acc += dx * (d*(float)sumi - dmin*(float)summ),
 *               sumi = sum_j sc_j*sum(q*x), summ = sum_j m_j*sum32_j
 *   Q6_K:       acc += (dx*d) * (float)sum_j sc_j*sum((q-32)*x)       */

typedef float (*row_dot_fn)(const void *wrow, const uint8_t *xrow, int64_t k);

static float dot_f32(const void *wrow, const uint8_t *xrow, int64_t k)
{
    const float *w = wrow;
    float acc = 0;
    for (int64_t i = 0; i < k; i++)
        acc += w[i] * ld_f32(xrow + 4 * i);
    return acc;
}

static float dot_f16(const void *wrow, const uint8_t *xrow, int64_t k)
{
    const uint8_t *w = wrow;
    float acc = 0;
    for (int64_t i = 0; i < k; i++)
        acc += tensor_f16_to_f32(ld_u16(w + 2 * i)) * ld_f32(xrow + 4 * i);
    return acc;
}

static float dot_bf16(const void *wrow, const uint8_t *xrow, int64_t k)
{
    const uint8_t *w = wrow;
    float acc = 0;
    for (int64_t i = 0; i < k; i++)
        acc += tensor_bf16_to_f32(ld_u16(w + 2 * i)) * ld_f32(xrow + 4 * i);
    return acc;
}

static float dot_q8_0(const void *wrow, const uint8_t *xrow, int64_t k)
{
    const blk_q8_0 *b = wrow;
    const int8_t *xq = (const int8_t *)xrow;
    float acc = 0;
    for (int64_t ib = 0; ib < k / QK; ib++, b++) {
        int32_t isum = 0;
        for (int j = 0; j < QK; j++)
            isum += b->qs[j] * xq[ib * QK + j];
        const float dx = ld_f32(xrow + act_off_d(k) + 4 * ib);
        acc += (tensor_f16_to_f32(b->d) * dx) * (float)isum;
    }
    return acc;
}

static float dot_q4_0(const void *wrow, const uint8_t *xrow, int64_t k)
{
    const blk_q4_0 *b = wrow;
    const int8_t *xq = (const int8_t *)xrow;
    float acc = 0;
    for (int64_t ib = 0; ib < k / QK; ib++, b++) {
        const int8_t *x = xq + ib * QK;
        int32_t isum = 0;
        for (int j = 0; j < QK / 2; j++)
            isum += ((b->qs[j] & 0xF) - 8) * x[j] + ((b->qs[j] >> 4) - 8) * x[j + 16];
        const float dx = ld_f32(xrow + act_off_d(k) + 4 * ib);
        acc += (tensor_f16_to_f32(b->d) * dx) * (float)isum;
    }
    return acc;
}

/* Shared by Q4_K and Q5_K: codes q[256] of super-block s already unpacked. */
static float kq_group(const uint8_t *scales, uint16_t dh, uint16_t dminh, const uint8_t q[QKK],
                      const uint8_t *xrow, int64_t k, int64_t s)
{
    const int8_t *x = (const int8_t *)xrow + s * QKK;
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kq_scale_min(scales, j, &sc, &m);
        int32_t dot = 0;
        for (int l = 0; l < 32; l++)
            dot += q[32 * j + l] * x[32 * j + l];
        sumi += sc * dot;
        summ += m * (int32_t)ld_f32(xrow + act_off_aux(ACT_Q8K32, k) + 4 * (8 * s + j));
    }
    const float dx = ld_f32(xrow + act_off_d(k) + 4 * s);
    return dx * (tensor_f16_to_f32(dh) * (float)sumi - tensor_f16_to_f32(dminh) * (float)summ);
}

static float dot_q4_K(const void *wrow, const uint8_t *xrow, int64_t k)
{
    const blk_q4_K *b = wrow;
    float acc = 0;
    for (int64_t s = 0; s < k / QKK; s++, b++) {
        uint8_t q[QKK];
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                q[64 * c + l] = b->qs[32 * c + l] & 0xF;
                q[64 * c + 32 + l] = b->qs[32 * c + l] >> 4;
            }
        acc += kq_group(b->scales, b->d, b->dmin, q, xrow, k, s);
    }
    return acc;
}

static float dot_q5_K(const void *wrow, const uint8_t *xrow, int64_t k)
{
    const blk_q5_K *b = wrow;
    float acc = 0;
    for (int64_t s = 0; s < k / QKK; s++, b++) {
        uint8_t q[QKK];
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                q[64 * c + l] =
                    (uint8_t)((b->qs[32 * c + l] & 0xF) | ((b->qh[l] >> (2 * c)) & 1) << 4);
                q[64 * c + 32 + l] =
                    (uint8_t)((b->qs[32 * c + l] >> 4) | ((b->qh[l] >> (2 * c + 1)) & 1) << 4);
            }
        acc += kq_group(b->scales, b->d, b->dmin, q, xrow, k, s);
    }
    return acc;
}

static float dot_q6_K(const void *wrow, const uint8_t *xrow, int64_t k)
{
    const blk_q6_K *b = wrow;
    float acc = 0;
    for (int64_t s = 0; s < k / QKK; s++, b++) {
        const int8_t *x = (const int8_t *)xrow + s * QKK;
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++) {
            int32_t dot = 0;
            for (int l = 0; l < 16; l++)
                dot += (q6_code(b, 16 * j + l) - 32) * x[16 * j + l];
            sumi += b->scales[j] * dot;
        }
        const float dx = ld_f32(xrow + act_off_d(k) + 4 * s);
        acc += (dx * tensor_f16_to_f32(b->d)) * (float)sumi;
    }
    return acc;
}

static inline void gemm_rows_scalar(row_dot_fn dot, float *y, int64_t ldy, const void *w,
                                    size_t w_stride, int64_t nr, const void *xa, size_t xa_stride,
                                    int64_t nt, int64_t k)
{
    for (int64_t t = 0; t < nt; t++)
        for (int64_t r = 0; r < nr; r++)
            y[t * ldy + r] = dot((const char *)w + (size_t)r * w_stride,
                                 (const uint8_t *)xa + (size_t)t * xa_stride, k);
}

static void gemm_f32_scalar(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                            const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_rows_scalar(dot_f32, y, ldy, w, ws, nr, xa, xs, nt, k);
}
static void gemm_f16_scalar(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                            const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_rows_scalar(dot_f16, y, ldy, w, ws, nr, xa, xs, nt, k);
}
static void gemm_bf16_scalar(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                             const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_rows_scalar(dot_bf16, y, ldy, w, ws, nr, xa, xs, nt, k);
}
static void gemm_q8_0_scalar(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                             const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_rows_scalar(dot_q8_0, y, ldy, w, ws, nr, xa, xs, nt, k);
}
static void gemm_q4_0_scalar(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                             const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_rows_scalar(dot_q4_0, y, ldy, w, ws, nr, xa, xs, nt, k);
}
static void gemm_q4_K_scalar(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                             const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_rows_scalar(dot_q4_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}
static void gemm_q5_K_scalar(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                             const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_rows_scalar(dot_q5_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}
static void gemm_q6_K_scalar(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                             const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_rows_scalar(dot_q6_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

void tensor_axpy_scalar(uint32_t type, float *out, float w, const void *src, int64_t n)
{
    if (type == TENSOR_F32) {
        const float *x = src;
        for (int64_t i = 0; i < n; i++)
            out[i] += w * x[i];
    } else if (type == TENSOR_F16 || type == TENSOR_BF16) {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            out[i] += w * (type == TENSOR_F16 ? tensor_f16_to_f32(h[i]) : tensor_bf16_to_f32(h[i]));
    }
}

void tensor_axpy(const tensor_kernels *kt, uint32_t type, float *out, float w, const void *src, int64_t n)
{
    kt->axpy(type, out, w, src, n);
}

const tensor_kernels tensor_kernels_scalar = {
    .axpy = tensor_axpy_scalar,
    .name = "scalar",
    .isa = TENSOR_ISA_SCALAR,
    .dequant =
        {
            [TENSOR_F32] = tensor_dequant_f32_scalar,
            [TENSOR_F16] = tensor_dequant_f16_scalar,
            [TENSOR_BF16] = tensor_dequant_bf16_scalar,
            [TENSOR_Q8_0] = tensor_dequant_q8_0_scalar,
            [TENSOR_Q4_0] = tensor_dequant_q4_0_scalar,
            [TENSOR_Q4_K] = tensor_dequant_q4_K_scalar,
            [TENSOR_Q5_K] = tensor_dequant_q5_K_scalar,
            [TENSOR_Q6_K] = tensor_dequant_q6_K_scalar,
        },
    .act =
        {
            [TENSOR_F32] = tensor_act_f32_scalar,
            [TENSOR_F16] = tensor_act_f32_scalar,
            [TENSOR_BF16] = tensor_act_f32_scalar,
            [TENSOR_Q8_0] = act_q8_0_scalar,
            [TENSOR_Q4_0] = act_q4_0_scalar,
            [TENSOR_Q4_K] = act_k32_scalar,
            [TENSOR_Q5_K] = act_k32_scalar,
            [TENSOR_Q6_K] = act_k16_scalar,
        },
    .gemm =
        {
            [TENSOR_F32] = gemm_f32_scalar,
            [TENSOR_F16] = gemm_f16_scalar,
            [TENSOR_BF16] = gemm_bf16_scalar,
            [TENSOR_Q8_0] = gemm_q8_0_scalar,
            [TENSOR_Q4_0] = gemm_q4_0_scalar,
            [TENSOR_Q4_K] = gemm_q4_K_scalar,
            [TENSOR_Q5_K] = gemm_q5_K_scalar,
            [TENSOR_Q6_K] = gemm_q6_K_scalar,
        },
};

/* ---- dispatch -------------------------------------------------------------- */

/* Highest level this CPU and OS support (not capped by the environment). */
static enum tensor_isa cpu_isa(void)
{
#ifdef TENSOR_HAVE_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return TENSOR_ISA_SCALAR;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12),
               f16c = c & (1u << 29);
    if (!osxsave || !avx)
        return TENSOR_ISA_SCALAR;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    if ((xlo & 0x6) != 0x6) /* XMM and YMM state saved by the OS */
        return TENSOR_ISA_SCALAR;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return TENSOR_ISA_SCALAR;
    const bool avx2 = b & (1u << 5);
    if (!avx2 || !fma || !f16c)
        return TENSOR_ISA_SCALAR;
    const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31),
               vnni = c & (1u << 11);
    if (f && dq && bw && vl && vnni && (xlo & 0xe0) == 0xe0) /* opmask, ZMM0-15 hi, ZMM16-31 */
        return TENSOR_ISA_AVX512;
    return TENSOR_ISA_AVX2;
#else
    return TENSOR_ISA_SCALAR;
#endif
}

const tensor_kernels *tensor_kernels_get(enum tensor_isa isa)
{
    if ((int)isa < 0 || isa >= TENSOR_ISA_COUNT || isa > cpu_isa())
        return NULL;
    switch (isa) {
    case TENSOR_ISA_SCALAR: return &tensor_kernels_scalar;
#ifdef TENSOR_HAVE_X86
    case TENSOR_ISA_AVX2: return &tensor_kernels_avx2;
    case TENSOR_ISA_AVX512: return &tensor_kernels_avx512;
#endif
    default: return NULL;
    }
}

const tensor_kernels *tensor_kernels_best(void)
{
    enum tensor_isa isa = cpu_isa();
    const char *cap = getenv("MOEGATE_ISA");
    if (cap) {
        enum tensor_isa want = strcmp(cap, "scalar") == 0   ? TENSOR_ISA_SCALAR
                               : strcmp(cap, "avx2") == 0   ? TENSOR_ISA_AVX2
                               : strcmp(cap, "avx512") == 0 ? TENSOR_ISA_AVX512
                                                            : TENSOR_ISA_COUNT;
        if (want < isa)
            isa = want;
    }
    const tensor_kernels *kt = tensor_kernels_get(isa);
    return kt ? kt : &tensor_kernels_scalar;
}

const char *tensor_kernels_name(const tensor_kernels *kt)
{
    return kt->name;
}

enum tensor_isa tensor_kernels_isa(const tensor_kernels *kt)
{
    return kt->isa;
}

/* ---- row operations and products ------------------------------------------ */

void tensor_dequant_row(const tensor_kernels *kt, uint32_t type, float *dst, const void *src,
                        int64_t n)
{
    assert(type < TENSOR_TYPE_COUNT && kt->dequant[type]);
    kt->dequant[type](dst, src, n);
}

void tensor_act_prepare(const tensor_kernels *kt, uint32_t wtype, void *dst, const float *src,
                        int64_t k)
{
    assert(wtype < TENSOR_TYPE_COUNT && kt->act[wtype]);
    kt->act[wtype](dst, src, k);
}

void tensor_gemm(const tensor_kernels *kt, uint32_t wtype, float *y, int64_t ldy, const void *w,
                 size_t w_stride, int64_t nr, const void *xa, size_t xa_stride, int64_t nt,
                 int64_t k)
{
    assert(wtype < TENSOR_TYPE_COUNT && kt->gemm[wtype]);
    if (nr <= 0 || nt <= 0)
        return;
    kt->gemm[wtype](y, ldy, w, w_stride, nr, xa, xa_stride, nt, k);
}
