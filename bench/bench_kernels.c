/* bench/bench_kernels.c — micro-benchmark of the tensor kernels (core/tensor.h).
 *
 * Build:
 *   make build/bench/bench_kernels   (make check-build builds it too)
 * Run:
 *   build/bench/bench_kernels            every table this CPU has, full sizes
 *   build/bench/bench_kernels --quick    fewer repetitions
 *   MOEGATE_ISA=avx2 build/bench/bench_kernels   caps the "best" table
 *
 * What it prints:
 *   1. ceilings on this host: read-sum memory bandwidth over a 64 MiB buffer
 *      (1 and 2 threads, pinned) — a plain C loop ("simple") and an AVX2 loop
 *      with software prefetch ("tuned") — and the peak rate of vpdpbusd zmm
 *      (int8 multiply-adds, 2 ops each) and vfmadd231ps zmm, from 12
 *      independent register chains;
 *   2. generation: tensor_gemm with nt = 1 over a 64 MiB weight matrix
 *      (k = 4096), as GB/s of weights streamed, on 1 and 2 threads (rows
 *      split in 16-row chunks, as core/matmul does), and as a fraction of
 *      both read-sums run over that same weight matrix;
 *   3. batches: tensor_gemm with nt = 64, k = 2048, nr = 768 (a 768 x 2048
 *      weight, warm in L2), as GOP/s (2*nr*nt*k per call) and as a fraction
 *      of the vpdpbusd (int weights) or FMA (float weights) peak.
 * These VMs share their cores and memory with other guests, so a ceiling and
 * a kernel are timed alternately, REPS times, and the fractions are medians
 * of the per-pair ratios (robust to the host's load changing mid-run); the
 * GB/s and GOP/s columns are medians of the kernel runs.
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
    double t0, t1; /* this thread's start (after the barrier) and end */
} par_job;

static void *par_main(void *arg)
{
    par_job *j = arg;
    pin_self(j->ith);
    pthread_barrier_wait(j->bar);
    j->t0 = now_s();
    j->fn(j->ctx, j->ith, j->nth);
    j->t1 = now_s();
    return NULL;
}

/* Seconds for fn run on nth pinned threads: from the first thread's start
 * to the last one's end (timed in the workers, so that the main thread's
 * own scheduling does not count). */
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
    pthread_barrier_init(&bar, NULL, (unsigned)nth);
    for (int i = 0; i < nth; i++) {
        jobs[i] = (par_job){fn, ctx, i, nth, &bar, 0, 0};
        pthread_create(&th[i], NULL, par_main, &jobs[i]);
    }
    double t0 = 1e300, t1 = 0;
    for (int i = 0; i < nth; i++) {
        pthread_join(th[i], NULL);
        t0 = jobs[i].t0 < t0 ? jobs[i].t0 : t0;
        t1 = jobs[i].t1 > t1 ? jobs[i].t1 : t1;
    }
    pthread_barrier_destroy(&bar);
    return t1 - t0;
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

/* The same with 256-bit loads and software prefetch 2 KiB ahead. */
__attribute__((target("avx2"))) static void readsum_tuned_work(void *arg, int ith, int nth)
{
    readsum_ctx *c = arg;
    size_t i0 = c->n * (size_t)ith / (size_t)nth / 16 * 16,
           i1 = c->n * (size_t)(ith + 1) / (size_t)nth / 16 * 16;
    const uint64_t *p = c->buf;
    __m256i a = _mm256_setzero_si256(), b = a, d = a, e = a;
    for (size_t i = i0; i < i1; i += 16) {
        _mm_prefetch((const char *)(p + i) + 2048, _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i) + 2048 + 64, _MM_HINT_T0);
        a = _mm256_add_epi64(a, _mm256_loadu_si256((const __m256i *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_loadu_si256((const __m256i *)(p + i + 4)));
        d = _mm256_add_epi64(d, _mm256_loadu_si256((const __m256i *)(p + i + 8)));
        e = _mm256_add_epi64(e, _mm256_loadu_si256((const __m256i *)(p + i + 12)));
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(d, e));
    uint64_t r[4];
    memcpy(r, &a, sizeof(r));
    c->sink += r[0] + r[1] + r[2] + r[3];
}

__attribute__((target("avx512f,avx512vnni"))) static double peak_vnni(long iters)
{
    double t0 = now_s();
    __asm__ volatile("vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
                     "vmovdqa64 %%zmm0, %%zmm30\n\t vmovdqa64 %%zmm0, %%zmm31\n\t"
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
                       "xmm8", "xmm9", "xmm10", "xmm11", "xmm30", "xmm31");
    return now_s() - t0;
}

__attribute__((target("avx512f"))) static double peak_fma(long iters)
{
    double t0 = now_s();
    /* operands zeroed: denormal inputs would take microcode assists */
    __asm__ volatile(
        "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
        "vmovaps %%zmm0, %%zmm30\n\t vmovaps %%zmm0, %%zmm31\n\t"
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
        : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm30", "xmm31");
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

/* Kernel and ceiling timed alternately: *rate = median kernel rate (units /
 * second), *frac[i] = median of kernel/ceiling_i over the pairs. */
static void paired(const bench_cfg *cfg, work_fn kfn, void *kctx, int nth, double units, work_fn c0,
                   void *c0ctx, double c0units, work_fn c1, void *c1ctx, double c1units,
                   double *rate, double frac[2])
{
    double r[64], f0[64], f1[64];
    run_par(kfn, kctx, nth); /* warm-up */
    for (int i = 0; i < cfg->reps; i++) {
        const double t0 = run_par(c0, c0ctx, nth);
        const double tk = run_par(kfn, kctx, nth);
        const double t1 = c1 ? run_par(c1, c1ctx, nth) : 1.0;
        r[i] = units / tk;
        f0[i] = (units / tk) / (c0units / t0);
        f1[i] = c1 ? (units / tk) / (c1units / t1) : 0;
    }
    *rate = median(r, cfg->reps);
    frac[0] = median(f0, cfg->reps);
    frac[1] = median(f1, cfg->reps);
}

static void bench_generation(const bench_cfg *cfg, const tensor_kernels *kt)
{
    const int64_t k = 4096;
    printf("\n-- generation: nt=1, 64 MiB weight, k=%lld, table %s --\n", (long long)k,
           tensor_kernels_name(kt));
    printf("%-6s %9s %9s %9s %9s %9s %9s\n", "type", "1T GB/s", "%simple", "%tuned", "2T GB/s",
           "%simple", "%tuned");
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
        /* the ceiling reads the weight matrix itself: on these VMs buffers
         * of the same process stream at different rates (12 vs 27 GB/s
         * seen), apparently with where the host placed their pages */
        readsum_ctx wrs = {.buf = (const uint64_t *)w, .n = (size_t)bytes / 8 / 16 * 16};
        const double wbytes = (double)wrs.n * 8;
        double g1, g2, f1[2], f2[2];
        paired(cfg, gemm_work, &c, 1, bytes, readsum_work, &wrs, wbytes, readsum_tuned_work, &wrs,
               wbytes, &g1, f1);
        paired(cfg, gemm_work, &c, 2, bytes, readsum_work, &wrs, wbytes, readsum_tuned_work, &wrs,
               wbytes, &g2, f2);
        printf("%-6s %9.2f %8.0f%% %8.0f%% %9.2f %8.0f%% %8.0f%%\n", tensor_type_get(type)->name,
               g1 / 1e9, 100 * f1[0], 100 * f1[1], g2 / 1e9, 100 * f2[0], 100 * f2[1]);
        free(w);
        free(xa);
        free(c.y);
    }
}

typedef struct peak_ctx {
    int fma; /* 0: vpdpbusd, 1: vfmadd231ps */
    long iters;
} peak_ctx;

static void peak_work(void *arg, int ith, int nth)
{
    (void)ith;
    (void)nth;
    peak_ctx *p = arg;
    if (p->fma)
        peak_fma(p->iters);
    else
        peak_vnni(p->iters);
}

static void bench_batch(const bench_cfg *cfg, const tensor_kernels *kt, int have_peaks)
{
    const int64_t k = 2048, nr = 768, nt = 64;
    printf("\n-- batch: nt=%lld, nr=%lld, k=%lld, 1 thread, table %s --\n", (long long)nt,
           (long long)nr, (long long)k, tensor_kernels_name(kt));
    printf("%-6s %9s %11s\n", "type", "GOP/s", "% of peak");
    for (size_t i = 0; i < sizeof(BATCH_TYPES) / sizeof(BATCH_TYPES[0]); i++) {
        const uint32_t type = BATCH_TYPES[i];
        gemm_ctx c = {.kt = kt, .type = type, .nr = nr, .nt = nt, .k = k};
        uint8_t *w = make_weights(type, nr, k, &c.ws);
        uint8_t *xa = make_acts(kt, type, nt, k, &c.xs);
        c.w = w;
        c.xa = xa;
        c.y = malloc((size_t)(nr * nt) * sizeof(float));
        const double ops = 2.0 * (double)nr * (double)nt * (double)k;
        const int is_float = type == TENSOR_F32 || type == TENSOR_F16 || type == TENSOR_BF16;
        /* a peak run of about the kernel's length: 1 M instructions */
        peak_ctx pk = {is_float, 1000000 / 12};
        const double pops = (double)pk.iters * 12 * (is_float ? 32 : 128);
        double g, f[2];
        if (have_peaks) {
            paired(cfg, gemm_work, &c, 1, ops, peak_work, &pk, pops, NULL, NULL, 0, &g, f);
            printf("%-6s %9.1f %10.0f%% (of %s)\n", tensor_type_get(type)->name, g / 1e9,
                   100 * f[0], is_float ? "FMA f32" : "vpdpbusd int8");
        } else {
            g = ops / timed_median(cfg, gemm_work, &c, 1);
            printf("%-6s %9.1f\n", tensor_type_get(type)->name, g / 1e9);
        }
        free(w);
        free(xa);
        free(c.y);
    }
}

int main(int argc, char **argv)
{
    bench_cfg cfg = {.reps = 15};
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0)
            cfg.reps = 5;

    /* ceilings */
    readsum_ctx rs = {.n = (size_t)(64 * MIB) / 8};
    uint64_t *buf = aligned_alloc(64, rs.n * 8);
    for (size_t i = 0; i < rs.n; i++)
        buf[i] = i;
    rs.buf = buf;
    const double rbytes = (double)rs.n * 8;
    const int have_avx512 = tensor_kernels_get(TENSOR_ISA_AVX512) != NULL;
    printf("-- ceilings (medians of %d runs) --\n", cfg.reps);
    for (int nth = 1; nth <= 2; nth++)
        printf(
            "read-sum 64 MiB, %d thread%s: simple %.2f GB/s, tuned (AVX2 + prefetch) %.2f GB/s\n",
            nth, nth > 1 ? "s" : " ", rbytes / timed_median(&cfg, readsum_work, &rs, nth) / 1e9,
            rbytes / timed_median(&cfg, readsum_tuned_work, &rs, nth) / 1e9);
    if (have_avx512) {
        peak_ctx pv = {0, 20000000 / 12}, pf = {1, 20000000 / 12};
        printf("peak, 1 core: vpdpbusd zmm %.0f GOP/s int8, vfmadd231ps zmm %.0f GFLOP/s\n",
               (double)pv.iters * 12 * 128 / timed_median(&cfg, peak_work, &pv, 1) / 1e9,
               (double)pf.iters * 12 * 32 / timed_median(&cfg, peak_work, &pf, 1) / 1e9);
    }

    const tensor_kernels *best = tensor_kernels_best();
    for (int isa = TENSOR_ISA_AVX2; isa < TENSOR_ISA_COUNT; isa++) {
        const tensor_kernels *kt = tensor_kernels_get((enum tensor_isa)isa);
        if (!kt || tensor_kernels_isa(kt) > tensor_kernels_isa(best))
            continue;
        bench_generation(&cfg, kt);
        bench_batch(&cfg, kt, have_avx512);
    }
    free(buf);
    return 0;
}
