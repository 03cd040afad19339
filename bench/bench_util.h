/* bench_util.h — what the serving benchmarks share: a clock, medians, a
 * seeded generator, a fatal error, and "submit these requests to a
 * scheduler, wait for all, time them". A file defines BENCH_PROG (its name,
 * for messages) before including it. */
#ifndef MOEGATE_BENCH_UTIL_H
#define MOEGATE_BENCH_UTIL_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/serve.h"

#ifndef BENCH_PROG
#define BENCH_PROG "bench"
#endif

static inline void die(const char *msg)
{
    fprintf(stderr, BENCH_PROG ": %s\n", msg);
    exit(1);
}

/* xorshift64: deterministic prompts and adapter values */
static inline uint32_t bench_rnd(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (uint32_t)(*state >> 16);
}

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct bench_track {
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *n_done;
    int n_tokens;
    double t_first, t_end;
} bench_track;

static inline void bench_on_token(void *ud, const char *text, size_t len, int32_t token, enum serve_finish f)
{
    (void)text;
    (void)len;
    bench_track *t = ud;
    if (token >= 0 && f == SERVE_RUNNING && t->n_tokens++ == 0)
        t->t_first = bench_now();
    if (f != SERVE_RUNNING) {
        t->t_end = bench_now();
        pthread_mutex_lock(t->mu);
        ++*t->n_done;
        pthread_cond_signal(t->cv);
        pthread_mutex_unlock(t->mu);
    }
}

/* Submits n greedy requests (end-of-turn ignored, gen tokens each; ad[i]
 * the adapter of request i, ad may be NULL) and waits for all. tr[i] gets
 * request i's first-token and end times. Returns the aggregate decode rate:
 * tokens generated after every request has its first / the time from then
 * to the last end. Exits on a refused request. */
static inline double bench_generate(serve *s, int32_t *const *prompts, const int *lens, int n, int gen,
                                    model_lora *const *ad, bench_track *tr)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int n_done = 0;
    char err[256];
    for (int i = 0; i < n; i++) {
        tr[i] = (bench_track){&mu, &cv, &n_done, 0, 0, 0};
        serve_params p = {.sampling = sampler_defaults(), .max_tokens = gen, .ignore_eos = true,
                          .lora = ad ? ad[i] : NULL};
        p.sampling.temperature = 0;
        uint64_t id;
        if (serve_submit(s, prompts[i], (size_t)lens[i], &p, bench_on_token, &tr[i], &id, err, sizeof err)) {
            fprintf(stderr, "bench: %s\n", err);
            exit(1);
        }
    }
    pthread_mutex_lock(&mu);
    while (n_done < n)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    double t_first = 0, t_end = 0;
    long toks = 0;
    for (int i = 0; i < n; i++) {
        t_first = tr[i].t_first > t_first ? tr[i].t_first : t_first;
        t_end = tr[i].t_end > t_end ? tr[i].t_end : t_end;
        toks += tr[i].n_tokens - 1;
    }
    return t_end > t_first ? (double)toks / (t_end - t_first) : 0;
}

#endif
