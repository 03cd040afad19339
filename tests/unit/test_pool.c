/* Thread pool: every thread runs each job exactly once, results are visible
 * after pool_run returns, and many back-to-back runs (the forward pass's
 * pattern) neither lose nor duplicate work, including after workers have
 * gone to sleep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>

#include "core/pool.h"

typedef struct job {
    _Atomic int calls;
    int seen[64];
    int64_t sum[64];
    int64_t n;
} job;

static void count_fn(void *arg, int ith, int nth)
{
    job *j = arg;
    atomic_fetch_add(&j->calls, 1);
    j->seen[ith]++;
    int64_t s = 0;
    for (int64_t i = j->n * ith / nth; i < j->n * (ith + 1) / nth; i++)
        s += i;
    j->sum[ith] = s;
}

static void run_many(int nth, int rounds, int sleep_every)
{
    pool *p;
    char err[128];
    assert_int_equal(pool_create(&p, nth, true, err, sizeof err), 0);
    assert_int_equal(pool_size(p), nth);
    for (int r = 0; r < rounds; r++) {
        job j;
        memset(&j, 0, sizeof j);
        j.n = 1000 + r;
        pool_run(p, count_fn, &j);
        assert_int_equal(atomic_load(&j.calls), nth);
        int64_t total = 0;
        for (int t = 0; t < nth; t++) {
            assert_int_equal(j.seen[t], 1);
            total += j.sum[t];
        }
        assert_int_equal(total, j.n * (j.n - 1) / 2);
        if (sleep_every && r % sleep_every == 0)
            usleep(20000); /* long enough for workers to go to sleep */
    }
    pool_free(p);
}

static void test_single_thread(void **st)
{
    (void)st;
    run_many(1, 100, 0);
}

static void test_two_threads_hot(void **st)
{
    (void)st;
    run_many(2, 20000, 0);
}

static void test_sleep_wake(void **st)
{
    (void)st;
    run_many(2, 60, 3);
}

static void test_oversubscribed(void **st)
{
    (void)st;
    run_many(8, 2000, 500); /* more threads than CPUs: unpinned, must still work */
}

typedef struct where {
    int cpu[8];
} where;

static void where_fn(void *arg, int ith, int nth)
{
    (void)nth;
    ((where *)arg)->cpu[ith] = sched_getcpu();
}

/* Regression: a pool pinned the caller to one CPU and a later pool's worker
 * inherited that one-CPU mask, so both threads shared a core (2 threads ran
 * at 1-thread speed). pool_free must restore the caller's mask and each
 * pool's threads must sit on distinct CPUs. */
static void test_pools_in_sequence_use_distinct_cpus(void **st)
{
    (void)st;
    if (pool_cpu_count() < 2)
        skip();
    cpu_set_t before, after;
    assert_int_equal(sched_getaffinity(0, sizeof before, &before), 0);
    char err[128];
    for (int round = 0; round < 3; round++) {
        for (int nth = 1; nth <= 2; nth++) {
            pool *p;
            assert_int_equal(pool_create(&p, nth, true, err, sizeof err), 0);
            where w;
            memset(&w, 0xff, sizeof w);
            for (int r = 0; r < 50; r++) {
                pool_run(p, where_fn, &w);
                if (nth == 2)
                    assert_int_not_equal(w.cpu[0], w.cpu[1]);
            }
            pool_free(p);
            assert_int_equal(sched_getaffinity(0, sizeof after, &after), 0);
            assert_true(CPU_EQUAL(&before, &after));
        }
    }
}

static void test_bad_count(void **st)
{
    (void)st;
    pool *p = NULL;
    char err[128] = "";
    assert_int_not_equal(pool_create(&p, 100000, true, err, sizeof err), 0);
    assert_null(p);
    assert_non_null(strstr(err, "threads"));
    pool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_thread), cmocka_unit_test(test_two_threads_hot),
        cmocka_unit_test(test_sleep_wake),    cmocka_unit_test(test_oversubscribed),
        cmocka_unit_test(test_bad_count),
        cmocka_unit_test(test_pools_in_sequence_use_distinct_cpus),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
