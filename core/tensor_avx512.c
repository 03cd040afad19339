/* moegate — AVX-512 kernel table (F/BW/VL/DQ + VNNI; compiled with the
 * AVX-512 flags of the Makefile).
 *
 * Few tokens (nt < PANEL_MIN_NT: generation, small expert batches):
 * bandwidth-bound. One weight row at a time is streamed once and multiplied
 * against the (<= 4) activation rows, with few instructions per byte (the
 * fewer, the more misses a core keeps in flight on these VMs) and software
 * prefetch PF_DIST bytes ahead: Q8_0/Q4_0 two blocks per vpdpbusd, Q4_K/Q5_K
 * 256-bit vpmaddubsw + vpdpwssd with broadcast scales, Q6_K 512-bit with
 * the scales spread by vpermw, float weights by FMA.
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
 * hold 2 row tiles x up to TMAX tokens of accumulators and walk the panel
 * once per token group, so the repacking of a weight block (16x16 dword
 * transposes, the main overhead: 8-12% at 64 tokens) is shared by all nt
 * tokens of the call; Q4_K and Q6_K transpose their packed bytes and split
 * the nibbles afterwards, which halves that work. While one panel is
 * multiplied, the next one's weights are prefetched.
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
 * Scratch (two panels, about 24 KiB) lives on the stack: no allocation.
 */
#include <immintrin.h>
#include <stddef.h>

#include "tensor_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* clang's UBSan pointer-overflow check on every address of these fully
 * unrolled kernels makes a sanitizer build of this file take tens of
 * minutes; ASan still checks every access. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((no_sanitize("pointer-overflow"))), apply_to = function)
#endif

/* Below this many tokens the row-streaming kernels are used (measured
 * break-even: 4-5 tokens for Q8_0/Q4_K, more for Q6_K). */
#ifndef PANEL_MIN_NT
#define PANEL_MIN_NT 5
#endif
/* Elements of k per integer panel chunk (multiple of 256) and per float
 * panel chunk: 2 row tiles stay in L1 together with a token group's
 * activations. */
#define PKC 512
#define PKF 128
/* Tokens per micro-kernel pass (register tile: 2 row tiles x TMAX). */
#ifndef TMAX
#define TMAX 6
#endif

/* ---- 16x16 transposes ------------------------------------------------------------ */

/* r[i] = 16 dwords of row i  ->  r[s] = dword s of rows 0..15. */
static ALWAYS_INLINE void transpose16_epi32(__m512i r[16])
{
    __m512i t[16], u[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
/* per 128-bit lane L of group g (rows 4g..4g+3): u[4g+e] holds dword
 * 4L+e of those rows */
#pragma GCC unroll 16
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
#pragma GCC unroll 16
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

/* Codes of elements 64u .. 64u+63 of a Q5_K super-block. */
static ALWAYS_INLINE __m512i q5_unit(const uint8_t *blk, int u)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const blk_q5_K *b = (const blk_q5_K *)blk;
    __m256i v = loadu256(b->qs + 32 * u), qh = loadu256(b->qh);
    __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * u), one), 4);
    __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * u + 1), one), 4);
    return join256(_mm256_or_si256(_mm256_and_si256(v, m4), h0),
                   _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), h1));
}

/* Codes of the block at p and, when two, the next one, of a Q8_0/Q4_0 row
 * as 64 unsigned bytes; Q8_0 stores w + 128. */
static ALWAYS_INLINE __m512i q8b_unit(enum ikind kind, const uint8_t *p, int two)
{
    if (kind == I_Q8_0) {
        const blk_q8_0 *b = (const blk_q8_0 *)p;
        __m256i lo = loadu256(b[0].qs), hi = two ? loadu256(b[1].qs) : _mm256_setzero_si256();
        return _mm512_xor_si512(join256(lo, hi), _mm512_set1_epi8((char)0x80));
    }
    const blk_q4_0 *b = (const blk_q4_0 *)p;
    __m128i v0 = _mm_loadu_si128((const __m128i *)b[0].qs);
    __m128i v1 = two ? _mm_loadu_si128((const __m128i *)b[1].qs) : _mm_setzero_si128();
    __m256i v = _mm256_set_m128i(v1, v0);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m512i z = join256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    /* [lo0 lo1 hi0 hi1] -> [lo0 hi0 lo1 hi1] (128-bit lanes) */
    return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
}

/* Stand-in for the rows of a partial tile: reads of absent rows land here
 * (their results are never stored). Larger than any block pair a panel
 * reads at once (2 x 34 bytes, one 210-byte Q6_K block, 16 f32). */
static const uint8_t zero_rows[256] __attribute__((aligned(64))) = {0};

/* D[j] lane r = 32-bit word j of the 16 bytes at rows[r] + off: four 4x4
 * transposes of 128-bit loads, then the quarters joined. */
static ALWAYS_INLINE void rows_words(const uint8_t *const rows[16], size_t off, __m512i D[4])
{
    __m128i q[4][4];
#pragma GCC unroll 16
    for (int g = 0; g < 4; g++) {
        __m128i r0 = _mm_loadu_si128((const __m128i *)(rows[4 * g] + off));
        __m128i r1 = _mm_loadu_si128((const __m128i *)(rows[4 * g + 1] + off));
        __m128i r2 = _mm_loadu_si128((const __m128i *)(rows[4 * g + 2] + off));
        __m128i r3 = _mm_loadu_si128((const __m128i *)(rows[4 * g + 3] + off));
        __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpacklo_epi32(r2, r3);
        __m128i t2 = _mm_unpackhi_epi32(r0, r1), t3 = _mm_unpackhi_epi32(r2, r3);
        q[g][0] = _mm_unpacklo_epi64(t0, t1);
        q[g][1] = _mm_unpackhi_epi64(t0, t1);
        q[g][2] = _mm_unpacklo_epi64(t2, t3);
        q[g][3] = _mm_unpackhi_epi64(t2, t3);
    }
#pragma GCC unroll 16
    for (int j = 0; j < 4; j++) {
        __m512i z = _mm512_castsi128_si512(q[0][j]);
        z = _mm512_inserti32x4(z, q[1][j], 1);
        z = _mm512_inserti32x4(z, q[2][j], 2);
        D[j] = _mm512_inserti32x4(z, q[3][j], 3);
    }
}

/* Lane r = the 32-bit word at rows[r] + off (4-byte loads, three shuffles
 * per 4 rows). */
static ALWAYS_INLINE __m512i rows_word(const uint8_t *const rows[16], size_t off)
{
    __m128i q[4];
#pragma GCC unroll 16
    for (int g = 0; g < 4; g++) {
        __m128i r0 = _mm_cvtsi32_si128(ld_i32(rows[4 * g] + off));
        __m128i r1 = _mm_cvtsi32_si128(ld_i32(rows[4 * g + 1] + off));
        __m128i r2 = _mm_cvtsi32_si128(ld_i32(rows[4 * g + 2] + off));
        __m128i r3 = _mm_cvtsi32_si128(ld_i32(rows[4 * g + 3] + off));
        q[g] = _mm_unpacklo_epi64(_mm_unpacklo_epi32(r0, r1), _mm_unpacklo_epi32(r2, r3));
    }
    __m512i z = _mm512_castsi128_si512(q[0]);
    z = _mm512_inserti32x4(z, q[1], 1);
    z = _mm512_inserti32x4(z, q[2], 2);
    return _mm512_inserti32x4(z, q[3], 3);
}

/* f16 in the low (hi = 0) or high (hi = 1) half of each lane, as f32. */
static ALWAYS_INLINE __m512 lanes_f16(__m512i v, int hi)
{
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hi ? _mm512_srli_epi32(v, 16) : v));
}

/* Panel of 16 rows (nv valid; the rest read as zero) for elements
 * [k0, k0+kc). */
static void panel_build(enum ikind kind, panel_i8 *p, const uint8_t *w, size_t ws, int nv,
                        int64_t k0, int kc)
{
    __m512i R[16], D[4];
    const uint8_t *rows[16];
    if (kind == I_Q8_0 || kind == I_Q4_0) {
        const size_t bsz = kind == I_Q8_0 ? sizeof(blk_q8_0) : sizeof(blk_q4_0);
        const int nb = kc / QK;
        for (int pb = 0; pb < nb; pb += 2) {
            const int two = pb + 1 < nb;
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++)
                rows[r] = r < nv ? w + (size_t)r * ws + (size_t)(k0 / QK + pb) * bsz : zero_rows;
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++)
                R[r] = q8b_unit(kind, rows[r], two);
            transpose16_epi32(R);
#pragma GCC unroll 16
            for (int s = 0; s < 16; s++)
                p->q[8 * pb + s] = R[s];
            /* d of each block: the low half of its first word */
            _mm512_storeu_ps(p->sc[pb], lanes_f16(rows_word(rows, 0), 0));
            if (two)
                _mm512_storeu_ps(p->sc[pb + 1], lanes_f16(rows_word(rows, bsz), 0));
        }
        return;
    }
    const size_t bsz = kind == I_Q4_K   ? sizeof(blk_q4_K)
                       : kind == I_Q5_K ? sizeof(blk_q5_K)
                                        : sizeof(blk_q6_K);
    for (int sb = 0; sb < kc / QKK; sb++) {
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++)
            rows[r] = r < nv ? w + (size_t)r * ws + (size_t)(k0 / QKK + sb) * bsz : zero_rows;
        if (kind == I_Q4_K) {
            /* transpose the packed bytes (half the data) and split the
             * nibbles after: packed word j of chunk c holds elements
             * 64c+4j.. (low nibbles, step 16c+j) and 64c+32+4j.. (high,
             * step 16c+8+j) */
            const __m512i m4 = _mm512_set1_epi8(0x0F);
            for (int hf = 0; hf < 2; hf++) {
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++)
                    R[r] = _mm512_loadu_si512(((const blk_q4_K *)rows[r])->qs + 64 * hf);
                transpose16_epi32(R);
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++) {
                    const int s0 = 64 * sb + 16 * (2 * hf + j / 8) + j % 8;
                    p->q[s0] = _mm512_and_si512(R[j], m4);
                    p->q[s0 + 8] = _mm512_and_si512(_mm512_srli_epi16(R[j], 4), m4);
                }
            }
        } else if (kind == I_Q6_K) {
            /* likewise: transpose ql (two halves) and qh, then assemble.
             * Packed word j < 8 of ql half h holds elements 128h+4j.. (low
             * nibbles) and 128h+64+4j.. (high); word 8+j holds 128h+32+4j..
             * and 128h+96+4j..; word 8h+j of qh holds the two high bits of
             * all four, at bits 0-1, 2-3, 4-5, 6-7 of each byte. */
            const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
            __m512i Q[16];
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++)
                Q[r] = _mm512_loadu_si512(((const blk_q6_K *)rows[r])->qh);
            transpose16_epi32(Q);
            for (int hf = 0; hf < 2; hf++) {
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++)
                    R[r] = _mm512_loadu_si512(((const blk_q6_K *)rows[r])->ql + 64 * hf);
                transpose16_epi32(R);
                __m512i *q = p->q + 64 * sb + 32 * hf;
#pragma GCC unroll 16
                for (int j = 0; j < 8; j++) {
                    const __m512i H = Q[8 * hf + j];
                    q[j] = _mm512_or_si512(_mm512_and_si512(R[j], m4),
                                           _mm512_and_si512(_mm512_slli_epi32(H, 4), m30));
                    q[8 + j] = _mm512_or_si512(_mm512_and_si512(R[8 + j], m4),
                                               _mm512_and_si512(_mm512_slli_epi32(H, 2), m30));
                    q[16 + j] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(R[j], 4), m4),
                                                _mm512_and_si512(H, m30));
                    q[24 + j] =
                        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(R[8 + j], 4), m4),
                                        _mm512_and_si512(_mm512_srli_epi32(H, 2), m30));
                }
            }
        } else { /* Q5_K: unpack each row, then transpose the codes */
            for (int u = 0; u < 4; u++) {
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++)
                    R[r] = q5_unit(rows[r], u);
                transpose16_epi32(R);
#pragma GCC unroll 16
                for (int s = 0; s < 16; s++)
                    p->q[64 * sb + 16 * u + s] = R[s];
            }
        }
        /* scales, vectorised over the 16 rows */
        if (kind == I_Q6_K) {
            __m512i Dd[4];
            rows_words(rows, offsetof(blk_q6_K, d) - 14, Dd); /* word 3 = sc14 sc15 d */
            const __m512 d = lanes_f16(Dd[3], 1);
            rows_words(rows, offsetof(blk_q6_K, scales), D);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) {
                __m512i v = _mm512_srai_epi32(_mm512_slli_epi32(D[j / 4], 24 - 8 * (j % 4)), 24);
                _mm512_storeu_ps(p->sc[16 * sb + j], _mm512_mul_ps(d, _mm512_cvtepi32_ps(v)));
            }
        } else {
            /* Q4_K and Q5_K share the head: d, dmin, scales[12] = words 0..3;
             * kq_scale_min_words, lane-wise */
            rows_words(rows, 0, D);
            const __m512 d = lanes_f16(D[0], 0), dmin = lanes_f16(D[0], 1);
            const __m512i m6 = _mm512_set1_epi32(0x3f3f3f3f), m4 = _mm512_set1_epi32(0x0f0f0f0f),
                          m30 = _mm512_set1_epi32(0x30303030), ff = _mm512_set1_epi32(0xFF);
            const __m512i u0 = D[1], u1 = D[2], u2 = D[3];
            const __m512i wsc[2] = {
                _mm512_and_si512(u0, m6),
                _mm512_or_si512(_mm512_and_si512(u2, m4),
                                _mm512_and_si512(_mm512_srli_epi32(u0, 2), m30))};
            const __m512i wm[2] = {
                _mm512_and_si512(u1, m6),
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m4),
                                _mm512_and_si512(_mm512_srli_epi32(u1, 2), m30))};
#pragma GCC unroll 16
            for (int j = 0; j < 8; j++) {
                __m512i sc = _mm512_and_si512(_mm512_srli_epi32(wsc[j / 4], 8 * (j % 4)), ff);
                __m512i m = _mm512_and_si512(_mm512_srli_epi32(wm[j / 4], 8 * (j % 4)), ff);
                _mm512_storeu_ps(p->sc[8 * sb + j], _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
                _mm512_storeu_ps(
                    p->mn[8 * sb + j],
                    _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(m))));
            }
        }
    }
}

/* Broadcast 32-bit activation word. */
static ALWAYS_INLINE __m512i xword(const uint8_t *x, int64_t i)
{
    return _mm512_set1_epi32(ld_i32(x + i));
}

/* The micro-kernels: RT row tiles (1 or 2) x T tokens (1..TMAX) over one panel
 * chunk [k0, k0+kc); yacc[rt][t] accumulates row tile rt, token t. */

/* Q8_0 / Q4_0: per block, acc = off (-c*sum x), 8 vpdpbusd, then
 * y += cvt(acc) * dw * dx. NB (1 or 2) blocks are interleaved so that
 * NB*RT*T independent vpdpbusd chains hide its latency. */
static ALWAYS_INLINE void q8b_blocks(int NB, int RT, int T, const panel_i8 *P[2],
                                     const uint8_t *const xr[TMAX], int64_t k, int64_t k0, int b,
                                     __m512 yacc[2][TMAX])
{
    const size_t off_d = act_off_d(k), off_o = act_off_aux(ACT_Q8B, k);
    const int64_t gb = k0 / QK + b;
    __m512i acc[2][2][TMAX];
#pragma GCC unroll 16
    for (int n = 0; n < NB; n++)
#pragma GCC unroll 16
        for (int t = 0; t < T; t++)
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                acc[n][rt][t] = _mm512_set1_epi32(ld_i32(xr[t] + off_o + 4 * (gb + n)));
#pragma GCC unroll 16
    for (int s = 0; s < 8; s++) {
#pragma GCC unroll 16
        for (int n = 0; n < NB; n++) {
            __m512i W[2];
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                W[rt] = P[rt]->q[8 * (b + n) + s];
#pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                __m512i xb = xword(xr[t], k0 + 32 * (b + n) + 4 * s);
#pragma GCC unroll 16
                for (int rt = 0; rt < RT; rt++)
                    acc[n][rt][t] = _mm512_dpbusd_epi32(acc[n][rt][t], W[rt], xb);
            }
        }
    }
#pragma GCC unroll 16
    for (int n = 0; n < NB; n++)
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const __m512 dx = _mm512_set1_ps(ld_f32(xr[t] + off_d + 4 * (gb + n)));
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                yacc[rt][t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[n][rt][t]),
                                                            _mm512_loadu_ps(P[rt]->sc[b + n])),
                                              dx, yacc[rt][t]);
        }
}

static ALWAYS_INLINE void mk_q8b(int RT, int T, const panel_i8 *P[2], const uint8_t *const xr[TMAX],
                                 int64_t k, int64_t k0, int kc, __m512 yacc[2][TMAX])
{
    int b = 0;
    if (RT * T <= 8) /* registers allow two blocks in flight */
        for (; b + 2 <= kc / QK; b += 2)
            q8b_blocks(2, RT, T, P, xr, k, k0, b, yacc);
    for (; b < kc / QK; b++)
        q8b_blocks(1, RT, T, P, xr, k, k0, b, yacc);
}

/* K-quants. Per sub-block j of L elements (32 for Q4_K/Q5_K, 16 for Q6_K):
 *   acc = init (Q6_K: -32*sum16, else 0); L/4 vpdpbusd;
 *   g += cvt(acc) * d*sc_j  [+ sum32_j * (-dmin*m_j) for Q4_K/Q5_K];
 * per super-block y += g * dx. For small tiles NB = 2 sub-blocks are
 * interleaved so that enough independent vpdpbusd chains hide its latency. */
static ALWAYS_INLINE void kq_subs(int NB, int L, int RT, int T, const panel_i8 *P[2],
                                  const uint8_t *const xr[TMAX], int64_t k, int64_t k0, int jj,
                                  __m512 g[2][TMAX])
{
    const int steps = L / 4, s0 = steps * jj;
    __m512i acc[2][2][TMAX];
#pragma GCC unroll 16
    for (int n = 0; n < NB; n++)
#pragma GCC unroll 16
        for (int t = 0; t < T; t++)
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                acc[n][rt][t] = L == 16 ? _mm512_set1_epi32(ld_i32(xr[t] + act_off_off16(k) +
                                                                   4 * (k0 / 16 + jj + n)))
                                        : _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int s = 0; s < steps; s++) {
#pragma GCC unroll 16
        for (int n = 0; n < NB; n++) {
            __m512i W[2];
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                W[rt] = P[rt]->q[s0 + steps * n + s];
#pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                __m512i xb = xword(xr[t], k0 + 4 * (s0 + steps * n + s));
#pragma GCC unroll 16
                for (int rt = 0; rt < RT; rt++)
                    acc[n][rt][t] = _mm512_dpbusd_epi32(acc[n][rt][t], W[rt], xb);
            }
        }
    }
#pragma GCC unroll 16
    for (int n = 0; n < NB; n++)
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                g[rt][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[n][rt][t]),
                                           _mm512_loadu_ps(P[rt]->sc[jj + n]), g[rt][t]);
            if (L == 32) {
                const __m512 sx = _mm512_set1_ps(
                    ld_f32(xr[t] + act_off_aux(ACT_Q8K32, k) + 4 * (k0 / 32 + jj + n)));
#pragma GCC unroll 16
                for (int rt = 0; rt < RT; rt++)
                    g[rt][t] = _mm512_fmadd_ps(sx, _mm512_loadu_ps(P[rt]->mn[jj + n]), g[rt][t]);
            }
        }
}

static ALWAYS_INLINE void mk_kq(int L, int RT, int T, const panel_i8 *P[2],
                                const uint8_t *const xr[TMAX], int64_t k, int64_t k0, int kc,
                                __m512 yacc[2][TMAX])
{
    const int nsub = QKK / L;
    for (int sb = 0; sb < kc / QKK; sb++) {
        __m512 g[2][TMAX];
#pragma GCC unroll 16
        for (int t = 0; t < T; t++)
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                g[rt][t] = _mm512_setzero_ps();
        if (RT * T <= 8) /* registers allow two sub-blocks in flight */
            for (int j = 0; j < nsub; j += 2)
                kq_subs(2, L, RT, T, P, xr, k, k0, nsub * sb + j, g);
        else
            for (int j = 0; j < nsub; j++)
                kq_subs(1, L, RT, T, P, xr, k, k0, nsub * sb + j, g);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const __m512 dx = _mm512_set1_ps(ld_f32(xr[t] + act_off_d(k) + 4 * (k0 / QKK + sb)));
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                yacc[rt][t] = _mm512_fmadd_ps(g[rt][t], dx, yacc[rt][t]);
        }
    }
}

static ALWAYS_INLINE __mmask16 row_mask(int nv)
{
    return nv >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nv) - 1);
}

enum fkind { F_F32, F_F16, F_BF16 };

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

/* y tile += / = yacc (first chunk stores). */
static ALWAYS_INLINE void store_tile(int RT, int T, float *y, int64_t ldy, const int nv[2],
                                     int first, __m512 yacc[2][TMAX])
{
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
#pragma GCC unroll 16
        for (int rt = 0; rt < RT; rt++) {
            float *p = y + t * ldy + 16 * rt;
            const __mmask16 m = row_mask(nv[rt]);
            __m512 v = yacc[rt][t];
            if (!first)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, p));
            _mm512_mask_storeu_ps(p, m, v);
        }
}

/* Micro-kernel families: Q8_0 and Q4_0 share one (blocks of 32 with their
 * own scales), Q4_K and Q5_K another (sub-blocks of 32 with mins), Q6_K the
 * third (sub-blocks of 16); only the panel builds differ. */
enum ifam { FAM_Q8B, FAM_K32, FAM_K16 };

static ALWAYS_INLINE void int_tile(enum ifam fam, int RT, int T, const panel_i8 *P[2],
                                   const uint8_t *const xr[TMAX], int64_t k, int64_t k0, int kc,
                                   float *y, int64_t ldy, const int nv[2], int first)
{
    __m512 yacc[2][TMAX];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
#pragma GCC unroll 16
        for (int rt = 0; rt < RT; rt++)
            yacc[rt][t] = _mm512_setzero_ps();
    if (fam == FAM_Q8B)
        mk_q8b(RT, T, P, xr, k, k0, kc, yacc);
    else if (fam == FAM_K16)
        mk_kq(16, RT, T, P, xr, k, k0, kc, yacc);
    else
        mk_kq(32, RT, T, P, xr, k, k0, kc, yacc);
    store_tile(RT, T, y, ldy, nv, first, yacc);
}

/* One switch per family keeps each (RT, T) instance a straight-line kernel
 * (and each function small enough for the compilers' sanitizer builds). */
static ALWAYS_INLINE void int_tile_fam(enum ifam fam, int RT, int T, const panel_i8 *P[2],
                                       const uint8_t *const xr[TMAX], int64_t k, int64_t k0, int kc,
                                       float *y, int64_t ldy, const int nv[2], int first)
{
    switch (RT * 8 + T) {
    case 9: int_tile(fam, 1, 1, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 10: int_tile(fam, 1, 2, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 11: int_tile(fam, 1, 3, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 12: int_tile(fam, 1, 4, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 13: int_tile(fam, 1, 5, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 14: int_tile(fam, 1, 6, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 17: int_tile(fam, 2, 1, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 18: int_tile(fam, 2, 2, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 19: int_tile(fam, 2, 3, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 20: int_tile(fam, 2, 4, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 21: int_tile(fam, 2, 5, P, xr, k, k0, kc, y, ldy, nv, first); break;
    case 22: int_tile(fam, 2, 6, P, xr, k, k0, kc, y, ldy, nv, first); break;
    default: break;
    }
}

static void tile_q8b(int RT, int T, const panel_i8 *P[2], const uint8_t *const xr[TMAX], int64_t k,
                     int64_t k0, int kc, float *y, int64_t ldy, const int nv[2], int first)
{
    int_tile_fam(FAM_Q8B, RT, T, P, xr, k, k0, kc, y, ldy, nv, first);
}

static void tile_k32(int RT, int T, const panel_i8 *P[2], const uint8_t *const xr[TMAX], int64_t k,
                     int64_t k0, int kc, float *y, int64_t ldy, const int nv[2], int first)
{
    int_tile_fam(FAM_K32, RT, T, P, xr, k, k0, kc, y, ldy, nv, first);
}

static void tile_k16(int RT, int T, const panel_i8 *P[2], const uint8_t *const xr[TMAX], int64_t k,
                     int64_t k0, int kc, float *y, int64_t ldy, const int nv[2], int first)
{
    int_tile_fam(FAM_K16, RT, T, P, xr, k, k0, kc, y, ldy, nv, first);
}

static void int_tile_any(enum ikind kind, int RT, int T, const panel_i8 *P[2],
                         const uint8_t *const xr[TMAX], int64_t k, int64_t k0, int kc, float *y,
                         int64_t ldy, const int nv[2], int first)
{
    if (kind == I_Q8_0 || kind == I_Q4_0)
        tile_q8b(RT, T, P, xr, k, k0, kc, y, ldy, nv, first);
    else if (kind == I_Q6_K)
        tile_k16(RT, T, P, xr, k, k0, kc, y, ldy, nv, first);
    else
        tile_k32(RT, T, P, xr, k, k0, kc, y, ldy, nv, first);
}

/* The weights of the next panel are prefetched into L2 while the current one
 * is multiplied, a slice per token group: the panel build then finds them in
 * cache instead of waiting on memory row by row. */
typedef struct panel_next {
    const uint8_t *w; /* first row of the next panel's rows */
    size_t ws, off, bytes;
    int rows;
} panel_next;

static ALWAYS_INLINE void prefetch_slice(const panel_next *n, int part, int parts)
{
    /* rows [r0, r1) of the next panel; parts > rows leaves some parts idle */
    const int r0 = n->rows * part / parts, r1 = n->rows * (part + 1) / parts;
    for (int r = r0; r < r1; r++)
        for (size_t o = 0; o < n->bytes; o += 64)
            _mm_prefetch((const char *)n->w + (size_t)r * n->ws + n->off + o, _MM_HINT_T0);
}

/* What the panel after (r0, k0) reads: the next k-chunk of the same rows,
 * else the first chunk of the next 32 rows. */
static panel_next next_panel(const uint8_t *w, size_t ws, int64_t nr, int64_t r0, int64_t k0,
                             int64_t k, int64_t chunk, size_t row_bytes)
{
    panel_next n = {w, ws, 0, 0, 0};
    int64_t nk0 = k0 + chunk, nr0 = r0;
    if (nk0 >= k) {
        nk0 = 0;
        nr0 = r0 + 32;
    }
    if (nr0 >= nr)
        return n;
    const size_t per_elem_num = row_bytes, per_elem_den = (size_t)k;
    n.w = w + (size_t)nr0 * ws;
    n.off = (size_t)nk0 * per_elem_num / per_elem_den;
    n.bytes = (size_t)(nk0 + chunk < k ? chunk : k - nk0) * per_elem_num / per_elem_den;
    n.rows = (int)(nr - nr0 < 32 ? nr - nr0 : 32);
    return n;
}

static void gemm_panel_int(enum ikind kind, float *y, int64_t ldy, const void *w, size_t ws,
                           int64_t nr, const void *xa, size_t xs, int64_t nt, int64_t k)
{
    panel_i8 P0, P1;
    const panel_i8 *P[2] = {&P0, &P1};
    const size_t bsz = kind == I_Q8_0   ? sizeof(blk_q8_0)
                       : kind == I_Q4_0 ? sizeof(blk_q4_0)
                       : kind == I_Q4_K ? sizeof(blk_q4_K)
                       : kind == I_Q5_K ? sizeof(blk_q5_K)
                                        : sizeof(blk_q6_K);
    const size_t row_bytes = (size_t)(k / (kind == I_Q8_0 || kind == I_Q4_0 ? QK : QKK)) * bsz;
    /* tokens per pass: Q6_K's short sub-blocks leave fewer registers */
    const int tg = kind == I_Q6_K ? 5 : TMAX;
    const int groups = (int)((nt + tg - 1) / tg);
    for (int64_t r0 = 0; r0 < nr; r0 += 32) {
        const int RT = nr - r0 > 16 ? 2 : 1;
        const int nv[2] = {nr - r0 >= 16 ? 16 : (int)(nr - r0),
                           RT == 2 ? (nr - r0 >= 32 ? 16 : (int)(nr - r0 - 16)) : 0};
        const uint8_t *w0 = (const uint8_t *)w + (size_t)r0 * ws;
        for (int64_t k0 = 0; k0 < k; k0 += PKC) {
            const int kc = (int)(k - k0 < PKC ? k - k0 : PKC);
            const panel_next nx = next_panel(w, ws, nr, r0, k0, k, PKC, row_bytes);
            panel_build(kind, &P0, w0, ws, nv[0], k0, kc);
            if (RT == 2)
                panel_build(kind, &P1, w0 + 16 * ws, ws, nv[1], k0, kc);
            for (int64_t t0 = 0; t0 < nt; t0 += tg) {
                const int T = (int)(nt - t0 < tg ? nt - t0 : tg);
                const uint8_t *xr[TMAX];
#pragma GCC unroll 16
                for (int t = 0; t < TMAX; t++)
                    xr[t] = (const uint8_t *)xa + (size_t)(t0 + (t < T ? t : 0)) * xs;
                prefetch_slice(&nx, (int)(t0 / tg), groups);
                int_tile_any(kind, RT, T, P, xr, k, k0, kc, y + t0 * ldy + r0, ldy, nv, k0 == 0);
            }
        }
    }
}

/* ---- few tokens: row streaming ----------------------------------------------------------
 * Generation is bandwidth-bound, and on these VMs a streaming loop reaches
 * the memory's rate only if it issues few instructions per byte (fewer
 * misses in flight otherwise) and prefetches ahead in software (8 KiB
 * measured best of 2-16 KiB). */

#ifndef PF_DIST
#define PF_DIST 8192
#endif

static ALWAYS_INLINE void prefetch_ahead(const void *p, int n)
{
    for (int o = 0; o < n; o += 64)
        _mm_prefetch((const char *)p + PF_DIST + o, _MM_HINT_T0);
}

/* Q8_0, T tokens: four blocks per step, 2 blocks per vpdpbusd (codes w+128,
 * the activation offset -128*sum(x) spread as -16*sum over each block's 8
 * lanes), one cvt + FMA per 2 blocks with the per-block scale dw*dx spread
 * over its lanes. */
static ALWAYS_INLINE void q8_0_rows(int T, float *y, int64_t ldy, const uint8_t *wrow,
                                    const uint8_t *xa, size_t xs, int64_t k)
{
    const blk_q8_0 *b = (const blk_q8_0 *)wrow;
    const int64_t nb = k / QK;
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    const __m512i lo2 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i hi2 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m512 f[TMAX][2];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        f[t][0] = f[t][1] = _mm512_setzero_ps();
    int64_t ib = 0;
    for (; ib + 4 <= nb; ib += 4) {
        prefetch_ahead(b + ib, 3 * 64);
        const __m512i w01 =
            _mm512_xor_si512(join256(loadu256(b[ib].qs), loadu256(b[ib + 1].qs)), x80);
        const __m512i w23 =
            _mm512_xor_si512(join256(loadu256(b[ib + 2].qs), loadu256(b[ib + 3].qs)), x80);
        const __m128 dw =
            _mm_cvtph_ps(_mm_setr_epi16((short)b[ib].d, (short)b[ib + 1].d, (short)b[ib + 2].d,
                                        (short)b[ib + 3].d, 0, 0, 0, 0));
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const uint8_t *x = xa + (size_t)t * xs;
            const __m512 sc = _mm512_castps128_ps512(
                _mm_mul_ps(dw, _mm_loadu_ps((const float *)(x + act_off_d(k)) + ib)));
            const __m512i off = _mm512_castsi128_si512(_mm_srai_epi32(
                _mm_loadu_si128((const __m128i *)(x + act_off_aux(ACT_Q8B, k)) + ib / 4), 3));
            __m512i a01 = _mm512_dpbusd_epi32(_mm512_permutexvar_epi32(lo2, off), w01,
                                              _mm512_loadu_si512(x + QK * ib));
            __m512i a23 = _mm512_dpbusd_epi32(_mm512_permutexvar_epi32(hi2, off), w23,
                                              _mm512_loadu_si512(x + QK * ib + 64));
            f[t][0] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(a01), _mm512_permutexvar_ps(lo2, sc), f[t][0]);
            f[t][1] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(a23), _mm512_permutexvar_ps(hi2, sc), f[t][1]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        const uint8_t *x = xa + (size_t)t * xs;
        float s = _mm512_reduce_add_ps(_mm512_add_ps(f[t][0], f[t][1]));
        for (int64_t j = ib; j < nb; j++) { /* the last 1..3 blocks */
            int32_t isum = 0;
            for (int i = 0; i < QK; i++)
                isum += b[j].qs[i] * ((const int8_t *)x)[QK * j + i];
            s += (_cvtsh_ss(b[j].d) * ld_f32(x + act_off_d(k) + 4 * j)) * (float)isum;
        }
        y[t * ldy] = s;
    }
}

/* Q4_0, T tokens: as Q8_0 with the codes (0..15) taken from the nibbles and
 * the offset -8*sum(x) (-sum over each of a block's 8 lanes). */
static ALWAYS_INLINE void q4_0_rows(int T, float *y, int64_t ldy, const uint8_t *wrow,
                                    const uint8_t *xa, size_t xs, int64_t k)
{
    const blk_q4_0 *b = (const blk_q4_0 *)wrow;
    const int64_t nb = k / QK;
    const __m512i lo2 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i hi2 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m512 f[TMAX][2];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        f[t][0] = f[t][1] = _mm512_setzero_ps();
    int64_t ib = 0;
    for (; ib + 4 <= nb; ib += 4) {
        prefetch_ahead(b + ib, 2 * 64);
        const __m512i w01 = q8b_unit(I_Q4_0, (const uint8_t *)(b + ib), 1);
        const __m512i w23 = q8b_unit(I_Q4_0, (const uint8_t *)(b + ib + 2), 1);
        const __m128 dw =
            _mm_cvtph_ps(_mm_setr_epi16((short)b[ib].d, (short)b[ib + 1].d, (short)b[ib + 2].d,
                                        (short)b[ib + 3].d, 0, 0, 0, 0));
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const uint8_t *x = xa + (size_t)t * xs;
            const __m512 sc = _mm512_castps128_ps512(
                _mm_mul_ps(dw, _mm_loadu_ps((const float *)(x + act_off_d(k)) + ib)));
            const __m512i off = _mm512_castsi128_si512(_mm_srai_epi32(
                _mm_loadu_si128((const __m128i *)(x + act_off_aux(ACT_Q8B, k)) + ib / 4), 3));
            __m512i a01 = _mm512_dpbusd_epi32(_mm512_permutexvar_epi32(lo2, off), w01,
                                              _mm512_loadu_si512(x + QK * ib));
            __m512i a23 = _mm512_dpbusd_epi32(_mm512_permutexvar_epi32(hi2, off), w23,
                                              _mm512_loadu_si512(x + QK * ib + 64));
            f[t][0] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(a01), _mm512_permutexvar_ps(lo2, sc), f[t][0]);
            f[t][1] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(a23), _mm512_permutexvar_ps(hi2, sc), f[t][1]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        const uint8_t *x = xa + (size_t)t * xs;
        float s = _mm512_reduce_add_ps(_mm512_add_ps(f[t][0], f[t][1]));
        for (int64_t j = ib; j < nb; j++) { /* the last 1..3 blocks */
            const int8_t *xq = (const int8_t *)x + QK * j;
            int32_t isum = 0;
            for (int i = 0; i < QK / 2; i++)
                isum += ((b[j].qs[i] & 0xF) - 8) * xq[i] + ((b[j].qs[i] >> 4) - 8) * xq[i + 16];
            s += (_cvtsh_ss(b[j].d) * ld_f32(x + act_off_d(k) + 4 * j)) * (float)isum;
        }
        y[t * ldy] = s;
    }
}

/* vpermw index: 16-bit lane i selects word base + (i >> shift). */
static ALWAYS_INLINE __m512i word_index(int base, int shift)
{
    uint32_t v[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) {
        const uint32_t lo = (uint32_t)(base + ((2 * j) >> shift)),
                       hi = (uint32_t)(base + ((2 * j + 1) >> shift));
        v[j] = lo | hi << 16;
    }
    return _mm512_loadu_si512(v);
}

/* Q6_K, T tokens, one super-block per step: codes in element order, 64 per
 * vector; vpmaddubsw (exact: codes <= 63) then vpdpwssd with the 16
 * sub-block scales spread over their s16 lanes by vpermw, so the integer sum
 * of a whole super-block is scaled once; the -32 offset comes from the
 * activation's per-16 sums. */
static ALWAYS_INLINE void q6_K_rows(int T, float *y, int64_t ldy, const uint8_t *wrow,
                                    const uint8_t *xa, size_t xs, int64_t k)
{
    const int64_t ns = k / QKK;
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    /* per half h: the low nibbles of ql[64h..] are elements 128h+0..63, high
     * bits qh << 4 for the first 32 and << 2 for the next 32; the high
     * nibbles are elements 128h+64..127, high bits qh >> 0 and >> 2 */
    const __m512i shl = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2);
    const __m512i shr = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
    __m512 f[TMAX];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        f[t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const blk_q6_K *b = (const blk_q6_K *)wrow + s;
        prefetch_ahead(b, (int)sizeof(blk_q6_K));
        __m512i Z[4], S16[4];
#pragma GCC unroll 16
        for (int h = 0; h < 2; h++) {
            const __m512i L = _mm512_loadu_si512(b->ql + 64 * h);
            const __m512i H = _mm512_broadcast_i64x4(loadu256(b->qh + 32 * h));
            Z[2 * h] = _mm512_or_si512(_mm512_and_si512(L, m4),
                                       _mm512_and_si512(_mm512_sllv_epi64(H, shl), m30));
            Z[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                           _mm512_and_si512(_mm512_srlv_epi64(H, shr), m30));
        }
        const __m256i sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
#pragma GCC unroll 16
        for (int u = 0; u < 4; u++) /* 4 sub-blocks of 16 per vector */
            S16[u] = _mm512_permutexvar_epi16(word_index(4 * u, 3), _mm512_castsi256_si512(sc_all));
        const float d = _cvtsh_ss(b->d);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const uint8_t *x = xa + (size_t)t * xs;
            const uint8_t *xq = x + (size_t)s * QKK;
            __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 16
            for (int u = 0; u < 4; u++)
                acc = _mm512_dpwssd_epi32(
                    acc, _mm512_maddubs_epi16(Z[u], _mm512_loadu_si512(xq + 64 * u)), S16[u]);
            /* - 32 * sum_j sc_j * sum16_j */
            const __m256i cs =
                _mm256_madd_epi16(sc_all, loadu256(x + act_off_aux(ACT_Q8K16, k) + 32 * s));
            acc = _mm512_sub_epi32(acc, _mm512_zextsi256_si512(_mm256_slli_epi32(cs, 5)));
            f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc),
                                   _mm512_set1_ps(d * ld_f32(x + act_off_d(k) + 4 * s)), f[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        y[t * ldy] = _mm512_reduce_add_ps(f[t]);
}

/* Q4_K / Q5_K, T tokens: 256-bit, one sub-block (32 codes) per vector so
 * that no lane shuffles are needed (256-bit ops also issue on three ports
 * where 512-bit ones have two): vpmaddubsw, then vpdpwssd with the
 * sub-block's scale broadcast from a small table of s16 pairs. */
static ALWAYS_INLINE void k4_rows(enum ikind kind, int T, float *y, int64_t ldy,
                                  const uint8_t *wrow, const uint8_t *xa, size_t xs, int64_t k)
{
    const int64_t ns = k / QKK;
    const size_t bsz = kind == I_Q4_K ? sizeof(blk_q4_K) : sizeof(blk_q5_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F), sixteen = _mm256_set1_epi8(16);
    __m256 f[TMAX], fm[TMAX];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        f[t] = fm[t] = _mm256_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const blk_q4_K *bh = (const blk_q4_K *)(wrow + (size_t)s * bsz); /* shared head */
        const uint8_t *qs = kind == I_Q4_K ? bh->qs : ((const blk_q5_K *)bh)->qs;
        prefetch_ahead(bh, (int)bsz);
        __m256i Z[8];
#pragma GCC unroll 16
        for (int c = 0; c < 4; c++) {
            const __m256i v = loadu256(qs + 32 * c);
            Z[2 * c] = _mm256_and_si256(v, m4);
            Z[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
        if (kind == I_Q5_K) {
            const __m256i qh = loadu256(((const blk_q5_K *)bh)->qh);
#pragma GCC unroll 16
            for (int j = 0; j < 8; j++)
                Z[j] = _mm256_mask_add_epi8(
                    Z[j], _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << j))), Z[j],
                    sixteen);
        }
        uint32_t wd[4];
        kq_scale_min_words(bh->scales, wd);
        /* pairs[j] = sc_j in both s16 halves, for vpbroadcastd */
        uint32_t pairs[8];
        const __m128i s16 =
            _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)((uint64_t)wd[2] << 32 | wd[0])));
        _mm_storeu_si128((__m128i *)pairs, _mm_unpacklo_epi16(s16, s16));
        _mm_storeu_si128((__m128i *)(pairs + 4), _mm_unpackhi_epi16(s16, s16));
        const __m256 mf = _mm256_cvtepi32_ps(
            _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)((uint64_t)wd[3] << 32 | wd[1]))));
        const float d = _cvtsh_ss(bh->d), dmin = _cvtsh_ss(bh->dmin);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const uint8_t *x = xa + (size_t)t * xs;
            const uint8_t *xq = x + (size_t)s * QKK;
            const float dx = ld_f32(x + act_off_d(k) + 4 * s);
            __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
#pragma GCC unroll 16
            for (int j = 0; j < 8; j += 2) {
                acc0 = _mm256_dpwssd_epi32(acc0, _mm256_maddubs_epi16(Z[j], loadu256(xq + 32 * j)),
                                           _mm256_set1_epi32((int)pairs[j]));
                acc1 = _mm256_dpwssd_epi32(
                    acc1, _mm256_maddubs_epi16(Z[j + 1], loadu256(xq + 32 * j + 32)),
                    _mm256_set1_epi32((int)pairs[j + 1]));
            }
            const __m256 s32 =
                _mm256_loadu_ps((const float *)(x + act_off_aux(ACT_Q8K32, k)) + 8 * s);
            fm[t] = _mm256_fmadd_ps(_mm256_mul_ps(mf, s32), _mm256_set1_ps(dmin * dx), fm[t]);
            f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc0, acc1)),
                                   _mm256_set1_ps(d * dx), f[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        const __m256 v = _mm256_sub_ps(f[t], fm[t]);
        __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        m = _mm_add_ps(m, _mm_movehl_ps(m, m));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        y[t * ldy] = _mm_cvtss_f32(m);
    }
}

/* Float weights, T tokens: 32 elements per step, two accumulators. */
static ALWAYS_INLINE __m512 fload16_full(enum fkind kind, const uint8_t *row, int64_t i)
{
    switch (kind) {
    case F_F32: return _mm512_loadu_ps(row + 4 * i);
    case F_F16: return _mm512_cvtph_ps(loadu256(row + 2 * i));
    default:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(loadu256(row + 2 * i)), 16));
    }
}

static ALWAYS_INLINE void float_rows(enum fkind kind, int T, float *y, int64_t ldy,
                                     const uint8_t *wrow, const uint8_t *xa, size_t xs, int64_t k)
{
    const int esz = kind == F_F32 ? 4 : 2;
    __m512 f[TMAX][2];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        f[t][0] = f[t][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        prefetch_ahead(wrow + esz * i, 32 * esz);
        const __m512 w0 = fload16_full(kind, wrow, i), w1 = fload16_full(kind, wrow, i + 16);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const float *x = (const float *)(xa + (size_t)t * xs);
            f[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), f[t][0]);
            f[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), f[t][1]);
        }
    }
    const int n = (int)(k - i); /* 0..31 left: masked */
    const __m512 w0 =
        n > 0 ? fload16(kind, wrow + esz * i, 0, n < 16 ? n : 16) : _mm512_setzero_ps();
    const __m512 w1 =
        n > 16 ? fload16(kind, wrow + esz * (i + 16), 0, n - 16) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        const float *x = (const float *)(xa + (size_t)t * xs);
        __m512 a = _mm512_add_ps(f[t][0], f[t][1]);
        if (n > 0)
            a = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(row_mask(n < 16 ? n : 16), x + i), a);
        if (n > 16)
            a = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(row_mask(n - 16), x + i + 16), a);
        y[t * ldy] = _mm512_reduce_add_ps(a);
    }
}

/* nt = 1..4 tokens, any type, one weight row at a time. */
static ALWAYS_INLINE void rows_tile(int kind, int T, float *y, int64_t ldy, const uint8_t *wr,
                                    const uint8_t *xa, size_t xs, int64_t k)
{
    switch (kind) {
    case I_Q8_0: q8_0_rows(T, y, ldy, wr, xa, xs, k); break;
    case I_Q4_0: q4_0_rows(T, y, ldy, wr, xa, xs, k); break;
    case I_Q4_K: k4_rows(I_Q4_K, T, y, ldy, wr, xa, xs, k); break;
    case I_Q5_K: k4_rows(I_Q5_K, T, y, ldy, wr, xa, xs, k); break;
    case I_Q6_K: q6_K_rows(T, y, ldy, wr, xa, xs, k); break;
    case 16 + F_F32: float_rows(F_F32, T, y, ldy, wr, xa, xs, k); break;
    case 16 + F_F16: float_rows(F_F16, T, y, ldy, wr, xa, xs, k); break;
    default: float_rows(F_BF16, T, y, ldy, wr, xa, xs, k); break;
    }
}

/* kind: an ikind, or 16 + an fkind for float weights. */
static ALWAYS_INLINE void gemv(int kind, float *y, int64_t ldy, const void *w, size_t ws,
                               int64_t nr, const void *xa, size_t xs, int64_t nt, int64_t k)
{
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * ws;
        /* groups of up to 4 tokens; the row stays in L1 between groups, so
         * the weights are read from memory once */
        for (int64_t t0 = 0; t0 < nt; t0 += 4) {
            const uint8_t *x0 = (const uint8_t *)xa + (size_t)t0 * xs;
            float *y0 = y + t0 * ldy + r;
            switch (nt - t0) {
            case 1: rows_tile(kind, 1, y0, ldy, wr, x0, xs, k); break;
            case 2: rows_tile(kind, 2, y0, ldy, wr, x0, xs, k); break;
            case 3: rows_tile(kind, 3, y0, ldy, wr, x0, xs, k); break;
            default: rows_tile(kind, 4, y0, ldy, wr, x0, xs, k); break;
            }
        }
    }
}

/* Streaming kernels for a few tokens, weight panels from PANEL_MIN_NT on.
 * Inlined into one entry point per type so each is specialised. */
static ALWAYS_INLINE void gemm_int(enum ikind kind, float *y, int64_t ldy, const void *w,
                                   size_t ws, int64_t nr, const void *xa, size_t xs, int64_t nt,
                                   int64_t k)
{
    if (nt < PANEL_MIN_NT)
        gemv(kind, y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_int(kind, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q8_0(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q8_0, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q4_0(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q4_0, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q4_K(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q4_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q5_K(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q5_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_q6_K(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    gemm_int(I_Q6_K, y, ldy, w, ws, nr, xa, xs, nt, k);
}

/* ---- float panels -------------------------------------------------------------------- */

typedef struct panel_f {
    __m512 w[PKF]; /* element i of the chunk, 16 rows */
} panel_f;

static void panel_build_f(enum fkind kind, panel_f *p, const uint8_t *w, size_t ws, int nv,
                          int64_t k0, int kc)
{
    const size_t esz = kind == F_F32 ? 4 : 2;
    __m512i R[16];
    const uint8_t *rows[16];
    for (int i0 = 0; i0 < kc; i0 += 16) {
        const int n = kc - i0 < 16 ? kc - i0 : 16;
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++)
            rows[r] = r < nv ? w + (size_t)r * ws + (size_t)(k0 + i0) * esz : zero_rows;
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++)
            R[r] = _mm512_castps_si512(fload16(kind, rows[r], 0, n));
        transpose16_epi32(R);
#pragma GCC unroll 16
        for (int s = 0; s < 16; s++)
            if (s < n)
                p->w[i0 + s] = _mm512_castsi512_ps(R[s]);
    }
}

static ALWAYS_INLINE void float_tile(int RT, int T, const panel_f *P[2],
                                     const uint8_t *const xr[TMAX], int64_t k0, int kc, float *y,
                                     int64_t ldy, const int nv[2], int first)
{
    __m512 yacc[2][TMAX];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
#pragma GCC unroll 16
        for (int rt = 0; rt < RT; rt++)
            yacc[rt][t] = _mm512_setzero_ps();
    for (int i = 0; i < kc; i++) {
        __m512 W[2];
#pragma GCC unroll 16
        for (int rt = 0; rt < RT; rt++)
            W[rt] = P[rt]->w[i];
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const __m512 xb = _mm512_set1_ps(ld_f32(xr[t] + 4 * (k0 + i)));
#pragma GCC unroll 16
            for (int rt = 0; rt < RT; rt++)
                yacc[rt][t] = _mm512_fmadd_ps(W[rt], xb, yacc[rt][t]);
        }
    }
    store_tile(RT, T, y, ldy, nv, first, yacc);
}

static void float_tile_any(int RT, int T, const panel_f *P[2], const uint8_t *const xr[TMAX],
                           int64_t k0, int kc, float *y, int64_t ldy, const int nv[2], int first)
{
    switch (RT * 8 + T) {
    case 9: float_tile(1, 1, P, xr, k0, kc, y, ldy, nv, first); break;
    case 10: float_tile(1, 2, P, xr, k0, kc, y, ldy, nv, first); break;
    case 11: float_tile(1, 3, P, xr, k0, kc, y, ldy, nv, first); break;
    case 12: float_tile(1, 4, P, xr, k0, kc, y, ldy, nv, first); break;
    case 13: float_tile(1, 5, P, xr, k0, kc, y, ldy, nv, first); break;
    case 14: float_tile(1, 6, P, xr, k0, kc, y, ldy, nv, first); break;
    case 17: float_tile(2, 1, P, xr, k0, kc, y, ldy, nv, first); break;
    case 18: float_tile(2, 2, P, xr, k0, kc, y, ldy, nv, first); break;
    case 19: float_tile(2, 3, P, xr, k0, kc, y, ldy, nv, first); break;
    case 20: float_tile(2, 4, P, xr, k0, kc, y, ldy, nv, first); break;
    case 21: float_tile(2, 5, P, xr, k0, kc, y, ldy, nv, first); break;
    case 22: float_tile(2, 6, P, xr, k0, kc, y, ldy, nv, first); break;
    default: break;
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
            for (int64_t t0 = 0; t0 < nt; t0 += TMAX) {
                const int T = (int)(nt - t0 < TMAX ? nt - t0 : TMAX);
                const uint8_t *xr[TMAX];
#pragma GCC unroll 16
                for (int t = 0; t < TMAX; t++)
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
        gemv(16 + F_F32, y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_float(F_F32, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_f16(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                     size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        gemv(16 + F_F16, y, ldy, w, ws, nr, xa, xs, nt, k);
    else
        gemm_panel_float(F_F16, y, ldy, w, ws, nr, xa, xs, nt, k);
}

static void gemm_bf16(float *y, int64_t ldy, const void *w, size_t ws, int64_t nr, const void *xa,
                      size_t xs, int64_t nt, int64_t k)
{
    if (nt < PANEL_MIN_NT)
        gemv(16 + F_BF16, y, ldy, w, ws, nr, xa, xs, nt, k);
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
#pragma GCC unroll 16
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
#pragma GCC unroll 16
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
#pragma GCC unroll 16
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

static void axpy_avx512(uint32_t type, float *out, float w, const void *src, int64_t n)
{
    __m512 vw = _mm512_set1_ps(w);
    int64_t i = 0;
    if (type == TENSOR_F32) {
        const float *x = src;
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(out + i, _mm512_fmadd_ps(vw, _mm512_loadu_ps(x + i), _mm512_loadu_ps(out + i)));
    } else if (type == TENSOR_F16) {
        const uint16_t *h = src;
        for (; i + 16 <= n; i += 16) {
            __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i)));
            _mm512_storeu_ps(out + i, _mm512_fmadd_ps(vw, x, _mm512_loadu_ps(out + i)));
        }
    } else if (type == TENSOR_BF16) {
        const uint16_t *h = src;
        for (; i + 16 <= n; i += 16) {
            __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(h + i)));
            __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            _mm512_storeu_ps(out + i, _mm512_fmadd_ps(vw, x, _mm512_loadu_ps(out + i)));
        }
    } else {
        return;
    }
    if (i < n)
        tensor_axpy_scalar(type, out + i, w, (const char *)src + (size_t)i * (type == TENSOR_F32 ? 4 : 2), n - i);
}

const tensor_kernels tensor_kernels_avx512 = {
    .axpy = axpy_avx512,
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

#if defined(__clang__)
#pragma clang attribute pop
#endif
