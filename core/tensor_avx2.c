/* moegate — AVX2/FMA/F16C kernel table (compiled with -mavx2 -mfma -mf16c).
 *
 * Shape of every product here: one weight row at a time, tokens in groups of
 * up to four. A row's block (or super-block) is loaded and unpacked once per
 * token group and multiplied against each token's activation block, so:
 *   - for generation (nt = 1) each weight row is streamed once, in order:
 *     bandwidth-bound, a single sequential stream per row;
 *   - for batches the unpacking cost is shared by four tokens.
 * Every inner loop is fully unrolled (#pragma GCC unroll) so that the small
 * per-token arrays live in registers, and weights are prefetched in software
 * (see PF_DIST).
 *
 * Integer products use vpmaddubsw (u8 x s8 -> pairs summed in s16, which
 * saturates) then vpmaddwd (-> s32). Operand ranges keep the s16 pairs exact:
 * activation codes are within [-127, 127], weight codes are 0..63 for the
 * K-quants and Q4_0 (<= 2*63*127 = 16002), and Q8_0 uses |w| and sign(x, w)
 * (|w| <= 128: <= 2*128*127 = 32512 < 32767). Every block's integer dot is
 * therefore exact and the results differ from the scalar table only by the
 * association of float sums (see tensor.c).
 *
 * Activation preparation reproduces the scalar rounding exactly: the same
 * IEEE operations (|x| max ignoring NaN, amax/127, 1/d, x*id, clamp,
 * round-to-nearest-even conversion).
 */
#include <immintrin.h>

#include "tensor_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Software prefetch distance in bytes of weights. On these VMs a
 * compute-dense streaming loop keeps too few cache misses in flight for the
 * hardware prefetchers to reach full bandwidth; prefetching ahead lifted
 * Q4_0 generation from 2.7 to 8 GB/s, and 8 KiB measured best of 1-16 KiB
 * (bench/bench_kernels.c). */
#ifndef PF_DIST
#define PF_DIST 8192
#endif

/* Prefetch the n bytes at p + PF_DIST (n <= 256). */
static ALWAYS_INLINE void prefetch_ahead(const void *p, int n)
{
    for (int o = 0; o < n; o += 64)
        _mm_prefetch((const char *)p + PF_DIST + o, _MM_HINT_T0);
}

static ALWAYS_INLINE float hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

static ALWAYS_INLINE __m256i loadu256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

static ALWAYS_INLINE float f16(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* ---- float weights ---------------------------------------------------------- */

enum wkind { W_F32, W_F16, W_BF16 };

static ALWAYS_INLINE __m256 wload8(enum wkind kind, const uint8_t *w, int64_t i)
{
    switch (kind) {
    case W_F32: return _mm256_loadu_ps((const float *)(w + 4 * i));
    case W_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * i)));
    default:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 2 * i))), 16));
    }
}

static ALWAYS_INLINE float wscalar(enum wkind kind, const uint8_t *w, int64_t i)
{
    switch (kind) {
    case W_F32: return ld_f32(w + 4 * i);
    case W_F16: return f16(ld_u16(w + 2 * i));
    default: return tensor_bf16_to_f32(ld_u16(w + 2 * i));
    }
}

/* One row against T tokens; two accumulators per token hide FMA latency. */
static ALWAYS_INLINE void float_tile(enum wkind kind, int T, float *y, int64_t ldy,
                                     const uint8_t *w, const uint8_t *xa, size_t xs, int64_t k)
{
    __m256 acc[4][2];
    const float *x[4];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
        x[t] = (const float *)(xa + (size_t)t * xs);
    }
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        prefetch_ahead(w + (kind == W_F32 ? 4 : 2) * i, 1);
        __m256 w0 = wload8(kind, w, i), w1 = wload8(kind, w, i + 8);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[t] + i), acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[t] + i + 8), acc[t][1]);
        }
    }
    for (; i + 8 <= k; i += 8) {
        __m256 w0 = wload8(kind, w, i);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++)
            acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[t] + i), acc[t][0]);
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        float s = hsum8(_mm256_add_ps(acc[t][0], acc[t][1]));
        for (int64_t j = i; j < k; j++)
            s += wscalar(kind, w, j) * ld_f32(x[t] + j);
        y[t * ldy] = s;
    }
}

static ALWAYS_INLINE void gemm_float(enum wkind kind, float *y, int64_t ldy, const void *w,
                                     size_t ws, int64_t nr, const void *xa, size_t xs, int64_t nt,
                                     int64_t k)
{
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * ws;
        for (int64_t t0 = 0; t0 < nt; t0 += 4) {
            float *yt = y + t0 * ldy + r;
            const uint8_t *xt = (const uint8_t *)xa + (size_t)t0 * xs;
            switch (nt - t0 < 4 ? nt - t0 : 4) {
            case 1: float_tile(kind, 1, yt, ldy, wr, xt, xs, k); break;
            case 2: float_tile(kind, 2, yt, ldy, wr, xt, xs, k); break;
            case 3: float_tile(kind, 3, yt, ldy, wr, xt, xs, k); break;
            default: float_tile(kind, 4, yt, ldy, wr, xt, xs, k); break;
            }
        }
    }
}

static void gemm_f32_avx2(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                          const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_float(W_F32, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_f16_avx2(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                          const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_float(W_F16, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_bf16_avx2(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                           const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_float(W_BF16, y, ldy, w, ws, nr, xa, xs, nt, k);
}

/* ---- Q8_0 / Q4_0 ---------------------------------------------------------------- */

/* Block sums of 32 products as 8 s32 lanes. */
static ALWAYS_INLINE __m256i dot32_q8(__m256i aw, __m256i w, __m256i x)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)),
                             _mm256_set1_epi16(1));
}

static ALWAYS_INLINE void q8_0_tile(int T, float *y, int64_t ldy, const uint8_t *w,
                                    const uint8_t *xa, size_t xs, int64_t k)
{
    const blk_q8_0 *b = (const blk_q8_0 *)w;
    const int64_t nb = k / QK;
    __m256 acc[4][2];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ib++) {
        prefetch_ahead(b + ib, 1);
        const __m256i wq = loadu256(b[ib].qs), aw = _mm256_abs_epi8(wq);
        const float dw = f16(b[ib].d);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const uint8_t *x = xa + (size_t)t * xs;
            __m256i p = dot32_q8(aw, wq, loadu256(x + ib * QK));
            __m256 s = _mm256_set1_ps(dw * ld_f32(x + act_off_d(k) + 4 * ib));
            acc[t][ib & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[t][ib & 1]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        y[t * ldy] = hsum8(_mm256_add_ps(acc[t][0], acc[t][1]));
}

static ALWAYS_INLINE void q4_0_tile(int T, float *y, int64_t ldy, const uint8_t *w,
                                    const uint8_t *xa, size_t xs, int64_t k)
{
    const blk_q4_0 *b = (const blk_q4_0 *)w;
    const int64_t nb = k / QK;
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[4][2];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ib++) {
        if ((ib & 3) == 0)
            prefetch_ahead(b + ib, 1);
        const __m128i v = _mm_loadu_si128((const __m128i *)b[ib].qs);
        const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v),
                                           m4); /* codes 0..15 in element order */
        const float dw = f16(b[ib].d);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const uint8_t *x = xa + (size_t)t * xs;
            __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, loadu256(x + ib * QK)), ones);
            /* -8*sum(x) once, in lane 0: sum_i (q_i - 8) x_i */
            p = _mm256_add_epi32(p, _mm256_setr_epi32(ld_i32(x + act_off_aux(ACT_Q8B, k) + 4 * ib),
                                                      0, 0, 0, 0, 0, 0, 0));
            __m256 s = _mm256_set1_ps(dw * ld_f32(x + act_off_d(k) + 4 * ib));
            acc[t][ib & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[t][ib & 1]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        y[t * ldy] = hsum8(_mm256_add_ps(acc[t][0], acc[t][1]));
}

/* ---- K-quants ------------------------------------------------------------------ */

/* A super-block unpacked for four tokens: codes in element order, 32 per
 * vector, and what the scales become. */
typedef struct kq_unpacked {
    __m256i q[8];    /* elements 32m .. 32m+31, unsigned codes */
    __m256i sc16[8]; /* s16 multiplier per maddubs lane of q[m] */
    __m256 mins;     /* Q4_K/Q5_K: m[j] as floats; Q6_K: unused */
    __m256i sc_all;  /* Q6_K: the 16 scales as s16 (for the -32 correction) */
    float d, dmin;
} kq_unpacked;

static ALWAYS_INLINE void kq_scales_k4(kq_unpacked *u, const uint8_t *scales)
{
    uint32_t wd[4];
    kq_scale_min_words(scales, wd);
#pragma GCC unroll 16
    for (int j = 0; j < 8; j++)
        u->sc16[j] = _mm256_set1_epi16((short)((wd[j < 4 ? 0 : 2] >> (8 * (j & 3))) & 0xFF));
    u->mins = _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)((uint64_t)wd[3] << 32 | wd[1]))));
}

static ALWAYS_INLINE void unpack_q4_K(kq_unpacked *u, const blk_q4_K *b)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 16
    for (int c = 0; c < 4; c++) {
        __m256i v = loadu256(b->qs + 32 * c);
        u->q[2 * c] = _mm256_and_si256(v, m4);
        u->q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    kq_scales_k4(u, b->scales);
    u->d = f16(b->d);
    u->dmin = f16(b->dmin);
}

static ALWAYS_INLINE void unpack_q5_K(kq_unpacked *u, const blk_q5_K *b)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const __m256i qh = loadu256(b->qh);
#pragma GCC unroll 16
    for (int c = 0; c < 4; c++) {
        __m256i v = loadu256(b->qs + 32 * c);
        __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
        __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
        u->q[2 * c] = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_slli_epi16(h0, 4));
        u->q[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                          _mm256_slli_epi16(h1, 4));
    }
    kq_scales_k4(u, b->scales);
    u->d = f16(b->d);
    u->dmin = f16(b->dmin);
}

static ALWAYS_INLINE void unpack_q6_K(kq_unpacked *u, const blk_q6_K *b)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
#pragma GCC unroll 16
    for (int h = 0; h < 2; h++) {
        __m256i L0 = loadu256(b->ql + 64 * h), L1 = loadu256(b->ql + 64 * h + 32);
        __m256i H = loadu256(b->qh + 32 * h);
        u->q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(L0, m4),
                                          _mm256_and_si256(_mm256_slli_epi16(H, 4), m30));
        u->q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(L1, m4),
                                          _mm256_and_si256(_mm256_slli_epi16(H, 2), m30));
        u->q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4),
                                          _mm256_and_si256(H, m30));
        u->q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4),
                                          _mm256_and_si256(_mm256_srli_epi16(H, 2), m30));
    }
    /* sc16[m]: scale 2m in the low 8 s16 lanes, scale 2m+1 in the high 8 */
    u->sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    const __m256i pick = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2,
                                          3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
#pragma GCC unroll 16
    for (int m = 0; m < 8; m++)
        u->sc16[m] =
            _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(u->sc_all, _mm256_set1_epi32(m)), pick);
    u->d = f16(b->d);
}

/* sum_m sc16[m] . (q[m] x x[32m..]) as 8 s32 lanes. */
static ALWAYS_INLINE __m256i kq_isum(const kq_unpacked *u, const uint8_t *x)
{
    __m256i s = _mm256_setzero_si256();
#pragma GCC unroll 16
    for (int m = 0; m < 8; m++)
        s = _mm256_add_epi32(
            s, _mm256_madd_epi16(_mm256_maddubs_epi16(u->q[m], loadu256(x + 32 * m)), u->sc16[m]));
    return s;
}

enum kkind { K_Q4, K_Q5, K_Q6 };

static ALWAYS_INLINE void kq_tile(enum kkind kind, int T, float *y, int64_t ldy, const uint8_t *w,
                                  const uint8_t *xa, size_t xs, int64_t k)
{
    const int64_t ns = k / QKK;
    __m256 acc[4], accm[4];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        acc[t] = accm[t] = _mm256_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        kq_unpacked u;
        switch (kind) {
        case K_Q4: prefetch_ahead((const blk_q4_K *)w + s, (int)sizeof(blk_q4_K)); break;
        case K_Q5: prefetch_ahead((const blk_q5_K *)w + s, (int)sizeof(blk_q5_K)); break;
        default: prefetch_ahead((const blk_q6_K *)w + s, (int)sizeof(blk_q6_K)); break;
        }
        switch (kind) {
        case K_Q4: unpack_q4_K(&u, (const blk_q4_K *)w + s); break;
        case K_Q5: unpack_q5_K(&u, (const blk_q5_K *)w + s); break;
        default: unpack_q6_K(&u, (const blk_q6_K *)w + s); break;
        }
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const uint8_t *x = xa + (size_t)t * xs;
            const float dx = ld_f32(x + act_off_d(k) + 4 * s);
            __m256i is = kq_isum(&u, x + s * QKK);
            if (kind == K_Q6) {
                /* sum_j sc_j * sum((q-32) x) = isum - 32 * sum_j sc_j * sum16_j */
                __m256i cs = _mm256_madd_epi16(
                    u.sc_all, loadu256(x + act_off_aux(ACT_Q8K16, k) + 2 * 16 * s));
                is = _mm256_sub_epi32(is, _mm256_slli_epi32(cs, 5));
            } else {
                __m256 s32 =
                    _mm256_loadu_ps((const float *)(x + act_off_aux(ACT_Q8K32, k)) + 8 * s);
                accm[t] = _mm256_fmadd_ps(_mm256_mul_ps(u.mins, s32), _mm256_set1_ps(u.dmin * dx),
                                          accm[t]);
            }
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(u.d * dx), acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        y[t * ldy] = kind == K_Q6 ? hsum8(acc[t]) : hsum8(acc[t]) - hsum8(accm[t]);
}

enum ikind { I_Q8_0, I_Q4_0, I_Q4_K, I_Q5_K, I_Q6_K };

static ALWAYS_INLINE void int_tile(enum ikind kind, int T, float *y, int64_t ldy, const uint8_t *w,
                                   const uint8_t *xa, size_t xs, int64_t k)
{
    switch (kind) {
    case I_Q8_0: q8_0_tile(T, y, ldy, w, xa, xs, k); break;
    case I_Q4_0: q4_0_tile(T, y, ldy, w, xa, xs, k); break;
    case I_Q4_K: kq_tile(K_Q4, T, y, ldy, w, xa, xs, k); break;
    case I_Q5_K: kq_tile(K_Q5, T, y, ldy, w, xa, xs, k); break;
    default: kq_tile(K_Q6, T, y, ldy, w, xa, xs, k); break;
    }
}

static ALWAYS_INLINE void gemm_int(enum ikind kind, float *y, int64_t ldy, const void *w, size_t ws,
                                   int64_t nr, const void *xa, size_t xs, int64_t nt, int64_t k)
{
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * ws;
        for (int64_t t0 = 0; t0 < nt; t0 += 4) {
            float *yt = y + t0 * ldy + r;
            const uint8_t *xt = (const uint8_t *)xa + (size_t)t0 * xs;
            switch (nt - t0 < 4 ? nt - t0 : 4) {
            case 1: int_tile(kind, 1, yt, ldy, wr, xt, xs, k); break;
            case 2: int_tile(kind, 2, yt, ldy, wr, xt, xs, k); break;
            case 3: int_tile(kind, 3, yt, ldy, wr, xt, xs, k); break;
            default: int_tile(kind, 4, yt, ldy, wr, xt, xs, k); break;
            }
        }
    }
}

static void gemm_q8_0_avx2(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                           const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q8_0, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q4_0_avx2(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                           const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q4_0, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q4_K_avx2(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                           const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q4_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q5_K_avx2(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                           const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q5_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q6_K_avx2(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr,
                           const void *xa, size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q6_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

/* ---- activation preparation (byte-identical to tensor.c) ----------------------- */

/* g = 32 or 256 values: codes into q (g bytes), returns d; *sum = sum(q)
 * per 16 values into sum16[g/16]. */
static ALWAYS_INLINE float act_group8(int8_t *q, int16_t *sum16, const float *x, int g)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < g; i += 8) /* max(|x|, m): a NaN |x| yields m */
        m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 vid = _mm256_set1_ps(id), lo = _mm256_set1_ps(-127.0f),
                 hi = _mm256_set1_ps(127.0f);
    for (int i = 0; i < g; i += 16) {
        __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(x + i), vid);
        __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vid);
        v0 = _mm256_min_ps(_mm256_max_ps(v0, lo), hi); /* NaN -> -127 */
        v1 = _mm256_min_ps(_mm256_max_ps(v1, lo), hi);
        __m256i i0 = _mm256_cvtps_epi32(v0), i1 = _mm256_cvtps_epi32(v1);
        __m256i s = _mm256_add_epi32(i0, i1);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_hadd_epi32(s4, s4);
        s4 = _mm_hadd_epi32(s4, s4);
        sum16[i / 16] = (int16_t)_mm_cvtsi128_si32(s4);
        __m256i p16 = _mm256_packs_epi32(i0, i1); /* lanes: 0-3 8-11 | 4-7 12-15 */
        __m128i p8 = _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
        p8 = _mm_shuffle_epi32(p8, _MM_SHUFFLE(3, 1, 2, 0));
        _mm_storeu_si128((__m128i *)(q + i), p8);
    }
    return d;
}

static void act_q8b_avx2(void *dst, const float *x, int64_t k, int32_t c)
{
    uint8_t *row = dst;
    for (int64_t b = 0; b < k / QK; b++) {
        int16_t s16[2];
        float d = act_group8((int8_t *)row + b * QK, s16, x + b * QK, QK);
        int32_t off = -c * ((int32_t)s16[0] + s16[1]);
        memcpy(row + act_off_d(k) + 4 * b, &d, 4);
        memcpy(row + act_off_aux(ACT_Q8B, k) + 4 * b, &off, 4);
    }
    size_t used = act_off_aux(ACT_Q8B, k) + 4 * (size_t)(k / QK);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q8_0, k) - used);
}

static void act_q8_0_avx2(void *dst, const float *x, int64_t k)
{
    act_q8b_avx2(dst, x, k, 128);
}

static void act_q4_0_avx2(void *dst, const float *x, int64_t k)
{
    act_q8b_avx2(dst, x, k, 8);
}

static void act_k32_avx2(void *dst, const float *x, int64_t k)
{
    uint8_t *row = dst;
    for (int64_t s = 0; s < k / QKK; s++) {
        int16_t s16[16];
        float d = act_group8((int8_t *)row + s * QKK, s16, x + s * QKK, QKK);
        memcpy(row + act_off_d(k) + 4 * s, &d, 4);
#pragma GCC unroll 16
        for (int j = 0; j < 8; j++) {
            float sum = (float)(s16[2 * j] + s16[2 * j + 1]);
            memcpy(row + act_off_aux(ACT_Q8K32, k) + 4 * (8 * s + j), &sum, 4);
        }
    }
    size_t used = act_off_aux(ACT_Q8K32, k) + 4 * (size_t)(k / 32);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q4_K, k) - used);
}

static void act_k16_avx2(void *dst, const float *x, int64_t k)
{
    uint8_t *row = dst;
    for (int64_t s = 0; s < k / QKK; s++) {
        int16_t s16[16];
        float d = act_group8((int8_t *)row + s * QKK, s16, x + s * QKK, QKK);
        memcpy(row + act_off_d(k) + 4 * s, &d, 4);
        memcpy(row + act_off_aux(ACT_Q8K16, k) + 2 * 16 * s, s16, sizeof(s16));
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) {
            int32_t off = -32 * (int32_t)s16[j];
            memcpy(row + act_off_off16(k) + 4 * (16 * s + j), &off, 4);
        }
    }
    size_t used = act_off_off16(k) + 4 * (size_t)(k / 16);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q6_K, k) - used);
}

static void axpy_avx2(uint32_t type, float *out, float w, const void *src, int64_t n)
{
    __m256 vw = _mm256_set1_ps(w);
    int64_t i = 0;
    if (type == TENSOR_F32) {
        const float *x = src;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + i), _mm256_loadu_ps(out + i)));
    } else if (type == TENSOR_F16) {
        const uint16_t *h = src;
        for (; i + 8 <= n; i += 8) {
            __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i)));
            _mm256_storeu_ps(out + i, _mm256_fmadd_ps(vw, x, _mm256_loadu_ps(out + i)));
        }
    } else if (type == TENSOR_BF16) {
        const uint16_t *h = src;
        for (; i + 8 <= n; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
            __m256 x = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            _mm256_storeu_ps(out + i, _mm256_fmadd_ps(vw, x, _mm256_loadu_ps(out + i)));
        }
    } else {
        return;
    }
    if (i < n)
        tensor_axpy_scalar(type, out + i, w, (const char *)src + (size_t)i * (type == TENSOR_F32 ? 4 : 2), n - i);
}

const tensor_kernels tensor_kernels_avx2 = {
    .axpy = axpy_avx2,
    .name = "avx2",
    .isa = TENSOR_ISA_AVX2,
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
            [TENSOR_Q8_0] = act_q8_0_avx2,
            [TENSOR_Q4_0] = act_q4_0_avx2,
            [TENSOR_Q4_K] = act_k32_avx2,
            [TENSOR_Q5_K] = act_k32_avx2,
            [TENSOR_Q6_K] = act_k16_avx2,
        },
    .gemm =
        {
            [TENSOR_F32] = gemm_f32_avx2,
            [TENSOR_F16] = gemm_f16_avx2,
            [TENSOR_BF16] = gemm_bf16_avx2,
            [TENSOR_Q8_0] = gemm_q8_0_avx2,
            [TENSOR_Q4_0] = gemm_q4_0_avx2,
            [TENSOR_Q4_K] = gemm_q4_K_avx2,
            [TENSOR_Q5_K] = gemm_q5_K_avx2,
            [TENSOR_Q6_K] = gemm_q6_K_avx2,
        },
};
