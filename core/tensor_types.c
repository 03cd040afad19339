/* moegate — the ggml tensor type table, row/tensor sizes, f16/bf16 conversion.
 *
 * The block sizes below are the GGUF ecosystem's, so that the GGUF reader can
 * size (and so validate) every tensor of a published file, including types we
 * cannot compute with. Sizes are computed in 64 bits with overflow checks:
 * a tensor's dimensions come straight from an untrusted file.
 */
#include "tensor.h"

#include <string.h>

#include "errors.h"

static const tensor_type_info type_table[TENSOR_TYPE_COUNT] = {
    [TENSOR_F32] = {"f32", 1, 4, true},
    [TENSOR_F16] = {"f16", 1, 2, true},
    [TENSOR_Q4_0] = {"q4_0", 32, 18, true},
    [TENSOR_Q4_1] = {"q4_1", 32, 20, false},
    [TENSOR_Q5_0] = {"q5_0", 32, 22, false},
    [TENSOR_Q5_1] = {"q5_1", 32, 24, false},
    [TENSOR_Q8_0] = {"q8_0", 32, 34, true},
    [TENSOR_Q8_1] = {"q8_1", 32, 36, false},
    [TENSOR_Q2_K] = {"q2_K", 256, 84, false},
    [TENSOR_Q3_K] = {"q3_K", 256, 110, false},
    [TENSOR_Q4_K] = {"q4_K", 256, 144, true},
    [TENSOR_Q5_K] = {"q5_K", 256, 176, true},
    [TENSOR_Q6_K] = {"q6_K", 256, 210, true},
    [TENSOR_Q8_K] = {"q8_K", 256, 292, false},
    [TENSOR_IQ2_XXS] = {"iq2_xxs", 256, 66, false},
    [TENSOR_IQ2_XS] = {"iq2_xs", 256, 74, false},
    [TENSOR_IQ3_XXS] = {"iq3_xxs", 256, 98, false},
    [TENSOR_IQ1_S] = {"iq1_s", 256, 50, false},
    [TENSOR_IQ4_NL] = {"iq4_nl", 32, 18, false},
    [TENSOR_IQ3_S] = {"iq3_s", 256, 110, false},
    [TENSOR_IQ2_S] = {"iq2_s", 256, 82, false},
    [TENSOR_IQ4_XS] = {"iq4_xs", 256, 136, false},
    [TENSOR_I8] = {"i8", 1, 1, false},
    [TENSOR_I16] = {"i16", 1, 2, false},
    [TENSOR_I32] = {"i32", 1, 4, false},
    [TENSOR_I64] = {"i64", 1, 8, false},
    [TENSOR_F64] = {"f64", 1, 8, false},
    [TENSOR_IQ1_M] = {"iq1_m", 256, 56, false},
    [TENSOR_BF16] = {"bf16", 1, 2, true},
    [TENSOR_TQ1_0] = {"tq1_0", 256, 54, false},
    [TENSOR_TQ2_0] = {"tq2_0", 256, 66, false},
    [TENSOR_MXFP4] = {"mxfp4", 32, 17, false},
};

const tensor_type_info *tensor_type_get(uint32_t type)
{
    if (type >= TENSOR_TYPE_COUNT || type_table[type].name == NULL)
        return NULL;
    return &type_table[type];
}

int tensor_row_bytes(uint32_t type, int64_t n, size_t *out)
{
    const tensor_type_info *ti = tensor_type_get(type);
    if (!ti || n < 0 || n % ti->block_elems != 0)
        return MG_EINVAL;
    uint64_t blocks = (uint64_t)(n / ti->block_elems);
    if (blocks != 0 && ti->block_bytes > SIZE_MAX / blocks)
        return MG_ERANGE;
    *out = (size_t)blocks * ti->block_bytes;
    return MG_OK;
}

int tensor_bytes(uint32_t type, const int64_t *ne, int n_dims, size_t *out)
{
    if (n_dims < 1)
        return MG_EINVAL;
    size_t row;
    int rc = tensor_row_bytes(type, ne[0], &row);
    if (rc)
        return rc;
    size_t total = row;
    for (int d = 1; d < n_dims; d++) {
        if (ne[d] < 0)
            return MG_EINVAL;
        uint64_t m = (uint64_t)ne[d];
        if (m != 0 && total > SIZE_MAX / m)
            return MG_ERANGE;
        total *= (size_t)m;
    }
    *out = total;
    return MG_OK;
}

/* IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
float tensor_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400));
            man &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tensor_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below 2^-14: subnormal half or zero */
        if (absx < 0x33000000u) /* below 2^-25: rounds to zero */
            return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t man = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    /* normal: rebias exponent, round mantissa to 10 bits, nearest even */
    uint32_t v = absx - ((127u - 15u) << 23);
    uint32_t half = v >> 13;
    uint32_t rem = v & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        half++;
    return (uint16_t)(sign | half);
}

float tensor_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tensor_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* nan: keep it a quiet nan */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
