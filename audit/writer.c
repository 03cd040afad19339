/* moegate — the audit writer: a bounded queue feeding one thread that owns
 * the PostgreSQL connection and the spool.
 *
 * Flow. audit_submit encodes and protects the record in the caller's
 * thread, then queues it with a ticket (1, 2, 3 ... in queue order). The
 * writer thread takes everything queued (up to max_batch) as one batch and
 * makes it durable in one go:
 *   - connected and the spool empty: one transaction, BEGIN; COPY ... FROM
 *     STDIN (binary); [INSERT checkpoint]; COMMIT, with synchronous_commit
 *     on, so COMMIT returns after the WAL is flushed;
 *   - otherwise: one write() + fdatasync() of the batch to the spool.
 * Batches are handled strictly in ticket order, so "durable" is a single
 * watermark, durable_upto, and audit_wait_durable is a condition wait on
 * it. That is the group commit: requests that finish while a transaction
 * or an fsync is in flight all ride the next one.
 *
 * Sealing. Sequence numbers and hashes are assigned inside the transaction
 * that inserts the records, from the chain head read at connect time
 * under a session advisory lock on the chain id (a second process with the
 * same writer id cannot fork the chain; it spools until the lock frees).
 * The in-memory head only advances when COMMIT succeeds. After any failure
 * the connection is dropped and the head is read again on reconnect, so a
 * COMMIT whose outcome was lost with the connection is resolved by the
 * database itself.
 *
 * Exactly once. Records go to the spool unsealed. While the spool holds
 * records, new batches are appended to it too, so the database receives
 * records in submission order; the thread replays the spool in chunks, each
 * chunk one transaction that first drops request ids already present (a
 * batch whose COMMIT reached the database before the connection died, or a
 * chunk replayed again after a crash before the spool was truncated).
 * A unique violation on the direct path (a request id reused with the same
 * received time) retries the batch the same deduplicating way.
 *
 * Reconnection backs off from 100 ms doubling to reconnect_max_ms, and is
 * non-blocking (PQconnectStart/PQconnectPoll driven from the thread's
 * loop): while a connection is on its way, batches go to the spool after
 * waiting at most 50 ms for it. libpq keepalives and tcp_user_timeout
 * bound how long a silently dead server can hold a transaction.
 *
 * Partitions. Before inserting a month's first records, the thread calls
 * audit_ensure_partition() (SECURITY DEFINER, created by the migrations),
 * because the gateway's role may only INSERT and SELECT. Rows whose month
 * has no partition land in the DEFAULT partition.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

#define BACKOFF_START_MS 100
#define COPY_FLUSH_BYTES (1u << 20)
#define DUP_RETRY 1 /* internal: the batch hit a unique violation */

typedef struct item {
    uint64_t ticket;
    uint8_t *enc;
    size_t len;
} item;

struct audit_writer {
    /* immutable after open */
    audit_opts o;
    char *conninfo, *writer_id, *spool_path, *ckpt_file;
    audit_payload_key *pkey;
    audit_signer *signer;

    /* mu guards: the ring, tickets, durable_upto, flags, st, last_error */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;    /* writer thread: records queued or stopping */
    pthread_cond_t cv_space;   /* submitters: ring has room */
    pthread_cond_t cv_durable; /* waiters: durable_upto advanced or thread ended */
    item *ring;
    size_t cap, head, count;
    uint64_t next_ticket, durable_upto;
    uint64_t lost_from; /* first ticket lost at close (0: none); later ones count as lost too */
    bool stopping, ended;
    bool pg_ok, spool_ok;
    audit_stats st;
    char last_error[512];

    /* writer thread only */
    pthread_t thread;
    bool thread_started;
    PGconn *conn;                  /* connected and set up, or NULL */
    PGconn *pending;               /* a connection being established, or NULL */
    int pending_want;              /* what its socket waits for (PostgresPollingStatusType) */
    int64_t pending_deadline_us;
    audit_spool *spool;
    int64_t head_seq; /* 0 = empty chain; the first record is seq 1 */
    uint8_t head_hash[AUDIT_HASH_LEN];
    int64_t next_connect_us;
    int64_t replay_retry_us; /* no replay attempt before this time */
    int backoff_ms;
    int64_t ckpt_seq, ckpt_time_us; /* last checkpoint written */
    int *months;                    /* months whose partition exists (year*12+month-1) */
    int n_months, cap_months;
    audit_buf copy;                 /* COPY data, reused */
    uint8_t (*hashes)[AUDIT_HASH_LEN];
    int lost;
};

static void set_error(audit_writer *w, const char *msg)
{
    pthread_mutex_lock(&w->mu);
    snprintf(w->last_error, sizeof w->last_error, "%s", msg);
    pthread_mutex_unlock(&w->mu);
}

static void set_health(audit_writer *w, int pg, int spool)
{
    pthread_mutex_lock(&w->mu);
    if (pg >= 0)
        w->pg_ok = pg;
    if (spool >= 0)
        w->spool_ok = spool;
    w->st.connected = w->conn != NULL;
    w->st.spool_bytes = audit_spool_pending_bytes(w->spool);
    w->st.spool_records = audit_spool_pending_records(w->spool);
    w->st.last_seq = w->head_seq;
    pthread_mutex_unlock(&w->mu);
}

static void mark_durable(audit_writer *w, uint64_t ticket)
{
    pthread_mutex_lock(&w->mu);
    if (ticket > w->durable_upto)
        w->durable_upto = ticket;
    pthread_cond_broadcast(&w->cv_durable);
    pthread_mutex_unlock(&w->mu);
}

static void stat_add(audit_writer *w, uint64_t *field, uint64_t n)
{
    pthread_mutex_lock(&w->mu);
    *field += n;
    pthread_mutex_unlock(&w->mu);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

/* ---- connection ------------------------------------------------------------------ */

static void disconnect(audit_writer *w, const char *why)
{
    if (w->conn) {
        PQfinish(w->conn);
        w->conn = NULL;
    }
    if (w->pending) {
        PQfinish(w->pending);
        w->pending = NULL;
    }
    w->n_months = 0;
    int64_t now = audit_now_us();
    w->next_connect_us = now + (int64_t)w->backoff_ms * 1000;
    w->backoff_ms = w->backoff_ms * 2 > w->o.reconnect_max_ms ? w->o.reconnect_max_ms
                                                               : w->backoff_ms * 2;
    if (why)
        set_error(w, why);
    set_health(w, 0, -1);
}

static void pg_error_text(char *dst, size_t len, PGconn *c, PGresult *r)
{
    const char *m = r ? PQresultErrorMessage(r) : NULL;
    if (!m || !*m)
        m = PQerrorMessage(c);
    snprintf(dst, len, "audit: database: %s", m ? m : "?");
    char *nl = strchr(dst, '\n');
    if (nl)
        *nl = 0;
}

/* Reads the chain head (seq, hash) of our chain; the first record is 1. */
static int read_head(audit_writer *w, char *err, size_t errlen)
{
    const char *params[1] = {w->writer_id};
    PGresult *r = PQexecParams(w->conn,
                               "SELECT seq, hash FROM audit_events WHERE chain_id = $1 "
                               "ORDER BY seq DESC LIMIT 1",
                               1, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        pg_error_text(err, errlen, w->conn, r);
        PQclear(r);
        return MG_EIO;
    }
    if (PQntuples(r) == 0) {
        w->head_seq = 0;
        memset(w->head_hash, 0, sizeof w->head_hash);
    } else if (PQgetlength(r, 0, 0) != 8 || PQgetlength(r, 0, 1) != AUDIT_HASH_LEN) {
        mg_err_set(err, errlen, "audit: chain %s: head row has a malformed seq or hash",
                   w->writer_id);
        PQclear(r);
        return MG_EFORMAT;
    } else {
        const uint8_t *p = (const uint8_t *)PQgetvalue(r, 0, 0);
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = v << 8 | p[i];
        w->head_seq = (int64_t)v;
        memcpy(w->head_hash, PQgetvalue(r, 0, 1), AUDIT_HASH_LEN);
    }
    PQclear(r);
    return 0;
}

/* Connects without blocking the thread: starts a connection when none is
 * up and the backoff allows, then advances it, waiting for its socket at
 * most wait_ms. True once connected. While a connection is pending,
 * batches go to the spool, so a server that does not answer (a dropped
 * network, not a refused connection) delays no request by more than
 * wait_ms; connect_timeout_s bounds the attempt itself. */
static bool ensure_connected(audit_writer *w, int wait_ms)
{
    if (w->conn)
        return true;
    char err[300];
    int64_t now = audit_now_us();
    if (!w->pending) {
        if (now < w->next_connect_us)
            return false;
        if (audit_pg_connect_start(&w->pending, w->conninfo, err, sizeof err)) {
            w->pending = NULL;
            disconnect(w, err);
            return false;
        }
        w->pending_want = PGRES_POLLING_WRITING;
        w->pending_deadline_us = now + (int64_t)w->o.connect_timeout_s * 1000000;
    }
    int64_t until = now + (int64_t)wait_ms * 1000;
    if (until > w->pending_deadline_us)
        until = w->pending_deadline_us;
    int rc = audit_pg_connect_poll(w->pending, &w->pending_want, until, err, sizeof err);
    if (rc == 1 && audit_now_us() < w->pending_deadline_us)
        return false;
    if (rc == 1)
        snprintf(err, sizeof err, "audit: database connection timed out after %d s",
                 w->o.connect_timeout_s);
    if (rc) {
        PQfinish(w->pending);
        w->pending = NULL;
        disconnect(w, err);
        return false;
    }
    PGconn *c = w->pending;
    w->pending = NULL;
    w->conn = c;
    /* durability is the point of this table: commit waits for the WAL flush
     * whatever the server's default; no statement may hang for ever */
    if (audit_pg_exec(c, "SET synchronous_commit TO on; SET statement_timeout TO '60s'", err,
                      sizeof err)) {
        disconnect(w, err);
        return false;
    }
    const char *params[1] = {w->writer_id};
    PGresult *r = PQexecParams(c, "SELECT pg_try_advisory_lock(hashtextextended("
                                  "'moegate-audit-chain:' || $1, 0))",
                               1, NULL, params, NULL, NULL, 0);
    bool locked = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                  !strcmp(PQgetvalue(r, 0, 0), "t");
    if (!locked) {
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            snprintf(err, sizeof err,
                     "audit: chain %s is held by another writer (advisory lock); spooling",
                     w->writer_id);
        else
            pg_error_text(err, sizeof err, c, r);
        PQclear(r);
        disconnect(w, err);
        return false;
    }
    PQclear(r);
    if (read_head(w, err, sizeof err)) {
        disconnect(w, err);
        return false;
    }
    if (w->ckpt_seq > w->head_seq)
        w->ckpt_seq = w->head_seq;
    w->backoff_ms = BACKOFF_START_MS;
    set_error(w, "");
    set_health(w, 1, -1);
    return true;
}

/* ---- partitions -------------------------------------------------------------------------- */

static int month_of(int64_t us)
{
    time_t t = (time_t)(us / 1000000 - (us % 1000000 < 0));
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return 0;
    return (tm.tm_year + 1900) * 12 + tm.tm_mon;
}

static void ensure_partition(audit_writer *w, int m)
{
    for (int i = 0; i < w->n_months; i++)
        if (w->months[i] == m)
            return;
    char ts[32];
    snprintf(ts, sizeof ts, "%04d-%02d-01 00:00:00+00", m / 12, m % 12 + 1);
    const char *params[1] = {ts};
    PGresult *r = PQexecParams(w->conn, "SELECT audit_ensure_partition($1::timestamptz)", 1,
                               NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        /* not fatal: the DEFAULT partition takes the rows; the batch's own
         * transaction finds out whether the connection is still good */
        char e[300];
        pg_error_text(e, sizeof e, w->conn, r);
        set_error(w, e);
    }
    PQclear(r);
    if (w->n_months == w->cap_months) {
        int nc = w->cap_months ? w->cap_months * 2 : 8;
        int *p = realloc(w->months, sizeof(int) * (size_t)nc);
        if (!p)
            return;
        w->months = p;
        w->cap_months = nc;
    }
    w->months[w->n_months++] = m;
}

/* ---- COPY rows ------------------------------------------------------------------------------ */

static void copy_text(audit_buf *b, const audit_value *v)
{
    if (v->null) {
        audit_buf_u32(b, 0xFFFFFFFFu);
        return;
    }
    audit_buf_u32(b, v->len);
    audit_buf_put(b, v->p, v->len);
}

/* One binary COPY tuple: chain_id, seq, the fields, prev_hash, hash. */
static void copy_row(audit_buf *b, const char *chain, int64_t seq, const audit_rec *r,
                     const uint8_t *prev, const uint8_t *hash)
{
    audit_buf_u16(b, (uint16_t)(AUDIT_NFIELDS + 4));
    size_t cl = strlen(chain);
    audit_buf_u32(b, (uint32_t)cl);
    audit_buf_put(b, chain, cl);
    audit_buf_u32(b, 8);
    audit_buf_u64(b, (uint64_t)seq);
    for (int f = 0; f < AUDIT_NFIELDS; f++) {
        const audit_value *v = &r->v[f];
        switch (audit_fields[f].type) {
        case AF_TEXT:
        case AF_BYTES:
            copy_text(b, v);
            break;
        case AF_I64:
            audit_buf_u32(b, 8);
            audit_buf_u64(b, (uint64_t)v->i);
            break;
        case AF_TIME:
            audit_buf_u32(b, 8);
            audit_buf_u64(b, (uint64_t)(v->i - AUDIT_PG_EPOCH_US));
            break;
        case AF_I32:
            audit_buf_u32(b, 4);
            audit_buf_u32(b, (uint32_t)(int32_t)v->i);
            break;
        case AF_MODE: {
            const char *m = audit_payload_mode_name((int)v->i);
            audit_buf_u32(b, (uint32_t)strlen(m));
            audit_buf_put(b, m, strlen(m));
            break;
        }
        }
    }
    audit_buf_u32(b, AUDIT_HASH_LEN);
    audit_buf_put(b, prev, AUDIT_HASH_LEN);
    audit_buf_u32(b, AUDIT_HASH_LEN);
    audit_buf_put(b, hash, AUDIT_HASH_LEN);
}

/* ---- deduplication ---------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Marks keep[i] = false for records whose request id is already in the
 * database or earlier in the batch. */
static int dedupe(audit_writer *w, audit_rec *recs, bool *keep, int n, char *err, size_t errlen)
{
    /* text[] literal {"id","id",...} with " and \ escaped */
    audit_buf lit = {0};
    char **ids = calloc((size_t)n, sizeof *ids);
    int rc = MG_ENOMEM;
    PGresult *r = NULL;
    if (!ids)
        goto fail;
    audit_buf_u8(&lit, '{');
    for (int i = 0; i < n; i++) {
        const audit_value *v = &recs[i].v[F_REQUEST_ID];
        if (i)
            audit_buf_u8(&lit, ',');
        audit_buf_u8(&lit, '"');
        for (uint32_t k = 0; k < v->len; k++) {
            if (v->p[k] == '"' || v->p[k] == '\\')
                audit_buf_u8(&lit, '\\');
            audit_buf_u8(&lit, v->p[k]);
        }
        audit_buf_u8(&lit, '"');
        keep[i] = true;
    }
    audit_buf_put(&lit, "}", 2);
    if (lit.oom)
        goto fail;
    const char *params[1] = {(const char *)lit.p};
    r = PQexecParams(w->conn,
                     "SELECT DISTINCT request_id FROM audit_events WHERE request_id = "
                     "ANY($1::text[])",
                     1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        pg_error_text(err, errlen, w->conn, r);
        rc = MG_EIO;
        goto fail;
    }
    int nf = PQntuples(r);
    for (int i = 0; i < nf; i++)
        ids[i] = PQgetvalue(r, i, 0);
    qsort(ids, (size_t)nf, sizeof *ids, cmp_str);
    /* a second copy of a request id inside the batch is dropped as well */
    char **seen = calloc((size_t)n, sizeof *seen);
    int n_seen = 0;
    if (!seen)
        goto fail;
    for (int i = 0; i < n; i++) {
        const audit_value *v = &recs[i].v[F_REQUEST_ID];
        char id[AUDIT_MAX_REQUEST_ID + 1];
        memcpy(id, v->p, v->len);
        id[v->len] = 0;
        char *key = id;
        if (bsearch(&key, ids, (size_t)nf, sizeof *ids, cmp_str)) {
            keep[i] = false;
            continue;
        }
        for (int k = 0; k < n_seen; k++)
            if (!strcmp(seen[k], id)) {
                keep[i] = false;
                break;
            }
        if (keep[i] && n_seen < n && (seen[n_seen] = strdup(id)))
            n_seen++;
    }
    for (int k = 0; k < n_seen; k++)
        free(seen[k]);
    free(seen);
    rc = 0;
fail:
    if (rc == MG_ENOMEM)
        mg_err_set(err, errlen, "audit: out of memory deduplicating a batch");
    PQclear(r);
    free(ids);
    audit_buf_free(&lit);
    return rc;
}

/* ---- one transaction ---------------------------------------------------------------------------- */

static bool ckpt_due(const audit_writer *w, int64_t last_seq)
{
    if (!w->signer || last_seq <= w->ckpt_seq)
        return false;
    return last_seq - w->ckpt_seq >= w->o.checkpoint_every ||
           audit_now_us() - w->ckpt_time_us >= (int64_t)w->o.checkpoint_interval_ms * 1000;
}

static int insert_ckpt(audit_writer *w, audit_ckpt *c, char *err, size_t errlen)
{
    char seq[24], t[24];
    snprintf(c->chain_id, sizeof c->chain_id, "%s", w->writer_id);
    if (audit_ckpt_sign(w->signer, c, err, errlen))
        return MG_EIO;
    snprintf(seq, sizeof seq, "%lld", (long long)c->seq);
    snprintf(t, sizeof t, "%lld", (long long)c->time_us);
    const char *params[6] = {c->chain_id, seq, (const char *)c->hash, t,
                             (const char *)c->sig, (const char *)c->pubkey};
    int lens[6] = {0, 0, AUDIT_HASH_LEN, 0, 64, 32};
    int fmts[6] = {0, 0, 1, 0, 1, 1};
    PGresult *r = PQexecParams(w->conn,
                               "INSERT INTO audit_checkpoints (chain_id, seq, hash, signed_at, "
                               "signature, public_key) VALUES ($1, $2::bigint, $3, "
                               "to_timestamp($4::numeric / 1000000), $5, $6)",
                               6, NULL, params, lens, fmts, 0);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : MG_EIO;
    if (rc)
        pg_error_text(err, errlen, w->conn, r);
    PQclear(r);
    return rc;
}

static void append_ckpt_file(audit_writer *w, const audit_ckpt *c)
{
    if (!w->ckpt_file)
        return;
    char line[512];
    audit_ckpt_format(c, line, sizeof line);
    int fd = open(w->ckpt_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    size_t n = strlen(line);
    if (fd < 0 || write(fd, line, n) != (ssize_t)n || fdatasync(fd)) {
        char e[300];
        snprintf(e, sizeof e, "audit: checkpoint file %s: %s", w->ckpt_file, strerror(errno));
        set_error(w, e);
        stat_add(w, &w->st.failed, 1);
    }
    if (fd >= 0)
        close(fd);
}

/* Reads the pending results after a command. Bounded: on a broken
 * connection libpq can keep reporting the same state, and the caller drops
 * the connection anyway. */
static void drain(PGconn *c)
{
    PGresult *r;
    for (int i = 0; i < 16 && (r = PQgetResult(c)); i++) {
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_COPY_IN)
            (void)PQputCopyEnd(c, "moegate: batch aborted");
    }
}

static int exec_or_err(audit_writer *w, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(w->conn, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : MG_EIO;
    if (rc)
        pg_error_text(err, errlen, w->conn, r);
    PQclear(r);
    return rc;
}

/* Seals and inserts recs[i] where keep[i] (all when keep is NULL) in one
 * transaction, with a checkpoint when one is due (or force_ckpt). Returns
 * 0, DUP_RETRY on a unique violation (connection still usable, rolled
 * back), or a negative code (the caller drops the connection). *n_done:
 * rows inserted. */
static int pg_write(audit_writer *w, const audit_rec *recs, const uint8_t *const *encs,
                    const size_t *lens, const bool *keep, int n, bool force_ckpt, int *n_done,
                    char *err, size_t errlen)
{
    static const uint8_t copy_head[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xFF, '\r', '\n', 0};
    audit_buf *b = &w->copy;
    int64_t seq = w->head_seq;
    uint8_t prev[AUDIT_HASH_LEN];
    int rc = MG_EIO, rows = 0;
    PGresult *r = NULL;
    bool in_tx = false;
    audit_ckpt ck;
    memcpy(prev, w->head_hash, sizeof prev);
    *n_done = 0;

    for (int i = 0; i < n; i++)
        if (!keep || keep[i])
            ensure_partition(w, month_of(recs[i].v[F_RECEIVED].i));
    for (int i = 0; i < n; i++)
        rows += !keep || keep[i];
    /* COPY on its own is one implicit transaction, committed (WAL flushed)
     * before its result arrives; an explicit one costs two more round
     * trips and is needed only to put a checkpoint in the same commit */
    bool with_ckpt = force_ckpt ? w->signer && seq + rows > w->ckpt_seq
                                : ckpt_due(w, seq + rows);
    if (with_ckpt) {
        if (exec_or_err(w, "BEGIN", err, errlen))
            goto fail;
        in_tx = true;
    }
    if (rows) {
        char sql[1024];
        snprintf(sql, sizeof sql, "COPY audit_events (%s) FROM STDIN (FORMAT binary)",
                 audit_columns_sql());
        r = PQexec(w->conn, sql);
        if (PQresultStatus(r) != PGRES_COPY_IN) {
            pg_error_text(err, errlen, w->conn, r);
            goto fail;
        }
        PQclear(r);
        r = NULL;
        b->len = 0;
        audit_buf_put(b, copy_head, sizeof copy_head);
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (keep && !keep[i])
                continue;
            seq++;
            if (audit_chain_hash(w->hashes[k], prev, w->writer_id, seq, encs[i], lens[i])) {
                mg_err_set(err, errlen, "audit: hashing failed");
                rc = MG_ENOMEM;
                goto fail_copy;
            }
            copy_row(b, w->writer_id, seq, &recs[i], prev, w->hashes[k]);
            memcpy(prev, w->hashes[k], sizeof prev);
            k++;
            if (b->len >= COPY_FLUSH_BYTES) {
                if (b->oom || PQputCopyData(w->conn, (const char *)b->p, (int)b->len) != 1)
                    goto fail_copy;
                b->len = 0;
            }
        }
        audit_buf_u16(b, 0xFFFF);
        if (b->oom || PQputCopyData(w->conn, (const char *)b->p, (int)b->len) != 1)
            goto fail_copy;
        if (PQputCopyEnd(w->conn, NULL) != 1)
            goto fail_copy;
        r = PQgetResult(w->conn);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            pg_error_text(err, errlen, w->conn, r);
            if (state && !strcmp(state, "23505"))
                rc = DUP_RETRY;
            goto fail;
        }
        PQclear(r);
        r = NULL;
        drain(w->conn);
    }
    if (with_ckpt) {
        ck.seq = seq;
        memcpy(ck.hash, prev, sizeof ck.hash);
        ck.time_us = audit_now_us();
        if (insert_ckpt(w, &ck, err, errlen))
            goto fail;
        r = PQexec(w->conn, "COMMIT");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            pg_error_text(err, errlen, w->conn, r);
            goto fail;
        }
        PQclear(r);
        r = NULL;
        in_tx = false;
    }
    w->head_seq = seq;
    memcpy(w->head_hash, prev, sizeof prev);
    *n_done = rows;
    pthread_mutex_lock(&w->mu);
    w->st.written += (uint64_t)rows;
    w->st.transactions++;
    w->st.last_seq = seq;
    if (with_ckpt)
        w->st.checkpoints++;
    pthread_mutex_unlock(&w->mu);
    if (with_ckpt) {
        w->ckpt_seq = ck.seq;
        w->ckpt_time_us = ck.time_us;
        append_ckpt_file(w, &ck);
    }
    return 0;
fail_copy:
    if (err && !*err)
        pg_error_text(err, errlen, w->conn, NULL);
    if (PQstatus(w->conn) == CONNECTION_OK)
        (void)PQputCopyEnd(w->conn, "moegate: batch aborted");
    drain(w->conn);
    r = NULL;
fail:
    PQclear(r);
    if (rc == DUP_RETRY) { /* keep the connection: drain, and end the transaction */
        drain(w->conn);
        if (in_tx && exec_or_err(w, "ROLLBACK", NULL, 0))
            rc = MG_EIO;
    }
    return rc;
}

/* ---- batches ------------------------------------------------------------------------------------ */

/* Decodes encodings into recs; false when one is malformed (err set). */
static bool decode_all(const uint8_t *const *encs, const size_t *lens, int n, audit_rec *recs,
                       char *err, size_t errlen)
{
    for (int i = 0; i < n; i++)
        if (audit_rec_decode(&recs[i], encs[i], lens[i], err, errlen))
            return false;
    return true;
}

/* Writes records with deduplication; true when committed. */
static bool pg_write_dedupe(audit_writer *w, const audit_rec *recs, const uint8_t *const *encs,
                            const size_t *lens, int n, int *inserted, char *err, size_t errlen)
{
    bool *keep = malloc(sizeof(bool) * (size_t)(n ? n : 1));
    bool ok = false;
    if (!keep)
        return false;
    if (dedupe(w, (audit_rec *)recs, keep, n, err, errlen) == 0 &&
        pg_write(w, recs, encs, lens, keep, n, false, inserted, err, errlen) == 0)
        ok = true;
    free(keep);
    return ok;
}

/* Replays up to one batch of spooled records; true when it made progress. */
static bool replay_some(audit_writer *w)
{
    uint8_t **encs = NULL;
    size_t *lens = NULL, next = 0;
    int n = 0, inserted = 0;
    char err[300] = "";
    bool progress = false;
    audit_rec *recs = NULL;
    if (audit_spool_peek(w->spool, w->o.max_batch, &encs, &lens, &n, &next, err, sizeof err)) {
        set_error(w, err);
        return false;
    }
    if (n == 0)
        goto done;
    recs = malloc(sizeof *recs * (size_t)n);
    if (!recs)
        goto done;
    if (!decode_all((const uint8_t *const *)encs, lens, n, recs, err, sizeof err)) {
        /* cannot happen for files this code wrote; keep the records, say so */
        set_error(w, err);
        goto done;
    }
    if (!pg_write_dedupe(w, recs, (const uint8_t *const *)encs, lens, n, &inserted, err,
                         sizeof err)) {
        stat_add(w, &w->st.failed, 1);
        disconnect(w, err);
        goto done;
    }
    pthread_mutex_lock(&w->mu);
    w->st.replayed += (uint64_t)inserted;
    w->st.duplicates += (uint64_t)(n - inserted);
    pthread_mutex_unlock(&w->mu);
    if (audit_spool_consume(w->spool, next, (uint64_t)n, err, sizeof err)) {
        /* committed but not consumed: a later replay skips them as duplicates */
        set_error(w, err);
        set_health(w, -1, 0);
        goto done;
    }
    set_health(w, -1, 1);
    progress = true;
done:
    for (int i = 0; i < n; i++)
        free(encs[i]);
    free(encs);
    free(lens);
    free(recs);
    return progress;
}

/* Makes one batch durable: PostgreSQL directly, else the spool. Retries
 * until it succeeds, or (closing) until the close deadline. */
static void process_batch(audit_writer *w, item *batch, int n, int64_t deadline_us)
{
    const uint8_t **encs = malloc(sizeof *encs * (size_t)n);
    size_t *lens = malloc(sizeof *lens * (size_t)n);
    audit_rec *recs = malloc(sizeof *recs * (size_t)n);
    char err[300] = "";
    bool done = false;
    while (!encs || !lens || !recs) { /* never drop: wait for memory */
        free(encs);
        free(lens);
        free(recs);
        sleep_ms(50);
        encs = malloc(sizeof *encs * (size_t)n);
        lens = malloc(sizeof *lens * (size_t)n);
        recs = malloc(sizeof *recs * (size_t)n);
    }
    for (int i = 0; i < n; i++) {
        encs[i] = batch[i].enc;
        lens[i] = batch[i].len;
    }
    /* our own encodings: decoding only builds the field views */
    bool decoded = decode_all(encs, lens, n, recs, err, sizeof err);
    for (int attempt = 0; !done; attempt++) {
        if (decoded && audit_spool_pending_records(w->spool) == 0 &&
            ensure_connected(w, 50)) {
            int ins = 0;
            int rc = pg_write(w, recs, encs, lens, NULL, n, false, &ins, err, sizeof err);
            if (rc == DUP_RETRY)
                rc = pg_write_dedupe(w, recs, encs, lens, n, &ins, err, sizeof err) ? 0 : MG_EIO;
            if (rc == 0) {
                pthread_mutex_lock(&w->mu);
                w->st.duplicates += (uint64_t)(n - ins);
                pthread_mutex_unlock(&w->mu);
                done = true;
                break;
            }
            stat_add(w, &w->st.failed, 1);
            disconnect(w, err);
        }
        /* the database is back but the spool still holds records (which
         * must land first): replay from here, or a full spool would keep
         * this batch waiting for ever */
        if (audit_spool_pending_records(w->spool) > 0 && ensure_connected(w, 0)) {
            replay_some(w);
            if (audit_spool_pending_records(w->spool) == 0)
                continue;
        }
        size_t need = 0;
        for (int i = 0; i < n; i++)
            need += lens[i] + 16; /* frame overhead */
        if (audit_spool_pending_bytes(w->spool) + need > w->o.spool_max_bytes) {
            set_error(w, "audit: spool is full; records wait in memory");
            set_health(w, -1, 0);
        } else if (audit_spool_append(w->spool, encs, lens, n, err, sizeof err) == 0) {
            stat_add(w, &w->st.spooled, (uint64_t)n);
            set_health(w, -1, 1);
            done = true;
            break;
        } else {
            stat_add(w, &w->st.failed, 1);
            set_error(w, err);
            set_health(w, -1, 0);
        }
        if (!deadline_us) { /* close began while this batch was in hand */
            pthread_mutex_lock(&w->mu);
            bool stopping = w->stopping;
            pthread_mutex_unlock(&w->mu);
            if (stopping)
                deadline_us = audit_now_us() + (int64_t)w->o.close_timeout_ms * 1000;
        }
        if (deadline_us && audit_now_us() > deadline_us)
            break;
        sleep_ms(attempt < 10 ? 20 * (attempt + 1) : 200);
    }
    if (done) {
        mark_durable(w, batch[n - 1].ticket);
    } else {
        w->lost += n;
        pthread_mutex_lock(&w->mu);
        if (!w->lost_from)
            w->lost_from = batch[0].ticket;
        pthread_mutex_unlock(&w->mu);
    }
    for (int i = 0; i < n; i++)
        free(batch[i].enc);
    free(encs);
    free(lens);
    free(recs);
}

/* A checkpoint-only transaction when the interval passed with records
 * since the last one (or force, at close). */
static void maybe_checkpoint(audit_writer *w, bool force)
{
    if (!w->signer || !w->conn || w->head_seq <= w->ckpt_seq)
        return;
    if (!force && !ckpt_due(w, w->head_seq))
        return;
    char err[300] = "";
    int done = 0;
    if (pg_write(w, NULL, NULL, NULL, NULL, 0, true, &done, err, sizeof err)) {
        stat_add(w, &w->st.failed, 1);
        disconnect(w, err);
    }
}

static void *writer_main(void *arg)
{
    audit_writer *w = arg;
    item *batch = malloc(sizeof *batch * (size_t)w->o.max_batch);
    int64_t deadline = 0;
    if (!batch) {
        pthread_mutex_lock(&w->mu);
        w->ended = true;
        snprintf(w->last_error, sizeof w->last_error, "audit: writer out of memory");
        pthread_cond_broadcast(&w->cv_durable);
        pthread_mutex_unlock(&w->mu);
        return NULL;
    }
    for (;;) {
        bool spool_pending = audit_spool_pending_records(w->spool) > 0;
        /* keep a connection up (or on its way) even when idle, so the
         * first record after a quiet spell does not wait for one */
        ensure_connected(w, 0);
        /* one chunk of replay per turn, between batches of new records
         * (which go to the spool meanwhile, so order is kept), so that
         * neither starves the other */
        if (w->conn && spool_pending && audit_now_us() >= w->replay_retry_us &&
            !replay_some(w) && w->conn)
            /* a failure that kept the connection (a spool read error): do not
             * spin, try again in a second; last_error says what happened */
            w->replay_retry_us = audit_now_us() + 1000000;
        maybe_checkpoint(w, false);

        pthread_mutex_lock(&w->mu);
        while (w->count == 0 && !w->stopping) {
            /* wake for reconnection, replay or a checkpoint */
            int64_t now = audit_now_us();
            int64_t wake = now + (int64_t)w->o.checkpoint_interval_ms * 1000;
            int64_t next = wake;
            if (w->pending)
                next = now + 5000; /* advance the connection */
            else if (!w->conn)
                next = w->next_connect_us;
            else if (audit_spool_pending_records(w->spool) > 0)
                next = w->replay_retry_us;
            if (next <= now)
                break;
            if (next < wake)
                wake = next;
            struct timespec ts = {(time_t)(wake / 1000000), (long)(wake % 1000000) * 1000};
            /* cv uses CLOCK_REALTIME (the default), matching audit_now_us */
            if (pthread_cond_timedwait(&w->cv_work, &w->mu, &ts) == ETIMEDOUT)
                break;
        }
        int n = 0;
        while (w->count > 0 && n < w->o.max_batch) {
            batch[n++] = w->ring[w->head];
            w->head = (w->head + 1) % w->cap;
            w->count--;
        }
        w->st.queue_depth = w->count;
        bool stopping = w->stopping;
        if (n)
            pthread_cond_broadcast(&w->cv_space);
        pthread_mutex_unlock(&w->mu);

        if (stopping && !deadline)
            deadline = audit_now_us() + (int64_t)w->o.close_timeout_ms * 1000;
        if (n)
            process_batch(w, batch, n, stopping ? deadline : 0);
        if (stopping && n == 0) {
            /* drained: try to empty the spool and close with a checkpoint.
             * Spooled records are durable already, so when the database
             * stays unreachable after a few attempts, leave them for the
             * next start rather than hold the shutdown. */
            int attempts = 0;
            while (audit_spool_pending_records(w->spool) > 0 && audit_now_us() < deadline) {
                if (!w->conn) {
                    if (!w->pending) {
                        if (attempts++ == 3)
                            break;
                        w->next_connect_us = 0;
                    }
                    if (!ensure_connected(w, 100))
                        continue;
                }
                if (!replay_some(w))
                    sleep_ms(50);
            }
            if (w->signer && !w->conn && audit_now_us() < deadline) {
                if (!w->pending)
                    w->next_connect_us = 0;
                ensure_connected(w, w->o.connect_timeout_s * 1000);
            }
            if (w->conn)
                maybe_checkpoint(w, true);
            break;
        }
    }
    free(batch);
    set_health(w, -1, -1);
    pthread_mutex_lock(&w->mu);
    w->ended = true;
    pthread_cond_broadcast(&w->cv_durable);
    pthread_cond_broadcast(&w->cv_space);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- public API ------------------------------------------------------------------------------------ */

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

int audit_writer_open(audit_writer **out, const audit_opts *opts, char *err, size_t errlen)
{
    audit_writer *w = NULL;
    int rc = MG_EINVAL;
    if (!out || !opts || !opts->conninfo || !opts->spool_dir) {
        mg_err_set(err, errlen, "audit: conninfo and spool_dir are required");
        return MG_EINVAL;
    }
    if (!audit_chain_id_valid(opts->writer_id)) {
        mg_err_set(err, errlen, "audit: writer_id must be 1..64 of [A-Za-z0-9._-]");
        return MG_EINVAL;
    }
    if ((unsigned)opts->durability > AUDIT_DURABILITY_ASYNC ||
        (unsigned)opts->on_failure > AUDIT_ON_FAILURE_CONTINUE || opts->queue_capacity < 0 ||
        opts->max_batch < 0 || opts->checkpoint_every < 0 || opts->checkpoint_interval_ms < 0 ||
        opts->submit_timeout_ms < 0 || opts->connect_timeout_s < 0 ||
        opts->reconnect_max_ms < 0 || opts->close_timeout_ms < 0) {
        mg_err_set(err, errlen, "audit: an option is out of range");
        return MG_EINVAL;
    }
    w = calloc(1, sizeof *w);
    if (!w)
        return MG_ENOMEM;
    w->o = *opts;
    if (!w->o.checkpoint_every)
        w->o.checkpoint_every = 10000;
    if (!w->o.checkpoint_interval_ms)
        w->o.checkpoint_interval_ms = 10000;
    if (!w->o.queue_capacity)
        w->o.queue_capacity = 65536;
    if (!w->o.max_batch)
        w->o.max_batch = 4096;
    if (w->o.max_batch > 65536)
        w->o.max_batch = 65536;
    if (!w->o.spool_max_bytes)
        w->o.spool_max_bytes = (size_t)1 << 30;
    if (!w->o.submit_timeout_ms)
        w->o.submit_timeout_ms = 5000;
    if (!w->o.connect_timeout_s)
        w->o.connect_timeout_s = 3;
    if (!w->o.reconnect_max_ms)
        w->o.reconnect_max_ms = 5000;
    if (!w->o.close_timeout_ms)
        w->o.close_timeout_ms = 15000;
    if (w->o.reconnect_max_ms < BACKOFF_START_MS)
        w->o.reconnect_max_ms = BACKOFF_START_MS;
    bool oom = false;
    w->conninfo = dup_or_null(opts->conninfo, &oom);
    w->writer_id = dup_or_null(opts->writer_id, &oom);
    w->ckpt_file = dup_or_null(opts->checkpoint_file, &oom);
    size_t pl = strlen(opts->spool_dir) + strlen(opts->writer_id) + 8;
    w->spool_path = malloc(pl);
    w->cap = (size_t)w->o.queue_capacity;
    w->ring = calloc(w->cap, sizeof *w->ring);
    w->hashes = malloc(sizeof *w->hashes * (size_t)w->o.max_batch);
    if (oom || !w->spool_path || !w->ring || !w->hashes) {
        rc = MG_ENOMEM;
        goto fail;
    }
    w->o.conninfo = w->conninfo;
    w->o.writer_id = w->writer_id;
    w->o.checkpoint_file = w->ckpt_file;
    w->o.spool_dir = NULL;
    w->o.payload_key_file = w->o.payload_key_id = w->o.checkpoint_key_file = NULL;
    snprintf(w->spool_path, pl, "%s/%s.spool", opts->spool_dir, opts->writer_id);
    if (opts->payload_key_file &&
        (rc = audit_payload_key_load(&w->pkey, opts->payload_key_file,
                                     opts->payload_key_id ? opts->payload_key_id : "default", err,
                                     errlen)))
        goto fail;
    if (opts->checkpoint_key_file &&
        (rc = audit_signer_load(&w->signer, opts->checkpoint_key_file, err, errlen)))
        goto fail;
    if ((rc = audit_spool_open(&w->spool, w->spool_path, err, errlen)))
        goto fail;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv_work, NULL);
    pthread_cond_init(&w->cv_space, NULL);
    pthread_cond_init(&w->cv_durable, NULL);
    w->backoff_ms = BACKOFF_START_MS;
    w->spool_ok = true;
    w->ckpt_time_us = audit_now_us();
    w->st.queue_capacity = w->cap;
    w->st.last_seq = -1;
    w->st.spool_records = audit_spool_pending_records(w->spool);
    w->st.spool_bytes = audit_spool_pending_bytes(w->spool);
    if (pthread_create(&w->thread, NULL, writer_main, w)) {
        mg_err_set(err, errlen, "audit: cannot start the writer thread");
        rc = MG_ENOMEM;
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv_work);
        pthread_cond_destroy(&w->cv_space);
        pthread_cond_destroy(&w->cv_durable);
        goto fail;
    }
    w->thread_started = true;
    *out = w;
    return 0;
fail:
    audit_spool_close(w->spool);
    audit_signer_free(w->signer);
    audit_payload_key_free(w->pkey);
    free(w->conninfo);
    free(w->writer_id);
    free(w->ckpt_file);
    free(w->spool_path);
    free(w->ring);
    free(w->hashes);
    free(w);
    return rc;
}

int audit_writer_close(audit_writer *w, char *err, size_t errlen)
{
    if (!w)
        return 0;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv_work);
    pthread_cond_broadcast(&w->cv_space);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    int rc = 0;
    /* whatever is left in the ring was never taken (thread died early) */
    int left = (int)w->count;
    for (size_t i = 0; i < w->count; i++)
        free(w->ring[(w->head + i) % w->cap].enc);
    if (w->lost + left > 0) {
        mg_err_set(err, errlen,
                   "audit: %d records could be written neither to the database nor to the "
                   "spool: %s",
                   w->lost + left, w->last_error);
        rc = MG_EIO;
    }
    if (w->conn)
        PQfinish(w->conn);
    if (w->pending)
        PQfinish(w->pending);
    audit_spool_close(w->spool);
    audit_signer_free(w->signer);
    audit_payload_key_free(w->pkey);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv_work);
    pthread_cond_destroy(&w->cv_space);
    pthread_cond_destroy(&w->cv_durable);
    if (w->conninfo) /* it may hold a password */
        memset(w->conninfo, 0, strlen(w->conninfo));
    free(w->conninfo);
    free(w->writer_id);
    free(w->ckpt_file);
    free(w->spool_path);
    free(w->ring);
    free(w->hashes);
    free(w->months);
    audit_buf_free(&w->copy);
    free(w);
    return rc;
}

static void deadline_ts(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int audit_submit(audit_writer *w, const audit_record *r, uint64_t *ticket, char *err,
                 size_t errlen)
{
    uint8_t *enc = NULL;
    size_t len = 0;
    int rc;
    if (!w || !r) {
        mg_err_set(err, errlen, "audit: submit: no writer or record");
        return MG_EINVAL;
    }
    if ((rc = audit_record_encode(r, w->pkey, &enc, &len, err, errlen)))
        return rc;
    struct timespec ts;
    deadline_ts(&ts, w->o.submit_timeout_ms);
    pthread_mutex_lock(&w->mu);
    while (w->count == w->cap && !w->stopping && !w->ended)
        if (pthread_cond_timedwait(&w->cv_space, &w->mu, &ts) == ETIMEDOUT)
            break;
    if (w->stopping || w->ended || w->count == w->cap) {
        bool full = w->count == w->cap && !w->stopping && !w->ended;
        pthread_mutex_unlock(&w->mu);
        free(enc);
        mg_err_set(err, errlen, full ? "audit: queue full (%d records) for %d ms"
                                     : "audit: writer is closing (%d, %d)",
                   (int)w->cap, w->o.submit_timeout_ms);
        return MG_EBUSY;
    }
    w->ring[(w->head + w->count) % w->cap] = (item){++w->next_ticket, enc, len};
    w->count++;
    w->st.queue_depth = w->count;
    if (ticket)
        *ticket = w->next_ticket;
    pthread_cond_signal(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int audit_wait_durable(audit_writer *w, uint64_t ticket, int timeout_ms)
{
    if (!w)
        return MG_EINVAL;
    struct timespec ts;
    if (timeout_ms >= 0)
        deadline_ts(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    if (ticket == 0 || ticket > w->next_ticket) {
        pthread_mutex_unlock(&w->mu);
        return MG_EINVAL;
    }
    while (w->durable_upto < ticket && !w->ended && !(w->lost_from && ticket >= w->lost_from)) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&w->cv_durable, &w->mu);
        } else if (pthread_cond_timedwait(&w->cv_durable, &w->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    if (w->lost_from && ticket >= w->lost_from)
        rc = MG_EIO; /* conservative: a batch before it in the queue was lost */
    else if (w->durable_upto < ticket)
        rc = w->ended ? MG_EIO : MG_EBUSY;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

bool audit_writable(audit_writer *w)
{
    if (!w)
        return false;
    pthread_mutex_lock(&w->mu);
    bool ok = !w->stopping && !w->ended &&
              (w->o.on_failure == AUDIT_ON_FAILURE_CONTINUE ||
               (w->count < w->cap && (w->pg_ok || w->spool_ok)));
    pthread_mutex_unlock(&w->mu);
    return ok;
}

void audit_writer_stats(audit_writer *w, audit_stats *st)
{
    pthread_mutex_lock(&w->mu);
    *st = w->st;
    st->queue_depth = w->count;
    pthread_mutex_unlock(&w->mu);
}

void audit_writer_last_error(audit_writer *w, char *buf, size_t len)
{
    pthread_mutex_lock(&w->mu);
    snprintf(buf, len, "%s", w->last_error);
    pthread_mutex_unlock(&w->mu);
}
