/* moegate — schema migrations: numbered SQL files applied in order.
 *
 * A migration is a file NNN_name.sql in the migrations folder (NNN: the
 * version, 1 to 9 digits; name: [A-Za-z0-9_]). audit_migrate takes a
 * session advisory lock (two concurrent runs serialise), creates
 * schema_migrations when missing, and checks every applied version against
 * its file before applying anything: a file whose SHA-256 changed, an
 * applied version whose file is gone, or a new file numbered below an
 * applied one stops the run with an error naming it. Each pending file then
 * runs in its own transaction together with its schema_migrations row, so
 * a failing migration leaves no trace and the next run retries it. Running
 * again when everything is applied changes nothing.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

#define MAX_MIGRATIONS 1000
#define MAX_SQL_BYTES  (4u << 20)

typedef struct mig {
    long version;
    char name[256];
    char sha[65];
    char *sql;
} mig;

static int cmp_mig(const void *a, const void *b)
{
    long x = ((const mig *)a)->version, y = ((const mig *)b)->version;
    return x < y ? -1 : x > y;
}

/* Version of a file name NNN_name.sql, or -1 when it is not a migration. */
static long parse_name(const char *s)
{
    long v = 0;
    size_t i = 0, n = strlen(s);
    while (i < n && s[i] >= '0' && s[i] <= '9' && i < 9)
        v = v * 10 + (s[i++] - '0');
    if (i == 0 || i >= n || s[i] != '_' || n < 5 || strcmp(s + n - 4, ".sql"))
        return -1;
    for (size_t k = i + 1; k < n - 4; k++) {
        char c = s[k];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return -1;
    }
    return n - 4 > i + 1 ? v : -1;
}

static void free_migs(mig *m, int n)
{
    for (int i = 0; i < n; i++)
        free(m[i].sql);
    free(m);
}

static int load_dir(const char *dir, mig **out, int *n_out, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    mig *m = NULL;
    int n = 0, rc = 0;
    if (!d) {
        mg_err_set(err, errlen, "audit: migrations folder %s cannot be opened", dir);
        return MG_EIO;
    }
    m = calloc(MAX_MIGRATIONS, sizeof *m);
    if (!m) {
        closedir(d);
        return MG_ENOMEM;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        long v = parse_name(e->d_name);
        if (v < 0) {
            if (strlen(e->d_name) > 4 && !strcmp(e->d_name + strlen(e->d_name) - 4, ".sql")) {
                mg_err_set(err, errlen, "audit: migration file %s/%s is not named NNN_name.sql",
                           dir, e->d_name);
                rc = MG_EFORMAT;
                goto done;
            }
            continue;
        }
        if (n == MAX_MIGRATIONS || strlen(e->d_name) >= sizeof m[n].name) {
            mg_err_set(err, errlen, "audit: too many migrations or name too long in %s", dir);
            rc = MG_ERANGE;
            goto done;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        uint8_t *buf;
        size_t len;
        if ((rc = audit_read_file(path, MAX_SQL_BYTES, &buf, &len, err, errlen)))
            goto done;
        if (memchr(buf, 0, len)) {
            free(buf);
            mg_err_set(err, errlen, "audit: migration %s contains a NUL byte", path);
            rc = MG_EFORMAT;
            goto done;
        }
        uint8_t h[32];
        unsigned int hl = 0;
        EVP_Digest(buf, len, h, &hl, EVP_sha256(), NULL);
        audit_hex(m[n].sha, h, 32);
        m[n].version = v;
        snprintf(m[n].name, sizeof m[n].name, "%s", e->d_name);
        m[n].sql = (char *)buf;
        n++;
    }
    qsort(m, (size_t)n, sizeof *m, cmp_mig);
    for (int i = 1; i < n; i++)
        if (m[i].version == m[i - 1].version) {
            mg_err_set(err, errlen, "audit: migrations %s and %s share version %ld",
                       m[i - 1].name, m[i].name, m[i].version);
            rc = MG_EFORMAT;
            goto done;
        }
done:
    closedir(d);
    if (rc) {
        free_migs(m, n);
        return rc;
    }
    *out = m;
    *n_out = n;
    return 0;
}

int audit_migrate(const char *conninfo, const char *dir, FILE *log, char *err, size_t errlen)
{
    mig *m = NULL;
    int n = 0, rc;
    PGconn *c = NULL;
    PGresult *r = NULL;
    bool *applied = NULL;
    if ((rc = load_dir(dir, &m, &n, err, errlen)))
        return rc;
    if (n == 0) {
        mg_err_set(err, errlen, "audit: no migrations in %s", dir);
        rc = MG_ENOTFOUND;
        goto fail;
    }
    if ((rc = audit_pg_connect(&c, conninfo, 10, err, errlen)))
        goto fail;
    rc = MG_EIO;
    if (audit_pg_exec(c, "SET client_min_messages TO warning; "
                         "SELECT pg_advisory_lock(hashtext('moegate-migrate')); "
                         "CREATE TABLE IF NOT EXISTS schema_migrations ("
                         " version integer PRIMARY KEY, name text NOT NULL,"
                         " sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                      err, errlen))
        goto fail;
    r = PQexec(c, "SELECT version, name, sha256 FROM schema_migrations ORDER BY version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        mg_err_set(err, errlen, "audit: reading schema_migrations: %s",
                   PQresultErrorMessage(r));
        goto fail;
    }
    long max_applied = 0;
    int n_applied = PQntuples(r);
    applied = calloc((size_t)n, sizeof *applied);
    if (!applied) {
        rc = MG_ENOMEM;
        goto fail;
    }
    for (int i = 0; i < n_applied; i++) {
        long v = strtol(PQgetvalue(r, i, 0), NULL, 10);
        const char *sha = PQgetvalue(r, i, 2);
        int k = 0;
        while (k < n && m[k].version != v)
            k++;
        if (k == n) {
            mg_err_set(err, errlen,
                       "audit: migration %ld (%s) is applied but its file is missing from %s", v,
                       PQgetvalue(r, i, 1), dir);
            rc = MG_ENOTFOUND;
            goto fail;
        }
        if (strcmp(sha, m[k].sha)) {
            mg_err_set(err, errlen,
                       "audit: migration %s changed after it was applied (recorded sha256 "
                       "%.12s..., file %.12s...); add a new migration instead",
                       m[k].name, sha, m[k].sha);
            rc = MG_EFORMAT;
            goto fail;
        }
        applied[k] = true;
        if (v > max_applied)
            max_applied = v;
    }
    for (int k = 0; k < n; k++)
        if (!applied[k] && m[k].version < max_applied) {
            mg_err_set(err, errlen,
                       "audit: migration %s is numbered below the applied version %ld", m[k].name,
                       max_applied);
            rc = MG_EFORMAT;
            goto fail;
        }
    PQclear(r);
    r = NULL;
    int n_new = 0;
    for (int k = 0; k < n; k++) {
        if (applied[k])
            continue;
        char v[24];
        snprintf(v, sizeof v, "%ld", m[k].version);
        const char *params[3] = {v, m[k].name, m[k].sha};
        if (audit_pg_exec(c, "BEGIN", err, errlen))
            goto fail;
        r = PQexec(c, m[k].sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
            char *nl = strchr(msg, '\n');
            if (nl)
                *nl = 0;
            mg_err_set(err, errlen, "audit: migration %s failed (rolled back): %s", m[k].name,
                       msg);
            PQclear(r);
            r = NULL;
            (void)audit_pg_exec(c, "ROLLBACK", NULL, 0);
            goto fail;
        }
        PQclear(r);
        r = PQexecParams(c, "INSERT INTO schema_migrations (version, name, sha256) "
                            "VALUES ($1::integer, $2, $3)",
                         3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK ||
            audit_pg_exec(c, "COMMIT", err, errlen)) {
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                mg_err_set(err, errlen, "audit: recording migration %s failed", m[k].name);
            (void)audit_pg_exec(c, "ROLLBACK", NULL, 0);
            goto fail;
        }
        PQclear(r);
        r = NULL;
        n_new++;
        if (log)
            fprintf(log, "applied %s (sha256 %.12s...)\n", m[k].name, m[k].sha);
    }
    if (log && n_new == 0)
        fprintf(log, "schema is up to date (%d migrations applied)\n", n);
    rc = 0;
fail:
    free(applied);
    PQclear(r);
    PQfinish(c);
    free_migs(m, n);
    return rc;
}
