/* moegate — retention: expired month partitions are exported, then
 * detached; never dropped.
 *
 * A partition (audit_events_YYYYMM) holds every tenant's records of one
 * month, so it expires only when its newest possible record is past the
 * retention of every tenant that has records in it (a tenant without a
 * setting uses default_days; 0 means "keep for ever", which keeps the
 * partition). An empty partition expires after the longest retention in
 * force. The export (JSONL, every column, payloads as stored) is written
 * to a temporary file, fsync'd, renamed into place and its directory
 * fsync'd before the partition is detached; the detach and its
 * audit_retention_log row (file name, record count, file SHA-256) commit
 * together. A detached partition stays a plain table the operator may
 * archive with pg_dump and drop once the export is safely stored: that
 * decision is theirs, not ours.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

static int days_for(const audit_retention_opts *o, const char *tenant, bool null)
{
    for (int i = 0; i < o->n_tenants && !null; i++)
        if (o->tenants[i].tenant && !strcmp(o->tenants[i].tenant, tenant))
            return o->tenants[i].days;
    return o->default_days;
}

static int file_sha256(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return MG_EIO;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    uint8_t buf[65536], h[32];
    unsigned int hl = 0;
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0)
        ok = EVP_DigestUpdate(c, buf, n);
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(c, h, &hl);
    EVP_MD_CTX_free(c);
    fclose(f);
    if (!ok)
        return MG_EIO;
    audit_hex(hex, h, 32);
    return 0;
}

/* Exports partition name to dir/name.jsonl durably; *rows, sha. */
static int export_partition(const audit_retention_opts *o, const char *name, uint64_t *rows,
                            char *path, size_t pathlen, char sha[65], char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(path, pathlen, "%s/%s.jsonl", o->export_dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        mg_err_set(err, errlen, "audit: retention: cannot write %s: %s", tmp, strerror(errno));
        return MG_EIO;
    }
    audit_export_opts eo = {.conninfo = o->conninfo, .format = AUDIT_EXPORT_JSONL,
                            .partition = name};
    int rc = audit_export(&eo, f, rows, err, errlen);
    if (!rc && (fflush(f) || fsync(fileno(f)))) {
        mg_err_set(err, errlen, "audit: retention: writing %s: %s", tmp, strerror(errno));
        rc = MG_EIO;
    }
    if (fclose(f) && !rc) {
        mg_err_set(err, errlen, "audit: retention: closing %s failed", tmp);
        rc = MG_EIO;
    }
    if (!rc && rename(tmp, path)) {
        mg_err_set(err, errlen, "audit: retention: rename to %s: %s", path, strerror(errno));
        rc = MG_EIO;
    }
    if (rc) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(o->export_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd)) {
        mg_err_set(err, errlen, "audit: retention: fsync of %s failed", o->export_dir);
        rc = MG_EIO;
    }
    if (dfd >= 0)
        close(dfd);
    if (!rc && file_sha256(path, sha)) {
        mg_err_set(err, errlen, "audit: retention: cannot read back %s", path);
        rc = MG_EIO;
    }
    return rc;
}

int audit_retention_apply(const audit_retention_opts *o, FILE *log, char *err, size_t errlen)
{
    PGconn *c = NULL;
    PGresult *parts = NULL, *r = NULL;
    int rc;
    if (!o->export_dir) {
        mg_err_set(err, errlen, "audit: retention: an export folder is required");
        return MG_EINVAL;
    }
    for (int i = 0; i < o->n_tenants; i++)
        if (o->tenants[i].days < 0) {
            mg_err_set(err, errlen, "audit: retention: negative days for tenant %s",
                       o->tenants[i].tenant ? o->tenants[i].tenant : "?");
            return MG_EINVAL;
        }
    int64_t now = o->now_us ? o->now_us : audit_now_us();
    int longest = o->default_days;
    for (int i = 0; i < o->n_tenants; i++)
        if (o->tenants[i].days > longest)
            longest = o->tenants[i].days;
    bool forever = o->default_days == 0;
    for (int i = 0; i < o->n_tenants; i++)
        forever = forever || o->tenants[i].days == 0;
    if ((rc = audit_pg_connect(&c, o->conninfo, 10, err, errlen)))
        return rc;
    rc = MG_EIO;
    /* month partitions by name (the writer and migrations name them so),
     * with their upper bound as microseconds since the Unix epoch */
    parts = PQexec(c, "SELECT c.relname, (extract(epoch FROM to_timestamp(substr(c.relname, 14), "
                      "'YYYYMM')::timestamp AT TIME ZONE 'UTC' + interval '1 month') * 1000000)"
                      "::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                      "WHERE i.inhparent = 'audit_events'::regclass "
                      "AND c.relname ~ '^audit_events_[0-9]{6}$' ORDER BY c.relname");
    if (PQresultStatus(parts) != PGRES_TUPLES_OK) {
        mg_err_set(err, errlen, "audit: retention: listing partitions: %s",
                   PQresultErrorMessage(parts));
        goto fail;
    }
    for (int p = 0; p < PQntuples(parts); p++) {
        const char *name = PQgetvalue(parts, p, 0);
        int64_t end_us = strtoll(PQgetvalue(parts, p, 1), NULL, 10);
        if (end_us > now) {
            if (log)
                fprintf(log, "%s: kept (month not over)\n", name);
            continue;
        }
        char *ident = PQescapeIdentifier(c, name, strlen(name));
        char sql[512];
        snprintf(sql, sizeof sql, "SELECT tenant, count(*) FROM %s GROUP BY tenant",
                 ident ? ident : "\"?\"");
        PQfreemem(ident);
        r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            mg_err_set(err, errlen, "audit: retention: %s: %s", name, PQresultErrorMessage(r));
            goto fail;
        }
        bool expired = true;
        uint64_t count = 0;
        int n_t = PQntuples(r);
        for (int t = 0; t < n_t; t++) {
            int d = days_for(o, PQgetvalue(r, t, 0), PQgetisnull(r, t, 0));
            count += strtoull(PQgetvalue(r, t, 1), NULL, 10);
            if (d == 0 || end_us + (int64_t)d * 86400000000LL > now)
                expired = false;
        }
        if (n_t == 0 && (forever || end_us + (int64_t)longest * 86400000000LL > now))
            expired = false;
        PQclear(r);
        r = NULL;
        if (!expired) {
            if (log)
                fprintf(log, "%s: kept (%llu records within retention)\n", name,
                        (unsigned long long)count);
            continue;
        }
        if (o->dry_run) {
            if (log)
                fprintf(log, "%s: expired, would export and detach %llu records\n", name,
                        (unsigned long long)count);
            continue;
        }
        char path[4096], sha[65];
        uint64_t rows = 0;
        if ((rc = export_partition(o, name, &rows, path, sizeof path, sha, err, errlen)))
            goto fail;
        rc = MG_EIO;
        if (rows != count) {
            mg_err_set(err, errlen, "audit: retention: %s: exported %llu records, counted %llu",
                       name, (unsigned long long)rows, (unsigned long long)count);
            goto fail;
        }
        ident = PQescapeIdentifier(c, name, strlen(name));
        snprintf(sql, sizeof sql, "ALTER TABLE audit_events DETACH PARTITION %s",
                 ident ? ident : "\"?\"");
        PQfreemem(ident);
        char rows_s[24];
        snprintf(rows_s, sizeof rows_s, "%llu", (unsigned long long)rows);
        const char *params[4] = {name, rows_s, path, sha};
        if (audit_pg_exec(c, "BEGIN", err, errlen) || audit_pg_exec(c, sql, err, errlen))
            goto fail_tx;
        r = PQexecParams(c,
                         "INSERT INTO audit_retention_log (partition_name, range_from, range_to, "
                         "records, export_file, export_sha256) VALUES ($1, "
                         "to_timestamp(substr($1, 14), 'YYYYMM')::timestamp AT TIME ZONE 'UTC', "
                         "to_timestamp(substr($1, 14), 'YYYYMM')::timestamp AT TIME ZONE 'UTC' "
                         "+ interval '1 month', $2::bigint, $3, $4)",
                         4, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            mg_err_set(err, errlen, "audit: retention: logging %s: %s", name,
                       PQresultErrorMessage(r));
            goto fail_tx;
        }
        PQclear(r);
        r = NULL;
        if (audit_pg_exec(c, "COMMIT", err, errlen))
            goto fail;
        if (log)
            fprintf(log, "%s: exported %llu records to %s (sha256 %s), detached\n", name,
                    (unsigned long long)rows, path, sha);
    }
    rc = 0;
    goto done;
fail_tx:
    (void)audit_pg_exec(c, "ROLLBACK", NULL, 0);
fail:
done:
    PQclear(r);
    PQclear(parts);
    PQfinish(c);
    return rc;
}
