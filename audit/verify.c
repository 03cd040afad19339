/* moegate — audit verification, export and retention.
 *
 * verify walks every chain in sequence order inside one REPEATABLE READ
 * read-only transaction (a consistent snapshot while the gateway keeps
 * writing), through a cursor fetched in binary 2,000 rows at a time, so
 * memory stays flat whatever the table's size. For each row it rebuilds the
 * canonical serialisation from the columns, recomputes the hash and checks:
 *   - altered record: recomputed hash != stored hash;
 *   - broken link: stored prev_hash != the previous record's hash;
 *   - reordered record: a broken link whose prev_hash is the hash of a
 *     record seen elsewhere in the recent window;
 *   - gap / duplicate: sequence numbers not consecutive;
 *   - checkpoint disagreement: a trusted signed checkpoint names a hash
 *     other than the record's at its sequence number;
 *   - missing newest records: a trusted checkpoint beyond the chain's end.
 * After each problem the walk continues from the stored values, so one
 * altered record is reported once rather than as a cascade.
 *
 * Trust: checkpoint lines from the file (the WORM copy) are trusted when
 * their signature verifies; their keys (and --pubkey's) are the trusted
 * keys. Database checkpoints count only when signed by a trusted key: a
 * superuser can write that table too.
 *
 * Rows are external input: each column is checked (binary lengths, UTF-8,
 * limits, payload mode) and a malformed row is reported, never trusted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

#define FETCH_ROWS  2000
#define RECENT      1024 /* hashes remembered for reorder detection */
#define N_COLS      (AUDIT_NFIELDS + 4)
#define COL_PREV    (AUDIT_NFIELDS + 2)
#define COL_HASH    (AUDIT_NFIELDS + 3)

static uint64_t be64(const char *p)
{
    const uint8_t *u = (const uint8_t *)p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | u[i];
    return v;
}

static uint32_t be32(const char *p)
{
    const uint8_t *u = (const uint8_t *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void fmt_time(char *out, size_t len, int64_t us)
{
    time_t t = (time_t)(us / 1000000 - (us % 1000000 < 0));
    long frac = (long)(us - (int64_t)t * 1000000);
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        snprintf(out, len, "?");
        return;
    }
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* Builds an audit_rec from a binary result row (columns audit_columns_sql).
 * Returns 0, or MG_EFORMAT with the column named in err. */
static int row_to_rec(PGresult *r, int row, audit_rec *rec, char *err, size_t errlen)
{
    memset(rec, 0, sizeof *rec);
    for (int f = 0; f < AUDIT_NFIELDS; f++) {
        int col = f + 2;
        audit_value *v = &rec->v[f];
        bool null = PQgetisnull(r, row, col);
        int len = PQgetlength(r, row, col);
        const char *p = PQgetvalue(r, row, col);
        const char *name = audit_fields[f].column;
        switch (audit_fields[f].type) {
        case AF_TEXT:
        case AF_BYTES:
            v->null = null;
            v->p = (const uint8_t *)p;
            v->len = null ? 0 : (uint32_t)len;
            break;
        case AF_I64:
        case AF_TIME:
            if (null || len != 8)
                goto bad;
            v->i = (int64_t)be64(p);
            if (audit_fields[f].type == AF_TIME)
                v->i += AUDIT_PG_EPOCH_US;
            break;
        case AF_I32:
            if (null || len != 4)
                goto bad;
            v->i = (int32_t)be32(p);
            break;
        case AF_MODE: {
            int m = null ? -1 : audit_payload_mode_parse(p, (size_t)len);
            if (m < 0)
                goto bad;
            v->i = m;
            break;
        }
        }
        continue;
    bad:
        mg_err_set(err, errlen, "column %s is malformed", name);
        return MG_EFORMAT;
    }
    return 0;
}

/* ---- trusted checkpoints ----------------------------------------------------------------- */

typedef struct ckpt_set {
    audit_ckpt *c;
    int n, cap;
    uint8_t (*keys)[32];
    int n_keys, cap_keys;
} ckpt_set;

static int ckpt_push(ckpt_set *s, const audit_ckpt *c)
{
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 64;
        audit_ckpt *p = realloc(s->c, sizeof *p * (size_t)nc);
        if (!p)
            return MG_ENOMEM;
        s->c = p;
        s->cap = nc;
    }
    s->c[s->n++] = *c;
    return 0;
}

static bool key_trusted(const ckpt_set *s, const uint8_t *k)
{
    for (int i = 0; i < s->n_keys; i++)
        if (!memcmp(s->keys[i], k, 32))
            return true;
    return false;
}

static int key_add(ckpt_set *s, const uint8_t *k)
{
    if (key_trusted(s, k))
        return 0;
    if (s->n_keys == s->cap_keys) {
        int nc = s->cap_keys ? s->cap_keys * 2 : 4;
        uint8_t(*p)[32] = realloc(s->keys, sizeof *p * (size_t)nc);
        if (!p)
            return MG_ENOMEM;
        s->keys = p;
        s->cap_keys = nc;
    }
    memcpy(s->keys[s->n_keys++], k, 32);
    return 0;
}

static int cmp_ckpt(const void *a, const void *b)
{
    const audit_ckpt *x = a, *y = b;
    int c = strcmp(x->chain_id, y->chain_id);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

typedef struct vstate {
    FILE *out;
    audit_verify_report *rep;
    int max_problems;
} vstate;

static void problem(vstate *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(vstate *v, const char *fmt, ...)
{
    v->rep->problems++;
    if (v->rep->problems > (uint64_t)v->max_problems)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("problem: ", v->out);
    vfprintf(v->out, fmt, ap);
    fputc('\n', v->out);
    va_end(ap);
    if (v->rep->problems == (uint64_t)v->max_problems)
        fprintf(v->out, "problem: (further problems counted, not shown)\n");
}

static int load_ckpt_file(const char *path, ckpt_set *s, vstate *v, bool have_pub, char *err,
                          size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        mg_err_set(err, errlen, "audit: checkpoint file %s: %s", path, strerror(errno));
        return MG_EIO;
    }
    char line[1024];
    long no = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        no++;
        if (line[0] == '\n' || line[0] == '#')
            continue;
        audit_ckpt c;
        char why[128];
        if (!strchr(line, '\n') && !feof(f)) {
            problem(v, "checkpoint file %s line %ld: longer than %zu bytes", path, no,
                    sizeof line);
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {
            }
            continue;
        }
        if (audit_ckpt_parse(&c, line, why, sizeof why)) {
            problem(v, "checkpoint file %s line %ld: %s", path, no, why);
            continue;
        }
        if (!audit_ckpt_verify(&c)) {
            problem(v, "checkpoint file %s line %ld: signature does not verify (chain %s seq "
                       "%lld)",
                    path, no, c.chain_id, (long long)c.seq);
            continue;
        }
        if (have_pub && !key_trusted(s, c.pubkey)) {
            problem(v, "checkpoint file %s line %ld: signed by a key other than --pubkey", path,
                    no);
            continue;
        }
        if ((rc = key_add(s, c.pubkey)) || (rc = ckpt_push(s, &c)))
            break;
    }
    if (ferror(f) && !rc) {
        mg_err_set(err, errlen, "audit: checkpoint file %s: read error", path);
        rc = MG_EIO;
    }
    fclose(f);
    return rc;
}

static int load_db_ckpts(PGconn *c, ckpt_set *s, vstate *v, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(c,
                               "SELECT chain_id, seq, hash, signed_at, signature, public_key "
                               "FROM audit_checkpoints ORDER BY chain_id, seq",
                               0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        mg_err_set(err, errlen, "audit: reading audit_checkpoints: %s", PQresultErrorMessage(r));
        PQclear(r);
        return MG_EIO;
    }
    int rc = 0, untrusted = 0;
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        audit_ckpt k;
        memset(&k, 0, sizeof k);
        int cl = PQgetlength(r, i, 0);
        if (cl <= 0 || cl > (int)AUDIT_MAX_CHAIN_ID || PQgetlength(r, i, 1) != 8 ||
            PQgetlength(r, i, 2) != 32 || PQgetlength(r, i, 3) != 8 ||
            PQgetlength(r, i, 4) != 64 || PQgetlength(r, i, 5) != 32) {
            problem(v, "audit_checkpoints row %d is malformed", i + 1);
            continue;
        }
        memcpy(k.chain_id, PQgetvalue(r, i, 0), (size_t)cl);
        k.seq = (int64_t)be64(PQgetvalue(r, i, 1));
        memcpy(k.hash, PQgetvalue(r, i, 2), 32);
        k.time_us = (int64_t)be64(PQgetvalue(r, i, 3)) + AUDIT_PG_EPOCH_US;
        memcpy(k.sig, PQgetvalue(r, i, 4), 64);
        memcpy(k.pubkey, PQgetvalue(r, i, 5), 32);
        if (!audit_ckpt_verify(&k)) {
            problem(v, "database checkpoint chain %s seq %lld: signature does not verify",
                    k.chain_id, (long long)k.seq);
            continue;
        }
        if (!key_trusted(s, k.pubkey)) {
            untrusted++;
            continue;
        }
        rc = ckpt_push(s, &k);
    }
    if (untrusted)
        fprintf(v->out,
                "note: %d database checkpoints not used: no trusted key (give --checkpoints "
                "or --pubkey)\n",
                untrusted);
    PQclear(r);
    return rc;
}

/* ---- walking one chain ------------------------------------------------------------------------ */

typedef struct chain_walk {
    const char *chain;
    bool have_last;
    int64_t last_seq;
    uint8_t last_hash[32];
    uint8_t recent[RECENT][32];
    int64_t recent_seq[RECENT];
    int n_recent;
    const audit_ckpt *ck; /* this chain's checkpoints, sorted by seq */
    int n_ck, ck_i;
    bool check_start;     /* the walk starts at the chain's beginning */
    bool detached;        /* retention detached partitions: the start may be gone */
} chain_walk;

static void walk_row(vstate *v, chain_walk *w, PGresult *r, int row, audit_buf *enc)
{
    char why[160];
    audit_rec rec, chk;
    if (PQgetlength(r, row, 1) != 8 || PQgetisnull(r, row, COL_PREV) ||
        PQgetisnull(r, row, COL_HASH) || PQgetlength(r, row, COL_PREV) != 32 ||
        PQgetlength(r, row, COL_HASH) != 32) {
        problem(v, "chain %s: row with a malformed seq or hash column", w->chain);
        return;
    }
    int64_t seq = (int64_t)be64(PQgetvalue(r, row, 1));
    const uint8_t *prev = (const uint8_t *)PQgetvalue(r, row, COL_PREV);
    const uint8_t *hash = (const uint8_t *)PQgetvalue(r, row, COL_HASH);
    v->rep->records++;

    if (w->have_last) {
        if (seq == w->last_seq)
            problem(v, "chain %s seq %lld: duplicate sequence number", w->chain, (long long)seq);
        else if (seq > w->last_seq + 1)
            problem(v, "chain %s: gap, seq %lld..%lld missing", w->chain,
                    (long long)w->last_seq + 1, (long long)seq - 1);
        if (seq != w->last_seq && memcmp(prev, w->last_hash, 32)) {
            int found = -1;
            for (int i = 0; i < w->n_recent && i < RECENT; i++)
                if (!memcmp(w->recent[i], prev, 32))
                    found = i;
            if (found >= 0)
                problem(v, "chain %s seq %lld: reordered record, it links to seq %lld", w->chain,
                        (long long)seq, (long long)w->recent_seq[found]);
            else if (seq == w->last_seq + 1)
                problem(v, "chain %s seq %lld: broken link (prev_hash is not seq %lld's hash)",
                        w->chain, (long long)seq, (long long)w->last_seq);
        }
    } else {
        static const uint8_t zero[32];
        if (w->check_start && seq == 1 && memcmp(prev, zero, 32))
            problem(v, "chain %s seq 1: prev_hash of the first record is not zero", w->chain);
        if (w->check_start && seq > 1) {
            if (w->detached)
                fprintf(v->out, "note: chain %s begins at seq %lld; retention detached "
                                "partitions (see audit_retention_log)\n",
                        w->chain, (long long)seq);
            else
                problem(v, "chain %s: records missing at the start, the chain begins at seq %lld",
                        w->chain, (long long)seq);
        }
        /* otherwise the first record's link is checked only when a trusted
         * checkpoint names the record before it */
        for (int i = 0; i < w->n_ck; i++)
            if (w->ck[i].seq == seq - 1 && memcmp(w->ck[i].hash, prev, 32))
                problem(v, "chain %s seq %lld: prev_hash disagrees with the signed checkpoint "
                           "at seq %lld",
                        w->chain, (long long)seq, (long long)seq - 1);
    }

    int rc = row_to_rec(r, row, &rec, why, sizeof why);
    if (rc == 0) {
        enc->len = 0;
        audit_rec_encode(&rec, enc);
        /* decoding our own encoding re-applies every limit and UTF-8 check */
        rc = enc->oom ? MG_ENOMEM : audit_rec_decode(&chk, enc->p, enc->len, why, sizeof why);
    }
    if (rc) {
        problem(v, "chain %s seq %lld: malformed record: %s", w->chain, (long long)seq, why);
    } else {
        uint8_t h[32];
        if (audit_chain_hash(h, prev, w->chain, seq, enc->p, enc->len) == 0 &&
            memcmp(h, hash, 32)) {
            char rid[AUDIT_MAX_REQUEST_ID + 1];
            int l = PQgetlength(r, row, 2);
            snprintf(rid, sizeof rid, "%.*s", l, PQgetvalue(r, row, 2));
            problem(v, "chain %s seq %lld (request %s): altered record, its hash does not match "
                       "its contents",
                    w->chain, (long long)seq, rid);
        }
    }

    while (w->ck_i < w->n_ck && w->ck[w->ck_i].seq < seq)
        w->ck_i++;
    for (int i = w->ck_i; i < w->n_ck && w->ck[i].seq == seq; i++) {
        v->rep->checkpoints_checked++;
        if (memcmp(w->ck[i].hash, hash, 32)) {
            char t[40];
            fmt_time(t, sizeof t, w->ck[i].time_us);
            problem(v, "chain %s seq %lld: disagrees with the signed checkpoint of %s", w->chain,
                    (long long)seq, t);
        }
    }

    memcpy(w->recent[w->n_recent % RECENT], hash, 32);
    w->recent_seq[w->n_recent % RECENT] = seq;
    w->n_recent++;
    w->have_last = true;
    w->last_seq = seq;
    memcpy(w->last_hash, hash, 32);
}

static int walk_chain(PGconn *c, vstate *v, const char *chain, int64_t lo, int64_t hi,
                      const audit_ckpt *ck, int n_ck, bool check_start, bool detached,
                      bool check_tail, char *err, size_t errlen)
{
    char sql[1024], slo[24], shi[24];
    chain_walk *w = calloc(1, sizeof *w);
    audit_buf enc = {0};
    int rc = MG_EIO;
    if (!w)
        return MG_ENOMEM;
    w->chain = chain;
    w->ck = ck;
    w->n_ck = n_ck;
    w->check_start = check_start;
    w->detached = detached;
    snprintf(slo, sizeof slo, "%lld", (long long)lo);
    snprintf(shi, sizeof shi, "%lld", (long long)hi);
    snprintf(sql, sizeof sql,
             "DECLARE audit_walk NO SCROLL CURSOR FOR SELECT %s FROM audit_events "
             "WHERE chain_id = $1 AND seq BETWEEN $2::bigint AND $3::bigint ORDER BY seq",
             audit_columns_sql());
    const char *params[3] = {chain, slo, shi};
    PGresult *r = PQexecParams(c, sql, 3, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        mg_err_set(err, errlen, "audit: verify: %s", PQresultErrorMessage(r));
        goto done;
    }
    PQclear(r);
    char fetch[64];
    snprintf(fetch, sizeof fetch, "FETCH %d FROM audit_walk", FETCH_ROWS);
    for (;;) {
        r = PQexecParams(c, fetch, 0, NULL, NULL, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != N_COLS) {
            mg_err_set(err, errlen, "audit: verify: fetch: %s", PQresultErrorMessage(r));
            goto done;
        }
        int n = PQntuples(r);
        if (n == 0)
            break;
        for (int i = 0; i < n; i++)
            walk_row(v, w, r, i, &enc);
        PQclear(r);
        r = NULL;
    }
    PQclear(r);
    r = PQexec(c, "CLOSE audit_walk");
    if (check_tail) {
        for (int i = 0; i < n_ck; i++)
            if (!w->have_last || ck[i].seq > w->last_seq) {
                char t[40];
                fmt_time(t, sizeof t, ck[i].time_us);
                v->rep->checkpoints_checked++;
                problem(v, "chain %s: records missing, the signed checkpoint of %s names seq "
                           "%lld but the chain ends at seq %lld",
                        chain, t, (long long)ck[i].seq, (long long)(w->have_last ? w->last_seq : 0));
                break;
            }
    }
    rc = 0;
done:
    PQclear(r);
    audit_buf_free(&enc);
    free(w);
    return rc;
}

/* timestamptz parameters for a [from, to) range; 0 means unbounded. */
static void range_params(int64_t from_us, int64_t to_us, char from[40], char to[40])
{
    snprintf(from, 40, "-infinity");
    snprintf(to, 40, "infinity");
    if (from_us)
        fmt_time(from, 40, from_us);
    if (to_us)
        fmt_time(to, 40, to_us);
}

int audit_verify(const audit_verify_opts *o, FILE *out, audit_verify_report *rep, char *err,
                 size_t errlen)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    ckpt_set cs = {0};
    int rc;
    memset(rep, 0, sizeof *rep);
    vstate v = {out, rep, o->max_problems > 0 ? o->max_problems : 100};
    bool have_pub = false;
    if (o->public_key_file) {
        uint8_t pub[32];
        if ((rc = audit_pubkey_load(pub, o->public_key_file, err, errlen)))
            return rc;
        if ((rc = key_add(&cs, pub)))
            return rc;
        have_pub = true;
    }
    if (o->checkpoint_file &&
        (rc = load_ckpt_file(o->checkpoint_file, &cs, &v, have_pub, err, errlen)))
        goto fail;
    if ((rc = audit_pg_connect(&c, o->conninfo, 10, err, errlen)))
        goto fail;
    rc = MG_EIO;
    if (audit_pg_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen))
        goto fail;
    if ((rc = load_db_ckpts(c, &cs, &v, err, errlen)))
        goto fail;
    if (cs.n > 1)
        qsort(cs.c, (size_t)cs.n, sizeof *cs.c, cmp_ckpt);

    r = PQexec(c, "SELECT count(*) FROM audit_retention_log");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        mg_err_set(err, errlen, "audit: verify: %s", PQresultErrorMessage(r));
        rc = MG_EIO;
        goto fail;
    }
    bool detached = strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    PQclear(r);
    char from[40], to[40];
    range_params(o->from_us, o->to_us, from, to);
    const char *params[2] = {from, to};
    r = PQexecParams(c,
                     "SELECT chain_id, min(seq), max(seq) FROM audit_events "
                     "WHERE received_at >= $1::timestamptz AND received_at < $2::timestamptz "
                     "GROUP BY chain_id ORDER BY chain_id",
                     2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        mg_err_set(err, errlen, "audit: verify: %s", PQresultErrorMessage(r));
        rc = MG_EIO;
        goto fail;
    }
    bool whole = !o->from_us && !o->to_us;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *chain = PQgetvalue(r, i, 0);
        int64_t lo = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        int64_t hi = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        int k0 = 0;
        while (k0 < cs.n && strcmp(cs.c[k0].chain_id, chain) < 0)
            k0++;
        int k1 = k0;
        while (k1 < cs.n && !strcmp(cs.c[k1].chain_id, chain))
            k1++;
        rep->chains++;
        /* without --to, the whole tail is in range: records after a
         * checkpoint must still exist */
        if (!o->to_us)
            hi = INT64_MAX;
        if ((rc = walk_chain(c, &v, chain, lo, hi, cs.c + k0, k1 - k0, !o->from_us, detached,
                             !o->to_us, err, errlen)))
            goto fail;
    }
    /* chains that checkpoints know and the table lost entirely */
    if (whole)
        for (int k = 0; k < cs.n; k++) {
            if (k > 0 && !strcmp(cs.c[k].chain_id, cs.c[k - 1].chain_id))
                continue;
            bool seen = false;
            for (int i = 0; i < PQntuples(r) && !seen; i++)
                seen = !strcmp(PQgetvalue(r, i, 0), cs.c[k].chain_id);
            if (!seen && detached) {
                fprintf(out, "note: chain %s has no records; retention detached partitions "
                             "(see audit_retention_log)\n",
                        cs.c[k].chain_id);
            } else if (!seen) {
                rep->checkpoints_checked++;
                problem(&v, "chain %s: no records, but signed checkpoints name it up to seq "
                            "%lld",
                        cs.c[k].chain_id, (long long)cs.c[k].seq);
            }
        }
    PQclear(r);
    /* the unique constraint includes received_at (the partition key), so
     * one request id at two times is only caught here */
    r = PQexecParams(c,
                     "SELECT request_id, count(*) FROM audit_events "
                     "WHERE received_at >= $1::timestamptz AND received_at < $2::timestamptz "
                     "GROUP BY request_id HAVING count(*) > 1 ORDER BY request_id LIMIT 100",
                     2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        mg_err_set(err, errlen, "audit: verify: %s", PQresultErrorMessage(r));
        rc = MG_EIO;
        goto fail;
    }
    for (int i = 0; i < PQntuples(r); i++)
        problem(&v, "request id %.128s is stored %s times", PQgetvalue(r, i, 0),
                PQgetvalue(r, i, 1));
    (void)audit_pg_exec(c, "COMMIT", NULL, 0);
    rc = 0;
fail:
    PQclear(r);
    PQfinish(c);
    free(cs.c);
    free(cs.keys);
    return rc;
}

/* ---- export ------------------------------------------------------------------------------------ */

static void json_str(FILE *f, const uint8_t *p, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7F)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void csv_str(FILE *f, const uint8_t *p, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"')
            fputc('"', f);
        fputc(p[i], f);
    }
    fputc('"', f);
}

typedef struct out_field {
    const char *name;
    bool null, number;
    const uint8_t *p;
    size_t n;
    char num[48];
    char *owned; /* freed after the row */
} out_field;

static bool text_ok(const uint8_t *p, size_t n)
{
    return audit_utf8_valid(p, n);
}

static char *hex_dup(const uint8_t *p, size_t n)
{
    char *h = malloc(2 * n + 1);
    if (h)
        audit_hex(h, p, n);
    return h;
}

static void emit_row(FILE *f, audit_export_format fmt, out_field *fs, int n)
{
    if (fmt == AUDIT_EXPORT_JSONL)
        fputc('{', f);
    for (int i = 0; i < n; i++) {
        if (fmt == AUDIT_EXPORT_JSONL) {
            fprintf(f, "%s\"%s\":", i ? "," : "", fs[i].name);
            if (fs[i].null)
                fputs("null", f);
            else if (fs[i].number)
                fputs(fs[i].num, f);
            else
                json_str(f, fs[i].p, fs[i].n);
        } else {
            if (i)
                fputc(',', f);
            if (fs[i].null)
                continue;
            if (fs[i].number)
                fputs(fs[i].num, f);
            else
                csv_str(f, fs[i].p, fs[i].n);
        }
    }
    fputs(fmt == AUDIT_EXPORT_JSONL ? "}\n" : "\r\n", f);
}

static const char *export_names[] = {
    "chain_id", "seq", "request_id", "received_at", "finished_at", "tenant", "key_id",
    "client_addr", "client_subject", "endpoint", "domain", "adapter_name", "adapter_sha256",
    "model_sha256", "sampling", "prompt_tokens", "completion_tokens", "status", "error",
    "latency_us", "redaction", "payload_mode", "payload_key_id", "prompt", "prompt_hex",
    "completion", "completion_hex", "decrypt_error", "prev_hash", "hash"};
#define N_EXPORT ((int)(sizeof export_names / sizeof export_names[0]))

/* Fills the prompt/completion pair of output fields from a stored payload. */
static void export_payload(out_field *text, out_field *hex, out_field *derr, const audit_rec *rec,
                           int field, const audit_payload_key *key)
{
    const audit_value *v = &rec->v[field];
    const char *fname = field == F_PROMPT ? "prompt" : "completion";
    text->null = hex->null = true;
    if (v->null)
        return;
    int mode = (int)rec->v[F_PAYLOAD_MODE].i;
    if (mode == AUDIT_PAYLOAD_AES256GCM && key) {
        const audit_value *kid = &rec->v[F_PAYLOAD_KEY_ID];
        const char *want = audit_payload_key_id(key);
        if (!kid->null && kid->len == strlen(want) && !memcmp(kid->p, want, kid->len)) {
            uint8_t *plain = NULL;
            size_t pn = 0;
            char why[200];
            if (audit_payload_decrypt(key, (const char *)rec->v[F_REQUEST_ID].p,
                                      rec->v[F_REQUEST_ID].len, fname, v->p, v->len, &plain, &pn,
                                      why, sizeof why) == 0) {
                if (text_ok(plain, pn)) {
                    text->null = false;
                    text->p = plain;
                    text->n = pn;
                    text->owned = (char *)plain;
                } else {
                    hex->null = false;
                    hex->owned = hex_dup(plain, pn);
                    hex->p = (const uint8_t *)hex->owned;
                    hex->n = hex->owned ? 2 * pn : 0;
                    OPENSSL_cleanse(plain, pn);
                    free(plain);
                }
                return;
            }
            derr->null = false;
            derr->owned = strdup(why);
            derr->p = (const uint8_t *)derr->owned;
            derr->n = derr->owned ? strlen(derr->owned) : 0;
            derr->null = !derr->owned;
        }
    }
    if (mode == AUDIT_PAYLOAD_CLEAR && text_ok(v->p, v->len)) {
        text->null = false;
        text->p = v->p;
        text->n = v->len;
        return;
    }
    /* digests, ciphertext we may not open, non-text bytes */
    hex->owned = hex_dup(v->p, v->len);
    hex->null = !hex->owned;
    hex->p = (const uint8_t *)hex->owned;
    hex->n = hex->owned ? 2 * (size_t)v->len : 0;
}

int audit_export(const audit_export_opts *o, FILE *out, uint64_t *n_out, char *err,
                 size_t errlen)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    audit_payload_key *key = NULL;
    char *table = NULL;
    int rc;
    uint64_t rows = 0;
    if (o->key_file &&
        (rc = audit_payload_key_load(&key, o->key_file, o->key_id ? o->key_id : "default", err,
                                     errlen)))
        return rc;
    if ((rc = audit_pg_connect(&c, o->conninfo, 10, err, errlen)))
        goto fail;
    rc = MG_EIO;
    table = PQescapeIdentifier(c, o->partition ? o->partition : "audit_events",
                               strlen(o->partition ? o->partition : "audit_events"));
    if (!table)
        goto fail;
    if (audit_pg_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen))
        goto fail;
    char from[40], to[40];
    range_params(o->from_us, o->to_us, from, to);
    char sql[1400];
    snprintf(sql, sizeof sql,
             "DECLARE audit_export NO SCROLL CURSOR FOR SELECT %s FROM %s "
             "WHERE received_at >= $1::timestamptz AND received_at < $2::timestamptz "
             "AND ($3::text IS NULL OR tenant = $3) ORDER BY chain_id, seq",
             audit_columns_sql(), table);
    const char *params[3] = {from, to, o->tenant};
    r = PQexecParams(c, sql, 3, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        mg_err_set(err, errlen, "audit: export: %s", PQresultErrorMessage(r));
        goto fail;
    }
    PQclear(r);
    r = NULL;
    if (o->format == AUDIT_EXPORT_CSV) {
        for (int i = 0; i < N_EXPORT; i++)
            fprintf(out, "%s%s", i ? "," : "", export_names[i]);
        fputs("\r\n", out);
    }
    for (;;) {
        r = PQexecParams(c, "FETCH 2000 FROM audit_export", 0, NULL, NULL, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != N_COLS) {
            mg_err_set(err, errlen, "audit: export: fetch: %s", PQresultErrorMessage(r));
            goto fail;
        }
        int n = PQntuples(r);
        if (n == 0)
            break;
        for (int i = 0; i < n; i++) {
            audit_rec rec;
            char why[160];
            if (PQgetlength(r, i, 1) != 8 || PQgetlength(r, i, COL_PREV) != 32 ||
                PQgetlength(r, i, COL_HASH) != 32 || row_to_rec(r, i, &rec, why, sizeof why)) {
                mg_err_set(err, errlen, "audit: export: malformed row %llu",
                           (unsigned long long)rows + 1);
                rc = MG_EFORMAT;
                goto fail;
            }
            out_field fs[N_EXPORT];
            memset(fs, 0, sizeof fs);
            for (int k = 0; k < N_EXPORT; k++)
                fs[k].name = export_names[k];
            fs[0].p = (const uint8_t *)PQgetvalue(r, i, 0);
            fs[0].n = (size_t)PQgetlength(r, i, 0);
            fs[1].number = true;
            snprintf(fs[1].num, sizeof fs[1].num, "%lld",
                     (long long)be64(PQgetvalue(r, i, 1)));
            /* the audit_fields up to payload_key_id map one to one onto
             * export columns 2..22 */
            for (int f = 0; f < F_PROMPT; f++) {
                out_field *o_ = &fs[f + 2];
                const audit_value *v = &rec.v[f];
                switch (audit_fields[f].type) {
                case AF_TEXT:
                case AF_BYTES:
                    o_->null = v->null;
                    o_->p = v->p;
                    o_->n = v->len;
                    break;
                case AF_TIME:
                    fmt_time(o_->num, sizeof o_->num, v->i);
                    o_->p = (const uint8_t *)o_->num;
                    o_->n = strlen(o_->num);
                    break;
                case AF_I64:
                case AF_I32:
                    o_->number = true;
                    snprintf(o_->num, sizeof o_->num, "%lld", (long long)v->i);
                    break;
                case AF_MODE:
                    snprintf(o_->num, sizeof o_->num, "%s", audit_payload_mode_name((int)v->i));
                    o_->p = (const uint8_t *)o_->num;
                    o_->n = strlen(o_->num);
                    break;
                }
            }
            out_field *derr = &fs[27];
            derr->null = true;
            export_payload(&fs[23], &fs[24], derr, &rec, F_PROMPT, key);
            export_payload(&fs[25], &fs[26], derr, &rec, F_COMPLETION, key);
            char ph[65], hh[65];
            audit_hex(ph, (const uint8_t *)PQgetvalue(r, i, COL_PREV), 32);
            audit_hex(hh, (const uint8_t *)PQgetvalue(r, i, COL_HASH), 32);
            fs[28].p = (const uint8_t *)ph;
            fs[28].n = 64;
            fs[29].p = (const uint8_t *)hh;
            fs[29].n = 64;
            emit_row(out, o->format, fs, N_EXPORT);
            for (int k = 0; k < N_EXPORT; k++)
                if (fs[k].owned) {
                    OPENSSL_cleanse(fs[k].owned, fs[k].n);
                    free(fs[k].owned);
                }
            rows++;
        }
        PQclear(r);
        r = NULL;
    }
    if (ferror(out) || fflush(out)) {
        mg_err_set(err, errlen, "audit: export: write error: %s", strerror(errno));
        goto fail;
    }
    (void)audit_pg_exec(c, "COMMIT", NULL, 0);
    if (n_out)
        *n_out = rows;
    rc = 0;
fail:
    PQclear(r);
    if (table)
        PQfreemem(table);
    PQfinish(c);
    audit_payload_key_free(key);
    return rc;
}
