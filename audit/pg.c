/* moegate — small helpers the audit files share: PostgreSQL connection and
 * command wrappers, hex, time, whole-file reads.
 *
 * Secrets: a connection string may hold a password, so no message built
 * here ever includes it; libpq's own error text names host and port at
 * most. Messages are trimmed of libpq's trailing newline.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

/* libpq messages end with a newline and may span lines; keep the first. */
static void pg_msg(char *dst, size_t len, const char *msg)
{
    snprintf(dst, len, "%s", msg ? msg : "");
    char *nl = strchr(dst, '\n');
    if (nl)
        *nl = 0;
}

/* Checks conninfo without echoing it; 0 or MG_EINVAL. */
static int conninfo_check(const char *conninfo, char *err, size_t errlen)
{
    if (!conninfo) {
        mg_err_set(err, errlen, "audit: no database connection string");
        return MG_EINVAL;
    }
    /* libpq's parse errors quote pieces of the string, which may be a
     * password; ours says nothing about its contents */
    char *perr = NULL;
    bool is_conninfo = strchr(conninfo, '=') || !strncmp(conninfo, "postgres", 8);
    PQconninfoOption *parsed = is_conninfo ? PQconninfoParse(conninfo, &perr) : NULL;
    if (is_conninfo && !parsed) {
        PQfreemem(perr);
        mg_err_set(err, errlen, "audit: the database connection string is malformed (not "
                                "shown: it may hold a password)");
        return MG_EINVAL;
    }
    PQconninfoFree(parsed);
    return 0;
}

/* Our defaults, then the caller's string (expand_dbname: it may be a URI or
 * key=value list, and its settings override ours). TCP keepalives and
 * tcp_user_timeout bound how long a silently dead server holds a query. */
static PGconn *connect_params(const char *conninfo, int connect_timeout_s, bool start)
{
    char ct[16];
    snprintf(ct, sizeof ct, "%d", connect_timeout_s > 0 ? connect_timeout_s : 3);
    const char *keys[] = {"connect_timeout", "application_name", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                          "dbname", NULL};
    const char *vals[] = {ct, "moegate-audit", "10", "5", "3", "20000", conninfo, NULL};
    return start ? PQconnectStartParams(keys, vals, 1) : PQconnectdbParams(keys, vals, 1);
}

/* After CONNECTION_OK: what every audit session relies on. */
static int connect_check(PGconn *c, char *err, size_t errlen)
{
    /* times travel as binary timestamptz, which needs integer datetimes */
    const char *idt = PQparameterStatus(c, "integer_datetimes");
    if (!idt || strcmp(idt, "on")) {
        mg_err_set(err, errlen, "audit: database: integer_datetimes is off (unsupported)");
        return MG_EUNSUPPORTED;
    }
    return 0;
}

int audit_pg_connect(PGconn **out, const char *conninfo, int connect_timeout_s, char *err,
                     size_t errlen)
{
    int rc = conninfo_check(conninfo, err, errlen);
    if (rc)
        return rc;
    PGconn *c = connect_params(conninfo, connect_timeout_s, false);
    if (!c) {
        mg_err_set(err, errlen, "audit: database: out of memory");
        return MG_ENOMEM;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char m[256];
        pg_msg(m, sizeof m, PQerrorMessage(c));
        mg_err_set(err, errlen, "audit: database connection failed: %s", m);
        PQfinish(c);
        return MG_EIO;
    }
    if ((rc = connect_check(c, err, errlen))) {
        PQfinish(c);
        return rc;
    }
    *out = c;
    return 0;
}

int audit_pg_connect_start(PGconn **out, const char *conninfo, char *err, size_t errlen)
{
    int rc = conninfo_check(conninfo, err, errlen);
    if (rc)
        return rc;
    PGconn *c = connect_params(conninfo, 0, true);
    if (!c) {
        mg_err_set(err, errlen, "audit: database: out of memory");
        return MG_ENOMEM;
    }
    if (PQstatus(c) == CONNECTION_BAD) {
        char m[256];
        pg_msg(m, sizeof m, PQerrorMessage(c));
        mg_err_set(err, errlen, "audit: database connection failed: %s", m);
        PQfinish(c);
        return MG_EIO;
    }
    *out = c;
    return 0;
}

int audit_pg_connect_poll(PGconn *c, int *want, int64_t until_us, char *err, size_t errlen)
{
    struct pollfd p = {PQsocket(c), *want == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
    if (p.fd < 0) {
        mg_err_set(err, errlen, "audit: database connection failed: no socket");
        return MG_EIO;
    }
    for (;;) {
        int64_t left = until_us - audit_now_us();
        int n = poll(&p, 1, left > 0 ? (int)(left / 1000) : 0);
        if (n == 0)
            return 1; /* not ready yet */
        if (n < 0 && errno != EINTR) {
            mg_err_set(err, errlen, "audit: database connection: poll: %s", strerror(errno));
            return MG_EIO;
        }
        if (n < 0)
            continue;
        PostgresPollingStatusType st = PQconnectPoll(c);
        if (st == PGRES_POLLING_OK)
            return connect_check(c, err, errlen);
        if (st == PGRES_POLLING_FAILED) {
            char m[256];
            pg_msg(m, sizeof m, PQerrorMessage(c));
            mg_err_set(err, errlen, "audit: database connection failed: %s", m);
            return MG_EIO;
        }
        *want = st;
        p.fd = PQsocket(c); /* libpq may move to another address */
        p.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        p.revents = 0;
        if (p.fd < 0) {
            mg_err_set(err, errlen, "audit: database connection failed: no socket");
            return MG_EIO;
        }
    }
}

int audit_pg_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char m[256];
        pg_msg(m, sizeof m, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
        mg_err_set(err, errlen, "audit: database: %s", m);
        PQclear(r);
        return MG_EIO;
    }
    PQclear(r);
    return 0;
}

int64_t audit_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int audit_read_file(const char *path, size_t max, uint8_t **out, size_t *len, char *err,
                    size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *buf = NULL;
    if (fd < 0) {
        mg_err_set(err, errlen, "audit: cannot open %s: %s", path, strerror(errno));
        return MG_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        mg_err_set(err, errlen, "audit: %s: not a regular file of at most %zu bytes", path, max);
        close(fd);
        return MG_EFORMAT;
    }
    size_t n = (size_t)st.st_size, got = 0;
    buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return MG_ENOMEM;
    }
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            mg_err_set(err, errlen, "audit: reading %s: %s", path,
                       k < 0 ? strerror(errno) : "file shrank");
            free(buf);
            close(fd);
            return MG_EIO;
        }
        got += (size_t)k;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

const char *audit_columns_sql(void)
{
    return "chain_id, seq, request_id, received_at, finished_at, tenant, key_id, client_addr, "
           "client_subject, endpoint, domain, adapter_name, adapter_sha256, model_sha256, "
           "sampling, prompt_tokens, completion_tokens, status, error, latency_us, redaction, "
           "payload_mode, payload_key_id, prompt, completion, prev_hash, hash";
}
