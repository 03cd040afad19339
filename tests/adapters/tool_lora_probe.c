/* tool_lora_probe — loads an adapter against a base with lora_load and
 * prints, for every adapted matrix, y = scale * B (A v) for the fixed
 * vector v[i] = ((i * 7919) mod 1009) / 504.5 - 1, computed in double from
 * the stored A and B^T:
 *
 *     blk.L.<target> EXPERT y[0] ... y[n_out-1]       (EXPERT -1: not an expert)
 *
 * tests/adapters/merge_ref.py --probe compares it with its own deltas, so
 * the loader's transposition, llama row permutation, scales and dtypes are
 * checked against a reference written from the formats' definitions.
 *
 *   tool_lora_probe BASE.gguf ADAPTER [SCALE]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "core/errors.h"
#include "core/model.h"
#include "core/tensor.h"

static double elem(const void *p, uint32_t type, size_t i)
{
    if (type == TENSOR_F32)
        return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return type == TENSOR_F16 ? tensor_f16_to_f32(h) : tensor_bf16_to_f32(h);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tool_lora_probe BASE.gguf ADAPTER [SCALE]\n");
        return 2;
    }
    char err[1024];
    model_opts mo = {.n_threads = 1, .no_pin = true};
    model *m;
    if (model_open(&m, argv[1], &mo, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    model_lora *l;
    if (lora_load(&l, m, argv[2], argc > 3 ? (float)atof(argv[3]) : 1.0f, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        model_close(m);
        return 1;
    }
    for (int64_t il = 0; il < l->n_layer; il++)
        for (int t = 0; t < LORA_N_TARGET; t++) {
            const lora_pair *p = l->layer[il].t[t];
            int64_t n_out, n_in, ne;
            if (!p || model_lora_shape(m, il, (enum lora_target)t, &n_out, &n_in, &ne))
                continue;
            double *v = malloc(sizeof(double) * (size_t)n_in), *z = malloc(sizeof(double) * 65536);
            for (int64_t i = 0; i < n_in; i++)
                v[i] = (double)((i * 7919) % 1009) / 504.5 - 1.0;
            for (int64_t e = 0; e < ne; e++) {
                const lora_pair *q = &p[e];
                if (!q->r)
                    continue;
                for (int j = 0; j < q->r; j++) {
                    z[j] = 0;
                    for (int64_t i = 0; i < n_in; i++)
                        z[j] += elem(q->a, q->type, (size_t)j * (size_t)n_in + (size_t)i) * v[i];
                }
                printf("blk.%lld.%s %lld", (long long)il, lora_target_name((enum lora_target)t),
                       t >= LORA_EXP_GATE ? (long long)e : -1LL);
                for (int64_t o = 0; o < n_out; o++) {
                    double y = 0;
                    for (int j = 0; j < q->r; j++)
                        y += elem(q->bt, q->type, (size_t)j * (size_t)n_out + (size_t)o) * z[j];
                    printf(" %.17g", y * q->scale);
                }
                printf("\n");
            }
            free(v);
            free(z);
        }
    model_lora_release(l);
    model_close(m);
    return 0;
}
