/* moegate — thread pool (see pool.h for the contract).
 *
 * Protocol: the caller publishes (fn, ctx), sets `pending` to the number of
 * workers, then bumps `generation` and wakes sleepers. A worker that sees a
 * new generation runs fn and decrements `pending`; the last one wakes the
 * caller if it went to sleep. Every shared field is an atomic; acquire and
 * release ordering on generation/pending publish the job and its results.
 *
 * Spinning is bounded (SPIN_ITERS pause instructions, a few tens of
 * microseconds) before a futex wait, so an oversubscribed core degrades
 * gracefully instead of burning its peer's time slice.
 */
#include "pool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "errors.h"

#define SPIN_ITERS 20000
#define POOL_MAX_THREADS 512

typedef struct worker {
    pool *p;
    int ith;
    int cpu; /* -1: not pinned */
    pthread_t tid;
} worker;

struct pool {
    int nth;
    bool pin;
    worker *workers; /* [nth], workers[0] is the caller */
    /* The job; written by the caller before generation is bumped. */
    pool_fn fn;
    void *ctx;
    /* generation: guarded by atomics; futex word for sleeping workers. */
    _Atomic uint32_t generation;
    _Atomic int pending;      /* workers still running the current job */
    _Atomic uint32_t done_ft; /* futex word the caller sleeps on */
    _Atomic int stop;
    /* Threads inside (or about to enter) a futex wait; lets the common case,
     * where everyone is still spinning, skip the wake syscalls. Dekker-style:
     * the waker bumps the word then reads the counter, the sleeper bumps the
     * counter then re-reads the word inside futex_wait, all seq_cst. */
    _Atomic int sleepers;
    _Atomic int caller_sleeping;
    /* The caller's CPU mask before pool_create pinned it; restored by
     * pool_free, so a later pool (or any thread the caller starts) does not
     * inherit a one-CPU mask. */
    cpu_set_t caller_mask;
    bool caller_pinned;
};

static long futex_wait(_Atomic uint32_t *addr, uint32_t expected)
{
    return syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static long futex_wake(_Atomic uint32_t *addr, int n)
{
    return syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    __asm__ volatile("" ::: "memory");
#endif
}

static void pin_to(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pool *p = w->p;
    pin_to(w->cpu);
    uint32_t seen = 0;
    for (;;) {
        /* wait for a new generation: spin, then sleep */
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
            } else {
                atomic_fetch_add(&p->sleepers, 1);
                futex_wait(&p->generation, seen);
                atomic_fetch_sub(&p->sleepers, 1);
                spins = 0;
            }
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        p->fn(p->ctx, w->ith, p->nth);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            atomic_fetch_add(&p->done_ft, 1);
            if (atomic_load(&p->caller_sleeping))
                futex_wake(&p->done_ft, 1);
        }
    }
}

int pool_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Reads a small integer from a sysfs file; -1 when unavailable. */
static int read_sysfs_int(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

/* The CPUs threads are pinned to, in order: first one logical CPU of each
 * physical core (package, core_id) in the affinity mask, then the remaining
 * hyper-thread siblings. Returns the count; *n_phys gets the number of
 * physical cores. Without sysfs topology every CPU counts as a core. */
static int cpu_order(int *cpus, int cap, int *n_phys)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        *n_phys = 0;
        return 0;
    }
    int key[CPU_SETSIZE], all[CPU_SETSIZE], n_all = 0;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set))
            continue;
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        int core = read_sysfs_int(path);
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        int pkg = read_sysfs_int(path);
        key[n_all] = core < 0 ? -1 - c : (pkg < 0 ? 0 : pkg) * 65536 + core;
        all[n_all++] = c;
    }
    bool used[CPU_SETSIZE] = {false};
    for (int i = 0; i < n_all && n < cap; i++) { /* first sibling of each core */
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen |= key[j] == key[i];
        if (!seen) {
            cpus[n++] = all[i];
            used[i] = true;
        }
    }
    *n_phys = n;
    for (int i = 0; i < n_all && n < cap; i++)
        if (!used[i])
            cpus[n++] = all[i];
    return n;
}

int pool_physical_cores(void)
{
    int cpus[CPU_SETSIZE];
    int n_phys;
    cpu_order(cpus, CPU_SETSIZE, &n_phys);
    return n_phys > 0 ? n_phys : pool_cpu_count();
}

int pool_create(pool **out, int n_threads, bool pin, char *err, size_t errlen)
{
    if (n_threads <= 0)
        n_threads = pool_physical_cores();
    if (n_threads > POOL_MAX_THREADS) {
        mg_err_set(err, errlen, "pool: %d threads requested, at most %d", n_threads,
                   POOL_MAX_THREADS);
        return MG_ERANGE;
    }
    pool *p = calloc(1, sizeof(*p));
    if (!p)
        goto nomem;
    p->nth = n_threads;
    p->pin = pin;
    p->workers = calloc((size_t)n_threads, sizeof(worker));
    if (!p->workers)
        goto nomem;
    /* Pin only when there are enough CPUs for one thread each: two pinned
     * threads on one CPU would be worse than letting the kernel move them. */
    int cpus[CPU_SETSIZE], n_phys;
    int n_cpus = cpu_order(cpus, CPU_SETSIZE, &n_phys);
    bool do_pin = pin && n_threads <= n_cpus;
    for (int i = 0; i < n_threads; i++) {
        p->workers[i].p = p;
        p->workers[i].ith = i;
        p->workers[i].cpu = do_pin ? cpus[i] : -1;
    }
    if (do_pin && sched_getaffinity(0, sizeof(p->caller_mask), &p->caller_mask) == 0) {
        pin_to(p->workers[0].cpu);
        p->caller_pinned = true;
    }
    for (int i = 1; i < n_threads; i++) {
        int rc = pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]);
        if (rc != 0) {
            mg_err_set(err, errlen, "pool: cannot start worker %d: %s", i, strerror(rc));
            p->nth = i; /* join the ones started */
            pool_free(p);
            return MG_ENOMEM;
        }
    }
    *out = p;
    return MG_OK;
nomem:
    if (p)
        free(p->workers);
    free(p);
    mg_err_set(err, errlen, "pool: out of memory");
    return MG_ENOMEM;
}

void pool_free(pool *p)
{
    if (!p)
        return;
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_acq_rel);
    futex_wake(&p->generation, INT32_MAX);
    for (int i = 1; i < p->nth; i++)
        pthread_join(p->workers[i].tid, NULL);
    if (p->caller_pinned)
        pthread_setaffinity_np(pthread_self(), sizeof(p->caller_mask), &p->caller_mask);
    free(p->workers);
    free(p);
}

void pool_pin_thread(const pool *p, bool pin)
{
    if (!p->caller_pinned)
        return;
    if (pin)
        pin_to(p->workers[0].cpu);
    else
        pthread_setaffinity_np(pthread_self(), sizeof(p->caller_mask), &p->caller_mask);
}

int pool_size(const pool *p)
{
    return p ? p->nth : 1;
}

void pool_run(pool *p, pool_fn fn, void *ctx)
{
    if (!p || p->nth == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    uint32_t done_seen = atomic_load_explicit(&p->done_ft, memory_order_acquire);
    atomic_store(&p->pending, p->nth - 1);
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers) > 0)
        futex_wake(&p->generation, INT32_MAX);
    fn(ctx, 0, p->nth);
    int spins = 0;
    while (atomic_load(&p->pending) != 0) {
        if (++spins < SPIN_ITERS) {
            cpu_relax();
        } else {
            atomic_store(&p->caller_sleeping, 1);
            if (atomic_load(&p->pending) != 0)
                futex_wait(&p->done_ft, done_seen);
            atomic_store(&p->caller_sleeping, 0);
            done_seen = atomic_load(&p->done_ft);
            spins = 0;
        }
    }
}
