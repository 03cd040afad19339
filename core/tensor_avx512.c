/* moegate — AVX-512 kernel table (F/BW/VL/DQ + VNNI; compiled with the
 * AVX-512 flags of the Makefile).
 *
 * Few tokens (nt < PANEL_MIN_NT, generation): bandwidth-bound, so the AVX2
 * functions serve (one sequential stream per row; 256-bit code keeps up with
 * memory, measured in bench/bench_kernels.c).
 *
 * Many tokens: compute-bound. Weights are repacked, 16 rows at a time and a
 * chunk of k at a time, into a "panel" in which vector s holds elements
 * 4s..4s+3 of 16 rows (one 32-bit lane per row):
 *
 *     panel.q[s] = | row0 e4s..e4s+3 | row1 e4s.. | ... | row15 e4s.. |
 *
 * so one vpdpbusd with the 32-bit activation word (x[4s..4s+3]) broadcast
 * from memory advances 16 row dots by 4 elements, and every lane of the
 * accumulator belongs to one (row, token) pair: per-block scales become a
 * vector over rows, applied once per block with one cvt + one FMA, with no
 * horizontal reductions. Activations need no repacking at all. The kernels
 * hold 2 row tiles x up to 4 tokens of accumulators and walk the panel once
 * per 4 tokens, so the unpack/repack cost of a weight block is shared by all
 * nt tokens of the call and the loads per vpdpbusd stay below one.
 *
 * Weight codes in the panel are unsigned (vpdpbusd multiplies u8 by s8):
 * Q8_0 stores w+128 and Q4_0/Q6_K their raw codes; the activation rows carry
 * the matching correction per block (off = -c * sum x), which initialises the
 * accumulator. Q4_K/Q5_K codes are unsigned already; their mins use the
 * per-32 activation sums.
 *
 * Float weights use the same panel idea with f32 lanes (F16/BF16 converted
 * while repacking) and FMA with broadcast activations.
 *
 * Integer dots are exact; float sums are associated per block and per row
 * tile as described, so results match the scalar table within the tolerance
 * stated in tensor.c. Activation preparation is byte-identical to tensor.c.
 *
 * Scratch (the panel, about 24 KiB) lives on the stack: no allocation.
 */
#include <immintrin.h>

#include "tensor_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Below this many tokens the AVX2 row-streaming kernels are used. */
#define PANEL_MIN_NT 4
/* Elements of k per integer panel chunk (multiple of 256) and per float
 * panel chunk: 2 row tiles stay in L1 together with 4 activation rows. */
#define PKC 512
#define PKF 128

/* ---- 16x16 transposes ------------------------------------------------------------ */

/* r[i] = 16 dwords of row i  ->  r[s] = dword s of rows 0..15. */
static ALWAYS_INLINE void transpose16_epi32(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    /* per 128-bit lane L of group g (rows 4g..4g+3): u[4g+e] holds dword
     * 4L+e of those rows */
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int e = 0; e < 4; e++) {
        __m512i a = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x44);
        __m512i b = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xEE);
        __m512i c = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x44);
        __m512i d = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xEE);
        r[e] = _mm512_shuffle_i32x4(a, c, 0x88);
        r[4 + e] = _mm512_shuffle_i32x4(a, c, 0xDD);
        r[8 + e] = _mm512_shuffle_i32x4(b, d, 0x88);
        r[12 + e] = _mm512_shuffle_i32x4(b, d, 0xDD);
    }
}

/* ---- integer panels ---------------------------------------------------------------- */

typedef struct panel_i8 {
    __m512i q[PKC / 4];     /* step s: elements 4s..4s+3 of the chunk, 16 rows */
    float sc[PKC / 16][16]; /* scale per block / sub-block, per row */
    float mn[PKC / 32][16]; /* Q4_K/Q5_K: -dmin*m per sub-block, per row */
} panel_i8;

enum ikind { I_Q8_0, I_Q4_0, I_Q4_K, I_Q5_K, I_Q6_K };

static ALWAYS_INLINE __m256i loadu256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

static ALWAYS_INLINE __m512i join256(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* Codes of elements 64u .. 64u+63 of a K-quant super-block. */
static ALWAYS_INLINE __m512i kq_unit(enum ikind kind, const uint8_t *blk, int u)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    if (kind == I_Q4_K) {
        const blk_q4_K *b = (const blk_q4_K *)blk;
        __m256i v = loadu256(b->qs + 32 * u);
        return join256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    }
    if (kind == I_Q5_K) {
        const blk_q5_K *b = (const blk_q5_K *)blk;
        const __m256i one = _mm256_set1_epi8(1);
        __m256i v = loadu256(b->qs + 32 * u), qh = loadu256(b->qh);
        __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * u), one), 4);
        __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * u + 1), one), 4);
        return join256(_mm256_or_si256(_mm256_and_si256(v, m4), h0),
                       _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), h1));
    }
    /* Q6_K: unit u covers half u/2, quarters 2(u&1) and 2(u&1)+1 */
    const blk_q6_K *b = (const blk_q6_K *)blk;
    const __m256i m30 = _mm256_set1_epi8(0x30);
    const int h = u >> 1;
    __m256i L0 = loadu256(b->ql + 64 * h), L1 = loadu256(b->ql + 64 * h + 32);
    __m256i H = loadu256(b->qh + 32 * h);
    if ((u & 1) == 0)
        return join256(
            _mm256_or_si256(_mm256_and_si256(L0, m4), _mm256_and_si256(_mm256_slli_epi16(H, 4), m30)),
            _mm256_or_si256(_mm256_and_si256(L1, m4), _mm256_and_si256(_mm256_slli_epi16(H, 2), m30)));
    return join256(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4),
                                   _mm256_and_si256(H, m30)),
                   _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(H, 2), m30)));
}

/* Codes of the blocks b, b+1 (b+1 only when two) of a Q8_0/Q4_0 row, as 64
 * unsigned bytes; Q8_0 stores w + 128. */
static ALWAYS_INLINE __m512i q8b_unit(enum ikind kind, const uint8_t *row, int64_t b, int two)
{
    if (kind == I_Q8_0) {
        const blk_q8_0 *p = (const blk_q8_0 *)row + b;
        __m256i lo = loadu256(p[0].qs), hi = two ? loadu256(p[1].qs) : _mm256_setzero_si256();
        return _mm512_xor_si512(join256(lo, hi), _mm512_set1_epi8((char)0x80));
    }
    const blk_q4_0 *p = (const blk_q4_0 *)row + b;
    __m128i v0 = _mm_loadu_si128((const __m128i *)p[0].qs);
    __m128i v1 = two ? _mm_loadu_si128((const __m128i *)p[1].qs) : _mm_setzero_si128();
    __m256i v = _mm256_set_m128i(v1, v0);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m512i z = join256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    /* [lo0 lo1 hi0 hi1] -> [lo0 hi0 lo1 hi1] (128-bit lanes) */
    return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
}

/* Panel of 16 rows (nv valid; the rest zero) for elements [k0, k0+kc). */
static void panel_build(enum ikind kind, panel_i8 *p, const uint8_t *w, size_t ws, int nv,
                        int64_t k0, int kc)
{
    __m512i R[16];
    if (kind == I_Q8_0 || kind == I_Q4_0) {
        const int nb = kc / QK;
        const int64_t b0 = k0 / QK;
        for (int pb = 0; pb < nb; pb += 2) {
            const int two = pb + 1 < nb;
            uint16_t dh[2][16];
            for (int r = 0; r < 16; r++) {
                if (r < nv) {
                    const uint8_t *row = w + (size_t)r * ws;
                    R[r] = q8b_unit(kind, row, b0 + pb, two);
                    const size_t bsz = kind == I_Q8_0 ? sizeof(blk_q8_0) : sizeof(blk_q4_0);
                    dh[0][r] = ld_u16(row + (size_t)(b0 + pb) * bsz);
                    dh[1][r] = two ? ld_u16(row + (size_t)(b0 + pb + 1) * bsz) : 0;
                } else {
                    R[r] = _mm512_setzero_si512();
                    dh[0][r] = dh[1][r] = 0;
                }
            }
            transpose16_epi32(R);
            for (int s = 0; s < 16; s++)
                p->q[8 * pb + s] = R[s];
            _mm512_storeu_ps(p->sc[pb], _mm512_cvtph_ps(loadu256(dh[0])));
            _mm512_storeu_ps(p->sc[pb + 1], _mm512_cvtph_ps(loadu256(dh[1])));
        }
        return;
    }
    const size_t bsz = kind == I_Q4_K   ? sizeof(blk_q4_K)
                       : kind == I_Q5_K ? sizeof(blk_q5_K)
                                        : sizeof(blk_q6_K);
    for (int sb = 0; sb < kc / QKK; sb++) {
        const int64_t bi = k0 / QKK + sb;
        for (int u = 0; u < 4; u++) {
            for (int r = 0; r < 16; r++)
                R[r] = r < nv ? kq_unit(kind, w + (size_t)r * ws + (size_t)bi * bsz, u)
                              : _mm512_setzero_si512();
            transpose16_epi32(R);
            for (int s = 0; s < 16; s++)
                p->q[64 * sb + 16 * u + s] = R[s];
        }
        /* scales, vectorised over the 16 rows */
        uint32_t sw[4][16];
        uint16_t dh[16], mh[16];
        for (int r = 0; r < 16; r++) {
            const uint8_t *blk = w + (size_t)r * ws + (size_t)bi * bsz;
            if (r >= nv) {
                sw[0][r] = sw[1][r] = sw[2][r] = sw[3][r] = 0;
                dh[r] = mh[r] = 0;
            } else if (kind == I_Q6_K) {
                const blk_q6_K *b = (const blk_q6_K *)blk;
                memcpy(&sw[0][r], b->scales, 4);
                memcpy(&sw[1][r], b->scales + 4, 4);
                memcpy(&sw[2][r], b->scales + 8, 4);
                memcpy(&sw[3][r], b->scales + 12, 4);
                dh[r] = b->d;
                mh[r] = 0;
            } else {
                /* Q4_K and Q5_K share the head: d, dmin, scales[12] */
                const blk_q4_K *b = (const blk_q4_K *)blk;
                uint32_t wd[4];
                kq_scale_min_words(b->scales, wd);
                for (int i = 0; i < 4; i++)
                    sw[i][r] = wd[i];
                dh[r] = b->d;
                mh[r] = b->dmin;
            }
        }
        const __m512 d = _mm512_cvtph_ps(loadu256(dh));
        if (kind == I_Q6_K) {
            for (int j = 0; j < 16; j++) {
                __m512i v = _mm512_loadu_si512(sw[j / 4]);
                v = _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * (j % 4)), 24);
                _mm512_storeu_ps(p->sc[16 * sb + j], _mm512_mul_ps(d, _mm512_cvtepi32_ps(v)));
            }
        } else {
            const __m512 dmin = _mm512_cvtph_ps(loadu256(mh));
            const __m512i ff = _mm512_set1_epi32(0xFF);
            for (int j = 0; j < 8; j++) {
                __m512i s = _mm512_loadu_si512(sw[j < 4 ? 0 : 2]);
                __m512i m = _mm512_loadu_si512(sw[j < 4 ? 1 : 3]);
                s = _mm512_and_si512(_mm512_srli_epi32(s, 8 * (j % 4)), ff);
                m = _mm512_and_si512(_mm512_srli_epi32(m, 8 * (j % 4)), ff);
                _mm512_storeu_ps(p->sc[8 * sb + j], _mm512_mul_ps(d, _mm512_cvtepi32_ps(s)));
                _mm512_storeu_ps(p->mn[8 * sb + j],
                                 _mm512_sub_ps(_mm512_setzero_ps(),
                                               _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(m))));
            }
        }
    }
}

/* Broadcast 32-bit activation word. */
static ALWAYS_INLINE __m512i xword(const uint8_t *x, int64_t i)
{
    return _mm512_set1_epi32(ld_i32(x + i));
}

/* The micro-kernels: RT row tiles (1 or 2) x T tokens (1..4) over one panel
 * chunk [k0, k0+kc); yacc[rt][t] accumulates row tile rt, token t. */

/* Q8_0 / Q4_0: per block, acc = off (-c*sum x), 8 vpdpbusd, then
 * y += cvt(acc) * dw * dx. */
static ALWAYS_INLINE void mk_q8b(int RT, int T, const panel_i8 *P[2], const uint8_t *const xr[4],
                                 int64_t k, int64_t k0, int kc, __m512 yacc[2][4])
{
    const size_t off_d = act_off_d(k), off_o = act_off_aux(ACT_Q8B, k);
    for (int b = 0; b < kc / QK; b++) {
        const int64_t gb = k0 / QK + b;
        __m512i acc[2][4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            for (int rt = 0; rt < RT; rt++)
                acc[rt][t] = _mm512_set1_epi32(ld_i32(xr[t] + off_o + 4 * gb));
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            __m512i W[2];
            for (int rt = 0; rt < RT; rt++)
                W[rt] = P[rt]->q[8 * b + s];
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m512i xb = xword(xr[t], k0 + 32 * b + 4 * s);
                for (int rt = 0; rt < RT; rt++)
                    acc[rt][t] = _mm512_dpbusd_epi32(acc[rt][t], W[rt], xb);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m512 dx = _mm512_set1_ps(ld_f32(xr[t] + off_d + 4 * gb));
            for (int rt = 0; rt < RT; rt++)
                yacc[rt][t] = _mm512_fmadd_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(acc[rt][t]), _mm512_loadu_ps(P[rt]->sc[b])), dx,
                    yacc[rt][t]);
        }
    }
}

/* Q4_K / Q5_K: per sub-block of 32, g += cvt(dot)*d*sc - sum32*dmin*m; per
 * super-block y += g * dx. */
static ALWAYS_INLINE void mk_k32(int RT, int T, const panel_i8 *P[2], const uint8_t *const xr[4],
                                 int64_t k, int64_t k0, int kc, __m512 yacc[2][4])
{
    const size_t off_d = act_off_d(k), off_s = act_off_aux(ACT_Q8K32, k);
    for (int sb = 0; sb < kc / QKK; sb++) {
        const int64_t gs = k0 / QKK + sb;
        __m512 g[2][4];
        for (int t = 0; t < T; t++)
            for (int rt = 0; rt < RT; rt++)
                g[rt][t] = _mm512_setzero_ps();
        for (int j = 0; j < 8; j++) {
            const int jj = 8 * sb + j, s0 = 8 * jj;
            __m512i acc[2][4];
            for (int t = 0; t < T; t++)
                for (int rt = 0; rt < RT; rt++)
                    acc[rt][t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                __m512i W[2];
                for (int rt = 0; rt < RT; rt++)
                    W[rt] = P[rt]->q[s0 + s];
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    __m512i xb = xword(xr[t], k0 + 4 * (s0 + s));
                    for (int rt = 0; rt < RT; rt++)
                        acc[rt][t] = _mm512_dpbusd_epi32(acc[rt][t], W[rt], xb);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m512 sx = _mm512_set1_ps(ld_f32(xr[t] + off_s + 4 * (k0 / 32 + jj)));
                for (int rt = 0; rt < RT; rt++) {
                    g[rt][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[rt][t]),
                                               _mm512_loadu_ps(P[rt]->sc[jj]), g[rt][t]);
                    g[rt][t] = _mm512_fmadd_ps(sx, _mm512_loadu_ps(P[rt]->mn[jj]), g[rt][t]);
                }
            }
        }
        for (int t = 0; t < T; t++) {
            const __m512 dx = _mm512_set1_ps(ld_f32(xr[t] + off_d + 4 * gs));
            for (int rt = 0; rt < RT; rt++)
                yacc[rt][t] = _mm512_fmadd_ps(g[rt][t], dx, yacc[rt][t]);
        }
    }
}

/* Q6_K: per sub-block of 16, acc = -32*sum16, 4 vpdpbusd, g += cvt(acc)*d*sc;
 * per super-block y += g * dx. */
static ALWAYS_INLINE void mk_k16(int RT, int T, const panel_i8 *P[2], const uint8_t *const xr[4],
                                 int64_t k, int64_t k0, int kc, __m512 yacc[2][4])
{
    const size_t off_d = act_off_d(k), off_o = act_off_off16(k);
    for (int sb = 0; sb < kc / QKK; sb++) {
        const int64_t gs = k0 / QKK + sb;
        __m512 g[2][4];
        for (int t = 0; t < T; t++)
            for (int rt = 0; rt < RT; rt++)
                g[rt][t] = _mm512_setzero_ps();
        for (int j = 0; j < 16; j++) {
            const int jj = 16 * sb + j, s0 = 4 * jj;
            __m512i acc[2][4];
            for (int t = 0; t < T; t++)
                for (int rt = 0; rt < RT; rt++)
                    acc[rt][t] = _mm512_set1_epi32(ld_i32(xr[t] + off_o + 4 * (k0 / 16 + jj)));
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) {
                __m512i W[2];
                for (int rt = 0; rt < RT; rt++)
                    W[rt] = P[rt]->q[s0 + s];
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    __m512i xb = xword(xr[t], k0 + 4 * (s0 + s));
                    for (int rt = 0; rt < RT; rt++)
                        acc[rt][t] = _mm512_dpbusd_epi32(acc[rt][t], W[rt], xb);
                }
            }
            for (int t = 0; t < T; t++)
                for (int rt = 0; rt < RT; rt++)
                    g[rt][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[rt][t]),
                                               _mm512_loadu_ps(P[rt]->sc[jj]), g[rt][t]);
        }
        for (int t = 0; t < T; t++) {
            const __m512 dx = _mm512_set1_ps(ld_f32(xr[t] + off_d + 4 * gs));
            for (int rt = 0; rt < RT; rt++)
                yacc[rt][t] = _mm512_fmadd_ps(g[rt][t], dx, yacc[rt][t]);
        }
    }
}

static ALWAYS_INLINE __mmask16 row_mask(int nv)
{
    return nv >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nv) - 1);
}

/* y tile += / = yacc (first chunk stores). */
static ALWAYS_INLINE void store_tile(int RT, int T, float *y, int64_t ldy, const int nv[2],
                                     int first, __m512 yacc[2][4])
{
    for (int t = 0; t < T; t++)
        for (int rt = 0; rt < RT; rt++) {
            float *p = y + t * ldy + 16 * rt;
            const __mmask16 m = row_mask(nv[rt]);
            __m512 v = yacc[rt][t];
            if (!first)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, p));
            _mm512_mask_storeu_ps(p, m, v);
        }
}

static ALWAYS_INLINE void int_tile(enum ikind kind, int RT, int T, const panel_i8 *P[2],
                                   const uint8_t *const xr[4], int64_t k, int64_t k0, int kc,
                                   float *y, int64_t ldy, const int nv[2], int first)
{
    __m512 yacc[2][4];
    for (int t = 0; t < T; t++)
        for (int rt = 0; rt < RT; rt++)
            yacc[rt][t] = _mm512_setzero_ps();
    if (kind == I_Q8_0 || kind == I_Q4_0)
        mk_q8b(RT, T, P, xr, k, k0, kc, yacc);
    else if (kind == I_Q6_K)
        mk_k16(RT, T, P, xr, k, k0, kc, yacc);
    else
        mk_k32(RT, T, P, xr, k, k0, kc, yacc);
    store_tile(RT, T, y, ldy, nv, first, yacc);
}

/* One switch per family keeps each (RT, T) instance a straight-line kernel. */
static void int_tile_any(enum ikind kind, int RT, int T, const panel_i8 *P[2],
                         const uint8_t *const xr[4], int64_t k, int64_t k0, int kc, float *y,
                         int64_t ldy, const int nv[2], int first)
{
    switch (RT * 4 + T) {
    case 5: int_tile(kind, 1, 1, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 6: int_tile(kind, 1, 2, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 7: int_tile(kind, 1, 3, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 8: int_tile(kind, 1, 4, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 9: int_tile(kind, 2, 1, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 10: int_tile(kind, 2, 2, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 11: int_tile(kind, 2, 3, P, xr, k, k0, kc, y, ldy, nv, first); break;
    default: int_tile(kind, 2, 4, P, xr, k, k0, kc, y, ldy, nv, first); break;
    }
}

static void gemm_panel_int(enum ikind kind, float *y, int64_t ldy, const void *w, size_t ws,
                           int64_t nr, const void *xa, size_t xs, int64_t nt, int64_t k)
{
    panel_i8 P0, P1;
    const panel_i8 *P[2] = {&P0, &P1};
    for (int64_t r0 = 0; r0 < nr; r0 += 32) {
        const int RT = nr - r0 > 16 ? 2 : 1;
        const int nv[2] = {nr - r0 >= 16 ? 16 : (int)(nr - r0),
                           RT == 2 ? (nr - r0 >= 32 ? 16 : (int)(nr - r0 - 16)) : 0};
        const uint8_t *w0 = (const uint8_t *)w + (size_t)r0 * ws;
        for (int64_t k0 = 0; k0 < k; k0 += PKC) {
            const int kc = (int)(k - k0 < PKC ? k - k0 : PKC);
            panel_build(kind, &P0, w0, ws, nv[0], k0, kc);
            if (RT == 2)
                panel_build(kind, &P1, w0 + 16 * ws, ws, nv[1], k0, kc);
            for (int64_t t0 = 0; t0 < nt; t0 += 4) {
                const int T = (int)(nt - t0 < 4 ? nt - t0 : 4);
                const uint8_t *xr[4];
                for (int t = 0; t < 4; t++)
                    xr[t] = (const uint8_t *)xa + (size_t)(t0 + (t < T ? t : 0)) * xs;
                int_tile_any(kind, RT, T, P, xr, k, k0, kc, y + t0 * ldy + r0, ldy, nv, k0 == 0);
            }
        }
    }
}

static void gemm_q8_0(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        tensor_gemm_q8_0_avx2(y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_int(I_Q8_0, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q4_0(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        tensor_gemm_q4_0_avx2(y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_int(I_Q4_0, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q4_K(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        tensor_gemm_q4_K_avx2(y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_int(I_Q4_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q5_K(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        tensor_gemm_q5_K_avx2(y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_int(I_Q5_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q6_K(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        tensor_gemm_q6_K_avx2(y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_int(I_Q6_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

/* ---- float panels -------------------------------------------------------------------- */

enum fkind { F_F32, F_F16, F_BF16 };

typedef struct panel_f {
    __m512 w[PKF]; /* element i of the chunk, 16 rows */
} panel_f;

/* n (1..16) elements of a row from element i, zero-extended to 16 floats. */
static ALWAYS_INLINE __m512 fload16(enum fkind kind, const uint8_t *row, int64_t i, int n)
{
    const __mmask16 m = row_mask(n);
    switch (kind) {
    case F_F32: return _mm512_maskz_loadu_ps(m, row + 4 * i);
    case F_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * i));
    default:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + 2 * i)), 16));
    }
}

static void panel_build_f(enum fkind kind, panel_f *p, const uint8_t *w, size_t ws, int nv,
                          int64_t k0, int kc)
{
    __m512i R[16];
    for (int i0 = 0; i0 < kc; i0 += 16) {
        const int n = kc - i0 < 16 ? kc - i0 : 16;
        for (int r = 0; r < 16; r++)
            R[r] = r < nv ? _mm512_castps_si512(fload16(kind, w + (size_t)r * ws, k0 + i0, n))
                          : _mm512_setzero_si512();
        transpose16_epi32(R);
        for (int s = 0; s < n; s++)
            p->w[i0 + s] = _mm512_castsi512_ps(R[s]);
    }
}

static ALWAYS_INLINE void float_tile(int RT, int T, const panel_f *P[2],
                                     const uint8_t *const xr[4], int64_t k0, int kc, float *y,
                                     int64_t ldy, const int nv[2], int first)
{
    __m512 yacc[2][4];
    for (int t = 0; t < T; t++)
        for (int rt = 0; rt < RT; rt++)
            yacc[rt][t] = _mm512_setzero_ps();
    for (int i = 0; i < kc; i++) {
        __m512 W[2];
        for (int rt = 0; rt < RT; rt++)
            W[rt] = P[rt]->w[i];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m512 xb = _mm512_set1_ps(ld_f32(xr[t] + 4 * (k0 + i)));
            for (int rt = 0; rt < RT; rt++)
                yacc[rt][t] = _mm512_fmadd_ps(W[rt], xb, yacc[rt][t]);
        }
    }
    store_tile(RT, T, y, ldy, nv, first, yacc);
}

static void float_tile_any(int RT, int T, const panel_f *P[2], const uint8_t *const xr[4],
                           int64_t k0, int kc, float *y, int64_t ldy, const int nv[2], int first)
{
    switch (RT * 4 + T) {
    case 5: float_tile(1, 1, P, xr, k0, kc, y, ldy, nv, first); break;
    case 6: float_tile(1, 2, P, xr, k0, kc, y, ldy, nv, first); break;
    case 7: float_tile(1, 3, P, xr, k0, kc, y, ldy, nv, first); break;
    case 8: float_tile(1, 4, P, xr, k0, kc, y, ldy, nv, first); break;
    case 9: float_tile(2, 1, P, xr, k0, kc, y, ldy, nv, first); break;
    case 10: float_tile(2, 2, P, xr, k0, kc, y, ldy, nv, first); break;
    case 11: float_tile(2, 3, P, xr, k0, kc, y, ldy, nv, first); break;
    default: float_tile(2, 4, P, xr, k0, kc, y, ldy, nv, first); break;
    }
}

static void gemm_panel_float(enum fkind kind, float *y, int64_t ldy, const void *w, size_t ws,
                             int64_t nr, const void *xa, size_t xs, int64_t nt, int64_t k)
{
    panel_f P0, P1;
    const panel_f *P[2] = {&P0, &P1};
    for (int64_t r0 = 0; r0 < nr; r0 += 32) {
        const int RT = nr - r0 > 16 ? 2 : 1;
        const int nv[2] = {nr - r0 >= 16 ? 16 : (int)(nr - r0),
                           RT == 2 ? (nr - r0 >= 32 ? 16 : (int)(nr - r0 - 16)) : 0};
        const uint8_t *w0 = (const uint8_t *)w + (size_t)r0 * ws;
        for (int64_t k0 = 0; k0 < k; k0 += PKF) {
            const int kc = (int)(k - k0 < PKF ? k - k0 : PKF);
            panel_build_f(kind, &P0, w0, ws, nv[0], k0, kc);
            if (RT == 2)
                panel_build_f(kind, &P1, w0 + 16 * ws, ws, nv[1], k0, kc);
            for (int64_t t0 = 0; t0 < nt; t0 += 4) {
                const int T = (int)(nt - t0 < 4 ? nt - t0 : 4);
                const uint8_t *xr[4];
                for (int t = 0; t < 4; t++)
                    xr[t] = (const uint8_t *)xa + (size_t)(t0 + (t < T ? t : 0)) * xs;
                float_tile_any(RT, T, P, xr, k0, kc, y + t0 * ldy + r0, ldy, nv, k0 == 0);
            }
        }
    }
}

static void gemm_f32(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                     size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        tensor_gemm_f32_avx2(y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_float(F_F32, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_f16(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                     size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        tensor_gemm_f16_avx2(y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_float(F_F16, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_bf16(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        tensor_gemm_bf16_avx2(y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_float(F_BF16, y, ldy, w, ws, nr, xa, xs, nt, k);
}

/* ---- activation preparation (byte-identical to tensor.c) ------------------------------ */

/* 16 values from x: codes (as s32) for id. max(v, -127) returns -127 for a
 * NaN v (vmaxps returns its second operand), like fmaxf in the spec. */
static ALWAYS_INLINE __m512i act_codes16(const float *x, __m512 vid)
{
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x), vid);
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_cvtps_epi32(v); /* nearest, ties to even */
}

/* d of a group of g (32 or 256) values. */
static ALWAYS_INLINE float act_scale(const float *x, int g)
{
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < g; i += 16) /* max(|x|, m): a NaN |x| yields m */
        m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m);
    const float amax = _mm512_reduce_max_ps(m);
    return amax / 127.0f;
}

static void act_q8b_avx512(void *dst, const float *x, int64_t k, int32_t c)
{
    uint8_t *row = dst;
    for (int64_t b = 0; b < k / QK; b++) {
        const float d = act_scale(x + b * QK, QK), id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        __m512i q0 = act_codes16(x + b * QK, vid), q1 = act_codes16(x + b * QK + 16, vid);
        _mm_storeu_si128((__m128i *)(row + b * QK), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(row + b * QK + 16), _mm512_cvtepi32_epi8(q1));
        int32_t off = -c * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        memcpy(row + act_off_d(k) + 4 * b, &d, 4);
        memcpy(row + act_off_aux(ACT_Q8B, k) + 4 * b, &off, 4);
    }
    size_t used = act_off_aux(ACT_Q8B, k) + 4 * (size_t)(k / QK);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q8_0, k) - used);
}

static void act_q8_0_avx512(void *dst, const float *x, int64_t k)
{
    act_q8b_avx512(dst, x, k, 128);
}

static void act_q4_0_avx512(void *dst, const float *x, int64_t k)
{
    act_q8b_avx512(dst, x, k, 8);
}

/* Codes of a super-block into q, sums per 16 into s16; returns d. */
static ALWAYS_INLINE float act_super(int8_t *q, int32_t s16[16], const float *x)
{
    const float d = act_scale(x, QKK), id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m512 vid = _mm512_set1_ps(id);
    for (int j = 0; j < 16; j++) {
        __m512i c = act_codes16(x + 16 * j, vid);
        _mm_storeu_si128((__m128i *)(q + 16 * j), _mm512_cvtepi32_epi8(c));
        s16[j] = _mm512_reduce_add_epi32(c);
    }
    return d;
}

static void act_k32_avx512(void *dst, const float *x, int64_t k)
{
    uint8_t *row = dst;
    for (int64_t s = 0; s < k / QKK; s++) {
        int32_t s16[16];
        const float d = act_super((int8_t *)row + s * QKK, s16, x + s * QKK);
        memcpy(row + act_off_d(k) + 4 * s, &d, 4);
        for (int j = 0; j < 8; j++) {
            float sum = (float)(s16[2 * j] + s16[2 * j + 1]);
            memcpy(row + act_off_aux(ACT_Q8K32, k) + 4 * (8 * s + j), &sum, 4);
        }
    }
    size_t used = act_off_aux(ACT_Q8K32, k) + 4 * (size_t)(k / 32);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q4_K, k) - used);
}

static void act_k16_avx512(void *dst, const float *x, int64_t k)
{
    uint8_t *row = dst;
    for (int64_t s = 0; s < k / QKK; s++) {
        int32_t s16[16];
        const float d = act_super((int8_t *)row + s * QKK, s16, x + s * QKK);
        memcpy(row + act_off_d(k) + 4 * s, &d, 4);
        for (int j = 0; j < 16; j++) {
            int16_t sum = (int16_t)s16[j];
            int32_t off = -32 * s16[j];
            memcpy(row + act_off_aux(ACT_Q8K16, k) + 2 * (16 * s + j), &sum, 2);
            memcpy(row + act_off_off16(k) + 4 * (16 * s + j), &off, 4);
        }
    }
    size_t used = act_off_off16(k) + 4 * (size_t)(k / 16);
    memset(row + used, 0, tensor_act_row_bytes(TENSOR_Q6_K, k) - used);
}

const tensor_kernels tensor_kernels_avx512 = {
    .name = "avx512",
    .isa = TENSOR_ISA_AVX512,
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
            [TENSOR_Q8_0] = act_q8_0_avx512,
            [TENSOR_Q4_0] = act_q4_0_avx512,
            [TENSOR_Q4_K] = act_k32_avx512,
            [TENSOR_Q5_K] = act_k32_avx512,
            [TENSOR_Q6_K] = act_k16_avx512,
        },
    .gemm =
        {
            [TENSOR_F32] = gemm_f32,
            [TENSOR_F16] = gemm_f16,
            [TENSOR_BF16] = gemm_bf16,
            [TENSOR_Q8_0] = gemm_q8_0,
            [TENSOR_Q4_0] = gemm_q4_0,
            [TENSOR_Q4_K] = gemm_q4_K,
            [TENSOR_Q5_K] = gemm_q5_K,
            [TENSOR_Q6_K] = gemm_q6_K,
        },
};
