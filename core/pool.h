/* moegate — the engine's thread pool.
 *
 * One worker per core, each pinned to its own CPU, plus the calling thread,
 * which takes part as thread 0. pool_run() runs fn(ctx, ith, nth) on every
 * thread and returns when all have finished: that return is the barrier
 * between two operations of the forward pass. Kernels split their rows by
 * (ith, nth); they never create threads.
 *
 * Waiting never relies on pure spinning: an idle worker spins briefly (cheap
 * when operations follow each other within microseconds, as in a forward
 * pass) and then sleeps on a futex. On the VMs we run on, unpinned threads
 * sometimes share one vCPU; pinning plus bounded spinning keeps one slow peer
 * from collapsing throughput.
 *
 * Thread safety: pool_run must be called by one thread at a time (the
 * engine's scheduler thread); fn runs concurrently on all pool threads.
 */
#ifndef MOEGATE_CORE_POOL_H
#define MOEGATE_CORE_POOL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pool pool;

typedef void (*pool_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0 means one per physical core of the process's affinity mask.
 * pin: bind thread i to its own CPU — one logical CPU of each physical core
 * first, hyper-thread siblings after (the calling thread is pinned too, for
 * the pool's lifetime). No pinning when there are more threads than CPUs. */
int pool_create(pool **out, int n_threads, bool pin, char *err, size_t errlen);
void pool_free(pool *p); /* accepts NULL; joins the workers */
int pool_size(const pool *p);

/* The calling thread takes worker 0's place: pinned to its CPU (pin), or
 * back to the affinity mask the creating thread had (!pin). For a thread
 * other than the creator that will call pool_run from now on (a scheduler),
 * and for the creator once it hands the pool over. No-op when the pool does
 * not pin. */
void pool_pin_thread(const pool *p, bool pin);

/* Runs fn on all threads (the caller is ith 0) and waits for all. */
void pool_run(pool *p, pool_fn fn, void *ctx);

/* Number of CPUs this process may run on (sched_getaffinity). */
int pool_cpu_count(void);
/* Number of physical cores among them (sysfs topology). */
int pool_physical_cores(void);

#endif
