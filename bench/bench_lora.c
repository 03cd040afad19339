/* bench_lora — generation with LoRA adapters applied per sequence.
 *
 *   bench_lora -m MODEL.gguf [--conc 8] [--rank 16] [--gen 32] [--prompt 16] [--reps 3] [--type bf16|f16|f32]
 *
 * --conc sequences generate together (greedy, end-of-turn ignored) in three
 * configurations, measured in the same run, interleaved rep by rep:
 *   (a) the base model only;
 *   (b) one adapter for every sequence;
 *   (c) a different adapter for each sequence.
 * The adapters are random, rank --rank on every attention projection (q, k,
 * v, o; MLA's q/q_a/q_b/kv_a/kv_b) and every routed-expert projection (gate,
 * up, down of every expert), values in --type, built in memory through the
 * same model_lora structure the file loaders fill (the loading path is
 * tested separately; this measures application). Rate = tokens generated
 * after every sequence has its first / the time from then to the last end.
 * Prints the table and (c) / (a).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/lora.h"
#include "core/model.h"
#include "core/serve.h"
#include "core/tensor.h"
#include "core/tokenizer.h"
#define BENCH_PROG "bench_lora"
#include "bench/bench_util.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    return bench_rnd(&rng_state);
}

static float frnd(void)
{
    return ((float)(rnd() & 0xffff) / 65535.0f - 0.5f) * 2.0f;
}

/* ---- in-memory adapters ------------------------------------------------------ */

typedef struct mem_lora {
    model_lora l;
    void *block; /* one allocation for every pair and value */
} mem_lora;

static void mem_destroy(model_lora *l)
{
    mem_lora *m = (mem_lora *)l;
    free(m->block);
    free(m->l.layer);
    free(m);
}

static bool is_target(enum lora_target t)
{
    return t <= LORA_ATTN_KV_B || t >= LORA_EXP_GATE;
}

static model_lora *make_lora(const model *m, int r, uint32_t type, uint64_t id)
{
    const model_info *I = model_get_info(m);
    size_t es = type == TENSOR_F32 ? 4 : 2, bytes = 0;
    for (int64_t il = 0; il < I->n_layer; il++)
        for (int t = 0; t < LORA_N_TARGET; t++) {
            int64_t no, ni, ne;
            if (is_target((enum lora_target)t) && !model_lora_shape(m, il, (enum lora_target)t, &no, &ni, &ne))
                bytes += (size_t)ne * (sizeof(lora_pair) + (size_t)r * (size_t)(no + ni) * es + 64);
        }
    mem_lora *ml = calloc(1, sizeof *ml);
    ml->l.n_layer = I->n_layer;
    ml->l.layer = calloc((size_t)I->n_layer, sizeof(lora_layer));
    ml->l.id = id;
    atomic_init(&ml->l.refs, 1);
    ml->l.destroy = mem_destroy;
    char *p = ml->block = malloc(bytes);
    if (!ml->l.layer || !p)
        die("out of memory for the adapters");
    for (int64_t il = 0; il < I->n_layer; il++)
        for (int t = 0; t < LORA_N_TARGET; t++) {
            int64_t no, ni, ne;
            if (!is_target((enum lora_target)t) || model_lora_shape(m, il, (enum lora_target)t, &no, &ni, &ne))
                continue;
            lora_pair *pairs = (lora_pair *)p;
            p += (size_t)ne * sizeof(lora_pair);
            for (int64_t e = 0; e < ne; e++) {
                p = (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
                char *a = p, *bt = p + (size_t)r * (size_t)ni * es;
                size_t n = (size_t)r * (size_t)(ni + no);
                for (size_t i = 0; i < n; i++) {
                    float v = frnd() * (i < (size_t)r * (size_t)ni ? 1.0f / sqrtf((float)ni) : 0.05f);
                    if (type == TENSOR_F32)
                        memcpy(p + i * 4, &v, 4);
                    else {
                        uint16_t h = type == TENSOR_F16 ? tensor_f32_to_f16(v) : tensor_f32_to_bf16(v);
                        memcpy(p + i * 2, &h, 2);
                    }
                }
                p += n * es;
                pairs[e] = (lora_pair){.r = r, .type = type, .scale = 2.0f, .a = a, .bt = bt};
            }
            ml->l.layer[il].t[t] = pairs;
        }
    char err[256];
    if (model_lora_check(m, &ml->l, err, sizeof err))
        die(err);
    return &ml->l;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *tname = "bf16";
    int conc = 8, rank = 16, gen = 32, plen = 16, reps = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool v = i + 1 < argc;
        if (!strcmp(a, "-m") && v)
            path = argv[++i];
        else if (!strcmp(a, "--conc") && v)
            conc = atoi(argv[++i]);
        else if (!strcmp(a, "--rank") && v)
            rank = atoi(argv[++i]);
        else if (!strcmp(a, "--gen") && v)
            gen = atoi(argv[++i]);
        else if (!strcmp(a, "--prompt") && v)
            plen = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && v)
            reps = atoi(argv[++i]);
        else if (!strcmp(a, "--type") && v)
            tname = argv[++i];
        else
            die("usage: bench_lora -m MODEL.gguf [--conc 8] [--rank 16] [--gen 32] [--prompt 16] [--reps 3] "
                "[--type bf16|f16|f32]");
    }
    uint32_t type = !strcmp(tname, "f32") ? TENSOR_F32 : !strcmp(tname, "f16") ? TENSOR_F16 : TENSOR_BF16;
    if (!path || conc < 1 || conc > 256 || rank < 1 || rank > 256 || gen < 2 || plen < 1 || reps < 1 || reps > 50)
        die("need -m MODEL, --conc 1..256, --rank 1..256, --gen >= 2, --prompt >= 1, --reps 1..50");
    char err[512];
    model *m;
    model_opts mo = {.prefault = true};
    if (model_open(&m, path, &mo, err, sizeof err))
        die(err);
    tokenizer *tok;
    if (tokenizer_open_gguf(&tok, model_gguf(m), err, sizeof err))
        die(err);
    const model_info *I = model_get_info(m);

    double t0 = bench_now();
    model_lora **ads = malloc(sizeof *ads * (size_t)conc);
    for (int i = 0; i < conc; i++)
        ads[i] = make_lora(m, rank, type, 1 + (uint64_t)i);
    double mb = 0;
    {
        size_t es = type == TENSOR_F32 ? 4 : 2;
        for (int64_t il = 0; il < I->n_layer; il++)
            for (int t = 0; t < LORA_N_TARGET; t++) {
                int64_t no, ni, ne;
                if (is_target((enum lora_target)t) && !model_lora_shape(m, il, (enum lora_target)t, &no, &ni, &ne))
                    mb += (double)ne * (double)rank * (double)(no + ni) * (double)es / 1e6;
            }
    }
    fprintf(stderr, "bench_lora: %d adapters of %.0f MB each built in %.1f s\n", conc, mb, bench_now() - t0);

    serve *s;
    serve_opts so = {.n_slots = conc, .n_ctx = plen + gen + 8, .step_tokens = 256};
    if (serve_open(&s, m, tok, &so, err, sizeof err))
        die(err);
    int32_t **prompts = malloc(sizeof *prompts * (size_t)conc);
    int *lens = malloc(sizeof *lens * (size_t)conc);
    bench_track *tr = malloc(sizeof *tr * (size_t)conc);
    for (int i = 0; i < conc; i++) {
        prompts[i] = malloc(sizeof(int32_t) * (size_t)plen);
        lens[i] = plen;
        for (int j = 0; j < plen; j++)
            prompts[i][j] = (int32_t)(1000 + rnd() % 20000);
    }
    model_lora **none = calloc((size_t)conc, sizeof *none), **one = malloc(sizeof *one * (size_t)conc);
    for (int i = 0; i < conc; i++)
        one[i] = ads[0];
    model_lora **cfg[3] = {none, one, ads};
    const char *label[3] = {"(a) base only", "(b) one adapter for all", "(c) a different adapter each"};
    double rate[3][50];
    for (int r = 0; r <= reps; r++) /* the first round warms up */
        for (int k = 0; k < 3; k++) {
            double v = bench_generate(s, prompts, lens, conc, gen, cfg[k], tr);
            if (r > 0)
                rate[k][r - 1] = v;
        }
    double med[3];
    for (int k = 0; k < 3; k++)
        med[k] = bench_median(rate[k], reps);
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    printf("model %s, %d threads, kernels %s; %d concurrent sequences, %d-token prompts, %d generated each; "
           "adapters rank %d (%s) on every attention and routed-expert projection, %.0f MB each; median of %d\n\n",
           name, model_n_threads(m), model_isa_name(m), conc, plen, gen, rank, tname, mb, reps);
    printf("| configuration | aggregate tok/s | vs base |\n|---|---:|---:|\n");
    for (int k = 0; k < 3; k++)
        printf("| %s | %.2f | %.1f%% |\n", label[k], med[k], 100 * med[k] / med[0]);
    serve_close(s);
    for (int i = 0; i < conc; i++) {
        model_lora_release(ads[i]);
        free(prompts[i]);
    }
    free(ads);
    free(prompts);
    free(lens);
    free(tr);
    free(none);
    free(one);
    tokenizer_free(tok);
    model_close(m);
    return 0;
}
