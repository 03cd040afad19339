/* moegate — audit test driver: simulates the gateway's use of the writer.
 *
 * T threads each submit N/T records (request ids PREFIX-t-i) and, in strict
 * mode, wait for audit_wait_durable before printing "completed ID"
 * (flushed, one write per line), which stands for "the last byte of the
 * response was sent". The kill -9 test relies on exactly that: every id
 * printed must be in PostgreSQL or the spool. At the end it closes the
 * writer and prints one "stats" line. With --n 0 it only opens and closes,
 * which replays a spool left by a killed process.
 *
 *   tool_audit_load --db-env VAR --spool DIR --writer ID [--n N] [--threads T]
 *       [--async] [--mode none|clear|sha256|aes] [--key FILE] [--payload-bytes B]
 *       [--ckpt-key PEM --ckpt-file FILE --ckpt-every N] [--prefix P]
 *       [--sleep-ms MS] [--received-days-ago D] [--spool-max BYTES]
 *       [--probe-unwritable] [--close-ms MS] [--tenant T]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/errors.h"

static audit_writer *W;
static int N = 100, T = 4, SLEEP_MS = 0, PAYLOAD = 64, STRICT = 1;
static audit_payload_mode MODE = AUDIT_PAYLOAD_CLEAR;
static const char *PREFIX = "req", *TENANT = "acme";
static int64_t DAYS_AGO = 0;
static int failures = 0;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The prompt text of request id: deterministic, so tests can check it. */
static void make_prompt(char *buf, size_t len, const char *id)
{
    size_t n = (size_t)snprintf(buf, len, "prompt of %s: ", id);
    for (; n + 1 < len; n++)
        buf[n] = (char)('a' + n % 26);
    buf[len - 1] = 0;
}

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    int per = N / T + (t < N % T);
    char *prompt = malloc((size_t)PAYLOAD + 1);
    if (!prompt)
        return NULL;
    for (int i = 0; i < per; i++) {
        char id[96], err[512];
        snprintf(id, sizeof id, "%s-%d-%d", PREFIX, t, i);
        make_prompt(prompt, (size_t)PAYLOAD + 1, id);
        int64_t fin = now_us() - DAYS_AGO * 86400000000LL;
        audit_record r = {
            .request_id = id, .received_us = fin - 1500, .finished_us = fin,
            .tenant = TENANT, .key_id = "key-1", .client_addr = "127.0.0.1",
            .client_subject = "CN=client,O=Test", .endpoint = "/v1/chat/completions",
            .domain = "finance", .adapter_name = "finance-lora",
            .adapter_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            .model_sha256 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
            .sampling = "{\"temperature\":0.7,\"top_p\":0.9}", .prompt_tokens = 12,
            .completion_tokens = 34, .status = 200, .latency_us = 1500,
            .redaction = "{\"email\":1}", .payload_mode = MODE, .prompt = prompt,
            .prompt_len = strlen(prompt), .completion = "the answer", .completion_len = 10};
        uint64_t ticket;
        int rc = audit_submit(W, &r, &ticket, err, sizeof err);
        if (rc) {
            pthread_mutex_lock(&out_mu);
            fprintf(stderr, "submit %s: %s\n", id, err);
            failures++;
            pthread_mutex_unlock(&out_mu);
            continue;
        }
        if (STRICT && (rc = audit_wait_durable(W, ticket, 60000))) {
            pthread_mutex_lock(&out_mu);
            fprintf(stderr, "wait %s: %s\n", id, mg_err_name(rc));
            failures++;
            pthread_mutex_unlock(&out_mu);
            continue;
        }
        pthread_mutex_lock(&out_mu);
        printf("completed %s\n", id);
        fflush(stdout);
        pthread_mutex_unlock(&out_mu);
        if (SLEEP_MS)
            usleep((useconds_t)SLEEP_MS * 1000);
    }
    free(prompt);
    return NULL;
}

/* Matches "--name VALUE"; consumes the value. */
static int arg(const char *a, const char *name, const char *v, int *i)
{
    if (strcmp(a, name) || !v)
        return 0;
    (*i)++;
    return 1;
}

int main(int argc, char **argv)
{
    audit_opts o = {.reconnect_max_ms = 500, .checkpoint_interval_ms = 1000,
                    .connect_timeout_s = 2};
    const char *db_env = NULL;
    int probe = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (arg(a, "--db-env", v, &i))
            db_env = v;
        else if (arg(a, "--spool", v, &i))
            o.spool_dir = v;
        else if (arg(a, "--writer", v, &i))
            o.writer_id = v;
        else if (arg(a, "--n", v, &i))
            N = atoi(v);
        else if (arg(a, "--threads", v, &i))
            T = atoi(v);
        else if (arg(a, "--sleep-ms", v, &i))
            SLEEP_MS = atoi(v);
        else if (arg(a, "--payload-bytes", v, &i))
            PAYLOAD = atoi(v);
        else if (arg(a, "--prefix", v, &i))
            PREFIX = v;
        else if (arg(a, "--tenant", v, &i))
            TENANT = v;
        else if (arg(a, "--key", v, &i)) {
            o.payload_key_file = v;
            o.payload_key_id = "k1";
        } else if (arg(a, "--ckpt-key", v, &i))
            o.checkpoint_key_file = v;
        else if (arg(a, "--ckpt-file", v, &i))
            o.checkpoint_file = v;
        else if (arg(a, "--ckpt-every", v, &i))
            o.checkpoint_every = atoi(v);
        else if (arg(a, "--received-days-ago", v, &i))
            DAYS_AGO = atoll(v);
        else if (arg(a, "--spool-max", v, &i))
            o.spool_max_bytes = (size_t)atoll(v);
        else if (arg(a, "--close-ms", v, &i))
            o.close_timeout_ms = atoi(v);
        else if (arg(a, "--mode", v, &i)) {
            MODE = !strcmp(v, "none")     ? AUDIT_PAYLOAD_NONE
                   : !strcmp(v, "sha256") ? AUDIT_PAYLOAD_SHA256
                   : !strcmp(v, "aes")    ? AUDIT_PAYLOAD_AES256GCM
                                          : AUDIT_PAYLOAD_CLEAR;
        } else if (!strcmp(a, "--async"))
            STRICT = 0;
        else if (!strcmp(a, "--probe-unwritable"))
            probe = 1;
        else {
            fprintf(stderr, "tool_audit_load: bad argument '%s'\n", a);
            return 2;
        }
    }
    if (!db_env || !getenv(db_env) || T < 1 || N < 0 || PAYLOAD < 1) {
        fprintf(stderr, "tool_audit_load: --db-env VAR (set), --threads >= 1 needed\n");
        return 2;
    }
    o.conninfo = getenv(db_env);
    o.durability = STRICT ? AUDIT_DURABILITY_STRICT : AUDIT_DURABILITY_ASYNC;
    char err[512];
    if (audit_writer_open(&W, &o, err, sizeof err)) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    if (probe) {
        /* database unreachable and spool refusing: writable must turn false
         * and a strict wait must not report durability */
        audit_record r = {.request_id = "probe-1", .received_us = now_us(),
                          .finished_us = now_us(), .payload_mode = AUDIT_PAYLOAD_NONE};
        uint64_t ticket;
        if (audit_submit(W, &r, &ticket, err, sizeof err)) {
            fprintf(stderr, "submit: %s\n", err);
            return 1;
        }
        usleep(700000);
        int w = audit_writable(W);
        int rc = audit_wait_durable(W, ticket, 300);
        printf("writable %d wait %s\n", w, mg_err_name(rc));
        int crc = audit_writer_close(W, err, sizeof err);
        printf("close %s\n", crc ? err : "ok");
        return 0;
    }
    pthread_t *th = calloc((size_t)T, sizeof *th);
    if (!th)
        return 1;
    int64_t t0 = now_us();
    for (int t = 0; t < T; t++)
        pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    free(th);
    printf("requests done in %lld ms\n", (long long)((now_us() - t0) / 1000));
    audit_stats st;
    audit_writer_stats(W, &st);
    int rc = audit_writer_close(W, err, sizeof err);
    if (rc)
        fprintf(stderr, "close: %s\n", err);
    printf("stats written=%llu spooled=%llu replayed=%llu duplicates=%llu failed=%llu "
           "checkpoints=%llu failures=%d\n",
           (unsigned long long)st.written, (unsigned long long)st.spooled,
           (unsigned long long)st.replayed, (unsigned long long)st.duplicates,
           (unsigned long long)st.failed, (unsigned long long)st.checkpoints, failures);
    return rc || failures ? 1 : 0;
}
