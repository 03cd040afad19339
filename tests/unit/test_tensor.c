/* Unit tests for core/tensor: block layouts, quantisers, activation
 * preparation and products, for every kernel table this CPU runs.
 *
 * What is checked, and against what:
 *   - dequantisation of hand-built blocks against values computed here from
 *     the published layouts (the block bytes are assembled bit by bit from
 *     chosen codes and scales; the expected weights come from those codes,
 *     not from the library) — this is what pins layout compatibility;
 *   - quantise -> dequantise error per type (bounds below);
 *   - every SIMD table against the scalar table: dequantisation bit-exact,
 *     act_prepare byte-identical (NaN, inf, zero blocks included), products
 *     within table_tol() = n * 1.2e-7 * sum_i |w_i x_i| (n = k + 8 for float
 *     weights, k/16 + 32 for integer weights: float sums associate
 *     differently, integer block dots are exact) over every nr, nt in 1..19
 *     for k of 1..4 blocks, and larger shapes (k up to 2304, nr 37, nt 67)
 *     with padded strides, odd activation addresses and untouched y outside
 *     the tile;
 *   - products against a double-precision dot of the dequantised weights
 *     with the original f32 activations: the error stays within the
 *     activation-quantisation bound sum_i |w_i| * d_i / 2 (d_i the step of
 *     x_i's group), and the RMS relative error under 2e-2;
 *   - f16/bf16 conversions, sizes, dispatch and the MOEGATE_ISA cap.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "core/tensor.h"
#include "core/tensor_internal.h"

static const uint32_t TYPES[] = {TENSOR_F32,  TENSOR_F16,  TENSOR_BF16, TENSOR_Q8_0,
                                 TENSOR_Q4_0, TENSOR_Q4_K, TENSOR_Q5_K, TENSOR_Q6_K};
#define NTYPES (sizeof(TYPES) / sizeof(TYPES[0]))

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float rnd_unit(void) /* [-1, 1) */
{
    return (float)((double)rnd_u32() / 2147483648.0 - 1.0);
}

/* Roughly normal values whose scale varies per 32 elements, with rare
 * outliers: exercises per-block scales. */
static void fill_random(float *x, int64_t n)
{
    float scale = 1.0f;
    for (int64_t i = 0; i < n; i++) {
        if (i % 32 == 0)
            scale = 0.05f + 2.0f * fabsf(rnd_unit());
        float v = (rnd_unit() + rnd_unit() + rnd_unit()) * scale;
        if (rnd_u32() % 97 == 0)
            v *= 6.0f;
        x[i] = v;
    }
}

static size_t row_bytes(uint32_t type, int64_t n)
{
    size_t b = 0;
    assert_int_equal(tensor_row_bytes(type, n, &b), MG_OK);
    return b;
}

static int64_t block_of(uint32_t type)
{
    return tensor_type_get(type)->block_elems;
}

static uint16_t h(float f)
{
    return tensor_f32_to_f16(f);
}

/* The kernel tables this CPU supports. */
static int tables(const tensor_kernels *out[TENSOR_ISA_COUNT])
{
    int n = 0;
    for (int i = 0; i < TENSOR_ISA_COUNT; i++) {
        const tensor_kernels *kt = tensor_kernels_get((enum tensor_isa)i);
        if (kt)
            out[n++] = kt;
    }
    return n;
}

/* ---- (e) conversions, sizes, dispatch ---------------------------------------- */

static void test_f16_conversions(void **state)
{
    (void)state;
    /* every non-NaN half survives f16 -> f32 -> f16 */
    for (uint32_t u = 0; u < 65536; u++) {
        float f = tensor_f16_to_f32((uint16_t)u);
        if ((u & 0x7c00) == 0x7c00 && (u & 0x3ff)) {
            assert_true(isnan(f));
            assert_true((tensor_f32_to_f16(f) & 0x7c00) == 0x7c00 &&
                        (tensor_f32_to_f16(f) & 0x3ff));
            continue;
        }
        assert_int_equal(tensor_f32_to_f16(f), u);
    }
    assert_true(tensor_f16_to_f32(0x3c00) == 1.0f);
    assert_true(tensor_f16_to_f32(0xc000) == -2.0f);
    assert_true(tensor_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(tensor_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(tensor_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    assert_true(isinf(tensor_f16_to_f32(0x7c00)) && tensor_f16_to_f32(0x7c00) > 0);
    assert_true(signbit(tensor_f16_to_f32(0x8000)) && tensor_f16_to_f32(0x8000) == 0.0f);
    assert_int_equal(tensor_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(tensor_f32_to_f16(65520.0f), 0x7c00); /* rounds to inf */
    assert_int_equal(tensor_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(tensor_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(tensor_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(tensor_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);        /* tie to even 0 */
    assert_int_equal(tensor_f32_to_f16(ldexpf(1.5f, -24)), 0x0002);        /* tie to even 2 */
    assert_int_equal(tensor_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00); /* tie: even */
    assert_int_equal(tensor_f32_to_f16(1.0f + ldexpf(3.0f, -11)), 0x3c02); /* tie: up */
}

static void test_bf16_conversions(void **state)
{
    (void)state;
    for (uint32_t u = 0; u < 65536; u++) {
        float f = tensor_bf16_to_f32((uint16_t)u);
        if (isnan(f)) {
            assert_true(isnan(tensor_bf16_to_f32(tensor_f32_to_bf16(f))));
            continue;
        }
        assert_int_equal(tensor_f32_to_bf16(f), u);
    }
    assert_true(tensor_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(tensor_bf16_to_f32(0xc040) == -3.0f);
    assert_int_equal(tensor_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80); /* tie: even */
    assert_int_equal(tensor_f32_to_bf16(1.0f + ldexpf(3.0f, -8)), 0x3f82); /* tie: up */
    assert_int_equal(tensor_f32_to_bf16(INFINITY), 0x7f80);
    assert_true(isnan(tensor_bf16_to_f32(tensor_f32_to_bf16(NAN))));
}

static void test_sizes(void **state)
{
    (void)state;
    assert_int_equal(row_bytes(TENSOR_F32, 3), 12);
    assert_int_equal(row_bytes(TENSOR_F16, 3), 6);
    assert_int_equal(row_bytes(TENSOR_BF16, 5), 10);
    assert_int_equal(row_bytes(TENSOR_Q8_0, 64), 68);
    assert_int_equal(row_bytes(TENSOR_Q4_0, 96), 54);
    assert_int_equal(row_bytes(TENSOR_Q4_K, 512), 288);
    assert_int_equal(row_bytes(TENSOR_Q5_K, 256), 176);
    assert_int_equal(row_bytes(TENSOR_Q6_K, 768), 630);
    size_t b;
    assert_int_equal(tensor_row_bytes(TENSOR_Q4_K, 100, &b), MG_EINVAL);
    for (size_t i = 0; i < NTYPES; i++) {
        const tensor_type_info *ti = tensor_type_get(TYPES[i]);
        assert_non_null(ti);
        assert_true(ti->computable);
        int64_t k = 4 * QKK;
        size_t ab = tensor_act_row_bytes(TYPES[i], k);
        if (act_fmt_of(TYPES[i]) == ACT_F32)
            assert_int_equal(ab, (size_t)k * 4);
        else
            assert_true(ab % 64 == 0 && ab >= (size_t)k + 4 * (size_t)(k / 32));
    }
    assert_int_equal(tensor_act_row_bytes(TENSOR_Q4_1, 64), 0);
    /* quantize_row refuses what it cannot produce */
    float x[32] = {0};
    uint8_t out[64];
    assert_int_equal(tensor_quantize_row(TENSOR_Q4_1, out, x, 32), MG_EINVAL);
    assert_int_equal(tensor_quantize_row(TENSOR_Q8_0, out, x, 31), MG_EINVAL);
    assert_int_equal(tensor_quantize_row(TENSOR_IQ2_XS, out, x, 32), MG_EINVAL);
}

static void test_dispatch(void **state)
{
    (void)state;
    const tensor_kernels *s = tensor_kernels_get(TENSOR_ISA_SCALAR);
    assert_non_null(s);
    assert_string_equal(tensor_kernels_name(s), "scalar");
    assert_int_equal(tensor_kernels_isa(s), TENSOR_ISA_SCALAR);
    assert_null(tensor_kernels_get(TENSOR_ISA_COUNT));
    const tensor_kernels *a2 = tensor_kernels_get(TENSOR_ISA_AVX2);
    const tensor_kernels *a5 = tensor_kernels_get(TENSOR_ISA_AVX512);
    if (a2)
        assert_string_equal(tensor_kernels_name(a2), "avx2");
    if (a5) {
        assert_non_null(a2); /* AVX-512 implies AVX2 */
        assert_string_equal(tensor_kernels_name(a5), "avx512");
    }
    const char *old = getenv("MOEGATE_ISA");
    char *saved = old ? strdup(old) : NULL;
    unsetenv("MOEGATE_ISA");
    const tensor_kernels *best = tensor_kernels_best();
    assert_ptr_equal(best, a5 ? a5 : a2 ? a2 : s);
    setenv("MOEGATE_ISA", "scalar", 1);
    assert_ptr_equal(tensor_kernels_best(), s);
    setenv("MOEGATE_ISA", "avx2", 1);
    assert_ptr_equal(tensor_kernels_best(), a2 ? a2 : s);
    setenv("MOEGATE_ISA", "avx512", 1);
    assert_ptr_equal(tensor_kernels_best(), best);
    setenv("MOEGATE_ISA", "bogus", 1);
    assert_ptr_equal(tensor_kernels_best(), best);
    if (saved) {
        setenv("MOEGATE_ISA", saved, 1);
        free(saved);
    } else {
        unsetenv("MOEGATE_ISA");
    }
}

static void test_scale_min_words(void **state)
{
    (void)state;
    for (int it = 0; it < 2000; it++) {
        uint8_t s[12];
        for (int i = 0; i < 12; i++)
            s[i] = (uint8_t)rnd_u32();
        uint32_t wd[4];
        kq_scale_min_words(s, wd);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            kq_scale_min(s, j, &sc, &m);
            assert_int_equal(sc, (wd[j < 4 ? 0 : 2] >> (8 * (j % 4))) & 0xFF);
            assert_int_equal(m, (wd[j < 4 ? 1 : 3] >> (8 * (j % 4))) & 0xFF);
        }
    }
}

/* ---- (b) hand-built blocks ------------------------------------------------------ */

/* Dequantise one block with every table; all must agree bit for bit. */
static void dequant_all(uint32_t type, const void *blk, int64_t n, float *out)
{
    const tensor_kernels *kt[TENSOR_ISA_COUNT];
    int nk = tables(kt);
    tensor_dequant_row(kt[0], type, out, blk, n);
    float *tmp = malloc((size_t)n * sizeof(float));
    for (int i = 1; i < nk; i++) {
        tensor_dequant_row(kt[i], type, tmp, blk, n);
        assert_memory_equal(tmp, out, (size_t)n * sizeof(float));
    }
    free(tmp);
}

static void test_layout_q8_0(void **state)
{
    (void)state;
    uint8_t blk[34];
    uint16_t d = h(0.5f);
    memcpy(blk, &d, 2); /* byte 0..1: f16 d, little endian */
    for (int i = 0; i < 32; i++)
        blk[2 + i] = (uint8_t)(int8_t)(i * 8 - 128 + (i == 31 ? 7 : 0)); /* -128 .. 127 */
    float y[32];
    dequant_all(TENSOR_Q8_0, blk, 32, y);
    for (int i = 0; i < 32; i++)
        assert_true(y[i] == (float)(int8_t)blk[2 + i] * 0.5f);
    assert_true(y[0] == -64.0f);
    assert_true(y[31] == 63.5f);
}

static void test_layout_q4_0(void **state)
{
    (void)state;
    uint8_t blk[18];
    uint16_t d = h(-1.5f);
    memcpy(blk, &d, 2);
    int code[32];
    for (int i = 0; i < 32; i++)
        code[i] = (i * 7 + 3) % 16;
    for (int j = 0; j < 16; j++) /* low nibble: element j, high: element j+16 */
        blk[2 + j] = (uint8_t)(code[j] | code[j + 16] << 4);
    float y[32];
    dequant_all(TENSOR_Q4_0, blk, 32, y);
    for (int i = 0; i < 32; i++)
        assert_true(y[i] == (float)(code[i] - 8) * -1.5f);
    assert_true(y[0] == 7.5f);  /* code 3 */
    assert_true(y[16] == 7.5f); /* code (112+3)%16 = 3 */
    assert_true(y[1] == -3.0f); /* code 10 */
}

/* The 12 scale bytes of a Q4_K/Q5_K block, placed bit by bit from the
 * published description: 6-bit sc[0..3] in the low bits of bytes 0..3, m[0..3]
 * in bytes 4..7; sc[4..7] low nibbles in the low nibbles of bytes 8..11 and
 * their top two bits in bits 6..7 of bytes 0..3; m[4..7] likewise in the high
 * nibbles of bytes 8..11 and bits 6..7 of bytes 4..7. */
static void pack_k4_scales(uint8_t s[12], const int sc[8], const int m[8])
{
    memset(s, 0, 12);
    for (int j = 0; j < 4; j++) {
        for (int bit = 0; bit < 6; bit++) {
            s[j] |= (uint8_t)(((sc[j] >> bit) & 1) << bit);
            s[j + 4] |= (uint8_t)(((m[j] >> bit) & 1) << bit);
        }
        for (int bit = 0; bit < 4; bit++) {
            s[j + 8] |= (uint8_t)(((sc[j + 4] >> bit) & 1) << bit);
            s[j + 8] |= (uint8_t)(((m[j + 4] >> bit) & 1) << (bit + 4));
        }
        for (int bit = 4; bit < 6; bit++) {
            s[j] |= (uint8_t)(((sc[j + 4] >> bit) & 1) << (bit + 2));
            s[j + 4] |= (uint8_t)(((m[j + 4] >> bit) & 1) << (bit + 2));
        }
    }
}

static void test_layout_q4_K(void **state)
{
    (void)state;
    const int sc[8] = {1, 2, 63, 17, 33, 50, 63, 4};
    const int m[8] = {5, 0, 7, 62, 40, 9, 31, 63};
    blk_q4_K b;
    _Static_assert(offsetof(blk_q4_K, scales) == 4 && offsetof(blk_q4_K, qs) == 16, "layout");
    b.d = h(1.0f);
    b.dmin = h(0.5f);
    pack_k4_scales(b.scales, sc, m);
    int code[256];
    for (int e = 0; e < 256; e++)
        code[e] = (e * 5 + e / 16) % 16;
    /* chunk c (64 elements) uses qs[32c..32c+31]: low nibble = element
     * 64c+l, high nibble = element 64c+32+l */
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b.qs[32 * c + l] = (uint8_t)(code[64 * c + l] | code[64 * c + 32 + l] << 4);
    float y[256];
    dequant_all(TENSOR_Q4_K, &b, 256, y);
    for (int e = 0; e < 256; e++) {
        float want = (1.0f * (float)sc[e / 32]) * (float)code[e] - 0.5f * (float)m[e / 32];
        assert_true(y[e] == want);
    }
    /* a few by hand: e=0: code 0 -> -2.5; e=40 (sub 1): code (200+2)%16=10
     * -> 2*10 - 0 = 20; e=200 (sub 6): code (1000+12)%16=4 -> 63*4-15.5 */
    assert_true(y[0] == -2.5f);
    assert_true(y[40] == 20.0f);
    assert_true(y[200] == 252.0f - 15.5f);
}

static void test_layout_q5_K(void **state)
{
    (void)state;
    const int sc[8] = {3, 60, 1, 9, 16, 32, 47, 63};
    const int m[8] = {0, 1, 2, 3, 48, 33, 17, 62};
    blk_q5_K b;
    _Static_assert(offsetof(blk_q5_K, qh) == 16 && offsetof(blk_q5_K, qs) == 48, "layout");
    b.d = h(0.25f);
    b.dmin = h(2.0f);
    pack_k4_scales(b.scales, sc, m);
    int code[256];
    for (int e = 0; e < 256; e++)
        code[e] = (e * 11 + 7) % 32;
    memset(b.qh, 0, sizeof(b.qh));
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int lo = code[64 * c + l], hi = code[64 * c + 32 + l];
            b.qs[32 * c + l] = (uint8_t)((lo & 15) | (hi & 15) << 4);
            /* bit b of qh[l] = 5th bit of element 32b + l */
            b.qh[l] |= (uint8_t)((lo >> 4) << (2 * c));
            b.qh[l] |= (uint8_t)((hi >> 4) << (2 * c + 1));
        }
    float y[256];
    dequant_all(TENSOR_Q5_K, &b, 256, y);
    for (int e = 0; e < 256; e++) {
        float want = (0.25f * (float)sc[e / 32]) * (float)code[e] - 2.0f * (float)m[e / 32];
        assert_true(y[e] == want);
    }
    /* e=255: code (2805+7)%32 = 28, sub 7: 0.25*63*28 - 2*62 = 441 - 124 */
    assert_true(y[255] == 317.0f);
}

static void test_layout_q6_K(void **state)
{
    (void)state;
    blk_q6_K b;
    _Static_assert(offsetof(blk_q6_K, qh) == 128 && offsetof(blk_q6_K, scales) == 192 &&
                       offsetof(blk_q6_K, d) == 208,
                   "layout");
    const int sc[16] = {1, -1, 127, -128, 5, 6, -7, 8, 9, -10, 11, 12, -13, 14, 15, -16};
    for (int j = 0; j < 16; j++)
        b.scales[j] = (int8_t)sc[j];
    b.d = h(0.125f);
    int code[256];
    for (int e = 0; e < 256; e++)
        code[e] = (e * 13 + e / 64) % 64;
    memset(b.ql, 0, sizeof(b.ql));
    memset(b.qh, 0, sizeof(b.qh));
    /* element e = 128h + 32q + l: low 4 bits in ql[64h + l + 32(q&1)], low
     * nibble for q < 2, high nibble for q >= 2; high 2 bits in qh[32h + l]
     * at bit 2q */
    for (int e = 0; e < 256; e++) {
        int hh = e / 128, q = (e % 128) / 32, l = e % 32;
        int li = 64 * hh + l + 32 * (q & 1);
        b.ql[li] |= (uint8_t)((code[e] & 15) << (q >= 2 ? 4 : 0));
        b.qh[32 * hh + l] |= (uint8_t)((code[e] >> 4) << (2 * q));
    }
    float y[256];
    dequant_all(TENSOR_Q6_K, &b, 256, y);
    for (int e = 0; e < 256; e++) {
        float want = 0.125f * (float)sc[e / 16] * (float)(code[e] - 32);
        assert_true(y[e] == want);
    }
    /* e=50: code (650+0)%64=10, scale sc[3]=-128: 0.125*-128*(10-32) = 352 */
    assert_true(y[50] == 352.0f);
}

static void test_layout_float(void **state)
{
    (void)state;
    const uint16_t hv[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
    const uint16_t bv[4] = {0x3f80, 0xc040, 0x4049, 0x0001};
    float y[4];
    dequant_all(TENSOR_F16, hv, 4, y);
    assert_true(y[0] == 1.0f && y[1] == -2.0f && y[2] == 65504.0f && y[3] == ldexpf(1, -24));
    dequant_all(TENSOR_BF16, bv, 4, y);
    assert_true(y[0] == 1.0f && y[1] == -3.0f && y[2] == 3.140625f);
    uint32_t sub = 0x00010000;
    float subf;
    memcpy(&subf, &sub, 4);
    assert_true(y[3] == subf);
}

/* ---- (a) quantise -> dequantise ------------------------------------------------- */

/* Bounds on ||x - dq(q(x))|| / ||x|| for the random rows of fill_random
 * (measured: f16 2.1e-4, bf16 1.8e-3, q8_0 7.4e-3, q4_0 0.131, q4_K 0.093,
 * q5_K 0.045, q6_K 0.026; the quantisers are simple, not RMSE-searched). */
static double rms_bound(uint32_t type)
{
    switch (type) {
    case TENSOR_F32: return 0.0;
    case TENSOR_F16: return 5e-4;
    case TENSOR_BF16: return 4e-3;
    case TENSOR_Q8_0: return 9e-3;
    case TENSOR_Q4_0: return 0.15;
    case TENSOR_Q4_K: return 0.11;
    case TENSOR_Q5_K: return 0.055;
    default: return 0.03; /* Q6_K */
    }
}

static void test_quant_roundtrip(void **state)
{
    (void)state;
    const int64_t n = 4096;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    void *q = malloc(row_bytes(TENSOR_F32, n));
    for (size_t ti = 0; ti < NTYPES; ti++) {
        uint32_t type = TYPES[ti];
        double worst = 0;
        for (int rep = 0; rep < 4; rep++) {
            fill_random(x, n);
            if (rep == 3)
                memset(x + 256, 0, 512 * sizeof(float)); /* all-zero blocks */
            assert_int_equal(tensor_quantize_row(type, q, x, n), MG_OK);
            dequant_all(type, q, n, y);
            double e2 = 0, x2 = 0;
            for (int64_t i = 0; i < n; i++) {
                e2 += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
                x2 += (double)x[i] * x[i];
                if (rep == 3 && i >= 256 && i < 768)
                    assert_true(y[i] == 0.0f);
            }
            double rel = sqrt(e2 / x2);
            worst = fmax(worst, rel);
            if (rel > rms_bound(type))
                fail_msg("%s: rms relative error %.4g > %.4g", tensor_type_get(type)->name, rel,
                         rms_bound(type));
        }
        print_message("  %-5s rms relative error %.3g (bound %.3g)\n", tensor_type_get(type)->name,
                      worst, rms_bound(type));
        /* per-element bounds, from each quantiser's construction (tensor.c):
         * Q8_0 half a step of amax/127 (+ f16 rounding of d); Q4_0 and Q6_K
         * one step (the side opposite the largest element may clip by one);
         * Q4_K/Q5_K half a step, the step being at most the sub-block's
         * (range + dmin)/qmax plus the 6-bit scale resolution d. */
        if (block_of(type) > 1) {
            fill_random(x, n);
            assert_int_equal(tensor_quantize_row(type, q, x, n), MG_OK);
            dequant_all(type, q, n, y);
            const int64_t g = type == TENSOR_Q6_K ? 16 : 32;
            for (int64_t b = 0; b < n / g; b++) {
                double aj = 0, as = 0;
                for (int64_t i = 0; i < g; i++)
                    aj = fmax(aj, fabs(x[b * g + i]));
                for (int64_t i = (b * g) / 256 * 256; i < (b * g) / 256 * 256 + 256; i++)
                    as = fmax(as, fabs(x[i]));
                double bound;
                switch (type) {
                case TENSOR_Q8_0: bound = aj * (0.5 / 127 + 1.0 / 2048); break;
                case TENSOR_Q4_0: bound = aj / 8; break;
                case TENSOR_Q6_K: bound = aj / 32 + as / (32 * 127); break;
                default: {
                    const double qm = type == TENSOR_Q4_K ? 15 : 31;
                    bound = (2 * aj + as / 63) / (2 * qm) + 2.02 * as / (2 * 63 * qm);
                }
                }
                bound = bound * 1.01 + 1e-7;
                for (int64_t i = 0; i < g; i++) {
                    double err = fabs((double)x[b * g + i] - y[b * g + i]);
                    if (err > bound)
                        fail_msg("%s: element %lld error %g > %g (amax %g, super-block %g)",
                                 tensor_type_get(type)->name, (long long)(b * g + i), err, bound,
                                 aj, as);
                }
            }
        }
    }
    free(x);
    free(y);
    free(q);
}

/* ---- (c) SIMD tables against the scalar table ------------------------------------ */

/* Act rows of every table must be byte-identical to the scalar ones. */
static void test_act_prepare_identical(void **state)
{
    (void)state;
    const tensor_kernels *kt[TENSOR_ISA_COUNT];
    int nk = tables(kt);
    const int64_t k = 1024;
    float *x = malloc(k * sizeof(float));
    for (size_t ti = 0; ti < NTYPES; ti++) {
        uint32_t type = TYPES[ti];
        size_t ab = tensor_act_row_bytes(type, k);
        uint8_t *ref = malloc(ab), *got = malloc(ab + 1);
        for (int rep = 0; rep < 6; rep++) {
            fill_random(x, k);
            if (rep == 1) { /* zero block, ties, tiny and huge values */
                memset(x, 0, 256 * sizeof(float));
                for (int i = 256; i < 288; i++)
                    x[i] = (float)(i - 272) * 0.5f; /* amax 8: x*id hits .5 ties */
                x[300] = 1e30f;
                x[600] = 1e-40f;
            }
            if (rep == 2) {
                x[5] = NAN;
                x[40] = INFINITY;
                x[300] = -INFINITY;
                x[301] = NAN;
            }
            if (rep == 3)
                for (int i = 0; i < k; i++)
                    x[i] = (float)((int)(rnd_u32() % 255) - 127); /* exact codes */
            tensor_act_prepare(kt[0], type, ref, x, k);
            for (int i = 1; i < nk; i++) {
                memset(got, 0xAB, ab + 1);
                tensor_act_prepare(kt[i], type, got + (rep & 1), x, k); /* odd address too */
                if (memcmp(ref, got + (rep & 1), ab) != 0) {
                    size_t at = 0;
                    while (ref[at] == got[(rep & 1) + at])
                        at++;
                    fail_msg("%s: act row of %s differs from scalar at byte %zu (rep %d)",
                             tensor_kernels_name(kt[i]), tensor_type_get(type)->name, at, rep);
                }
            }
        }
        free(ref);
        free(got);
    }
    free(x);
}

/* Largest |w_i| * |x_i| contribution per element, for tolerance: |w| for
 * plain types; |d*sc*q| + |dmin*m| for Q4_K/Q5_K (their two parts are summed
 * separately before cancelling). */
static void weight_magnitudes(uint32_t type, const void *row, int64_t k, float *mag)
{
    tensor_dequant_row(&tensor_kernels_scalar, type, mag, row, k);
    for (int64_t i = 0; i < k; i++)
        mag[i] = fabsf(mag[i]);
    if (type != TENSOR_Q4_K && type != TENSOR_Q5_K)
        return;
    for (int64_t s = 0; s < k / QKK; s++) {
        const uint8_t *blk = (const uint8_t *)row + s * (type == TENSOR_Q4_K ? 144 : 176);
        const blk_q4_K *b = (const blk_q4_K *)blk; /* shared head */
        float dmin = tensor_f16_to_f32(b->dmin);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            kq_scale_min(b->scales, j, &sc, &m);
            for (int l = 0; l < 32; l++)
                mag[s * QKK + 32 * j + l] += 2.0f * fabsf(dmin * m);
        }
    }
}

/* A problem: weights W[nr][k] of a type at w (row stride ws), activations
 * X[nt][k] (f32) and prepared rows per table. */
typedef struct problem {
    uint32_t type;
    int64_t nr, nt, k;
    size_t ws, xs;
    uint8_t *wbuf, *w; /* w = wbuf + offset */
    float *x;          /* [nt][k] */
    float *mag;        /* [nr][k] */
} problem;

static void problem_make(problem *p, uint32_t type, int64_t nr, int64_t nt, int64_t k, int pad)
{
    p->type = type;
    p->nr = nr;
    p->nt = nt;
    p->k = k;
    p->ws = row_bytes(type, k) + (size_t)(pad ? 36 : 0); /* keeps 4-byte alignment */
    p->wbuf = malloc(p->ws * (size_t)nr + 8);
    p->w = p->wbuf + (pad ? 4 : 0);
    float *tmp = malloc((size_t)k * sizeof(float));
    p->mag = malloc((size_t)(nr * k) * sizeof(float));
    for (int64_t r = 0; r < nr; r++) {
        fill_random(tmp, k);
        assert_int_equal(tensor_quantize_row(type, p->w + (size_t)r * p->ws, tmp, k), MG_OK);
        weight_magnitudes(type, p->w + (size_t)r * p->ws, k, p->mag + r * k);
    }
    p->x = malloc((size_t)(nt * k) * sizeof(float));
    fill_random(p->x, nt * k);
    p->xs = tensor_act_row_bytes(type, k) + (size_t)(pad ? 17 : 0);
    free(tmp);
}

static void problem_free(problem *p)
{
    free(p->wbuf);
    free(p->x);
    free(p->mag);
}

/* Prepared activation rows for table kt (caller frees). */
static uint8_t *problem_act(const problem *p, const tensor_kernels *kt, int odd)
{
    uint8_t *xa = malloc(p->xs * (size_t)p->nt + 64);
    for (int64_t t = 0; t < p->nt; t++)
        tensor_act_prepare(kt, p->type, xa + odd + (size_t)t * p->xs, p->x + t * p->k, p->k);
    return xa;
}

/* sum_i mag[r][i] * |x[t][i]| */
static double problem_mag(const problem *p, int64_t r, int64_t t)
{
    double m = 0;
    for (int64_t i = 0; i < p->k; i++)
        m += (double)p->mag[r * p->k + i] * fabs(p->x[t * p->k + i]);
    return m;
}

/* Tolerance between tables: float sums of n terms in any order differ by at
 * most about n * eps * sum|terms|; n is k for float weights and the number
 * of scaled block / sub-block terms (+ chunk sums) for integer weights. */
static double table_tol(const problem *p, int64_t r, int64_t t)
{
    const double eps = 1.2e-7;
    double n = act_fmt_of(p->type) == ACT_F32 ? (double)p->k + 8 : (double)p->k / 16 + 32;
    return n * eps * problem_mag(p, r, t) + 1e-30;
}

static void run_gemm(const tensor_kernels *kt, const problem *p, float *y, int64_t ldy,
                     const uint8_t *xa, int odd, int64_t nr, int64_t nt)
{
    tensor_gemm(kt, p->type, y, ldy, p->w, p->ws, nr, xa + odd, p->xs, nt, p->k);
}

static void check_tables_on(problem *p, int64_t max_nr, int64_t max_nt, int all_shapes)
{
    const tensor_kernels *kt[TENSOR_ISA_COUNT];
    int nk = tables(kt);
    const int64_t ldy = p->nr + 3;
    float *ref = malloc((size_t)(ldy * p->nt) * sizeof(float));
    float *y = malloc((size_t)(ldy * p->nt) * sizeof(float));
    uint8_t *xref = problem_act(p, kt[0], 0);
    run_gemm(kt[0], p, ref, ldy, xref, 0, p->nr, p->nt);
    double *tol = malloc((size_t)(p->nr * p->nt) * sizeof(double));
    for (int64_t t = 0; t < p->nt; t++)
        for (int64_t r = 0; r < p->nr; r++)
            tol[t * p->nr + r] = table_tol(p, r, t);
    for (int i = 1; i < nk; i++) {
        const int odd = i & 1;
        uint8_t *xa = problem_act(p, kt[i], odd);
        for (int64_t nr = all_shapes ? 1 : max_nr; nr <= max_nr; nr++)
            for (int64_t nt = all_shapes ? 1 : max_nt; nt <= max_nt; nt++) {
                for (int64_t j = 0; j < ldy * p->nt; j++)
                    y[j] = NAN;
                run_gemm(kt[i], p, y, ldy, xa, odd, nr, nt);
                for (int64_t t = 0; t < p->nt; t++)
                    for (int64_t r = 0; r < ldy; r++) {
                        const float v = y[t * ldy + r];
                        if (t >= nt || r >= nr) { /* outside the tile: untouched */
                            if (!isnan(v))
                                fail_msg("%s %s: wrote y[%lld][%lld] outside %lldx%lld",
                                         tensor_kernels_name(kt[i]), tensor_type_get(p->type)->name,
                                         (long long)t, (long long)r, (long long)nt, (long long)nr);
                            continue;
                        }
                        const double want = ref[t * ldy + r], err = fabs(v - want);
                        if (!(err <= tol[t * p->nr + r]))
                            fail_msg("%s %s k=%lld nr=%lld nt=%lld: y[%lld][%lld] = %.9g, "
                                     "scalar %.9g (tol %.3g)",
                                     tensor_kernels_name(kt[i]), tensor_type_get(p->type)->name,
                                     (long long)p->k, (long long)nr, (long long)nt, (long long)t,
                                     (long long)r, v, want, tol[t * p->nr + r]);
                    }
            }
        free(xa);
    }
    free(xref);
    free(ref);
    free(y);
    free(tol);
}

static void test_gemm_tables_small(void **state)
{
    (void)state;
    for (size_t ti = 0; ti < NTYPES; ti++) {
        const uint32_t type = TYPES[ti];
        const int64_t be = block_of(type) > 1 ? block_of(type) : 16;
        for (int64_t nb = 1; nb <= 4; nb++) {
            problem p;
            problem_make(&p, type, 19, 19, nb * be + (block_of(type) == 1 ? nb - 1 : 0), nb & 1);
            check_tables_on(&p, 19, 19, 1);
            problem_free(&p);
        }
    }
}

static void test_gemm_tables_large(void **state)
{
    (void)state;
    /* k across several panel chunks, with ragged last chunks; nr, nt over
     * the 32-row and 4-token groups; strides padded, activation rows odd */
    static const int64_t shapes[][3] = {
        {37, 67, 2048 + 256}, {48, 64, 1024}, {5, 9, 768}, {33, 1, 512}, {16, 4, 1280}};
    for (size_t ti = 0; ti < NTYPES; ti++) {
        const uint32_t type = TYPES[ti];
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
            int64_t k = shapes[si][2];
            if (type == TENSOR_Q8_0 || type == TENSOR_Q4_0)
                k += 32 * (int64_t)si; /* odd numbers of blocks */
            if (block_of(type) == 1)
                k += (int64_t)si * 7; /* not a multiple of 16 */
            problem p;
            problem_make(&p, type, shapes[si][0], shapes[si][1], k, 1);
            check_tables_on(&p, p.nr, p.nt, 0);
            check_tables_on(&p, p.nr - 1 > 0 ? p.nr - 1 : 1, p.nt, 0);
            problem_free(&p);
        }
    }
}

/* ---- (d) products against float64 -------------------------------------------------- */

static void test_gemm_vs_double(void **state)
{
    (void)state;
    const tensor_kernels *kt[TENSOR_ISA_COUNT];
    int nk = tables(kt);
    for (size_t ti = 0; ti < NTYPES; ti++) {
        const uint32_t type = TYPES[ti];
        const int64_t k = 1024 + (block_of(type) == 1 ? 5 : 0);
        const int64_t nr = 21, nt = 7, ldy = nr;
        problem p;
        problem_make(&p, type, nr, nt, k, 0);
        float *wd = malloc((size_t)(nr * k) * sizeof(float));
        for (int64_t r = 0; r < nr; r++)
            tensor_dequant_row(kt[0], type, wd + r * k, p.w + (size_t)r * p.ws, k);
        /* step of each activation's quantisation group */
        const int64_t g = act_fmt_of(type) == ACT_Q8B ? 32 : act_fmt_of(type) == ACT_F32 ? 0 : 256;
        float *step = calloc((size_t)(nt * k), sizeof(float));
        for (int64_t t = 0; g && t < nt; t++)
            for (int64_t b = 0; b < k / g; b++) {
                float amax = 0;
                for (int64_t i = 0; i < g; i++)
                    amax = fmaxf(amax, fabsf(p.x[t * k + b * g + i]));
                for (int64_t i = 0; i < g; i++)
                    step[t * k + b * g + i] = amax / 127.0f;
            }
        float *y = malloc((size_t)(nt * ldy) * sizeof(float));
        for (int i = 0; i < nk; i++) {
            uint8_t *xa = problem_act(&p, kt[i], 0);
            tensor_gemm(kt[i], type, y, ldy, p.w, p.ws, nr, xa, p.xs, nt, k);
            double e2 = 0, r2 = 0;
            for (int64_t t = 0; t < nt; t++)
                for (int64_t r = 0; r < nr; r++) {
                    double ref = 0, qb = 0;
                    for (int64_t j = 0; j < k; j++) {
                        ref += (double)wd[r * k + j] * p.x[t * k + j];
                        qb += fabs((double)wd[r * k + j]) * step[t * k + j] * 0.5;
                    }
                    double err = fabs(y[t * ldy + r] - ref);
                    double bound = qb * 1.001 + table_tol(&p, r, t) * 2;
                    if (!(err <= bound))
                        fail_msg("%s %s: y[%lld][%lld] = %.9g, float64 %.9g (bound %.3g)",
                                 tensor_kernels_name(kt[i]), tensor_type_get(type)->name,
                                 (long long)t, (long long)r, y[t * ldy + r], ref, bound);
                    e2 += err * err;
                    r2 += ref * ref;
                }
            if (!(sqrt(e2 / r2) < 2e-2))
                fail_msg("%s %s: rms relative error %.3g", tensor_kernels_name(kt[i]),
                         tensor_type_get(type)->name, sqrt(e2 / r2));
            print_message("  %-6s %-5s gemm vs float64: rms relative error %.2g\n",
                          tensor_kernels_name(kt[i]), tensor_type_get(type)->name, sqrt(e2 / r2));
            free(xa);
        }
        free(y);
        free(step);
        free(wd);
        problem_free(&p);
    }
}

/* tensor_axpy: every table against float64 arithmetic, for f32, f16 and
 * bf16 rows of lengths that exercise the vector body and the tail. */
static void test_axpy_tables(void **state)
{
    (void)state;
    const uint32_t types[3] = {TENSOR_F32, TENSOR_F16, TENSOR_BF16};
    const int64_t lens[4] = {1, 15, 64, 1001};
    for (int ti = 0; ti < 3; ti++)
        for (int li = 0; li < 4; li++) {
            int64_t n = lens[li];
            float *x = malloc(sizeof(float) * (size_t)n), *base = malloc(sizeof(float) * (size_t)n);
            uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
            for (int64_t i = 0; i < n; i++) {
                x[i] = (float)((i * 37 % 101) - 50) / 17.0f;
                base[i] = (float)((i * 11 % 29) - 14) / 3.0f;
                h[i] = types[ti] == TENSOR_F16 ? tensor_f32_to_f16(x[i]) : tensor_f32_to_bf16(x[i]);
            }
            const void *src = types[ti] == TENSOR_F32 ? (const void *)x : (const void *)h;
            for (int isa = 0; isa < TENSOR_ISA_COUNT; isa++) {
                const tensor_kernels *kt = tensor_kernels_get((enum tensor_isa)isa);
                if (!kt)
                    continue;
                float *out = malloc(sizeof(float) * (size_t)n);
                memcpy(out, base, sizeof(float) * (size_t)n);
                tensor_axpy(kt, types[ti], out, 0.75f, src, n);
                for (int64_t i = 0; i < n; i++) {
                    double xv = types[ti] == TENSOR_F32   ? x[i]
                                : types[ti] == TENSOR_F16 ? tensor_f16_to_f32(h[i])
                                                          : tensor_bf16_to_f32(h[i]);
                    double want = base[i] + 0.75 * xv;
                    assert_true(fabs(out[i] - want) <= 1e-6 * (1 + fabs(want)));
                }
                free(out);
            }
            free(x);
            free(base);
            free(h);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_conversions),
        cmocka_unit_test(test_bf16_conversions),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_scale_min_words),
        cmocka_unit_test(test_layout_q8_0),
        cmocka_unit_test(test_layout_q4_0),
        cmocka_unit_test(test_layout_q4_K),
        cmocka_unit_test(test_layout_q5_K),
        cmocka_unit_test(test_layout_q6_K),
        cmocka_unit_test(test_layout_float),
        cmocka_unit_test(test_quant_roundtrip),
        cmocka_unit_test(test_act_prepare_identical),
        cmocka_unit_test(test_gemm_tables_small),
        cmocka_unit_test(test_gemm_tables_large),
        cmocka_unit_test(test_gemm_vs_double),
        cmocka_unit_test(test_axpy_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
