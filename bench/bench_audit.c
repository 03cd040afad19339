/* moegate — audit writer benchmark: sustained records/s into PostgreSQL
 * with the hash chain, checkpoints and 1 KB payloads, and the latency the
 * writer adds to a request.
 *
 *   bench_audit --db-env VAR --spool DIR [--n N] [--payload BYTES]
 *               [--batches 512,4096] [--threads 64] [--json FILE]
 *
 * Throughput rows: T client threads submit N records in all; strict mode
 * waits for each record's durability before the next (closed loop, so the
 * group-commit batch size is about T), async only submits. The clock runs
 * from the first submit until every record is committed to PostgreSQL
 * (async: the writer's `written` counter reaches N). synchronous_commit is
 * on throughout: each transaction waits for its WAL flush.
 *
 * Latency rows: 16 closed-loop threads, p50/p99 of audit_submit +
 * audit_wait_durable (strict) or of audit_submit alone (async): what the
 * writer adds to a request that has otherwise finished.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/errors.h"

typedef struct run {
    audit_writer *w;
    int strict, per_thread, payload, tid;
    const char *prefix;
    double *lat; /* per record, seconds; NULL: not recorded */
    int failures;
} run;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void *client(void *arg)
{
    run *r = arg;
    char *prompt = malloc((size_t)r->payload);
    if (!prompt)
        return NULL;
    for (int i = 0; i < r->payload; i++)
        prompt[i] = (char)('a' + (i * 7 + r->tid) % 26);
    for (int i = 0; i < r->per_thread; i++) {
        char id[96], err[256];
        snprintf(id, sizeof id, "%s-%d-%d", r->prefix, r->tid, i);
        int64_t t = now_us();
        audit_record rec = {
            .request_id = id, .received_us = t - 2000, .finished_us = t, .tenant = "bench",
            .key_id = "key-1", .client_addr = "10.1.2.3", .endpoint = "/v1/chat/completions",
            .domain = "finance", .model_sha256 =
                "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
            .sampling = "{\"temperature\":0.7}", .prompt_tokens = 256, .completion_tokens = 64,
            .status = 200, .latency_us = 2000, .payload_mode = AUDIT_PAYLOAD_CLEAR,
            .prompt = prompt, .prompt_len = (size_t)r->payload, .completion = "ok",
            .completion_len = 2};
        double t0 = now_s();
        uint64_t ticket;
        if (audit_submit(r->w, &rec, &ticket, err, sizeof err) ||
            (r->strict && audit_wait_durable(r->w, ticket, 60000))) {
            r->failures++;
            continue;
        }
        if (r->lat)
            r->lat[i] = now_s() - t0;
    }
    free(prompt);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    double rps, p50_ms, p99_ms, avg_batch;
} result;

static int run_one(const char *conninfo, const char *spool, const char *ckpt_key, int strict,
                   int batch, int threads, int n, int payload, bool latency, const char *tag,
                   result *res)
{
    char wid[64], err[512];
    snprintf(wid, sizeof wid, "bench-%s-%d-%d", tag, (int)getpid(), rand() % 100000);
    audit_opts o = {.conninfo = conninfo, .writer_id = wid, .spool_dir = spool,
                    .durability = strict ? AUDIT_DURABILITY_STRICT : AUDIT_DURABILITY_ASYNC,
                    .max_batch = batch, .queue_capacity = 65536,
                    .checkpoint_key_file = ckpt_key, .checkpoint_every = 10000};
    audit_writer *w;
    if (audit_writer_open(&w, &o, err, sizeof err)) {
        fprintf(stderr, "bench_audit: %s\n", err);
        return 1;
    }
    /* warm up: connection, partition check, chain head */
    audit_record warm = {.request_id = "warm", .received_us = now_us(), .finished_us = now_us(),
                         .payload_mode = AUDIT_PAYLOAD_NONE};
    char wid2[96];
    snprintf(wid2, sizeof wid2, "%s-warm", wid);
    warm.request_id = wid2;
    uint64_t tk;
    if (audit_submit(w, &warm, &tk, err, sizeof err) || audit_wait_durable(w, tk, 30000)) {
        fprintf(stderr, "bench_audit: warm-up record not durable (database reachable?)\n");
        audit_writer_close(w, NULL, 0);
        return 1;
    }
    audit_stats s0;
    audit_writer_stats(w, &s0);
    run *rs = calloc((size_t)threads, sizeof *rs);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    int per = n / threads;
    for (int t = 0; t < threads; t++) {
        rs[t] = (run){w, strict, per, payload, t, wid, NULL, 0};
        if (latency)
            rs[t].lat = calloc((size_t)per, sizeof(double));
    }
    double t0 = now_s();
    for (int t = 0; t < threads; t++)
        pthread_create(&th[t], NULL, client, &rs[t]);
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    /* until everything is in PostgreSQL */
    audit_stats st;
    for (;;) {
        audit_writer_stats(w, &st);
        if (st.written - s0.written >= (uint64_t)per * (uint64_t)threads)
            break;
        usleep(200);
    }
    double dt = now_s() - t0;
    int failures = 0;
    for (int t = 0; t < threads; t++)
        failures += rs[t].failures;
    res->rps = (double)per * threads / dt;
    res->avg_batch = (double)(st.written - s0.written) /
                     (double)(st.transactions - s0.transactions ? st.transactions - s0.transactions : 1);
    if (latency) {
        size_t m = (size_t)per * (size_t)threads;
        double *all = malloc(sizeof(double) * m);
        for (int t = 0; t < threads; t++)
            memcpy(all + (size_t)t * (size_t)per, rs[t].lat, sizeof(double) * (size_t)per);
        qsort(all, m, sizeof(double), cmp_d);
        res->p50_ms = all[m / 2] * 1e3;
        res->p99_ms = all[m * 99 / 100] * 1e3;
        free(all);
    }
    for (int t = 0; t < threads; t++)
        free(rs[t].lat);
    free(rs);
    free(th);
    int rc = audit_writer_close(w, err, sizeof err);
    if (rc || failures || st.spooled != s0.spooled) {
        fprintf(stderr, "bench_audit: %d failures, %llu spooled, close: %s\n", failures,
                (unsigned long long)(st.spooled - s0.spooled), rc ? err : "ok");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *db_env = NULL, *spool = NULL, *batches = "512,4096", *ckpt_key = NULL;
    const char *threads_list = "64,256";
    int n = 100000, payload = 1024, reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--db-env"))
            db_env = v;
        else if (!strcmp(a, "--spool"))
            spool = v;
        else if (!strcmp(a, "--n"))
            n = atoi(v);
        else if (!strcmp(a, "--payload"))
            payload = atoi(v);
        else if (!strcmp(a, "--batches"))
            batches = v;
        else if (!strcmp(a, "--threads"))
            threads_list = v;
        else if (!strcmp(a, "--reps"))
            reps = atoi(v);
        else if (!strcmp(a, "--ckpt-key"))
            ckpt_key = v;
        else {
            fprintf(stderr, "bench_audit: unknown option %s\n", a);
            return 2;
        }
    }
    if (!db_env || !getenv(db_env) || !spool || n < 1000 || payload < 1 || reps < 1 ||
        reps > 9) {
        fprintf(stderr, "usage: bench_audit --db-env VAR --spool DIR [--n N] [--payload B] "
                        "[--batches 512,4096] [--threads 64,256] [--ckpt-key PEM]\n");
        return 2;
    }
    const char *conninfo = getenv(db_env);
    srand((unsigned)time(NULL));
    /* every configuration once per round, rounds interleaved, medians
     * reported: the table grows and the VM's disk drifts during a run, and
     * interleaving spreads both over all rows alike */
    int cb[16], ct[16], cs[16], nc = 0;
    char bl[256];
    snprintf(bl, sizeof bl, "%s", batches);
    for (char *save = NULL, *b = strtok_r(bl, ",", &save); b; b = strtok_r(NULL, ",", &save)) {
        char tl[256];
        snprintf(tl, sizeof tl, "%s", threads_list);
        for (char *s2 = NULL, *t = strtok_r(tl, ",", &s2); t; t = strtok_r(NULL, ",", &s2))
            for (int strict = 0; strict <= 1 && nc < 16; strict++) {
                cb[nc] = atoi(b);
                ct[nc] = atoi(t);
                cs[nc] = strict;
                if (cb[nc] < 1 || ct[nc] < 1 || ct[nc] > 4096) {
                    fprintf(stderr, "bench_audit: bad batch or thread count\n");
                    return 2;
                }
                nc++;
            }
    }
    double rps[16][9], per_tx[16][9];
    for (int rep = 0; rep < reps; rep++)
        for (int c = 0; c < nc; c++) {
            result r;
            if (run_one(conninfo, spool, ckpt_key, cs[c], cb[c], ct[c], n, payload, false,
                        cs[c] ? "s" : "a", &r))
                return 1;
            rps[c][rep] = r.rps;
            per_tx[c][rep] = r.avg_batch;
            fprintf(stderr, "bench_audit: round %d: %s batch %d threads %d: %.0f records/s\n",
                    rep + 1, cs[c] ? "strict" : "async", cb[c], ct[c], r.rps);
        }
    printf("| mode | max batch | client threads | records per round | payload | records/s "
           "(median of %d) | min..max | records per transaction |\n"
           "|---|---|---|---|---|---|---|---|\n", reps);
    for (int c = 0; c < nc; c++) {
        double lo = rps[c][0], hi = rps[c][0];
        for (int k = 1; k < reps; k++) {
            lo = rps[c][k] < lo ? rps[c][k] : lo;
            hi = rps[c][k] > hi ? rps[c][k] : hi;
        }
        qsort(rps[c], (size_t)reps, sizeof(double), cmp_d);
        qsort(per_tx[c], (size_t)reps, sizeof(double), cmp_d);
        printf("| %s | %d | %d | %d | %d B | %.0f | %.0f..%.0f | %.0f |\n",
               cs[c] ? "strict" : "async", cb[c], ct[c], n, payload, rps[c][reps / 2], lo, hi,
               per_tx[c][reps / 2]);
    }
    fflush(stdout);
    printf("\n| mode | client threads | records | p50 ms | p99 ms | measured |\n"
           "|---|---|---|---|---|---|\n");
    for (int strict = 1; strict >= 0; strict--) {
        result r;
        int lt = 16, ln = n / 5 < 20000 ? n / 5 : 20000;
        if (run_one(conninfo, spool, ckpt_key, strict, 4096, lt, ln, payload, true,
                    strict ? "ls" : "la", &r))
            return 1;
        printf("| %s | %d | %d | %.3f | %.3f | %s |\n", strict ? "strict" : "async", lt, ln,
               r.p50_ms, r.p99_ms,
               strict ? "audit_submit + audit_wait_durable" : "audit_submit");
        fflush(stdout);
    }
    return 0;
}
