/*
 * bench/machine.c — machine-ceiling benchmarks for moegate.
 *
 * What it measures: the numbers an engine kernel can at best reach on this
 * host, so engine figures can be read as a fraction of a ceiling.
 *   - memory read bandwidth (sum of a buffer several times larger than L3);
 *   - peak arithmetic: f32 FMA (AVX-512, AVX2), int8 dot products (AVX-512
 *     VNNI, AVX-VNNI), bf16 dot products (AVX512_BF16), AMX int8 and bf16;
 *   - OpenBLAS sgemm on a square and a batch-like shape.
 * Each figure is taken at 1 thread and at 2 threads (or as many CPUs as the
 * process may use, capped at 2), every thread pinned to its own CPU.
 *
 * Method: every measurement runs one discarded warm-up and then BENCH_REPS
 * timed repetitions; the table shows the median and the maximum. A
 * multi-thread figure is total work divided by the wall time from the first
 * thread leaving the start barrier to the last thread finishing. Other
 * programs may share these vCPUs: a repetition during which a measuring
 * thread was off its CPU (thread CPU time < BUSY_MIN x wall) is retaken a
 * few times and, if kept, flagged in the table and counted in the JSON.
 *
 * AMX: Linux hands out tile-data state only after
 * arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); a program that skips
 * it, or a hypervisor that advertises AMX it does not back, gets SIGILL. So
 * AMX is probed in forked children, one without and one with the request,
 * each reporting every step through a pipe before trying it; the parent
 * measures AMX only when the child with permission ran ldtilecfg, tdpbssd
 * and tdpbf16ps and got the right answers.
 *
 * Threads: the harness creates its own pinned threads per measurement and
 * joins them; OpenBLAS runs last, with its threads pinned through
 * openblas_setaffinity, because its idle workers spin for a while after each
 * call and would steal a CPU from later measurements.
 *
 * State lives in one bench_ctx passed around; nothing global is mutable.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cblas.h>
#include <cpuid.h>
#include <dirent.h>
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_REPS        5     /* timed repetitions per figure */
#define BENCH_MAX_THREADS 2     /* columns of the table: 1 and 2 threads */
#define BENCH_MAX_ROWS    24
#define COMPUTE_TARGET_S  0.12  /* wall time of one compute repetition */

/* arch_prctl codes and the XSAVE feature number of AMX tile data
 * (linux/arch/x86/include/uapi/asm/prctl.h, asm/fpu/types.h). */
#define ARCH_GET_XCOMP_SUPP  0x1021
#define ARCH_GET_XCOMP_PERM  0x1022
#define ARCH_REQ_XCOMP_PERM  0x1023
#define XFEATURE_XTILEDATA   18

/* ---- context and result rows ------------------------------------------- */

typedef struct {
    bool avx2, fma, avx512f, avx512bw, avx512vl, avx512vnni, avx512bf16;
    bool avxvnni, amx_tile, amx_int8, amx_bf16;
    bool os_avx, os_avx512, os_amx;   /* XCR0 says the OS saves that state */
    uint64_t xcr0;
} cpu_features;

typedef struct {
    bool have;                      /* measured at this thread count */
    double median, max;
    double samples[BENCH_REPS];
    int contended;                  /* samples kept although a thread was off-CPU */
    int discarded;                  /* contended samples thrown away and retaken */
} bench_cell;

typedef struct {
    char key[48];                   /* JSON key, e.g. "fma_f32_avx512" */
    char label[64];                 /* table label */
    const char *unit;
    char note[96];                  /* why a figure is missing, if it is */
    bench_cell cell[BENCH_MAX_THREADS];
} bench_row;

typedef struct {
    cpu_features cpu;
    int cpus[BENCH_MAX_THREADS];    /* CPUs the workers are pinned to */
    int ncpus;                      /* usable entries of cpus[] */
    size_t mem_bytes;               /* bandwidth buffer size */
    bool json;                      /* JSON on stdout instead of the table */
    const char *json_out;           /* also write JSON here, may be NULL */
    bool quick;                     /* fewer/shorter runs, for smoke tests */
    bench_row rows[BENCH_MAX_ROWS];
    int nrows;
    char cpu_model[128];
    char amx_report[128];           /* AMX verdict, one line */
    char amx_with[256];             /* probe log with arch_prctl permission */
    char amx_without[256];          /* probe log without it */
    bool amx_ok;
    int pin_failures;               /* workers that did not run where asked */
    double elapsed_s;               /* whole run */
    double steal_pct[BENCH_MAX_THREADS]; /* hypervisor steal per pinned CPU */
    long nivcsw;                    /* involuntary context switches, all threads */
    char blas_corename[64];
    char blas_coretype_env[64];
    char blas_config[256];
    char blas_pinning[160];
} bench_ctx;

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bench_row *row_add(bench_ctx *ctx, const char *key, const char *label,
                          const char *unit)
{
    if (ctx->nrows >= BENCH_MAX_ROWS) {
        say("machine: too many rows\n");
        exit(1);
    }
    bench_row *r = &ctx->rows[ctx->nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->label, sizeof r->label, "%s", label);
    r->unit = unit;
    return r;
}

/* Collects the timed samples of one cell. Other programs share these
 * vCPUs, so a sample during which any measuring thread spent more than
 * BUSY_MIN's complement off its CPU is "contended": it is retaken, up to
 * SAMPLE_RETRIES extra attempts, and kept (and counted) only when clean
 * samples run out. busy = CPU time / wall time of the least busy thread. */
#define BUSY_MIN        0.97
#define SAMPLE_RETRIES  4

typedef struct {
    int want;                       /* samples for the cell */
    int retries;                    /* extra attempts allowed for contended ones */
    int attempts;                   /* timed runs so far */
    double clean[BENCH_REPS];
    int nclean;
    double dirty[BENCH_REPS + SAMPLE_RETRIES];
    int ndirty;
} sampler;

/* want: BENCH_REPS, or 2 with --quick, which also allows one retry only. */
static void sampler_init(sampler *s, int want)
{
    memset(s, 0, sizeof *s);
    s->want = want;
    s->retries = want < BENCH_REPS ? 1 : SAMPLE_RETRIES;
}

static bool sampler_more(const sampler *s)
{
    return s->nclean < s->want && s->attempts < s->want + s->retries;
}

static void sampler_add(sampler *s, double value, double busy)
{
    s->attempts++;
    if (busy >= BUSY_MIN)
        s->clean[s->nclean++] = value;
    else
        s->dirty[s->ndirty++] = value;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Fills the cell: the clean samples, topped up with the best contended ones
 * when there are too few; then their median and maximum. */
static void sampler_finish(sampler *s, bench_cell *c)
{
    double v[BENCH_REPS];
    int n = s->nclean;
    memcpy(v, s->clean, (size_t)n * sizeof *v);
    qsort(s->dirty, (size_t)s->ndirty, sizeof *s->dirty, cmp_double);
    c->contended = 0;
    for (int i = s->ndirty - 1; i >= 0 && n < s->want; i--, c->contended++)
        v[n++] = s->dirty[i];
    c->discarded = s->ndirty - c->contended;
    memcpy(c->samples, v, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    c->median = (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    c->max = v[n - 1];
    c->have = true;
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double process_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- CPU identification -------------------------------------------------- */

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void cpu_detect(cpu_features *f)
{
    unsigned a, b, c, d;
    memset(f, 0, sizeof *f);
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    bool osxsave = c & (1u << 27);
    f->fma = c & (1u << 12);
    if (osxsave) {
        f->xcr0 = xgetbv0();
        f->os_avx = (f->xcr0 & 0x6) == 0x6;                 /* SSE, AVX */
        f->os_avx512 = f->os_avx && (f->xcr0 & 0xe0) == 0xe0; /* opmask, ZMM */
        f->os_amx = (f->xcr0 & (3ull << 17)) == (3ull << 17); /* XTILECFG+DATA */
    }
    if (__get_cpuid_max(0, NULL) < 7)
        return;
    __cpuid_count(7, 0, a, b, c, d);
    f->avx2 = b & (1u << 5);
    f->avx512f = b & (1u << 16);
    f->avx512bw = b & (1u << 30);
    f->avx512vl = b & (1u << 31);
    f->avx512vnni = c & (1u << 11);
    f->amx_bf16 = d & (1u << 22);
    f->amx_tile = d & (1u << 24);
    f->amx_int8 = d & (1u << 25);
    __cpuid_count(7, 1, a, b, c, d);
    f->avxvnni = a & (1u << 4);
    f->avx512bf16 = a & (1u << 5);
}

static bool cpu_has_avx2(const cpu_features *f) { return f->os_avx && f->avx2 && f->fma; }
static bool cpu_has_avx512(const cpu_features *f) { return f->os_avx512 && f->avx512f && f->avx512bw && f->avx512vl; }

static void cpu_model_read(char *out, size_t outlen)
{
    snprintf(out, outlen, "unknown");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp)
        return;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                v[strcspn(v, "\n")] = 0;
                snprintf(out, outlen, "%s", v);
            }
            break;
        }
    }
    fclose(fp);
}

/* ---- pinned worker threads ----------------------------------------------- */

typedef struct bench_worker bench_worker;
typedef uint64_t (*bench_fn)(bench_worker *w);

struct bench_worker {
    pthread_t thread;
    int index, nthreads;
    int cpu;                        /* CPU this worker is pinned to */
    int ran_on;                     /* sched_getcpu() after pinning */
    int pin_rc;                     /* pthread_setaffinity_np result */
    bench_fn fn;
    const void *arg;                /* shared read-only argument */
    uint64_t iters;                 /* loop count for compute kernels */
    pthread_barrier_t *start;
    double t_begin, t_end;          /* wall clock around fn */
    double cpu_s;                   /* this thread's CPU time around fn */
    uint64_t sink;                  /* kernel result, so it cannot be elided */
};

static void *worker_main(void *p)
{
    bench_worker *w = p;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w->cpu, &set);
    w->pin_rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    w->ran_on = sched_getcpu();
    pthread_barrier_wait(w->start);
    double c0 = thread_cpu_s();
    w->t_begin = now_s();
    w->sink = w->fn(w);
    w->t_end = now_s();
    w->cpu_s = thread_cpu_s() - c0;
    return NULL;
}

/* Runs fn on n pinned threads at once; returns the wall time from the first
 * start to the last finish, adds the kernels' results to *sink and sets
 * *busy to the smallest CPU-time / wall-time ratio among the threads. */
static double run_parallel(bench_ctx *ctx, int n, bench_fn fn, const void *arg,
                           uint64_t iters, uint64_t *sink, double *busy)
{
    bench_worker w[BENCH_MAX_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        w[i] = (bench_worker){ .index = i, .nthreads = n, .cpu = ctx->cpus[i],
                               .fn = fn, .arg = arg, .iters = iters, .start = &start };
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
            say("machine: pthread_create failed\n");
            exit(1);
        }
    }
    double t0 = 1e300, t1 = 0, least_busy = 1.0;
    for (int i = 0; i < n; i++) {
        pthread_join(w[i].thread, NULL);
        double wall = w[i].t_end - w[i].t_begin;
        if (wall > 0 && w[i].cpu_s / wall < least_busy)
            least_busy = w[i].cpu_s / wall;
        if (w[i].pin_rc != 0 || w[i].ran_on != w[i].cpu)
            ctx->pin_failures++;
        if (w[i].t_begin < t0)
            t0 = w[i].t_begin;
        if (w[i].t_end > t1)
            t1 = w[i].t_end;
        *sink += w[i].sink;
    }
    pthread_barrier_destroy(&start);
    if (busy)
        *busy = least_busy;
    return t1 - t0;
}

/* ---- memory read bandwidth ----------------------------------------------- */

/* Sum of 64-bit words over [p, p+bytes); bytes is a multiple of 512. Eight
 * independent accumulators so the adds never limit the loads. */
__attribute__((target("avx512f")))
static uint64_t mem_sum_avx512(const void *p, size_t bytes)
{
    const __m512i *v = p;
    size_t n = bytes / 64;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    __m512i a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < n; i += 8) {
        a0 = _mm512_add_epi64(a0, _mm512_load_si512(v + i + 0));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512(v + i + 1));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512(v + i + 2));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512(v + i + 3));
        a4 = _mm512_add_epi64(a4, _mm512_load_si512(v + i + 4));
        a5 = _mm512_add_epi64(a5, _mm512_load_si512(v + i + 5));
        a6 = _mm512_add_epi64(a6, _mm512_load_si512(v + i + 6));
        a7 = _mm512_add_epi64(a7, _mm512_load_si512(v + i + 7));
    }
    a0 = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
    a4 = _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7));
    uint64_t lane[8];               /* unsigned: the sum wraps by design */
    _mm512_storeu_si512(lane, _mm512_add_epi64(a0, a4));
    return lane[0] + lane[1] + lane[2] + lane[3] + lane[4] + lane[5] + lane[6] + lane[7];
}

__attribute__((target("avx2")))
static uint64_t mem_sum_avx2(const void *p, size_t bytes)
{
    const __m256i *v = p;
    size_t n = bytes / 32;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    __m256i a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < n; i += 8) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256(v + i + 0));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + i + 1));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + i + 2));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + i + 3));
        a4 = _mm256_add_epi64(a4, _mm256_load_si256(v + i + 4));
        a5 = _mm256_add_epi64(a5, _mm256_load_si256(v + i + 5));
        a6 = _mm256_add_epi64(a6, _mm256_load_si256(v + i + 6));
        a7 = _mm256_add_epi64(a7, _mm256_load_si256(v + i + 7));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    a4 = _mm256_add_epi64(_mm256_add_epi64(a4, a5), _mm256_add_epi64(a6, a7));
    a0 = _mm256_add_epi64(a0, a4);
    uint64_t lane[4];
    _mm256_storeu_si256((__m256i *)lane, a0);
    return lane[0] + lane[1] + lane[2] + lane[3];
}

typedef struct {
    const unsigned char *buf;       /* [bytes], 4 KiB aligned */
    size_t bytes;                   /* multiple of BENCH_MAX_THREADS * 512 */
    bool avx512;
} mem_job;

/* Each worker sums its contiguous share of the buffer. */
static uint64_t mem_worker(bench_worker *w)
{
    const mem_job *job = w->arg;
    size_t share = job->bytes / (size_t)w->nthreads;
    const unsigned char *p = job->buf + share * (size_t)w->index;
    return job->avx512 ? mem_sum_avx512(p, share) : mem_sum_avx2(p, share);
}

/* First touch in parallel on the pinned workers (one NUMA node here, but it
 * halves the page-fault time). 0x01 bytes make every word 0x0101..01, so the
 * sum over the buffer is known and checks that every byte was read. */
static uint64_t mem_fill_worker(bench_worker *w)
{
    const mem_job *job = w->arg;
    size_t share = job->bytes / (size_t)w->nthreads;
    memset((unsigned char *)job->buf + share * (size_t)w->index, 1, share);
    return 0;
}

static void bench_memory(bench_ctx *ctx)
{
    bench_row *r = row_add(ctx, "mem_read", "memory read bandwidth", "GB/s");
    if (!cpu_has_avx2(&ctx->cpu)) {
        snprintf(r->note, sizeof r->note, "no AVX2");
        return;
    }
    mem_job job = { .avx512 = cpu_has_avx512(&ctx->cpu) };
    snprintf(r->label, sizeof r->label, "memory read (%s, %.1f GiB)",
             job.avx512 ? "avx512" : "avx2", (double)ctx->mem_bytes / (1u << 30));
    job.bytes = ctx->mem_bytes;
    void *buf = mmap(NULL, job.bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (buf == MAP_FAILED) {
        snprintf(r->note, sizeof r->note, "mmap of %zu bytes failed: %s",
                 job.bytes, strerror(errno));
        return;
    }
    /* Huge pages keep TLB misses out of the figure; advisory only. */
    madvise(buf, job.bytes, MADV_HUGEPAGE);
    job.buf = buf;
    uint64_t sink = 0;
    say("machine: filling %.1f GiB ...\n", (double)job.bytes / (1u << 30));
    run_parallel(ctx, ctx->ncpus, mem_fill_worker, &job, 0, &sink, NULL);

    uint64_t expect = (uint64_t)(job.bytes / 8) * 0x0101010101010101ull;
    int reps = ctx->quick ? 2 : BENCH_REPS;
    for (int n = 1; n <= ctx->ncpus; n++) {
        sampler sm;
        sampler_init(&sm, reps);
        for (bool warm = false; sampler_more(&sm); warm = true) {  /* first run: warm-up */
            sink = 0;
            double busy;
            double t = run_parallel(ctx, n, mem_worker, &job, 0, &sink, &busy);
            if (sink != expect) {
                say("machine: memory sum mismatch (%llu != %llu)\n",
                    (unsigned long long)sink, (unsigned long long)expect);
                exit(1);
            }
            if (warm)
                sampler_add(&sm, (double)job.bytes / t / 1e9, busy);
        }
        sampler_finish(&sm, &r->cell[n - 1]);
        say("machine: memory read %d thread(s): %.1f GB/s\n", n, r->cell[n - 1].median);
    }
    munmap(buf, job.bytes);
}

/* ---- peak arithmetic: SIMD kernels ----------------------------------------
 * Each kernel runs `iters` iterations of 12 independent accumulator updates:
 * enough to cover latency (4-5 cycles) times two issue ports. Accumulators
 * start from distinct values so the compiler cannot merge their chains.
 * f32 chains converge to b/(1-a) and never reach denormals or infinity. */

__attribute__((target("avx512f")))
static uint64_t kern_fma_avx512(uint64_t iters)
{
    const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
    __m512 c0 = _mm512_set1_ps(0.00f), c1 = _mm512_set1_ps(0.01f);
    __m512 c2 = _mm512_set1_ps(0.02f), c3 = _mm512_set1_ps(0.03f);
    __m512 c4 = _mm512_set1_ps(0.04f), c5 = _mm512_set1_ps(0.05f);
    __m512 c6 = _mm512_set1_ps(0.06f), c7 = _mm512_set1_ps(0.07f);
    __m512 c8 = _mm512_set1_ps(0.08f), c9 = _mm512_set1_ps(0.09f);
    __m512 c10 = _mm512_set1_ps(0.10f), c11 = _mm512_set1_ps(0.11f);
    for (uint64_t i = 0; i < iters; i++) {
        c0 = _mm512_fmadd_ps(c0, a, b);   c1 = _mm512_fmadd_ps(c1, a, b);
        c2 = _mm512_fmadd_ps(c2, a, b);   c3 = _mm512_fmadd_ps(c3, a, b);
        c4 = _mm512_fmadd_ps(c4, a, b);   c5 = _mm512_fmadd_ps(c5, a, b);
        c6 = _mm512_fmadd_ps(c6, a, b);   c7 = _mm512_fmadd_ps(c7, a, b);
        c8 = _mm512_fmadd_ps(c8, a, b);   c9 = _mm512_fmadd_ps(c9, a, b);
        c10 = _mm512_fmadd_ps(c10, a, b); c11 = _mm512_fmadd_ps(c11, a, b);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                             _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
    return (uint64_t)_mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma")))
static uint64_t kern_fma_avx2(uint64_t iters)
{
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
    __m256 c0 = _mm256_set1_ps(0.00f), c1 = _mm256_set1_ps(0.01f);
    __m256 c2 = _mm256_set1_ps(0.02f), c3 = _mm256_set1_ps(0.03f);
    __m256 c4 = _mm256_set1_ps(0.04f), c5 = _mm256_set1_ps(0.05f);
    __m256 c6 = _mm256_set1_ps(0.06f), c7 = _mm256_set1_ps(0.07f);
    __m256 c8 = _mm256_set1_ps(0.08f), c9 = _mm256_set1_ps(0.09f);
    __m256 c10 = _mm256_set1_ps(0.10f), c11 = _mm256_set1_ps(0.11f);
    for (uint64_t i = 0; i < iters; i++) {
        c0 = _mm256_fmadd_ps(c0, a, b);   c1 = _mm256_fmadd_ps(c1, a, b);
        c2 = _mm256_fmadd_ps(c2, a, b);   c3 = _mm256_fmadd_ps(c3, a, b);
        c4 = _mm256_fmadd_ps(c4, a, b);   c5 = _mm256_fmadd_ps(c5, a, b);
        c6 = _mm256_fmadd_ps(c6, a, b);   c7 = _mm256_fmadd_ps(c7, a, b);
        c8 = _mm256_fmadd_ps(c8, a, b);   c9 = _mm256_fmadd_ps(c9, a, b);
        c10 = _mm256_fmadd_ps(c10, a, b); c11 = _mm256_fmadd_ps(c11, a, b);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float lane[8];
    _mm256_storeu_ps(lane, s);
    return (uint64_t)(lane[0] + lane[7]);
}

/* vpdpbusd zmm: 16 int32 lanes, each += 4 u8*s8 products = 64 MACs. int32
 * wrap-around is defined for the instruction and harmless here. */
__attribute__((target("avx512f,avx512vnni")))
static uint64_t kern_vnni_avx512(uint64_t iters)
{
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    __m512i c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1);
    __m512i c2 = _mm512_set1_epi32(2), c3 = _mm512_set1_epi32(3);
    __m512i c4 = _mm512_set1_epi32(4), c5 = _mm512_set1_epi32(5);
    __m512i c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7);
    __m512i c8 = _mm512_set1_epi32(8), c9 = _mm512_set1_epi32(9);
    __m512i c10 = _mm512_set1_epi32(10), c11 = _mm512_set1_epi32(11);
    for (uint64_t i = 0; i < iters; i++) {
        c0 = _mm512_dpbusd_epi32(c0, a, b);   c1 = _mm512_dpbusd_epi32(c1, a, b);
        c2 = _mm512_dpbusd_epi32(c2, a, b);   c3 = _mm512_dpbusd_epi32(c3, a, b);
        c4 = _mm512_dpbusd_epi32(c4, a, b);   c5 = _mm512_dpbusd_epi32(c5, a, b);
        c6 = _mm512_dpbusd_epi32(c6, a, b);   c7 = _mm512_dpbusd_epi32(c7, a, b);
        c8 = _mm512_dpbusd_epi32(c8, a, b);   c9 = _mm512_dpbusd_epi32(c9, a, b);
        c10 = _mm512_dpbusd_epi32(c10, a, b); c11 = _mm512_dpbusd_epi32(c11, a, b);
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                 _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)));
    uint32_t lane[16];              /* unsigned: the sums wrap by design */
    _mm512_storeu_si512(lane, s);
    return (uint64_t)(lane[0] + lane[15]);
}

/* AVX-VNNI: the VEX-encoded 256-bit vpdpbusd (32 MACs), written as inline
 * asm: gcc 12 spills accumulators of _mm256_dpbusd_avx_epi32 to the stack on
 * every iteration, which would measure its register allocator instead. */
__attribute__((target("avx2")))
static inline __m256i dpbusd_vex(__m256i c, __m256i a, __m256i b)
{
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(c) : "x"(a), "x"(b));
    return c;
}

__attribute__((target("avx2")))
static uint64_t kern_vnni_avx256(uint64_t iters)
{
    const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
    __m256i c0 = _mm256_set1_epi32(0), c1 = _mm256_set1_epi32(1);
    __m256i c2 = _mm256_set1_epi32(2), c3 = _mm256_set1_epi32(3);
    __m256i c4 = _mm256_set1_epi32(4), c5 = _mm256_set1_epi32(5);
    __m256i c6 = _mm256_set1_epi32(6), c7 = _mm256_set1_epi32(7);
    __m256i c8 = _mm256_set1_epi32(8), c9 = _mm256_set1_epi32(9);
    __m256i c10 = _mm256_set1_epi32(10), c11 = _mm256_set1_epi32(11);
    for (uint64_t i = 0; i < iters; i++) {
        c0 = dpbusd_vex(c0, a, b);   c1 = dpbusd_vex(c1, a, b);
        c2 = dpbusd_vex(c2, a, b);   c3 = dpbusd_vex(c3, a, b);
        c4 = dpbusd_vex(c4, a, b);   c5 = dpbusd_vex(c5, a, b);
        c6 = dpbusd_vex(c6, a, b);   c7 = dpbusd_vex(c7, a, b);
        c8 = dpbusd_vex(c8, a, b);   c9 = dpbusd_vex(c9, a, b);
        c10 = dpbusd_vex(c10, a, b); c11 = dpbusd_vex(c11, a, b);
    }
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
                                 _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));
    s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(c8, c9), _mm256_add_epi32(c10, c11)));
    return (uint64_t)(uint32_t)_mm256_extract_epi32(s, 0);
}

/* vdpbf16ps zmm: 16 f32 lanes, each += 2 bf16 products = 32 MACs. */
__attribute__((target("avx512f,avx512bf16")))
static uint64_t kern_bf16_avx512(uint64_t iters)
{
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(2e-3f), _mm512_set1_ps(2e-3f));
    __m512 c0 = _mm512_set1_ps(0.00f), c1 = _mm512_set1_ps(0.01f);
    __m512 c2 = _mm512_set1_ps(0.02f), c3 = _mm512_set1_ps(0.03f);
    __m512 c4 = _mm512_set1_ps(0.04f), c5 = _mm512_set1_ps(0.05f);
    __m512 c6 = _mm512_set1_ps(0.06f), c7 = _mm512_set1_ps(0.07f);
    __m512 c8 = _mm512_set1_ps(0.08f), c9 = _mm512_set1_ps(0.09f);
    __m512 c10 = _mm512_set1_ps(0.10f), c11 = _mm512_set1_ps(0.11f);
    for (uint64_t i = 0; i < iters; i++) {
        c0 = _mm512_dpbf16_ps(c0, a, b);   c1 = _mm512_dpbf16_ps(c1, a, b);
        c2 = _mm512_dpbf16_ps(c2, a, b);   c3 = _mm512_dpbf16_ps(c3, a, b);
        c4 = _mm512_dpbf16_ps(c4, a, b);   c5 = _mm512_dpbf16_ps(c5, a, b);
        c6 = _mm512_dpbf16_ps(c6, a, b);   c7 = _mm512_dpbf16_ps(c7, a, b);
        c8 = _mm512_dpbf16_ps(c8, a, b);   c9 = _mm512_dpbf16_ps(c9, a, b);
        c10 = _mm512_dpbf16_ps(c10, a, b); c11 = _mm512_dpbf16_ps(c11, a, b);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                             _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
    return (uint64_t)_mm512_reduce_add_ps(s);
}

/* ---- peak arithmetic: AMX ------------------------------------------------
 * Tile palette 1: eight tiles, each configured here as 16 rows x 64 bytes.
 * tdpbssd  C[16x16 i32] += A[16x64 s8] . B[16x(16*4) s8]  = 16*16*64 MACs
 * tdpbf16ps C[16x16 f32] += A[16x32 bf16] . B[16x(16*2) bf16] = 16*16*32 MACs
 * The loop keeps six accumulator tiles (tmm0-5) against one A (tmm6) and one
 * B (tmm7): six independent chains cover the tile-multiply latency. No
 * loads in the loop: this is the ALU ceiling, not a GEMM. */

typedef struct {
    uint8_t palette_id;             /* 1 */
    uint8_t start_row;              /* 0 */
    uint8_t reserved[14];
    uint16_t colsb[16];             /* bytes per row, tiles 0..15 */
    uint8_t rows[16];               /* rows, tiles 0..15 */
} __attribute__((packed)) amx_tilecfg;
_Static_assert(sizeof(amx_tilecfg) == 64, "ldtilecfg reads 64 bytes");

static void amx_cfg_fill(amx_tilecfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg->colsb[t] = 64;
        cfg->rows[t] = 16;
    }
}

static long amx_request_perm(void)
{
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
}

__attribute__((target("amx-tile")))
static void amx_tiles_load(const amx_tilecfg *cfg)
{
    _tile_loadconfig(cfg);
}

__attribute__((target("amx-tile")))
static void amx_tiles_release(void)
{
    _tile_release();
}

/* a, b: 1 KiB tiles of operands (16 rows x 64 bytes). */
__attribute__((target("amx-tile,amx-int8")))
static int32_t kern_amx_int8_body(uint64_t iters, const void *a, const void *b)
{
    int32_t c[16 * 16] __attribute__((aligned(64)));
    _tile_loadd(6, a, 64);
    _tile_loadd(7, b, 64);
    _tile_zero(0); _tile_zero(1); _tile_zero(2);
    _tile_zero(3); _tile_zero(4); _tile_zero(5);
    for (uint64_t i = 0; i < iters; i++) {
        _tile_dpbssd(0, 6, 7); _tile_dpbssd(1, 6, 7); _tile_dpbssd(2, 6, 7);
        _tile_dpbssd(3, 6, 7); _tile_dpbssd(4, 6, 7); _tile_dpbssd(5, 6, 7);
    }
    _tile_stored(0, c, 64);
    return c[0];
}

__attribute__((target("amx-tile,amx-bf16")))
static float kern_amx_bf16_body(uint64_t iters, const void *a, const void *b)
{
    float c[16 * 16] __attribute__((aligned(64)));
    _tile_loadd(6, a, 64);
    _tile_loadd(7, b, 64);
    _tile_zero(0); _tile_zero(1); _tile_zero(2);
    _tile_zero(3); _tile_zero(4); _tile_zero(5);
    for (uint64_t i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 6, 7); _tile_dpbf16ps(1, 6, 7); _tile_dpbf16ps(2, 6, 7);
        _tile_dpbf16ps(3, 6, 7); _tile_dpbf16ps(4, 6, 7); _tile_dpbf16ps(5, 6, 7);
    }
    _tile_stored(0, c, 64);
    return c[0];
}

/* Operand tiles: int8 ones, and bf16 1.0 (0x3f80) / 1e-3-ish values. */
typedef struct {
    int8_t i8[1024] __attribute__((aligned(64)));
    uint16_t bf16[512] __attribute__((aligned(64)));
} amx_operands;

static void amx_operands_fill(amx_operands *op, uint16_t bf16_value)
{
    memset(op->i8, 1, sizeof op->i8);
    for (int i = 0; i < 512; i++)
        op->bf16[i] = bf16_value;
}

static uint64_t kern_amx_int8(uint64_t iters)
{
    amx_tilecfg cfg;
    amx_operands op;
    amx_cfg_fill(&cfg);
    amx_operands_fill(&op, 0x3f80);
    amx_tiles_load(&cfg);            /* tile config is per thread */
    int32_t r = kern_amx_int8_body(iters, op.i8, op.i8);
    amx_tiles_release();
    return (uint64_t)(uint32_t)r;
}

static uint64_t kern_amx_bf16(uint64_t iters)
{
    amx_tilecfg cfg;
    amx_operands op;
    amx_cfg_fill(&cfg);
    amx_operands_fill(&op, 0x3a83);  /* bf16 ~1.0e-3: sums stay finite */
    amx_tiles_load(&cfg);
    float r = kern_amx_bf16_body(iters, op.bf16, op.bf16);
    amx_tiles_release();
    return (uint64_t)r;
}

static bool write_line(int fd, const char *fmt, ...)
{
    char line[192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    return write(fd, line, (size_t)n) == n;
}

/* Child side of a probe: reports each step on fd before trying it, so a
 * fatal signal leaves the last step attempted as the final line. With
 * request_perm false it skips arch_prctl, to show what a program that never
 * asks for tile state gets. Exit 0: right answers; 3: wrong answers. */
static void amx_probe_child(int fd, bool request_perm)
{
    unsigned long supp = 0, perm = 0;
    long rc_supp = syscall(SYS_arch_prctl, ARCH_GET_XCOMP_SUPP, &supp);
    if (request_perm) {
        long rc = amx_request_perm();
        int err = errno;
        long rc_perm = syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm);
        if (!write_line(fd, "arch_prctl(REQ_XCOMP_PERM, 18)=%ld%s%s, supp=%s0x%lx, perm=%s0x%lx\n",
                        rc, rc ? " errno=" : "", rc ? strerror(err) : "",
                        rc_supp ? "?" : "", supp, rc_perm ? "?" : "", perm))
            _exit(2);
    } else {
        long rc_perm = syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm);
        if (!write_line(fd, "no arch_prctl request, perm=%s0x%lx\n", rc_perm ? "?" : "", perm))
            _exit(2);
    }

    amx_tilecfg cfg;
    amx_operands op;
    amx_cfg_fill(&cfg);
    amx_operands_fill(&op, 0x3f80);
    if (!write_line(fd, "ldtilecfg\n"))
        _exit(2);
    amx_tiles_load(&cfg);
    if (!write_line(fd, "ldtilecfg ran, tileloadd+tdpbssd\n"))
        _exit(2);
    int32_t i = kern_amx_int8_body(1, op.i8, op.i8);      /* 64 ones . ones */
    if (!write_line(fd, "tdpbssd ran (C=%d, want 64), tdpbf16ps\n", (int)i))
        _exit(2);
    float f = kern_amx_bf16_body(1, op.bf16, op.bf16);    /* 32 x 1.0*1.0 */
    amx_tiles_release();
    if (!write_line(fd, "tdpbf16ps ran (C=%g, want 32)\n", (double)f))
        _exit(2);
    _exit(i == 64 && f == 32.0f ? 0 : 3);
}

/* Forks a probe child and writes its log, ';'-separated, and its fate into
 * out. Returns true when the child ran every step with the right answers.
 * The last step named before a fatal signal is the one that faulted. */
static bool amx_probe_fork(bool request_perm, char *out, size_t outlen)
{
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(out, outlen, "pipe: %s", strerror(errno));
        return false;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(out, outlen, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    if (pid == 0) {
        close(fds[0]);
        amx_probe_child(fds[1], request_perm);
    }
    close(fds[1]);
    char log[400] = "";
    size_t len = 0;
    ssize_t got;
    while (len < sizeof log - 1 && (got = read(fds[0], log + len, sizeof log - 1 - len)) > 0)
        len += (size_t)got;
    log[len] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    for (char *p = log; *p; p++)
        if (*p == '\n')
            *p = p[1] ? ';' : 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        snprintf(out, outlen, "%s: ok", log);
        return true;
    }
    if (WIFSIGNALED(status))
        snprintf(out, outlen, "%s: killed by %s", log, strsignal(WTERMSIG(status)));
    else
        snprintf(out, outlen, "%s: exit %d (wrong results)", log,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return false;
}

/* Probes AMX in forked children; fills ctx->amx_report and ctx->amx_ok.
 * Must run before this process requests tile permission: children inherit
 * it, and the first child shows what happens without it. */
static void amx_probe(bench_ctx *ctx)
{
    const cpu_features *f = &ctx->cpu;
    ctx->amx_ok = false;
    if (!f->amx_tile || !f->amx_int8 || !f->amx_bf16) {
        snprintf(ctx->amx_report, sizeof ctx->amx_report,
                 "AMX unavailable: CPUID lacks amx_tile/int8/bf16 (%d/%d/%d)",
                 f->amx_tile, f->amx_int8, f->amx_bf16);
        return;
    }
    if (!f->os_amx) {
        snprintf(ctx->amx_report, sizeof ctx->amx_report,
                 "AMX unavailable: XCR0=0x%llx lacks XTILECFG/XTILEDATA (bits 17,18)",
                 (unsigned long long)f->xcr0);
        return;
    }
    bool without_ok = amx_probe_fork(false, ctx->amx_without, sizeof ctx->amx_without);
    ctx->amx_ok = amx_probe_fork(true, ctx->amx_with, sizeof ctx->amx_with);
    if (ctx->amx_ok)
        snprintf(ctx->amx_report, sizeof ctx->amx_report,
                 "AMX ok after arch_prctl permission; without it: %s",
                 without_ok ? "also ok" : "faults (see probe)");
    else
        snprintf(ctx->amx_report, sizeof ctx->amx_report,
                 "AMX unavailable: probe with arch_prctl permission failed (see probe)");
}

/* ---- peak arithmetic: driver --------------------------------------------- */

typedef enum { NEED_AVX2, NEED_AVX512, NEED_VNNI512, NEED_AVXVNNI, NEED_BF16_512, NEED_AMX } compute_need;

typedef struct {
    const char *key, *label, *unit;
    double ops_per_iter;            /* per kernel loop iteration */
    compute_need need;
    uint64_t (*run)(uint64_t iters);
} compute_kernel;

/* ops: 2 per multiply-add. 12 instructions per iteration in the SIMD
 * kernels, 6 tile products in the AMX ones. */
static const compute_kernel compute_kernels[] = {
    { "fma_f32_avx512", "f32 FMA, AVX-512 (zmm)", "GFLOP/s", 12.0 * 16 * 2, NEED_AVX512, kern_fma_avx512 },
    { "fma_f32_avx2", "f32 FMA, AVX2 (ymm)", "GFLOP/s", 12.0 * 8 * 2, NEED_AVX2, kern_fma_avx2 },
    { "dot_bf16_avx512", "bf16 dot, AVX512_BF16 vdpbf16ps", "GFLOP/s", 12.0 * 32 * 2, NEED_BF16_512, kern_bf16_avx512 },
    { "dot_int8_vnni512", "int8 dot, AVX-512 VNNI vpdpbusd", "GOP/s", 12.0 * 64 * 2, NEED_VNNI512, kern_vnni_avx512 },
    { "dot_int8_avxvnni", "int8 dot, AVX-VNNI (ymm) vpdpbusd", "GOP/s", 12.0 * 32 * 2, NEED_AVXVNNI, kern_vnni_avx256 },
    { "amx_int8", "int8 AMX tdpbssd", "GOP/s", 6.0 * 16 * 16 * 64 * 2, NEED_AMX, kern_amx_int8 },
    { "amx_bf16", "bf16 AMX tdpbf16ps", "GFLOP/s", 6.0 * 16 * 16 * 32 * 2, NEED_AMX, kern_amx_bf16 },
};

static bool compute_supported(const bench_ctx *ctx, compute_need need, const char **why)
{
    const cpu_features *f = &ctx->cpu;
    switch (need) {
    case NEED_AVX2: *why = "no AVX2/FMA"; return cpu_has_avx2(f);
    case NEED_AVX512: *why = "no AVX-512"; return cpu_has_avx512(f);
    case NEED_VNNI512: *why = "no AVX512_VNNI"; return cpu_has_avx512(f) && f->avx512vnni;
    case NEED_AVXVNNI: *why = "no AVX-VNNI"; return cpu_has_avx2(f) && f->avxvnni;
    case NEED_BF16_512: *why = "no AVX512_BF16"; return cpu_has_avx512(f) && f->avx512bf16;
    case NEED_AMX: *why = "AMX unavailable (see AMX line)"; return ctx->amx_ok;
    }
    return false;
}

static uint64_t compute_worker(bench_worker *w)
{
    const compute_kernel *k = w->arg;
    return k->run(w->iters);
}

/* Picks a loop count that takes about `target` seconds on one thread. */
static uint64_t compute_calibrate(bench_ctx *ctx, const compute_kernel *k, double target)
{
    uint64_t iters = 1u << 12, sink = 0;
    for (;;) {
        double t = run_parallel(ctx, 1, compute_worker, k, iters, &sink, NULL);
        if (t > 0.02 || iters > (1ull << 40))
            return (uint64_t)((double)iters * target / t) + 1;
        iters *= 4;
    }
}

static void bench_compute(bench_ctx *ctx)
{
    int reps = ctx->quick ? 2 : BENCH_REPS;
    double target = ctx->quick ? 0.03 : COMPUTE_TARGET_S;
    for (size_t i = 0; i < sizeof compute_kernels / sizeof compute_kernels[0]; i++) {
        const compute_kernel *k = &compute_kernels[i];
        bench_row *r = row_add(ctx, k->key, k->label, k->unit);
        const char *why = "";
        if (!compute_supported(ctx, k->need, &why)) {
            snprintf(r->note, sizeof r->note, "%s", why);
            continue;
        }
        uint64_t iters = compute_calibrate(ctx, k, target), sink = 0;
        for (int n = 1; n <= ctx->ncpus; n++) {
            sampler sm;
            sampler_init(&sm, reps);
            for (bool warm = false; sampler_more(&sm); warm = true) {
                double busy;
                double t = run_parallel(ctx, n, compute_worker, k, iters, &sink, &busy);
                if (warm)
                    sampler_add(&sm, k->ops_per_iter * (double)iters * n / t / 1e9, busy);
            }
            sampler_finish(&sm, &r->cell[n - 1]);
        }
        say("machine: %-34s %9.1f %9.1f %s\n", k->label, r->cell[0].median,
            ctx->ncpus > 1 ? r->cell[1].median : 0.0, k->unit);
    }
}

/* Core clock estimate: a chain of dependent register adds retires one per
 * cycle on every x86 core of the last 15 years. Turns the peak figures into
 * instructions per cycle. */
static uint64_t kern_add_chain(uint64_t iters)
{
    uint64_t x = 0, one = 1;
    __asm__ volatile(
        "1:\n\t"
        ".rept 32\n\t"
        "add %[one], %[x]\n\t"
        ".endr\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        : [x] "+r"(x), [n] "+r"(iters)
        : [one] "r"(one)
        : "cc");
    return x;
}

static uint64_t clock_worker(bench_worker *w)
{
    return kern_add_chain(w->iters);
}

static void bench_clock(bench_ctx *ctx)
{
    bench_row *r = row_add(ctx, "core_clock", "core clock per thread (add chain)", "GHz");
    int reps = ctx->quick ? 2 : BENCH_REPS;
    uint64_t iters = ctx->quick ? 1000000 : 12000000, sink = 0;   /* ~0.1 s */
    for (int n = 1; n <= ctx->ncpus; n++) {
        sampler sm;
        sampler_init(&sm, reps);
        for (bool warm = false; sampler_more(&sm); warm = true) {
            double busy;
            double t = run_parallel(ctx, n, clock_worker, NULL, iters, &sink, &busy);
            if (warm)
                sampler_add(&sm, 32.0 * (double)iters / t / 1e9, busy);  /* per thread */
        }
        sampler_finish(&sm, &r->cell[n - 1]);
    }
}

/* ---- OpenBLAS sgemm ------------------------------------------------------ */

static void pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Pins OpenBLAS's n threads to distinct CPUs and describes the result by
 * reading back every task's affinity from /proc/self/task. One of OpenBLAS's
 * thread indexes is the calling thread; any one-to-one mapping of indexes to
 * CPUs gives every thread its own CPU, whichever index that is. */
static void blas_pin(bench_ctx *ctx, int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(ctx->cpus[(i + 1) % n], &set);
        rc |= openblas_setaffinity(i, sizeof set, &set);
    }
    char desc[96] = "";
    size_t len = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        cpu_set_t set;
        pid_t tid = (pid_t)atoi(e->d_name);
        if (sched_getaffinity(tid, sizeof set, &set) != 0)
            continue;
        int cpu = -1;
        if (CPU_COUNT(&set) == 1)
            for (int c = 0; c < CPU_SETSIZE && cpu < 0; c++)
                if (CPU_ISSET(c, &set))
                    cpu = c;
        char one[16];
        if (cpu < 0)
            snprintf(one, sizeof one, "any");
        else
            snprintf(one, sizeof one, "cpu%d", cpu);
        len += (size_t)snprintf(desc + len, sizeof desc - len, "%s%s", len ? "," : "", one);
        if (len >= sizeof desc)
            break;
    }
    if (d)
        closedir(d);
    snprintf(ctx->blas_pinning, sizeof ctx->blas_pinning, "setaffinity rc=%d; tasks: %s", rc, desc);
}

static void fill_random(float *x, int64_t n, uint32_t seed)
{
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
}

static void bench_sgemm_shape(bench_ctx *ctx, int64_t m, int64_t n, int64_t k)
{
    char key[48], label[64];
    snprintf(key, sizeof key, "sgemm_%lldx%lldx%lld", (long long)m, (long long)n, (long long)k);
    snprintf(label, sizeof label, "OpenBLAS sgemm M=%lld N=%lld K=%lld",
             (long long)m, (long long)n, (long long)k);
    bench_row *r = row_add(ctx, key, label, "GFLOP/s");
    float *a = malloc((size_t)(m * k) * sizeof *a);   /* [m][k] */
    float *b = malloc((size_t)(k * n) * sizeof *b);   /* [k][n] */
    float *c = malloc((size_t)(m * n) * sizeof *c);   /* [m][n] */
    if (!a || !b || !c) {
        snprintf(r->note, sizeof r->note, "out of memory");
        goto done;
    }
    fill_random(a, m * k, 1);
    fill_random(b, k * n, 2);
    double flops = 2.0 * (double)m * (double)n * (double)k;
    /* Small shapes repeat inside one timing so each sample lasts >~ 30 ms. */
    int inner = flops > 4e9 ? 1 : (int)(4e9 / flops) + 1;
    int reps = ctx->quick ? 2 : BENCH_REPS;
    if (ctx->quick)
        inner = inner / 4 + 1;
    for (int nt = 1; nt <= ctx->ncpus; nt++) {
        openblas_set_num_threads(nt);
        blas_pin(ctx, nt);
        sampler sm;
        sampler_init(&sm, reps);
        for (bool warm = false; sampler_more(&sm); warm = true) {
            /* OpenBLAS's threads are not ours to time one by one; its
             * waiting workers spin, so process CPU time over nt x wall
             * still drops when one of them is pushed off its CPU. */
            double c0 = process_cpu_s(), t0 = now_s();
            for (int j = 0; j < inner; j++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k,
                            1.0f, a, (int)k, b, (int)n, 0.0f, c, (int)n);
            double t = now_s() - t0, busy = (process_cpu_s() - c0) / (t * nt);
            if (warm)
                sampler_add(&sm, flops * inner / t / 1e9, busy);
        }
        sampler_finish(&sm, &r->cell[nt - 1]);
        say("machine: %s, %d thread(s): %.1f GFLOP/s (%s)\n", label, nt,
            r->cell[nt - 1].median, ctx->blas_pinning);
    }
done:
    free(a);
    free(b);
    free(c);
}

static void bench_blas(bench_ctx *ctx)
{
    const char *env = getenv("OPENBLAS_CORETYPE");
    snprintf(ctx->blas_coretype_env, sizeof ctx->blas_coretype_env, "%s", env ? env : "(unset)");
    snprintf(ctx->blas_corename, sizeof ctx->blas_corename, "%s", openblas_get_corename());
    snprintf(ctx->blas_config, sizeof ctx->blas_config, "%s", openblas_get_config());
    pin_self(ctx->cpus[0]);
    bench_sgemm_shape(ctx, 2048, 2048, 2048);
    bench_sgemm_shape(ctx, 768, 64, 2048);
    openblas_set_num_threads(1);
}

/* ---- output -------------------------------------------------------------- */

static void date_utc(char *out, size_t outlen)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%Y-%m-%d %H:%M UTC", &tm);
}

static void print_table(const bench_ctx *ctx, FILE *fp)
{
    char date[64];
    struct utsname u;
    date_utc(date, sizeof date);
    uname(&u);
    fprintf(fp, "\nmoegate machine ceilings — %s\n", date);
    fprintf(fp, "cpu: %s; %ld online CPUs; threads pinned to CPUs", ctx->cpu_model,
            sysconf(_SC_NPROCESSORS_ONLN));
    for (int i = 0; i < ctx->ncpus; i++)
        fprintf(fp, " %d", ctx->cpus[i]);
    fprintf(fp, "%s; kernel %s\n", ctx->pin_failures ? " (SOME PINNING FAILED)" : "", u.release);
    fprintf(fp, "%s\n", ctx->amx_report);
    if (ctx->amx_with[0])
        fprintf(fp, "  probe with arch_prctl:    %s\n  probe without arch_prctl: %s\n",
                ctx->amx_with, ctx->amx_without);
    fprintf(fp, "OpenBLAS: core %s, OPENBLAS_CORETYPE=%s, config \"%s\"\n",
            ctx->blas_corename, ctx->blas_coretype_env, ctx->blas_config);
    fprintf(fp, "hypervisor steal during the run:");
    for (int i = 0; i < ctx->ncpus; i++)
        fprintf(fp, " cpu%d %.1f%%", ctx->cpus[i], ctx->steal_pct[i]);
    fprintf(fp, "; involuntary context switches %ld; run took %.1f s\n", ctx->nivcsw,
            ctx->elapsed_s);
    fprintf(fp, "each cell: median / max of %d runs\n\n", ctx->quick ? 2 : BENCH_REPS);
    fprintf(fp, "| %-40s | %-20s | %-20s | %-7s |\n", "measure", "1 thread", "2 threads", "unit");
    fprintf(fp, "|%.*s|%.*s|%.*s|%.*s|\n", 42, "------------------------------------------",
            22, "----------------------", 22, "----------------------", 9, "---------");
    for (int i = 0; i < ctx->nrows; i++) {
        const bench_row *r = &ctx->rows[i];
        char cell[BENCH_MAX_THREADS][40];
        for (int n = 0; n < BENCH_MAX_THREADS; n++) {
            const bench_cell *c = &r->cell[n];
            if (c->have)
                snprintf(cell[n], sizeof cell[n], "%8.1f / %-8.1f%s", c->median, c->max,
                         c->contended ? "*" : "");
            else
                snprintf(cell[n], sizeof cell[n], "%s", r->note[0] ? r->note : "n/a");
        }
        fprintf(fp, "| %-40s | %-20s | %-20s | %-7s |\n", r->label, cell[0], cell[1], r->unit);
    }
    int contended = 0;
    for (int i = 0; i < ctx->nrows; i++)
        for (int n = 0; n < BENCH_MAX_THREADS; n++)
            contended += ctx->rows[i].cell[n].contended;
    if (contended)
        fprintf(fp, "\n* some samples of this cell ran while a measuring thread was off its CPU\n"
                    "  more than %.0f%% of the time (other load on these vCPUs); see the JSON.\n",
                100.0 * (1.0 - BUSY_MIN));
    fprintf(fp, "\n");
}

static void json_string(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(fp, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(fp, "\\u%04x", ch);
        else
            fputc(ch, fp);
    }
    fputc('"', fp);
}

static void print_json(const bench_ctx *ctx, FILE *fp)
{
    char date[64];
    date_utc(date, sizeof date);
    const cpu_features *f = &ctx->cpu;
    fprintf(fp, "{\n  \"date\": ");
    json_string(fp, date);
    fprintf(fp, ",\n  \"cpu_model\": ");
    json_string(fp, ctx->cpu_model);
    fprintf(fp, ",\n  \"cpus\": [");
    for (int i = 0; i < ctx->ncpus; i++)
        fprintf(fp, "%s%d", i ? ", " : "", ctx->cpus[i]);
    fprintf(fp, "],\n  \"pin_failures\": %d,\n  \"elapsed_s\": %.1f,\n  \"nivcsw\": %ld,\n"
                "  \"steal_pct\": [", ctx->pin_failures, ctx->elapsed_s, ctx->nivcsw);
    for (int i = 0; i < ctx->ncpus; i++)
        fprintf(fp, "%s%.2f", i ? ", " : "", ctx->steal_pct[i]);
    fprintf(fp, "],\n");
    fprintf(fp, "  \"features\": {\"avx2\": %d, \"fma\": %d, \"avx512f\": %d, \"avx512vnni\": %d, "
                "\"avx512bf16\": %d, \"avxvnni\": %d, \"amx_tile\": %d, \"amx_int8\": %d, "
                "\"amx_bf16\": %d, \"xcr0\": \"0x%llx\"},\n",
            f->avx2, f->fma, f->avx512f, f->avx512vnni, f->avx512bf16, f->avxvnni,
            f->amx_tile, f->amx_int8, f->amx_bf16, (unsigned long long)f->xcr0);
    fprintf(fp, "  \"amx\": {\"ok\": %s, \"report\": ", ctx->amx_ok ? "true" : "false");
    json_string(fp, ctx->amx_report);
    fprintf(fp, ", \"probe_with_perm\": ");
    json_string(fp, ctx->amx_with);
    fprintf(fp, ", \"probe_without_perm\": ");
    json_string(fp, ctx->amx_without);
    fprintf(fp, "},\n  \"openblas\": {\"corename\": ");
    json_string(fp, ctx->blas_corename);
    fprintf(fp, ", \"coretype_env\": ");
    json_string(fp, ctx->blas_coretype_env);
    fprintf(fp, ", \"config\": ");
    json_string(fp, ctx->blas_config);
    fprintf(fp, ", \"pinning\": ");
    json_string(fp, ctx->blas_pinning);
    fprintf(fp, "},\n  \"mem_bytes\": %zu,\n  \"results\": [\n", ctx->mem_bytes);
    for (int i = 0; i < ctx->nrows; i++) {
        const bench_row *r = &ctx->rows[i];
        fprintf(fp, "    {\"key\": ");
        json_string(fp, r->key);
        fprintf(fp, ", \"label\": ");
        json_string(fp, r->label);
        fprintf(fp, ", \"unit\": ");
        json_string(fp, r->unit);
        if (r->note[0]) {
            fprintf(fp, ", \"note\": ");
            json_string(fp, r->note);
        }
        fprintf(fp, ", \"threads\": {");
        bool first = true;
        for (int n = 0; n < BENCH_MAX_THREADS; n++) {
            const bench_cell *c = &r->cell[n];
            if (!c->have)
                continue;
            fprintf(fp, "%s\"%d\": {\"median\": %.3f, \"max\": %.3f, \"contended\": %d, "
                        "\"discarded\": %d, \"samples\": [",
                    first ? "" : ", ", n + 1, c->median, c->max, c->contended, c->discarded);
            for (int s = 0; s < (ctx->quick ? 2 : BENCH_REPS); s++)
                fprintf(fp, "%s%.3f", s ? ", " : "", c->samples[s]);
            fprintf(fp, "]}");
            first = false;
        }
        fprintf(fp, "}}%s\n", i + 1 < ctx->nrows ? "," : "");
    }
    fprintf(fp, "  ]\n}\n");
}

/* ---- main ---------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: machine [--json] [--json-out FILE] [--mem-gib N] [--quick]\n"
            "  --json          print JSON on stdout instead of the table\n"
            "  --json-out FILE also write the JSON to FILE\n"
            "  --mem-gib N     bandwidth buffer size in GiB (default 4; 1 with --quick)\n"
            "  --quick         short runs, for smoke tests only\n"
            "  --only LIST     run only these of clock,mem,compute,blas\n");
}

static bool section_wanted(const char *only, const char *name)
{
    if (!only)
        return true;
    size_t len = strlen(name);
    for (const char *p = only; (p = strstr(p, name)) != NULL; p += len)
        if ((p == only || p[-1] == ',') && (p[len] == 0 || p[len] == ','))
            return true;
    return false;
}

/* Jiffies the hypervisor ran something else while this CPU wanted to run
 * (the "steal" column of /proc/stat); 0 when unreadable. */
static uint64_t steal_jiffies(int cpu)
{
    FILE *fp = fopen("/proc/stat", "r");
    if (!fp)
        return 0;
    char line[512], name[16];
    uint64_t steal = 0;
    snprintf(name, sizeof name, "cpu%d ", cpu);
    while (fgets(line, sizeof line, fp)) {
        unsigned long long v[8];
        if (strncmp(line, name, strlen(name)) == 0 &&
            sscanf(line + strlen(name), "%llu %llu %llu %llu %llu %llu %llu %llu",
                   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
            steal = v[7];
            break;
        }
    }
    fclose(fp);
    return steal;
}

/* The first BENCH_MAX_THREADS CPUs this process may run on. */
static void cpus_pick(bench_ctx *ctx)
{
    cpu_set_t set;
    ctx->ncpus = 0;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        ctx->cpus[ctx->ncpus++] = 0;
        return;
    }
    for (int c = 0; c < CPU_SETSIZE && ctx->ncpus < BENCH_MAX_THREADS; c++)
        if (CPU_ISSET(c, &set))
            ctx->cpus[ctx->ncpus++] = c;
}

/* Shrinks the bandwidth buffer when free memory is short; keeps it a
 * multiple of 512 bytes per thread. */
static size_t mem_size_pick(double gib)
{
    double want = gib * (double)(1u << 30);
    long avail_pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (avail_pages > 0 && page > 0) {
        double avail = (double)avail_pages * (double)page;
        if (want > 0.6 * avail) {
            say("machine: only %.1f GiB free; bandwidth buffer reduced\n", avail / (1u << 30));
            want = 0.6 * avail;
        }
    }
    size_t unit = (size_t)BENCH_MAX_THREADS * (2u << 20);  /* 2 MiB huge pages */
    size_t bytes = (size_t)want / unit * unit;
    return bytes ? bytes : unit;
}

int main(int argc, char **argv)
{
    static bench_ctx ctx_storage;    /* large: rows hold samples */
    bench_ctx *ctx = &ctx_storage;
    double mem_gib = 0;             /* 0: 4 GiB, or 1 GiB with --quick */
    const char *only = NULL;        /* comma-separated sections, NULL: all */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            ctx->json = true;
        else if (strcmp(argv[i], "--json-out") == 0 && i + 1 < argc)
            ctx->json_out = argv[++i];
        else if (strcmp(argv[i], "--mem-gib") == 0 && i + 1 < argc)
            mem_gib = atof(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0)
            ctx->quick = true;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            usage();
            return 2;
        }
    }
    if (only) {
        /* Every name in the list must be a section. */
        char list[128];
        snprintf(list, sizeof list, "%s", only);
        for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (strcmp(t, "clock") && strcmp(t, "mem") && strcmp(t, "compute") && strcmp(t, "blas")) {
                usage();
                return 2;
            }
    }
    if (mem_gib == 0)
        mem_gib = ctx->quick ? 1.0 : 4.0;
    if (!(mem_gib > 0)) {
        usage();
        return 2;
    }
    snprintf(ctx->blas_corename, sizeof ctx->blas_corename, "(not run)");
    snprintf(ctx->blas_coretype_env, sizeof ctx->blas_coretype_env, "%s",
             getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
    cpu_detect(&ctx->cpu);
    cpu_model_read(ctx->cpu_model, sizeof ctx->cpu_model);
    cpus_pick(ctx);
    ctx->mem_bytes = mem_size_pick(mem_gib);
    openblas_set_num_threads(1);    /* keep its workers asleep until the end */

    double t0 = now_s();
    amx_probe(ctx);
    say("machine: %s\n", ctx->amx_report);
    if (ctx->amx_with[0])
        say("machine: AMX probe with permission: %s\nmachine: AMX probe without: %s\n",
            ctx->amx_with, ctx->amx_without);
    if (ctx->amx_ok) {
        /* Permission is per process; threads created later inherit it. */
        long rc = amx_request_perm();
        if (rc != 0) {
            ctx->amx_ok = false;
            snprintf(ctx->amx_report, sizeof ctx->amx_report,
                     "AMX unavailable: arch_prctl(REQ_XCOMP_PERM) failed in the parent: %s",
                     strerror(errno));
        }
    }
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t steal0[BENCH_MAX_THREADS];
    for (int i = 0; i < ctx->ncpus; i++)
        steal0[i] = steal_jiffies(ctx->cpus[i]);
    if (section_wanted(only, "clock"))
        bench_clock(ctx);
    if (section_wanted(only, "mem"))
        bench_memory(ctx);
    if (section_wanted(only, "compute"))
        bench_compute(ctx);
    if (section_wanted(only, "blas"))
        bench_blas(ctx);
    ctx->elapsed_s = now_s() - t0;
    for (int i = 0; i < ctx->ncpus; i++)
        ctx->steal_pct[i] = 100.0 * (double)(steal_jiffies(ctx->cpus[i]) - steal0[i]) /
                            (double)sysconf(_SC_CLK_TCK) / ctx->elapsed_s;
    getrusage(RUSAGE_SELF, &ru1);
    ctx->nivcsw = ru1.ru_nivcsw - ru0.ru_nivcsw;
    say("machine: done in %.1f s\n", ctx->elapsed_s);

    if (ctx->json)
        print_json(ctx, stdout);
    else
        print_table(ctx, stdout);
    if (ctx->json_out) {
        FILE *fp = fopen(ctx->json_out, "w");
        if (!fp) {
            say("machine: cannot write %s: %s\n", ctx->json_out, strerror(errno));
            return 1;
        }
        print_json(ctx, fp);
        fclose(fp);
    }
    if (ctx->pin_failures)
        say("machine: WARNING: %d worker(s) did not run on their CPU; figures suspect\n",
            ctx->pin_failures);
    return 0;
}
