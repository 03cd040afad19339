/* moegate db / audit — schema migrations, chain verification, export and
 * retention of the audit log (audit/audit.h).
 *
 *   moegate db migrate DB [--dir DIR]
 *   moegate audit verify DB [--from T] [--to T] [--checkpoints FILE] [--pubkey FILE]
 *   moegate audit export DB --format jsonl|csv [--tenant T] [--from T] [--to T]
 *                        [--key KEYFILE [--key-id ID]] [--out FILE]
 *   moegate audit retention DB --export-dir DIR [--tenant NAME=DAYS ...]
 *                        [--default-days DAYS] [--dry-run]
 *
 * DB is one of --db CONNINFO, --db-env VAR (the connection string is in the
 * environment variable VAR) or --db-file FILE (in the file; first line).
 * The latter two keep passwords out of the process list and shell history.
 * The connection string is never printed. Times T are UTC: 2026-11-28,
 * 2026-11-28T16:30:00[.ffffff][Z] or @UNIX_SECONDS. DAYS is a number or a
 * preset: securities (6 years), hipaa (6 years), cn-netlog (6 months).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "cli/cli.h"
#include "core/errors.h"

typedef struct dbarg {
    const char *inline_conninfo, *env, *file;
    char *owned;
} dbarg;

static int usage_db(void)
{
    fprintf(stderr, "usage: moegate db migrate (--db CONNINFO | --db-env VAR | --db-file FILE) "
                    "[--dir MIGRATIONS_DIR]\n");
    return 2;
}

static int usage_audit(void)
{
    fprintf(stderr,
            "usage:\n"
            "  moegate audit verify DB [--from T] [--to T] [--checkpoints FILE] [--pubkey FILE]\n"
            "                          [--max-problems N]\n"
            "  moegate audit export DB --format jsonl|csv [--tenant NAME] [--from T] [--to T]\n"
            "                          [--key KEYFILE [--key-id ID]] [--out FILE]\n"
            "  moegate audit retention DB --export-dir DIR [--tenant NAME=DAYS ...]\n"
            "                          [--default-days DAYS] [--dry-run]\n"
            "DB: --db CONNINFO | --db-env VAR | --db-file FILE (never printed)\n"
            "T: UTC time, 2026-11-28 or 2026-11-28T16:30:00Z or @UNIX_SECONDS\n"
            "DAYS: a number, or securities | hipaa (6 years), cn-netlog (6 months)\n");
    return 2;
}

/* "--name VALUE" or "--name=VALUE"; advances *i past the value. */
static const char *opt(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    const char *s = argv[*i];
    if (strncmp(s, name, n))
        return NULL;
    if (s[n] == '=')
        return s + n + 1;
    if (s[n] == 0) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "moegate: %s needs a value\n", name);
            return "";
        }
        return argv[++*i];
    }
    return NULL;
}

static bool db_opt(dbarg *d, int argc, char **argv, int *i)
{
    const char *v;
    if ((v = opt(argc, argv, i, "--db")))
        d->inline_conninfo = v;
    else if ((v = opt(argc, argv, i, "--db-env")))
        d->env = v;
    else if ((v = opt(argc, argv, i, "--db-file")))
        d->file = v;
    else
        return false;
    return true;
}

/* The connection string, or NULL after printing why. */
static const char *db_conninfo(dbarg *d)
{
    int n = !!d->inline_conninfo + !!d->env + !!d->file;
    if (n != 1) {
        fprintf(stderr, "moegate: give exactly one of --db, --db-env, --db-file\n");
        return NULL;
    }
    if (d->inline_conninfo) {
        if (!*d->inline_conninfo) {
            fprintf(stderr, "moegate: --db is empty\n");
            return NULL;
        }
        return d->inline_conninfo;
    }
    if (d->env) {
        const char *v = getenv(d->env);
        if (!v || !*v) {
            fprintf(stderr, "moegate: environment variable %s is not set\n", d->env);
            return NULL;
        }
        return v;
    }
    FILE *f = fopen(d->file, "r");
    if (!f) {
        fprintf(stderr, "moegate: --db-file %s: %s\n", d->file, strerror(errno));
        return NULL;
    }
    char buf[4096];
    if (!fgets(buf, sizeof buf, f)) {
        fclose(f);
        fprintf(stderr, "moegate: --db-file %s is empty\n", d->file);
        return NULL;
    }
    fclose(f);
    buf[strcspn(buf, "\r\n")] = 0;
    if (!buf[0]) {
        fprintf(stderr, "moegate: --db-file %s: first line is empty\n", d->file);
        return NULL;
    }
    d->owned = strdup(buf);
    memset(buf, 0, sizeof buf);
    return d->owned;
}

static void db_free(dbarg *d)
{
    if (d->owned) {
        memset(d->owned, 0, strlen(d->owned));
        free(d->owned);
    }
}

/* Parses a UTC time into microseconds since the Unix epoch; -1 on error. */
static int parse_time(const char *s, int64_t *us)
{
    if (s[0] == '@') {
        char *end;
        errno = 0;
        long long v = strtoll(s + 1, &end, 10);
        if (errno || end == s + 1 || *end || v < 0 || v > 253402300799LL)
            return -1;
        *us = (int64_t)v * 1000000;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int Y, M, D, h = 0, m = 0, sec = 0, used = 0;
    long frac = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &Y, &M, &D, &used) != 3)
        return -1;
    const char *p = s + used;
    if (*p == 'T' || *p == ' ') {
        int u2 = 0;
        if (sscanf(p + 1, "%2d:%2d:%2d%n", &h, &m, &sec, &u2) != 3)
            return -1;
        p += 1 + u2;
        if (*p == '.') {
            int digits = 0;
            for (p++; *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
                frac = frac * 10 + (*p - '0');
            if (digits == 0)
                return -1;
            while (digits++ < 6)
                frac *= 10;
        }
        if (*p == 'Z')
            p++;
    }
    if (*p || Y < 1900 || Y > 9999 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 ||
        sec > 60 || h < 0 || m < 0 || sec < 0)
        return -1;
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    *us = (int64_t)t * 1000000 + frac;
    return 0;
}

/* --from T / --to T: 1 when argv[*i] was one (value parsed), 0 when not,
 * -1 after printing why the time is bad. */
static int range_opt(int argc, char **argv, int *i, int64_t *from, int64_t *to)
{
    const char *v;
    int64_t *dst;
    const char *name;
    if ((v = opt(argc, argv, i, "--from"))) {
        dst = from;
        name = "--from";
    } else if ((v = opt(argc, argv, i, "--to"))) {
        dst = to;
        name = "--to";
    } else {
        return 0;
    }
    if (parse_time(v, dst)) {
        fprintf(stderr, "moegate: %s: bad time '%s'\n", name, v);
        return -1;
    }
    return 1;
}

static int parse_days(const char *s)
{
    if (!strcmp(s, "securities"))
        return AUDIT_RETENTION_SECURITIES_DAYS;
    if (!strcmp(s, "hipaa"))
        return AUDIT_RETENTION_HIPAA_DAYS;
    if (!strcmp(s, "cn-netlog"))
        return AUDIT_RETENTION_CN_NETLOG_DAYS;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 365L * 1000)
        return -1;
    return (int)v;
}

/* Default migrations folder: $MOEGATE_MIGRATIONS, else ../migrations next
 * to the binary (build/moegate in a checkout), else ./migrations. */
static const char *default_migrations(char *buf, size_t len)
{
    const char *e = getenv("MOEGATE_MIGRATIONS");
    if (e && *e)
        return e;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            for (int up = 1; up <= 2; up++) {
                snprintf(buf, len, "%s/%s/migrations", exe, up == 1 ? ".." : "../..");
                if (access(buf, R_OK) == 0)
                    return buf;
            }
        }
    }
    return "migrations";
}

int cmd_db(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "migrate"))
        return usage_db();
    dbarg d = {0};
    const char *dir = NULL, *v;
    for (int i = 1; i < argc; i++) {
        if (db_opt(&d, argc, argv, &i))
            continue;
        if ((v = opt(argc, argv, &i, "--dir")))
            dir = v;
        else {
            fprintf(stderr, "moegate db migrate: unknown option '%s'\n", argv[i]);
            return usage_db();
        }
    }
    const char *conninfo = db_conninfo(&d);
    if (!conninfo)
        return 2;
    char buf[PATH_MAX + 32];
    if (!dir)
        dir = default_migrations(buf, sizeof buf);
    char err[512];
    int rc = audit_migrate(conninfo, dir, stdout, err, sizeof err);
    db_free(&d);
    if (rc) {
        fprintf(stderr, "moegate: %s\n", err);
        return 1;
    }
    return 0;
}

static int cmd_verify(int argc, char **argv)
{
    dbarg d = {0};
    audit_verify_opts o = {0};
    const char *v;
    for (int i = 0; i < argc; i++) {
        if (db_opt(&d, argc, argv, &i))
            continue;
        int tr = range_opt(argc, argv, &i, &o.from_us, &o.to_us);
        if (tr < 0)
            return 2;
        if (tr > 0)
            continue;
        if ((v = opt(argc, argv, &i, "--checkpoints"))) {
            o.checkpoint_file = v;
        } else if ((v = opt(argc, argv, &i, "--pubkey"))) {
            o.public_key_file = v;
        } else if ((v = opt(argc, argv, &i, "--max-problems"))) {
            o.max_problems = atoi(v);
        } else {
            fprintf(stderr, "moegate audit verify: unknown option '%s'\n", argv[i]);
            return usage_audit();
        }
    }
    if (!(o.conninfo = db_conninfo(&d)))
        return 2;
    audit_verify_report rep;
    char err[512];
    int rc = audit_verify(&o, stdout, &rep, err, sizeof err);
    db_free(&d);
    if (rc) {
        fprintf(stderr, "moegate: %s\n", err);
        return 1;
    }
    printf("verified %llu records in %llu chains against %llu checkpoints: %llu problems\n",
           (unsigned long long)rep.records, (unsigned long long)rep.chains,
           (unsigned long long)rep.checkpoints_checked, (unsigned long long)rep.problems);
    return rep.problems ? 1 : 0;
}

static int cmd_export(int argc, char **argv)
{
    dbarg d = {0};
    audit_export_opts o = {0};
    const char *v, *out = NULL, *format = NULL;
    for (int i = 0; i < argc; i++) {
        if (db_opt(&d, argc, argv, &i))
            continue;
        int tr = range_opt(argc, argv, &i, &o.from_us, &o.to_us);
        if (tr < 0)
            return 2;
        if (tr > 0)
            continue;
        if ((v = opt(argc, argv, &i, "--format")))
            format = v;
        else if ((v = opt(argc, argv, &i, "--tenant")))
            o.tenant = v;
        else if ((v = opt(argc, argv, &i, "--key")))
            o.key_file = v;
        else if ((v = opt(argc, argv, &i, "--key-id")))
            o.key_id = v;
        else if ((v = opt(argc, argv, &i, "--out")))
            out = v;
        else {
            fprintf(stderr, "moegate audit export: unknown option '%s'\n", argv[i]);
            return usage_audit();
        }
    }
    if (!format || (strcmp(format, "jsonl") && strcmp(format, "csv"))) {
        fprintf(stderr, "moegate audit export: --format jsonl|csv is required\n");
        return 2;
    }
    o.format = strcmp(format, "csv") ? AUDIT_EXPORT_JSONL : AUDIT_EXPORT_CSV;
    if (!(o.conninfo = db_conninfo(&d)))
        return 2;
    FILE *f = stdout;
    if (out && !(f = fopen(out, "w"))) {
        fprintf(stderr, "moegate: --out %s: %s\n", out, strerror(errno));
        db_free(&d);
        return 1;
    }
    char err[512];
    uint64_t n = 0;
    int rc = audit_export(&o, f, &n, err, sizeof err);
    db_free(&d);
    if (out && fclose(f) && !rc) {
        snprintf(err, sizeof err, "audit: export: closing %s failed", out);
        rc = MG_EIO;
    }
    if (rc) {
        fprintf(stderr, "moegate: %s\n", err);
        return 1;
    }
    fprintf(stderr, "moegate: exported %llu records\n", (unsigned long long)n);
    return 0;
}

static int cmd_retention(int argc, char **argv)
{
    dbarg d = {0};
    audit_retention_opts o = {0};
    audit_retention_tenant *ts = calloc((size_t)argc + 1, sizeof *ts);
    const char *v;
    int rc = 2;
    if (!ts)
        return 1;
    for (int i = 0; i < argc; i++) {
        if (db_opt(&d, argc, argv, &i))
            continue;
        if ((v = opt(argc, argv, &i, "--export-dir"))) {
            o.export_dir = v;
        } else if ((v = opt(argc, argv, &i, "--default-days"))) {
            if ((o.default_days = parse_days(v)) < 0) {
                fprintf(stderr, "moegate: --default-days: bad value '%s'\n", v);
                goto done;
            }
        } else if ((v = opt(argc, argv, &i, "--tenant"))) {
            const char *eq = strrchr(v, '=');
            int days = eq ? parse_days(eq + 1) : -1;
            if (!eq || eq == v || days < 0) {
                fprintf(stderr, "moegate: --tenant wants NAME=DAYS, got '%s'\n", v);
                goto done;
            }
            ts[o.n_tenants].tenant = strndup(v, (size_t)(eq - v));
            ts[o.n_tenants++].days = days;
        } else if (!strcmp(argv[i], "--dry-run")) {
            o.dry_run = true;
        } else {
            fprintf(stderr, "moegate audit retention: unknown option '%s'\n", argv[i]);
            usage_audit();
            goto done;
        }
    }
    o.tenants = ts;
    if (!(o.conninfo = db_conninfo(&d)))
        goto done;
    char err[512];
    if (audit_retention_apply(&o, stdout, err, sizeof err)) {
        fprintf(stderr, "moegate: %s\n", err);
        rc = 1;
    } else {
        rc = 0;
    }
done:
    for (int i = 0; i < o.n_tenants; i++)
        free((char *)ts[i].tenant);
    free(ts);
    db_free(&d);
    return rc;
}

int cmd_audit(int argc, char **argv)
{
    if (argc < 1)
        return usage_audit();
    if (!strcmp(argv[0], "verify"))
        return cmd_verify(argc - 1, argv + 1);
    if (!strcmp(argv[0], "export"))
        return cmd_export(argc - 1, argv + 1);
    if (!strcmp(argv[0], "retention"))
        return cmd_retention(argc - 1, argv + 1);
    return usage_audit();
}
