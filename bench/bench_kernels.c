/* bench/bench_kernels.c — micro-benchmark of the tensor kernels (core/tensor.h).
 *
 * Build (after `make build/lib/libmgcore.a`; not yet wired into the Makefile):
 *   cc -O2 -std=c11 -D_GNU_SOURCE -I. -pthread -o build/bench_kernels \
 *      bench/bench_kernels.c build/lib/libmgcore.a -lm
 * Run:
 *   build/bench_kernels            every table this CPU has, full sizes
 *   build/bench_kernels --quick    fewer repetitions
 *   MOEGATE_ISA=avx2 build/bench_kernels   caps the "best" table
 *
 * What it prints:
 *   1. ceilings on this host: read-sum memory bandwidth over a 64 MiB buffer
 *      (1 and 2 threads, pinned), and the peak rate of vpdpbusd zmm (int8
 *      multiply-adds, 2 ops each) and vfmadd231ps zmm, from 12 independent
 *      register chains;
 *   2. generation: tensor_gemm with nt = 1 over a 64 MiB weight matrix
 *      (k = 4096), as GB/s of weights streamed, on 1 and 2 threads (rows
 *      split in halves, as core/matmul does);
 *   3. batches: tensor_gemm with nt = 64, k = 2048, nr = 768 (a 768 x 2048
 *      weight, which stays in L2), as GOP/s (2*nr*nt*k per call).
 * Every figure is the median of REPS timed runs after a warm-up.
 *
 * Weights are built by quantising a few random rows and replicating them,
 * so building 64 MiB stays fast; the kernels' speed does not depend on the
 * values. Nothing here is used by the engine.
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tensor.h"

#define MIB (1024.0 * 1024.0)

typedef struct bench_cfg {
    int reps;
} bench_cfg;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void fill_random(float *x, int64_t n, uint32_t seed)
{
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((int32_t)seed) / 2147483648.0f;
    }
}

/* ---- two-thread harness ------------------------------------------------------ */

typedef void (*work_fn)(void *ctx, int ith, int nth);

typedef struct par_job {
    work_fn fn;
    void *ctx;
    int ith, nth;
    pthread_barrier_t *bar;
} par_job;

static void *par_main(void *arg)
{
    par_job *j = arg;
    pin_self(j->ith);
    pthread_barrier_wait(j->bar);
    j->fn(j->ctx, j->ith, j->nth);
    return NULL;
}

/* Seconds for fn run on nth pinned threads (wall time of the slowest). */
static double run_par(work_fn fn, void *ctx, int nth)
{
    if (nth == 1) {
        pin_self(0);
        double t0 = now_s();
        fn(ctx, 0, 1);
        return now_s() - t0;
    }
    pthread_t th[8];
    par_job jobs[8];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)nth + 1);
    for (int i = 0; i < nth; i++) {
        jobs[i] = (par_job){fn, ctx, i, nth, &bar};
        pthread_create(&th[i], NULL, par_main, &jobs[i]);
    }
    pthread_barrier_wait(&bar);
    double t0 = now_s();
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    double t = now_s() - t0;
    pthread_barrier_destroy(&bar);
    return t;
}

static double timed_median(const bench_cfg *cfg, work_fn fn, void *ctx, int nth)
{
    double v[64];
    run_par(fn, ctx, nth); /* warm-up */
    for (int i = 0; i < cfg->reps; i++)
        v[i] = run_par(fn, ctx, nth);
    return median(v, cfg->reps);
}

/* ---- ceilings --------------------------------------------------------------------- */

typedef struct readsum_ctx {
    const uint64_t *buf;
    size_t n; /* uint64 words */
    volatile uint64_t sink;
} readsum_ctx;

static void readsum_work(void *arg, int ith, int nth)
{
    readsum_ctx *c = arg;
    size_t i0 = c->n * (size_t)ith / (size_t)nth, i1 = c->n * (size_t)(ith + 1) / (size_t)nth;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = i0; i + 4 <= i1; i += 4) {
        s0 += c->buf[i];
        s1 += c->buf[i + 1];
        s2 += c->buf[i + 2];
        s3 += c->buf[i + 3];
    }
    c->sink += s0 + s1 + s2 + s3;
}

__attribute__((target("avx512f,avx512vnni"))) static double peak_vnni(long iters)
{
    double t0 = now_s();
    __asm__ volatile("vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
                     "vmovdqa64 %%zmm0, %%zmm1\n\t vmovdqa64 %%zmm0, %%zmm2\n\t"
                     "vmovdqa64 %%zmm0, %%zmm3\n\t vmovdqa64 %%zmm0, %%zmm4\n\t"
                     "vmovdqa64 %%zmm0, %%zmm5\n\t vmovdqa64 %%zmm0, %%zmm6\n\t"
                     "vmovdqa64 %%zmm0, %%zmm7\n\t vmovdqa64 %%zmm0, %%zmm8\n\t"
                     "vmovdqa64 %%zmm0, %%zmm9\n\t vmovdqa64 %%zmm0, %%zmm10\n\t"
                     "vmovdqa64 %%zmm0, %%zmm11\n\t"
                     "1:\n\t"
                     "vpdpbusd %%zmm30, %%zmm31, %%zmm0\n\t vpdpbusd %%zmm30, %%zmm31, %%zmm1\n\t"
                     "vpdpbusd %%zmm30, %%zmm31, %%zmm2\n\t vpdpbusd %%zmm30, %%zmm31, %%zmm3\n\t"
                     "vpdpbusd %%zmm30, %%zmm31, %%zmm4\n\t vpdpbusd %%zmm30, %%zmm31, %%zmm5\n\t"
                     "vpdpbusd %%zmm30, %%zmm31, %%zmm6\n\t vpdpbusd %%zmm30, %%zmm31, %%zmm7\n\t"
                     "vpdpbusd %%zmm30, %%zmm31, %%zmm8\n\t vpdpbusd %%zmm30, %%zmm31, %%zmm9\n\t"
                     "vpdpbusd %%zmm30, %%zmm31, %%zmm10\n\t vpdpbusd %%zmm30, %%zmm31, %%zmm11\n\t"
                     "dec %0\n\t jnz 1b"
                     : "+r"(iters)
                     :
                     : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                       "xmm8", "xmm9", "xmm10", "xmm11");
    return now_s() - t0;
}

__attribute__((target("avx512f"))) static double peak_fma(long iters)
{
    double t0 = now_s();
    __asm__ volatile("vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
                     "vmovaps %%zmm0, %%zmm1\n\t vmovaps %%zmm0, %%zmm2\n\t"
                     "vmovaps %%zmm0, %%zmm3\n\t vmovaps %%zmm0, %%zmm4\n\t"
                     "vmovaps %%zmm0, %%zmm5\n\t vmovaps %%zmm0, %%zmm6\n\t"
                     "vmovaps %%zmm0, %%zmm7\n\t vmovaps %%zmm0, %%zmm8\n\t"
                     "vmovaps %%zmm0, %%zmm9\n\t vmovaps %%zmm0, %%zmm10\n\t"
                     "vmovaps %%zmm0, %%zmm11\n\t"
                     "1:\n\t"
                     "vfmadd231ps %%zmm30, %%zmm31, %%zmm0\n\t vfmadd231ps %%zmm30, %%zmm31, %%zmm1\n\t"
                     "vfmadd231ps %%zmm30, %%zmm31, %%zmm2\n\t vfmadd231ps %%zmm30, %%zmm31, %%zmm3\n\t"
                     "vfmadd231ps %%zmm30, %%zmm31, %%zmm4\n\t vfmadd231ps %%zmm30, %%zmm31, %%zmm5\n\t"
                     "vfmadd231ps %%zmm30, %%zmm31, %%zmm6\n\t vfmadd231ps %%zmm30, %%zmm31, %%zmm7\n\t"
                     "vfmadd231ps %%zmm30, %%zmm31, %%zmm8\n\t vfmadd231ps %%zmm30, %%zmm31, %%zmm9\n\t"
                     "vfmadd231ps %%zmm30, %%zmm31, %%zmm10\n\t vfmadd231ps %%zmm30, %%zmm31, %%zmm11\n\t"
                     "dec %0\n\t jnz 1b"
                     : "+r"(iters)
                     :
                     : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                       "xmm8", "xmm9", "xmm10", "xmm11");
    return now_s() - t0;
}

/* ---- kernels ------------------------------------------------------------------------ */

typedef struct gemm_ctx {
    const tensor_kernels *kt;
    uint32_t type;
    const uint8_t *w;
    size_t ws;
    int64_t nr, nt, k;
    const uint8_t *xa;
    size_t xs;
    float *y; /* [nt][nr] */
} gemm_ctx;

static void gemm_work(void *arg, int ith, int nth)
{
    gemm_ctx *c = arg;
    /* rows in 16-row chunks split in contiguous ranges, as core/matmul does */
    int64_t chunks = (c->nr + 15) / 16;
    int64_t r0 = chunks * ith / nth * 16, r1 = chunks * (ith + 1) / nth * 16;
    if (r1 > c->nr)
        r1 = c->nr;
    if (r1 > r0)
        tensor_gemm(c->kt, c->type, c->y + r0, c->nr, c->w + (size_t)r0 * c->ws, c->ws, r1 - r0,
                    c->xa, c->xs, c->nt, c->k);
}

/* nr rows of k elements of type, built from 8 quantised random rows. */
static uint8_t *make_weights(uint32_t type, int64_t nr, int64_t k, size_t *ws)
{
    tensor_row_bytes(type, k, ws);
    uint8_t *w = aligned_alloc(64, (*ws * (size_t)nr + 63) & ~(size_t)63);
    float *x = malloc((size_t)k * sizeof(float));
    for (int64_t r = 0; r < nr && r < 8; r++) {
        fill_random(x, k, (uint32_t)(r + 1));
        tensor_quantize_row(type, w + (size_t)r * *ws, x, k);
    }
    for (int64_t r = 8; r < nr; r++)
        memcpy(w + (size_t)r * *ws, w + (size_t)(r % 8) * *ws, *ws);
    free(x);
    return w;
}

static uint8_t *make_acts(const tensor_kernels *kt, uint32_t type, int64_t nt, int64_t k,
                          size_t *xs)
{
    *xs = tensor_act_row_bytes(type, k);
    uint8_t *xa = aligned_alloc(64, (*xs * (size_t)nt + 63) & ~(size_t)63);
    float *x = malloc((size_t)k * sizeof(float));
    for (int64_t t = 0; t < nt; t++) {
        fill_random(x, k, (uint32_t)(1000 + t));
        tensor_act_prepare(kt, type, xa + (size_t)t * *xs, x, k);
    }
    free(x);
    return xa;
}

static const uint32_t GEN_TYPES[] = {TENSOR_Q8_0, TENSOR_Q4_K, TENSOR_Q6_K, TENSOR_F16,
                                     TENSOR_Q4_0, TENSOR_Q5_K, TENSOR_BF16, TENSOR_F32};
static const uint32_t BATCH_TYPES[] = {TENSOR_Q8_0, TENSOR_Q4_K, TENSOR_Q4_0, TENSOR_Q5_K,
                                       TENSOR_Q6_K, TENSOR_F16,  TENSOR_BF16, TENSOR_F32};

static void bench_generation(const bench_cfg *cfg, const tensor_kernels *kt, double bw1,
                             double bw2)
{
    const int64_t k = 4096;
    printf("\n-- generation: nt=1, 64 MiB weight, k=%lld, table %s --\n", (long long)k,
           tensor_kernels_name(kt));
    printf("%-6s %10s %10s %9s %9s\n", "type", "1T GB/s", "2T GB/s", "1T %bw", "2T %bw");
    for (size_t i = 0; i < sizeof(GEN_TYPES) / sizeof(GEN_TYPES[0]); i++) {
        const uint32_t type = GEN_TYPES[i];
        size_t rb;
        tensor_row_bytes(type, k, &rb);
        const int64_t nr = (int64_t)(64 * MIB / (double)rb);
        gemm_ctx c = {.kt = kt, .type = type, .nr = nr, .nt = 1, .k = k};
        uint8_t *w = make_weights(type, nr, k, &c.ws);
        uint8_t *xa = make_acts(kt, type, 1, k, &c.xs);
        c.w = w;
        c.xa = xa;
        c.y = malloc((size_t)nr * sizeof(float));
        const double bytes = (double)c.ws * (double)nr;
        double g1 = bytes / timed_median(cfg, gemm_work, &c, 1) / 1e9;
        double g2 = bytes / timed_median(cfg, gemm_work, &c, 2) / 1e9;
        printf("%-6s %10.2f %10.2f %8.0f%% %8.0f%%\n", tensor_type_get(type)->name, g1, g2,
               100 * g1 / bw1, 100 * g2 / bw2);
        free(w);
        free(xa);
        free(c.y);
    }
}

static void bench_batch(const bench_cfg *cfg, const tensor_kernels *kt, double peak_int8,
                        double peak_f32)
{
    const int64_t k = 2048, nr = 768, nt = 64;
    printf("\n-- batch: nt=%lld, nr=%lld, k=%lld, 1 thread, table %s --\n", (long long)nt,
           (long long)nr, (long long)k, tensor_kernels_name(kt));
    printf("%-6s %10s %12s\n", "type", "GOP/s", "% of peak");
    for (size_t i = 0; i < sizeof(BATCH_TYPES) / sizeof(BATCH_TYPES[0]); i++) {
        const uint32_t type = BATCH_TYPES[i];
        gemm_ctx c = {.kt = kt, .type = type, .nr = nr, .nt = nt, .k = k};
        uint8_t *w = make_weights(type, nr, k, &c.ws);
        uint8_t *xa = make_acts(kt, type, nt, k, &c.xs);
        c.w = w;
        c.xa = xa;
        c.y = malloc((size_t)(nr * nt) * sizeof(float));
        const double ops = 2.0 * (double)nr * (double)nt * (double)k;
        double g = ops / timed_median(cfg, gemm_work, &c, 1) / 1e9;
        const int is_float = type == TENSOR_F32 || type == TENSOR_F16 || type == TENSOR_BF16;
        const double peak = is_float ? peak_f32 : peak_int8;
        if (peak > 0)
            printf("%-6s %10.1f %10.0f%% (of %s peak)\n", tensor_type_get(type)->name, g,
                   100 * g / peak, is_float ? "f32 FMA" : "int8 VNNI");
        else
            printf("%-6s %10.1f\n", tensor_type_get(type)->name, g);
        free(w);
        free(xa);
        free(c.y);
    }
}

int main(int argc, char **argv)
{
    bench_cfg cfg = {.reps = 9};
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0)
            cfg.reps = 3;

    /* ceilings */
    readsum_ctx rs = {.n = (size_t)(64 * MIB) / 8};
    uint64_t *buf = aligned_alloc(64, rs.n * 8);
    for (size_t i = 0; i < rs.n; i++)
        buf[i] = i;
    rs.buf = buf;
    const double bw1 = (double)rs.n * 8 / timed_median(&cfg, readsum_work, &rs, 1) / 1e9;
    const double bw2 = (double)rs.n * 8 / timed_median(&cfg, readsum_work, &rs, 2) / 1e9;
    free(buf);
    double peak_int8 = 0, peak_f32 = 0;
    if (tensor_kernels_get(TENSOR_ISA_AVX512)) {
        const long it = 20000000;
        double v[64];
        for (int i = 0; i < cfg.reps; i++)
            v[i] = peak_vnni(it);
        peak_int8 = it * 12.0 * 64 * 2 / median(v, cfg.reps) / 1e9;
        for (int i = 0; i < cfg.reps; i++)
            v[i] = peak_fma(it);
        peak_f32 = it * 12.0 * 16 * 2 / median(v, cfg.reps) / 1e9;
    }
    printf("-- ceilings --\n");
    printf("read-sum bandwidth, 64 MiB: %.2f GB/s (1 thread), %.2f GB/s (2 threads)\n", bw1, bw2);
    if (peak_int8 > 0)
        printf("peak vpdpbusd zmm: %.0f GOP/s int8; peak vfmadd231ps zmm: %.0f GFLOP/s (1 core)\n",
               peak_int8, peak_f32);

    const tensor_kernels *best = tensor_kernels_best();
    for (int isa = TENSOR_ISA_AVX2; isa < TENSOR_ISA_COUNT; isa++) {
        const tensor_kernels *kt = tensor_kernels_get((enum tensor_isa)isa);
        if (!kt || tensor_kernels_isa(kt) > tensor_kernels_isa(best))
            continue;
        bench_generation(&cfg, kt, bw1, bw2);
        bench_batch(&cfg, kt, peak_int8, peak_f32);
    }
    return 0;
}
