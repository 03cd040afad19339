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

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *msg)
{
    fprintf(stderr, "bench_lora: %s\n", msg);
    exit(1);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
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

/* ---- generation ---------------------------------------------------------------- */

typedef struct track {
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *n_done;
    int n_tokens;
    double t_first, t_end;
} track;

static void on_token(void *ud, const char *text, size_t len, int32_t token, enum serve_finish f)
{
    (void)text;
    (void)len;
    track *t = ud;
    if (token >= 0 && f == SERVE_RUNNING && t->n_tokens++ == 0)
        t->t_first = now();
    if (f != SERVE_RUNNING) {
        t->t_end = now();
        pthread_mutex_lock(t->mu);
        ++*t->n_done;
        pthread_cond_signal(t->cv);
        pthread_mutex_unlock(t->mu);
    }
}

static double run(serve *s, int32_t *const *prompts, int c, int plen, int gen, model_lora *const *ad)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int n_done = 0;
    track tr[256];
    char err[256];
    for (int i = 0; i < c; i++) {
        tr[i] = (track){&mu, &cv, &n_done, 0, 0, 0};
        serve_params p = {.sampling = sampler_defaults(), .max_tokens = gen, .ignore_eos = true, .lora = ad[i]};
        p.sampling.temperature = 0;
        uint64_t id;
        if (serve_submit(s, prompts[i], (size_t)plen, &p, on_token, &tr[i], &id, err, sizeof err))
            die(err);
    }
    pthread_mutex_lock(&mu);
    while (n_done < c)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    double t_first = 0, t_end = 0;
    long toks = 0;
    for (int i = 0; i < c; i++) {
        t_first = tr[i].t_first > t_first ? tr[i].t_first : t_first;
        t_end = tr[i].t_end > t_end ? tr[i].t_end : t_end;
        toks += tr[i].n_tokens - 1;
    }
    return (double)toks / (t_end - t_first);
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

    double t0 = now();
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
    fprintf(stderr, "bench_lora: %d adapters of %.0f MB each built in %.1f s\n", conc, mb, now() - t0);

    serve *s;
    serve_opts so = {.n_slots = conc, .n_ctx = plen + gen + 8, .step_tokens = 256};
    if (serve_open(&s, m, tok, &so, err, sizeof err))
        die(err);
    int32_t **prompts = malloc(sizeof *prompts * (size_t)conc);
    for (int i = 0; i < conc; i++) {
        prompts[i] = malloc(sizeof(int32_t) * (size_t)plen);
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
            double v = run(s, prompts, conc, plen, gen, cfg[k]);
            if (r > 0)
                rate[k][r - 1] = v;
        }
    double med[3];
    for (int k = 0; k < 3; k++)
        med[k] = median(rate[k], reps);
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
    free(none);
    free(one);
    tokenizer_free(tok);
    model_close(m);
    return 0;
}
