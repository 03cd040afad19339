/* moegate policies — the schema: validating a policy file into a snapshot.
 *
 * One pass over the tree (policy_yaml.c), section by section in dependency
 * order (adapters before the domains that name them, domains and audit
 * before the tenants that refer to them), filling the snapshot's config as
 * it goes. Every problem becomes a diagnostic at the position of the node
 * at fault, worded "<path>: <what was expected>", where <path> names the
 * field the way a reader finds it: tenants[1].api_keys[0].hash. The
 * validator never stops at the first error, so one run lists everything.
 * The snapshot is kept only when there was no error.
 *
 * What a diagnostic may quote: keys, names, ids, file paths and variable
 * names. Never a value from a field that could hold a secret, and as a rule
 * no scalar value in a type error (someone who pastes an API key where a
 * hash belongs must not find it in the CI log). Files that hold secrets are
 * stat()ed, never read.
 *
 * Relative paths resolve against base_dir (the policy file's folder, made
 * absolute), so the snapshot's paths stay valid whatever the server's
 * working folder.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "policies/policy_internal.h"

#define MAX_FILE_BYTES (4u << 20)
#define SHOW_MAX       64

typedef struct vctx {
    pdiags *d;
    arena *a;             /* the snapshot's arena */
    const char *base_dir; /* absolute when it could be made so */
    policy *p;
    bool tls; /* server.tls, for the tenants' mTLS checks */
    bool have_client_ca;
    bool have_enc_key; /* audit.encryption_key_file is given */
} vctx;

/* ---- diagnostics helpers --------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void verr(vctx *c, const pnode *n, const char *fmt,
                                                       ...)
{
    va_list ap;
    va_start(ap, fmt);
    pdiags_addv(c->d, POLICY_ERROR, n ? n->line : 0, n ? n->column : 0, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 3, 4))) static void vwarn(vctx *c, const pnode *n, const char *fmt,
                                                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    pdiags_addv(c->d, POLICY_WARNING, n ? n->line : 0, n ? n->column : 0, fmt, ap);
    va_end(ap);
}

/* A key, name or path from the file made safe to print: at most 64 bytes,
 * control bytes and quotes as '?', "..." when cut. UTF-8 passes through. */
static const char *show(char out[SHOW_MAX + 4], const char *s, size_t n)
{
    size_t m = n > SHOW_MAX ? SHOW_MAX : n;
    for (size_t i = 0; i < m; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = (ch < 0x20 || ch == 0x7f || ch == '\'') ? '?' : (char)ch;
    }
    strcpy(out + m, n > SHOW_MAX ? "..." : "");
    return out;
}

static const char *kind_name(const pnode *n)
{
    if (n->kind == PN_MAP)
        return "a mapping";
    if (n->kind == PN_SEQ)
        return "a list";
    if (n->plain && (n->len == 0 || !strcmp(n->str, "~") || !strcmp(n->str, "null")))
        return "nothing";
    return n->plain ? "a plain scalar" : "a quoted string";
}

static bool is_null(const pnode *n)
{
    return n->kind == PN_SCALAR && n->plain &&
           (n->len == 0 || !strcmp(n->str, "~") || !strcmp(n->str, "null") ||
            !strcmp(n->str, "Null") || !strcmp(n->str, "NULL"));
}

/* ---- mapping access ------------------------------------------------------------ */

static const pnode *get(const pnode *m, const char *key)
{
    if (!m || m->kind != PN_MAP)
        return NULL;
    for (int i = 0; i < m->n; i++)
        if (m->keys[i]->kind == PN_SCALAR && !strcmp(m->keys[i]->str, key) &&
            strlen(key) == m->keys[i]->len)
            return m->vals[i];
    return NULL;
}

static const pnode *get_key_node(const pnode *m, const char *key)
{
    for (int i = 0; m && m->kind == PN_MAP && i < m->n; i++)
        if (m->keys[i]->kind == PN_SCALAR && !strcmp(m->keys[i]->str, key))
            return m->keys[i];
    return NULL;
}

static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return 99;
    int row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static void join_names(char *buf, size_t len, const char *const *names)
{
    buf[0] = 0;
    size_t used = 0;
    for (int i = 0; names[i]; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", names[i]);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
}

/* Checks that m is a mapping whose keys are strings, each allowed and none
 * repeated. Returns false when m is not a mapping (already reported). */
static bool check_map(vctx *c, const pnode *m, const char *path, const char *const *allowed)
{
    char s[SHOW_MAX + 4];
    if (m->kind != PN_MAP) {
        verr(c, m, "%s: expected a mapping, got %s", path, kind_name(m));
        return false;
    }
    for (int i = 0; i < m->n; i++) {
        const pnode *k = m->keys[i];
        if (k->kind != PN_SCALAR || strlen(k->str) != k->len) {
            verr(c, k, "%s: keys must be plain strings", path);
            continue;
        }
        bool dup = false;
        for (int j = 0; j < i && !dup; j++)
            if (m->keys[j]->kind == PN_SCALAR && !strcmp(m->keys[j]->str, k->str)) {
                verr(c, k, "%s: duplicate key '%s' (first at %d:%d)", path, show(s, k->str, k->len),
                     m->keys[j]->line, m->keys[j]->column);
                dup = true;
            }
        if (dup)
            continue;
        int best = -1, best_d = 3;
        bool found = false;
        for (int j = 0; allowed[j] && !found; j++) {
            if (!strcmp(allowed[j], k->str))
                found = true;
            int dist = edit_distance(allowed[j], k->str);
            if (dist < best_d) {
                best_d = dist;
                best = j;
            }
        }
        if (found)
            continue;
        if (best >= 0)
            verr(c, k, "%s: unknown key '%s' (did you mean '%s'?)", path, show(s, k->str, k->len),
                 allowed[best]);
        else {
            char names[512];
            join_names(names, sizeof names, allowed);
            verr(c, k, "%s: unknown key '%s' (expected one of: %s)", path, show(s, k->str, k->len),
                 names);
        }
    }
    return true;
}

/* Reports a missing required key at the mapping's position. */
static const pnode *need(vctx *c, const pnode *m, const char *path, const char *key)
{
    const pnode *v = get(m, key);
    if (!v)
        verr(c, m, "%s: missing required key '%s'", path, key);
    return v;
}

/* ---- typed values ----------------------------------------------------------------- */

/* A string value: a scalar that is not null. */
static const char *as_str(vctx *c, const pnode *v, const char *path, const char *key)
{
    if (v->kind != PN_SCALAR || is_null(v)) {
        verr(c, v, "%s.%s: expected a string, got %s", path, key, kind_name(v));
        return NULL;
    }
    if (strlen(v->str) != v->len) {
        verr(c, v, "%s.%s: the string contains a NUL character", path, key);
        return NULL;
    }
    return v->str;
}

static bool parse_i64(const char *s, int64_t *out)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* An integer in [lo, hi]; *out untouched when absent or invalid. */
static bool opt_int(vctx *c, const pnode *m, const char *path, const char *key, int64_t lo,
                    int64_t hi, int64_t *out)
{
    const pnode *v = get(m, key);
    if (!v)
        return false;
    int64_t x;
    bool num = v->kind == PN_SCALAR && v->plain && parse_i64(v->str, &x);
    if (!num || x < lo || x > hi) {
        /* an integer is no secret and helps; other text is not quoted */
        char got[32];
        if (num)
            snprintf(got, sizeof got, "%lld", (long long)x);
        else
            snprintf(got, sizeof got, "%s",
                     v->kind == PN_SCALAR && v->plain && !is_null(v) ? "text" : kind_name(v));
        verr(c, v, "%s.%s: expected an integer from %lld to %lld, got %s", path, key, (long long)lo,
             (long long)hi, got);
        return false;
    }
    *out = x;
    return true;
}

static bool opt_intv(vctx *c, const pnode *m, const char *path, const char *key, int lo, int hi,
                     int *out)
{
    int64_t x;
    if (!opt_int(c, m, path, key, lo, hi, &x))
        return false;
    *out = (int)x;
    return true;
}

/* true/false; the `tls` switch also takes on/off, the words the docs use. */
static bool opt_bool(vctx *c, const pnode *m, const char *path, const char *key, bool onoff,
                     bool *out)
{
    const pnode *v = get(m, key);
    if (!v)
        return false;
    if (v->kind == PN_SCALAR && v->plain) {
        if (!strcmp(v->str, "true") || (onoff && !strcmp(v->str, "on"))) {
            *out = true;
            return true;
        }
        if (!strcmp(v->str, "false") || (onoff && !strcmp(v->str, "off"))) {
            *out = false;
            return true;
        }
    }
    verr(c, v, "%s.%s: expected %s", path, key, onoff ? "on or off" : "true or false");
    return false;
}

/* One of names[] (NULL-terminated); *out is its index. */
static bool opt_enum(vctx *c, const pnode *m, const char *path, const char *key,
                     const char *const *names, int *out)
{
    const pnode *v = get(m, key);
    if (!v)
        return false;
    if (v->kind == PN_SCALAR)
        for (int i = 0; names[i]; i++)
            if (!strcmp(v->str, names[i]) && strlen(names[i]) == v->len) {
                *out = i;
                return true;
            }
    char list[256];
    join_names(list, sizeof list, names);
    verr(c, v, "%s.%s: expected one of: %s", path, key, list);
    return false;
}

/* A byte size: an integer, or a number with B, KB, MB, GB, TB (powers of
 * 1000) or KiB, MiB, GiB, TiB (powers of 1024). */
static bool opt_size(vctx *c, const pnode *m, const char *path, const char *key, int64_t lo,
                     int64_t hi, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t mul;
    } units[] = {
        {"", 1},
        {"B", 1},
        {"KB", 1000},
        {"MB", 1000000},
        {"GB", 1000000000},
        {"TB", 1000000000000},
        {"KiB", 1024},
        {"MiB", 1 << 20},
        {"GiB", 1 << 30},
        {"TiB", (int64_t)1 << 40},
    };
    const pnode *v = get(m, key);
    if (!v)
        return false;
    if (v->kind == PN_SCALAR && v->plain && isdigit((unsigned char)v->str[0])) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v->str, &end, 10);
        for (size_t i = 0; i < sizeof units / sizeof units[0] && !errno; i++)
            if (!strcmp(end, units[i].unit)) {
                if (n > (unsigned long long)(INT64_MAX / units[i].mul))
                    break;
                int64_t x = (int64_t)n * units[i].mul;
                if (x < lo || x > hi)
                    break;
                *out = x;
                return true;
            }
    }
    verr(c, v, "%s.%s: expected a size from %lld to %lld bytes, such as 512MiB or 8GiB", path, key,
         (long long)lo, (long long)hi);
    return false;
}

/* Version labels: 1-64 characters of a small safe alphabet (letters,
 * digits, '.', '_', '-'), any of them first ("2026.05", "v2"). */
static bool label_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-')
            return false;
    }
    return true;
}

/* Names of tenants, keys, domains, adapters and rules: they appear in audit
 * records, metrics labels and URLs, so the label alphabet, starting with a
 * letter or digit. */
static bool name_ok(const char *s)
{
    return label_ok(s) && isalnum((unsigned char)s[0]);
}

static const char *need_name(vctx *c, const pnode *m, const char *path, const char *key)
{
    const pnode *v = need(c, m, path, key);
    if (!v)
        return NULL;
    const char *s = as_str(c, v, path, key);
    if (!s)
        return NULL;
    if (!name_ok(s)) {
        verr(c, v,
             "%s.%s: expected a name of 1 to 64 letters, digits, '.', '_' or '-', starting "
             "with a letter or digit",
             path, key);
        return NULL;
    }
    return arena_strndup(c->a, s, strlen(s));
}

/* ---- paths ------------------------------------------------------------------------ */

enum path_kind {
    PATH_FILE,   /* a readable regular file */
    PATH_DIR,    /* an existing folder */
    PATH_PARENT, /* a file that may not exist yet, in an existing folder */
};

static char *resolve(vctx *c, const char *s)
{
    if (s[0] == '/' || !c->base_dir)
        return arena_strndup(c->a, s, strlen(s));
    size_t n = strlen(c->base_dir);
    return arena_printf(c->a, "%s%s%s", c->base_dir, n && c->base_dir[n - 1] == '/' ? "" : "/", s);
}

/* A path value, resolved and checked. secret: the file holds a key or a
 * connection string; it is never opened here, and a group- or
 * world-readable mode is a warning. */
static const char *opt_path(vctx *c, const pnode *m, const char *path, const char *key,
                            bool required, enum path_kind kind, bool secret)
{
    const pnode *v = required ? need(c, m, path, key) : get(m, key);
    if (!v)
        return NULL;
    const char *s = as_str(c, v, path, key);
    if (!s)
        return NULL;
    if (!*s) {
        verr(c, v, "%s.%s: expected a path, got an empty string", path, key);
        return NULL;
    }
    char *r = resolve(c, s), shown[SHOW_MAX + 4], where[PATH_MAX + 32] = "";
    if (!r)
        return NULL;
    if (s[0] != '/')
        snprintf(where, sizeof where, " (resolved to '%s')", r);
    show(shown, s, strlen(s));
    struct stat st;
    if (kind == PATH_PARENT) {
        char *dir = arena_strndup(c->a, r, strlen(r)), *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash && slash != dir)
            *slash = 0;
        if (dir && slash && (stat(dir, &st) || !S_ISDIR(st.st_mode)))
            verr(c, v, "%s.%s: the folder of '%s' does not exist%s", path, key, shown, where);
        return r;
    }
    if (stat(r, &st)) {
        verr(c, v, "%s.%s: %s '%s' not found%s", path, key, kind == PATH_DIR ? "folder" : "file",
             shown, where);
        return NULL;
    }
    if (kind == PATH_DIR && !S_ISDIR(st.st_mode)) {
        verr(c, v, "%s.%s: '%s' is not a folder%s", path, key, shown, where);
        return NULL;
    }
    if (kind == PATH_FILE && !S_ISREG(st.st_mode)) {
        verr(c, v, "%s.%s: '%s' is not a regular file%s", path, key, shown, where);
        return NULL;
    }
    if (kind == PATH_FILE && access(r, R_OK)) {
        verr(c, v, "%s.%s: file '%s' cannot be read by this user%s", path, key, shown, where);
        return NULL;
    }
    if (secret && (st.st_mode & 077))
        vwarn(c, v,
              "%s.%s: '%s' holds a secret but is readable by group or others (mode %04o); "
              "chmod 600 it",
              path, key, shown, (unsigned)(st.st_mode & 07777));
    return r;
}

/* ---- server ----------------------------------------------------------------------- */

/* Splits "host:port" / "[v6]:port"; decides whether host is loopback. */
static bool parse_listen(vctx *c, const char *s, policy_server *sv)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return false;
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (s[0] == '[') {
        if (hl < 3 || s[hl - 1] != ']')
            return false;
        h = s + 1;
        hl -= 2;
    } else if (memchr(s, ':', hl)) {
        return false; /* a bare IPv6 address needs brackets */
    }
    int64_t port;
    if (!parse_i64(colon + 1, &port) || port < 1 || port > 65535 || colon[1] == '+' ||
        colon[1] == '-')
        return false;
    char *host = arena_strndup(c->a, h, hl);
    if (!host)
        return false;
    unsigned char a6[16];
    struct in_addr a4;
    sv->host = host;
    sv->port = (int)port;
    if (!strcmp(host, "localhost"))
        sv->loopback = true;
    else if (inet_pton(AF_INET, host, &a4) == 1)
        sv->loopback = (ntohl(a4.s_addr) >> 24) == 127;
    else if (inet_pton(AF_INET6, host, a6) == 1) {
        static const unsigned char lo6[16] = {[15] = 1};
        static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};
        sv->loopback = !memcmp(a6, lo6, 16) || (!memcmp(a6, mapped, 12) && a6[12] == 127);
    } else if (s[0] == '[')
        return false;
    return true;
}

static const pnode *as_seq(vctx *c, const pnode *v, const char *path);

static void validate_server(vctx *c, const pnode *m)
{
    static const char *const keys[] = {"listen",
                                       "tls",
                                       "tls_cert",
                                       "tls_key",
                                       "tls_client_ca",
                                       "allow_insecure_nonloopback",
                                       "limits",
                                       "public_endpoints",
                                       NULL};
    static const char *const limit_keys[] = {"max_body_bytes",
                                             "max_connections",
                                             "max_connections_per_client",
                                             "request_timeout_s",
                                             "idle_timeout_s",
                                             "max_queue",
                                             NULL};
    static const char *const public_names[] = {"ready", "metrics", NULL};
    policy_server *sv = &c->p->cfg.server;
    sv->tls = true;
    sv->max_body_bytes = 1 << 20;
    sv->max_connections = 256;
    sv->request_timeout_s = 300;
    sv->idle_timeout_s = 30;
    sv->max_queue = 64;
    if (!check_map(c, m, "server", keys))
        return;
    const pnode *lv = need(c, m, "server", "listen");
    const char *listen = lv ? as_str(c, lv, "server", "listen") : NULL;
    if (listen) {
        sv->listen = arena_strndup(c->a, listen, strlen(listen));
        if (!sv->listen || !parse_listen(c, listen, sv)) {
            verr(c, lv, "server.listen: expected host:port, such as 127.0.0.1:8443 or [::1]:8443");
            listen = NULL;
        }
    }
    opt_bool(c, m, "server", "tls", true, &sv->tls);
    opt_bool(c, m, "server", "allow_insecure_nonloopback", false, &sv->allow_insecure_nonloopback);
    c->tls = sv->tls;
    if (sv->tls) {
        sv->tls_cert = opt_path(c, m, "server", "tls_cert", true, PATH_FILE, false);
        sv->tls_key = opt_path(c, m, "server", "tls_key", true, PATH_FILE, true);
        sv->tls_client_ca = opt_path(c, m, "server", "tls_client_ca", false, PATH_FILE, false);
        c->have_client_ca = get(m, "tls_client_ca") != NULL;
    } else {
        static const char *const unused[] = {"tls_cert", "tls_key", "tls_client_ca"};
        for (int i = 0; i < 3; i++)
            if (get(m, unused[i]))
                vwarn(c, get(m, unused[i]), "server.%s: ignored because server.tls is off",
                      unused[i]);
        const pnode *tv = get(m, "tls");
        if (listen && !sv->loopback) {
            if (sv->allow_insecure_nonloopback)
                vwarn(c, tv,
                      "server.tls: TLS is off on non-loopback address '%s': API keys, prompts "
                      "and answers cross the network in clear text",
                      sv->host);
            else
                verr(c, tv,
                     "server.tls: TLS is off on non-loopback address '%s'; plain HTTP there "
                     "needs server.allow_insecure_nonloopback: true",
                     sv->host);
        }
    }
    const pnode *lim = get(m, "limits");
    if (lim && check_map(c, lim, "server.limits", limit_keys)) {
        opt_size(c, lim, "server.limits", "max_body_bytes", 1024, (int64_t)1 << 30,
                 &sv->max_body_bytes);
        opt_intv(c, lim, "server.limits", "max_connections", 1, 1000000, &sv->max_connections);
        opt_intv(c, lim, "server.limits", "request_timeout_s", 1, 86400, &sv->request_timeout_s);
        opt_intv(c, lim, "server.limits", "max_queue", 0, 1000000, &sv->max_queue);
        opt_intv(c, lim, "server.limits", "idle_timeout_s", 1, 3600, &sv->idle_timeout_s);
        opt_intv(c, lim, "server.limits", "max_connections_per_client", 1, 1000000,
                 &sv->max_connections_per_client);
    }
    if (!sv->max_connections_per_client)
        sv->max_connections_per_client = sv->max_connections < 64 ? sv->max_connections : 64;
    const pnode *pv = get(m, "public_endpoints");
    if (pv && as_seq(c, pv, "server.public_endpoints")) {
        for (int i = 0; i < pv->n; i++) {
            const pnode *e = pv->vals[i];
            int k = -1;
            for (int j = 0; e->kind == PN_SCALAR && public_names[j]; j++)
                if (!strcmp(e->str, public_names[j]) && strlen(public_names[j]) == e->len)
                    k = j;
            if (k < 0)
                verr(c, e, "server.public_endpoints[%d]: expected one of: ready, metrics", i);
            else if (k == 0)
                sv->public_ready = true;
            else
                sv->public_metrics = true;
        }
    }
}

/* ---- model, adapters, domains ------------------------------------------------------ */

static void validate_model(vctx *c, const pnode *m)
{
    static const char *const keys[] = {"path",      "threads",       "context_length",
                                       "kv_memory", "chat_template", NULL};
    /* in policy_chat_template order; the names core/chat.h knows */
    static const char *const templates[] = {"auto",        "qwen3",          "chatml",
                                            "deepseek3",   "mistral",        "qwen2",
                                            "deepseek-r1", "mistral-legacy", NULL};
    policy_model *md = &c->p->cfg.model;
    if (!check_map(c, m, "model", keys))
        return;
    md->path = opt_path(c, m, "model", "path", true, PATH_FILE, false);
    opt_intv(c, m, "model", "threads", 0, 4096, &md->threads);
    opt_intv(c, m, "model", "context_length", 0, 1 << 24, &md->context_length);
    opt_size(c, m, "model", "kv_memory", 0, (int64_t)1 << 50, &md->kv_memory_bytes);
    int t = 0;
    if (opt_enum(c, m, "model", "chat_template", templates, &t))
        md->chat_template = (policy_chat_template)t;
}

static bool hex_digest(const char *s, uint8_t out[32])
{
    if (strlen(s) != 64)
        return false;
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    for (int i = 0; i < 32; i++) {
        unsigned hi = (unsigned)(isdigit((unsigned char)s[2 * i]) ? s[2 * i] - '0'
                                                                  : (tolower(s[2 * i]) - 'a' + 10));
        unsigned lo =
            (unsigned)(isdigit((unsigned char)s[2 * i + 1]) ? s[2 * i + 1] - '0'
                                                            : (tolower(s[2 * i + 1]) - 'a' + 10));
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/* A list value; NULL (reported) when it is something else. */
static const pnode *as_seq(vctx *c, const pnode *v, const char *path)
{
    if (v->kind != PN_SEQ) {
        verr(c, v, "%s: expected a list, got %s", path, kind_name(v));
        return NULL;
    }
    return v;
}

/* Reports a name that an earlier entry already has. names[0..n) may hold NULLs. */
static bool dup_name(vctx *c, const pnode *at, const char *path, const char *what, const char *name,
                     const char *const *names, const pnode *const *nodes, int n)
{
    for (int j = 0; j < n; j++)
        if (names[j] && !strcmp(names[j], name)) {
            verr(c, at, "%s: duplicate %s '%s' (first at %d:%d)", path, what, name, nodes[j]->line,
                 nodes[j]->column);
            return true;
        }
    return false;
}

/* The entry's name under `key`, checked and unique among names[0..i);
 * recorded in names[i] / at[i] when it is. */
static const char *entry_name(vctx *c, const pnode *m, const char *path, const char *key,
                              const char *what, const char **names, const pnode **at, int i)
{
    const char *name = need_name(c, m, path, key);
    char field[128];
    snprintf(field, sizeof field, "%s.%s", path, key);
    if (name && !dup_name(c, get(m, key), field, what, name, names, at, i)) {
        names[i] = name;
        at[i] = get(m, key);
    }
    return name;
}

static void validate_adapters(vctx *c, const pnode *v)
{
    static const char *const keys[] = {"name", "path", "sha256", "version", NULL};
    if (!as_seq(c, v, "adapters"))
        return;
    policy_adapter *ad = arena_alloc(c->a, sizeof *ad * (size_t)(v->n ? v->n : 1));
    const char **names = arena_alloc(c->a, sizeof(char *) * (size_t)(v->n ? v->n : 1));
    const pnode **at = arena_alloc(c->a, sizeof(pnode *) * (size_t)(v->n ? v->n : 1));
    if (!ad || !names || !at)
        return;
    c->p->cfg.adapters = ad;
    for (int i = 0; i < v->n; i++) {
        const pnode *m = v->vals[i];
        char path[64];
        snprintf(path, sizeof path, "adapters[%d]", i);
        if (!check_map(c, m, path, keys))
            continue;
        policy_adapter *a = &ad[c->p->cfg.n_adapters++];
        a->name = entry_name(c, m, path, "name", "adapter", names, at, i);
        a->path = opt_path(c, m, path, "path", true, PATH_FILE, false);
        const pnode *hv = need(c, m, path, "sha256");
        const char *h = hv ? as_str(c, hv, path, "sha256") : NULL;
        if (h && !hex_digest(h, a->sha256))
            verr(c, hv, "%s.sha256: expected 64 hex digits (the SHA-256 of the adapter file)",
                 path);
        else if (h) {
            char *lower = arena_strndup(c->a, h, 64);
            for (int k = 0; lower && k < 64; k++)
                lower[k] = (char)tolower((unsigned char)lower[k]);
            a->sha256_hex = lower;
        }
        /* the label clients pin with model: "domain@VERSION"; by default the
         * digest's first 12 digits, which name the file as well as a label */
        const pnode *vv = get(m, "version");
        const char *ver = vv ? as_str(c, vv, path, "version") : NULL;
        if (ver && !label_ok(ver))
            verr(c, vv, "%s.version: expected a label of 1 to 64 letters, digits, '.', '_' or '-'",
                 path);
        else if (ver)
            a->version = arena_strndup(c->a, ver, strlen(ver));
        else if (!vv && a->sha256_hex)
            a->version = arena_strndup(c->a, a->sha256_hex, 12);
    }
}

static void list_names(char *buf, size_t len, const char *const *names, int n)
{
    buf[0] = 0;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        bool seen = false; /* a duplicate was reported where it stands */
        for (int j = 0; j < i && names[i]; j++)
            seen |= names[j] && !strcmp(names[j], names[i]);
        if (!names[i] || seen)
            continue;
        int w = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", names[i]);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
}

/* The adapter named `name` (written at node at, reported as field), or
 * NULL after an error listing the adapters defined. */
static const policy_adapter *adapter_ref(vctx *c, const pnode *at, const char *field,
                                         const char *name)
{
    const policy_config *cfg = &c->p->cfg;
    for (int k = 0; k < cfg->n_adapters; k++)
        if (cfg->adapters[k].name && !strcmp(cfg->adapters[k].name, name))
            return &cfg->adapters[k];
    char defined[512], s[SHOW_MAX + 4];
    const char *ns[64];
    int nn = 0;
    for (int k = 0; k < cfg->n_adapters && nn < 64; k++)
        ns[nn++] = cfg->adapters[k].name;
    list_names(defined, sizeof defined, ns, nn);
    if (defined[0])
        verr(c, at, "%s: unknown adapter '%s' (defined: %s)", field, show(s, name, strlen(name)),
             defined);
    else
        verr(c, at, "%s: unknown adapter '%s' (no adapters are defined)", field,
             show(s, name, strlen(name)));
    return NULL;
}

static int str_list(vctx *c, const pnode *v, const char *path, const char ***out);

/* domains[i].versions: the adapters a client may pin with
 * model: "domain@VERSION". Each must be defined, a repeat is a warning, the
 * domain needs an adapter (the one answering when nothing is pinned), and
 * no two different adapters reachable from the domain (its adapter and its
 * versions) may share a version label: "domain@LABEL" must name one. */
static void validate_versions(vctx *c, const pnode *m, const char *path, policy_domain *d)
{
    const pnode *vl = get(m, "versions");
    if (!vl)
        return;
    char field[96];
    snprintf(field, sizeof field, "%s.versions", path);
    if (!get(m, "adapter"))
        verr(c, vl,
             "%s: needs %s.adapter, the adapter that answers when the client pins no version",
             field, path);
    const char **vs = NULL;
    int nv = str_list(c, vl, field, &vs);
    const char **kept = arena_alloc(c->a, sizeof(char *) * (size_t)(nv ? nv : 1));
    if (!kept)
        return;
    d->versions = kept;
    const policy_adapter *dflt = d->adapter ? policy_find_adapter(c->p, d->adapter) : NULL;
    for (int k = 0; k < nv; k++) {
        if (!vs[k])
            continue; /* not a string: reported */
        char item[112];
        snprintf(item, sizeof item, "%s[%d]", field, k);
        const policy_adapter *a = adapter_ref(c, vl->vals[k], item, vs[k]);
        if (!a)
            continue;
        bool dup = false;
        for (int q = 0; q < d->n_versions && !dup; q++)
            dup = !strcmp(kept[q], a->name);
        if (dup) {
            vwarn(c, vl->vals[k], "%s: adapter '%s' is listed twice", item, a->name);
            continue;
        }
        const policy_adapter *clash = NULL;
        if (dflt && dflt != a && a->version && dflt->version && !strcmp(a->version, dflt->version))
            clash = dflt;
        for (int q = 0; q < d->n_versions && !clash; q++) {
            const policy_adapter *b = policy_find_adapter(c->p, kept[q]);
            if (b && b != a && a->version && b->version && !strcmp(a->version, b->version))
                clash = b;
        }
        if (clash) {
            verr(c, vl->vals[k],
                 "%s: adapter '%s' has version '%s', as has adapter '%s' of this domain; "
                 "give one of them another adapters[].version",
                 item, a->name, a->version, clash->name);
            continue;
        }
        kept[d->n_versions++] = a->name;
    }
}

static void validate_domains(vctx *c, const pnode *v)
{
    static const char *const keys[] = {"name", "pack", "adapter", "versions", NULL};
    if (!as_seq(c, v, "domains"))
        return;
    policy_domain *dm = arena_alloc(c->a, sizeof *dm * (size_t)(v->n ? v->n : 1));
    const char **names = arena_alloc(c->a, sizeof(char *) * (size_t)(v->n ? v->n : 1));
    const pnode **at = arena_alloc(c->a, sizeof(pnode *) * (size_t)(v->n ? v->n : 1));
    if (!dm || !names || !at)
        return;
    c->p->cfg.domains = dm;
    if (v->n == 0)
        verr(c, v, "domains: expected at least one domain");
    for (int i = 0; i < v->n; i++) {
        const pnode *m = v->vals[i];
        char path[64];
        snprintf(path, sizeof path, "domains[%d]", i);
        if (!check_map(c, m, path, keys))
            continue;
        policy_domain *d = &dm[c->p->cfg.n_domains++];
        d->name = entry_name(c, m, path, "name", "domain", names, at, i);
        d->pack = opt_path(c, m, path, "pack", true, PATH_DIR, false);
        const pnode *av = get(m, "adapter");
        const char *an = av ? as_str(c, av, path, "adapter") : NULL;
        if (an) {
            char field[96];
            snprintf(field, sizeof field, "%s.adapter", path);
            const policy_adapter *a = adapter_ref(c, av, field, an);
            d->adapter = a ? a->name : NULL;
        }
        validate_versions(c, m, path, d);
    }
}

/* ---- audit and logging ------------------------------------------------------------ */

static const char *const payload_names[] = {"hash", "encrypt", "clear", "none", NULL};

static void validate_audit(vctx *c, const pnode *m)
{
    static const char *const keys[] = {"connection_file",     "connection_env",    "on_failure",
                                       "spool_dir",           "durability",        "payload",
                                       "encryption_key_file", "encryption_key_id", "checkpoint_key",
                                       "writer_id",           "connection",        NULL};
    static const char *const on_failure[] = {"spool", "reject", NULL};
    static const char *const durability[] = {"strict", "async", NULL};
    policy_audit *au = &c->p->cfg.audit;
    if (!check_map(c, m, "audit", keys))
        return;
    if (get(m, "connection"))
        verr(c, get_key_node(m, "connection"),
             "audit.connection: a connection string is a secret and must not be written in the "
             "policy; name a file (connection_file) or an environment variable (connection_env)");
    const pnode *fv = get(m, "connection_file"), *ev = get(m, "connection_env");
    if (fv && ev)
        verr(c, ev, "audit: give connection_file or connection_env, not both");
    else if (!fv && !ev && !get(m, "connection"))
        verr(c, m, "audit: missing required key 'connection_file' or 'connection_env'");
    if (fv)
        au->connection_file = opt_path(c, m, "audit", "connection_file", true, PATH_FILE, true);
    const char *env = ev ? as_str(c, ev, "audit", "connection_env") : NULL;
    if (env) {
        bool ok = isalpha((unsigned char)env[0]) || env[0] == '_';
        for (const char *q = env; *q && ok; q++)
            ok = isalnum((unsigned char)*q) || *q == '_';
        if (!ok || strlen(env) > 128)
            verr(c, ev,
                 "audit.connection_env: expected an environment variable name "
                 "(letters, digits and '_')");
        else {
            au->connection_env = arena_strndup(c->a, env, strlen(env));
            if (!getenv(env))
                vwarn(c, ev,
                      "audit.connection_env: environment variable %s is not set here; the "
                      "server needs it",
                      env);
        }
    }
    int x = 0;
    bool of_ok = !get(m, "on_failure"); /* a bad value: no guessing what it implies */
    if (opt_enum(c, m, "audit", "on_failure", on_failure, &x)) {
        au->on_failure = (policy_on_failure)x;
        of_ok = true;
    }
    /* with reject the folder is optional: the writer may still journal there */
    bool spool_needed = au->on_failure == POLICY_AUDIT_SPOOL && of_ok;
    if (spool_needed || get(m, "spool_dir"))
        au->spool_dir = opt_path(c, m, "audit", "spool_dir", spool_needed, PATH_DIR, false);
    if (au->spool_dir && access(au->spool_dir, W_OK | X_OK))
        vwarn(c, get(m, "spool_dir"), "audit.spool_dir: this user cannot write the folder");
    if (opt_enum(c, m, "audit", "durability", durability, &x))
        au->durability = (policy_durability)x;
    if (opt_enum(c, m, "audit", "payload", payload_names, &x)) {
        au->payload = (policy_payload)x;
        if (au->payload == POLICY_PAYLOAD_CLEAR)
            vwarn(c, get(m, "payload"),
                  "audit.payload: clear keeps prompts and answers readable in the audit "
                  "database");
    }
    au->encryption_key_file =
        opt_path(c, m, "audit", "encryption_key_file", false, PATH_FILE, true);
    /* The key's size says whether it can be one (32 raw bytes, or 64 hex
     * digits and an optional newline, as audit/ reads it); the size of a
     * secret is no secret, its bytes are not read. */
    struct stat ks;
    if (au->encryption_key_file && stat(au->encryption_key_file, &ks) == 0 && ks.st_size != 32 &&
        ks.st_size != 64 && ks.st_size != 65)
        verr(c, get(m, "encryption_key_file"),
             "audit.encryption_key_file: the file holds %lld bytes; an AES-256 key file holds "
             "32 bytes, or 64 hex digits and an optional newline",
             (long long)ks.st_size);
    au->checkpoint_key_file = opt_path(c, m, "audit", "checkpoint_key", false, PATH_FILE, true);
    c->have_enc_key = get(m, "encryption_key_file") != NULL;
    if (get(m, "encryption_key_id"))
        au->encryption_key_id = need_name(c, m, "audit", "encryption_key_id");
    if (get(m, "writer_id"))
        au->writer_id = need_name(c, m, "audit", "writer_id");
    if (au->payload == POLICY_PAYLOAD_ENCRYPT && !c->have_enc_key)
        verr(c, get(m, "payload"), "audit.payload: encrypt needs audit.encryption_key_file");
}

static void validate_logging(vctx *c, const pnode *m)
{
    static const char *const keys[] = {"level", "format", "output", NULL};
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    static const char *const formats[] = {"text", "json", NULL};
    policy_logging *lg = &c->p->cfg.logging;
    lg->level = POLICY_LOG_INFO;
    lg->output = "stderr";
    if (!m || !check_map(c, m, "logging", keys))
        return;
    int x;
    if (opt_enum(c, m, "logging", "level", levels, &x))
        lg->level = (policy_log_level)x;
    if (opt_enum(c, m, "logging", "format", formats, &x))
        lg->json = x == 1;
    const pnode *ov = get(m, "output");
    const char *o = ov ? as_str(c, ov, "logging", "output") : NULL;
    if (o && (!strcmp(o, "stderr") || !strcmp(o, "stdout")))
        lg->output = !strcmp(o, "stderr") ? "stderr" : "stdout";
    else if (o) {
        const char *r = opt_path(c, m, "logging", "output", false, PATH_PARENT, false);
        if (r)
            lg->output = r;
    }
}

/* ---- redaction ------------------------------------------------------------------------ */

static void validate_redaction(vctx *c, const pnode *m)
{
    static const char *const keys[] = {"rules", NULL};
    static const char *const rule_keys[] = {"detector",  "name",   "pattern", "placeholder",
                                            "validator", "action", NULL};
    static const char *const actions[] = {"redact", "redact_input", "redact_output", "block", NULL};
    static const char *const validators[] = {"none", "luhn", "mod97", NULL};
    if (!check_map(c, m, "redaction", keys))
        return;
    const pnode *rv = get(m, "rules");
    if (!rv || !as_seq(c, rv, "redaction.rules"))
        return;
    const char **names = arena_alloc(c->a, sizeof(char *) * (size_t)(rv->n ? rv->n : 1));
    const pnode **at = arena_alloc(c->a, sizeof(pnode *) * (size_t)(rv->n ? rv->n : 1));
    if (!names || !at)
        return;
    for (int i = 0; i < rv->n; i++) {
        const pnode *r = rv->vals[i];
        char path[64], field[128], s[SHOW_MAX + 4];
        snprintf(path, sizeof path, "redaction.rules[%d]", i);
        if (!check_map(c, r, path, rule_keys))
            continue;
        int action = 0, validator = 0;
        opt_enum(c, r, path, "action", actions, &action);
        const pnode *dv = get(r, "detector"), *pv = get(r, "pattern");
        if (dv && pv) {
            verr(c, pv,
                 "%s: give either detector (a built-in) or pattern (a custom rule), not both",
                 path);
            continue;
        }
        if (!dv && !pv) {
            verr(c, r, "%s: missing required key 'detector' or 'pattern'", path);
            continue;
        }
        const char *name = NULL;
        const pnode *name_at = NULL;
        if (dv) {
            const char *dn = as_str(c, dv, path, "detector");
            if (!dn)
                continue;
            int b = redactor_builtin_find(dn);
            if (b < 0) {
                verr(c, dv, "%s.detector: unknown detector '%s' (built-in: %s)", path,
                     show(s, dn, strlen(dn)), redactor_builtin_names());
                continue;
            }
            static const char *const custom_only[] = {"name", "placeholder", "validator"};
            for (int k = 0; k < 3; k++)
                if (get(r, custom_only[k]))
                    verr(c, get_key_node(r, custom_only[k]),
                         "%s.%s: applies to custom patterns only; built-in detectors have "
                         "their own",
                         path, custom_only[k]);
            name = dn;
            name_at = dv;
            snprintf(field, sizeof field, "%s.detector", path);
            if (!dup_name(c, dv, field, "rule", name, names, at, i) &&
                redactor_add_builtin(c->p->red, b, (enum redact_action)action) == 0) {
                names[i] = arena_strndup(c->a, dn, strlen(dn));
                at[i] = name_at;
            }
            continue;
        }
        name = need_name(c, r, path, "name");
        if (!name)
            continue;
        name_at = get(r, "name");
        snprintf(field, sizeof field, "%s.name", path);
        if (redactor_builtin_find(name) >= 0) {
            verr(c, name_at, "%s: '%s' is the name of a built-in detector; use detector: %s", field,
                 name, name);
            continue;
        }
        if (dup_name(c, name_at, field, "rule", name, names, at, i))
            continue;
        names[i] = name;
        at[i] = name_at;
        const char *label = NULL;
        const pnode *lv = get(r, "placeholder");
        if (lv) {
            const char *l = as_str(c, lv, path, "placeholder");
            if (!l)
                continue;
            bool ok = strlen(l) >= 1 && strlen(l) <= 32 && isupper((unsigned char)l[0]);
            for (const char *q = l; *q && ok; q++)
                ok = isupper((unsigned char)*q) || isdigit((unsigned char)*q) || *q == '_';
            if (!ok) {
                verr(c, lv,
                     "%s.placeholder: expected 1 to 32 upper-case letters, digits or '_', "
                     "starting with a letter",
                     path);
                continue;
            }
            label = arena_strndup(c->a, l, strlen(l));
        } else {
            char *u = arena_strndup(c->a, name, strlen(name));
            for (char *q = u; q && *q; q++)
                *q = isalnum((unsigned char)*q) ? (char)toupper((unsigned char)*q) : '_';
            label = u;
        }
        opt_enum(c, r, path, "validator", validators, &validator);
        const char *pat = as_str(c, pv, path, "pattern");
        if (!pat || !label)
            continue;
        if (!*pat) {
            verr(c, pv, "%s.pattern: expected a regular expression, got an empty string", path);
            continue;
        }
        char perr[256];
        size_t off = 0;
        int rc = redactor_add_custom(c->p->red, name, label, pat, strlen(pat),
                                     (enum redact_validator)validator, (enum redact_action)action,
                                     &off, perr, sizeof perr);
        if (rc == MG_EFORMAT)
            verr(c, pv, "%s.pattern: invalid regular expression at offset %zu: %s", path, off,
                 perr);
        else if (rc)
            verr(c, pv, "%s.pattern: %s", path, perr);
    }
    c->p->cfg.n_redaction_rules = redactor_n_rules(c->p->red);
}

/* ---- content labels and the router ------------------------------------------------- */

/* Text that ends up in answers and labels: 1..max bytes and no control
 * characters (C0, DEL, C1), so a label stays one line and cannot smuggle
 * terminal or protocol escapes into the answer. NULL when absent or bad
 * (reported; required: absent is an error too). */
static const char *opt_text(vctx *c, const pnode *m, const char *path, const char *key, size_t max,
                            bool required)
{
    const pnode *v = required ? need(c, m, path, key) : get(m, key);
    const char *s = v ? as_str(c, v, path, key) : NULL;
    if (!s)
        return NULL;
    size_t n = strlen(s);
    bool ok = n >= 1 && n <= max;
    for (size_t i = 0; i < n && ok; i++) {
        unsigned char ch = (unsigned char)s[i];
        ok = ch >= 0x20 && ch != 0x7f &&
             !(ch == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
               (unsigned char)s[i + 1] <= 0x9f);
    }
    if (!ok) {
        verr(c, v,
             "%s.%s: expected text of 1 to %zu bytes without control characters (no line "
             "breaks or tabs)",
             path, key, max);
        return NULL;
    }
    return arena_strndup(c->a, s, n);
}

/* content_labels: the implicit label (provider, provider_code) and the
 * explicit one (a sentence at the start or end of the answer). */
static void validate_content_labels(vctx *c, const pnode *m)
{
    static const char *const keys[] = {"provider", "provider_code", "explicit", NULL};
    static const char *const explicit_keys[] = {"position", "zh", "en", NULL};
    static const char *const positions[] = {"start", "end", NULL};
    policy_content_labels *cl = &c->p->cfg.content_labels;
    if (!check_map(c, m, "content_labels", keys))
        return;
    cl->enabled = true;
    cl->explicit_text[0] = "本内容由人工智能生成。";
    cl->explicit_text[1] = "This content was generated by AI.";
    cl->provider = opt_text(c, m, "content_labels", "provider", 256, true);
    const pnode *pv = get(m, "provider_code");
    const char *code = pv ? as_str(c, pv, "content_labels", "provider_code") : NULL;
    if (code) {
        size_t n = strlen(code);
        bool ok = n >= 1 && n <= 64;
        for (size_t i = 0; i < n && ok; i++)
            ok = isalnum((unsigned char)code[i]) || code[i] == '-';
        if (!ok)
            verr(c, pv,
                 "content_labels.provider_code: expected 1 to 64 letters, digits or '-' (such "
                 "as the unified social credit code)");
        else
            cl->provider_code = arena_strndup(c->a, code, n);
    }
    const pnode *ev = get(m, "explicit");
    if (!ev || !check_map(c, ev, "content_labels.explicit", explicit_keys))
        return;
    int pos = 1;
    if (opt_enum(c, ev, "content_labels.explicit", "position", positions, &pos))
        cl->explicit_at_start = pos == 0;
    static const char *const langs[2] = {"zh", "en"};
    for (int i = 0; i < 2; i++) {
        const char *t = opt_text(c, ev, "content_labels.explicit", langs[i], 512, false);
        if (t)
            cl->explicit_text[i] = t;
    }
}

/* A plain decimal number (no hex, inf or nan). */
static bool parse_number(const char *s, double *out)
{
    if (!*s || strspn(s, "0123456789.eE+-") != strlen(s) || !strpbrk(s, "0123456789"))
        return false;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || *end)
        return false;
    *out = x;
    return true;
}

static void validate_router(vctx *c, const pnode *m)
{
    static const char *const keys[] = {"ood_examples", "threshold", NULL};
    policy_router *ro = &c->p->cfg.router;
    if (!check_map(c, m, "router", keys))
        return;
    ro->ood_examples = opt_path(c, m, "router", "ood_examples", false, PATH_FILE, false);
    const pnode *tv = get(m, "threshold");
    if (!tv)
        return;
    double x = 0;
    bool num = tv->kind == PN_SCALAR && tv->plain && parse_number(tv->str, &x);
    if (num && x > 0 && x < 1) {
        ro->threshold = x;
        return;
    }
    char got[48];
    if (num) /* a number is no secret and says what is wrong */
        snprintf(got, sizeof got, "%.32s", tv->str);
    else
        snprintf(got, sizeof got, "%s",
                 tv->kind == PN_SCALAR && tv->plain && !is_null(tv) ? "text" : kind_name(tv));
    verr(c, tv, "router.threshold: expected a number between 0 and 1 (both excluded), got %s", got);
}

/* ---- tenants ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    int days;
} retention_presets[] = {
    {"securities-6y", 6 * 366}, /* broker-dealer records (SEC 17a-4 style, CSRC) */
    {"hipaa-6y", 6 * 366},      /* HIPAA documentation retention */
    {"cn-network-6m", 6 * 31},  /* PRC Cybersecurity Law art. 21: network logs >= 6 months */
    {"sox-7y", 7 * 366},        /* audit work papers */
};

/* Preset or N followed by d, w, m or y; rounded up so that a record is
 * never dropped early (a month counts 31 days, a year 366). */
static int parse_retention(const char *s)
{
    for (size_t i = 0; i < sizeof retention_presets / sizeof retention_presets[0]; i++)
        if (!strcmp(s, retention_presets[i].name))
            return retention_presets[i].days;
    size_t n = strlen(s);
    if (n < 2 || n > 8)
        return 0;
    int64_t v = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    int mul = s[n - 1] == 'd'   ? 1
              : s[n - 1] == 'w' ? 7
              : s[n - 1] == 'm' ? 31
              : s[n - 1] == 'y' ? 366
                                : 0;
    v *= mul;
    return v >= 1 && v <= 100 * 366 ? (int)v : 0;
}

static void validate_rate(vctx *c, const pnode *m, const char *path, policy_rate *r)
{
    static const char *const keys[] = {"requests_per_minute", "tokens_per_minute", NULL};
    const pnode *v = get(m, "rate_limit");
    char p[192];
    snprintf(p, sizeof p, "%s.rate_limit", path);
    if (!v || !check_map(c, v, p, keys))
        return;
    opt_int(c, v, p, "requests_per_minute", 1, 1000000000, &r->requests_per_minute);
    opt_int(c, v, p, "tokens_per_minute", 1, 1000000000000, &r->tokens_per_minute);
}

/* A list of strings; returns the count stored (NULL entries for bad items). */
static int str_list(vctx *c, const pnode *v, const char *path, const char ***out)
{
    if (!as_seq(c, v, path))
        return 0;
    const char **s = arena_alloc(c->a, sizeof(char *) * (size_t)(v->n ? v->n : 1));
    if (!s)
        return 0;
    for (int i = 0; i < v->n; i++) {
        char p[192];
        snprintf(p, sizeof p, "%s[%d]", path, i);
        const pnode *it = v->vals[i];
        if (it->kind != PN_SCALAR || is_null(it) || strlen(it->str) != it->len)
            verr(c, it, "%s: expected a string, got %s", p, kind_name(it));
        else
            s[i] = arena_strndup(c->a, it->str, it->len);
    }
    *out = s;
    return v->n;
}

/* Whether a "hash" is something else: a raw key, a hash of another kind. */
static void check_key_hash(vctx *c, const pnode *hv, const char *path, uint8_t out[32], bool *ok)
{
    const char *h = as_str(c, hv, path, "hash");
    *ok = false;
    if (!h)
        return;
    if (strncmp(h, "sha256:", 7) == 0 && hex_digest(h + 7, out)) {
        bool lower = true;
        for (const char *q = h + 7; *q; q++)
            lower &= !isupper((unsigned char)*q);
        uint8_t zero[32] = {0};
        if (!memcmp(out, zero, 32))
            verr(c, hv, "%s.hash: an all-zero hash is a placeholder, not a key hash", path);
        else if (!lower)
            verr(c, hv, "%s.hash: expected lower-case hex digits after 'sha256:'", path);
        else
            *ok = true;
        return;
    }
    /* Never quote the value: it may be the key itself. */
    verr(c, hv,
         "%s.hash: not a key hash: expected 'sha256:' followed by 64 hex digits (make one with "
         "'moegate policy hash-key'); if this value is a key, it is exposed: rotate it",
         path);
}

static void validate_tenants(vctx *c, const pnode *v)
{
    static const char *const keys[] = {"id",        "api_keys",   "mtls_subjects", "roles",
                                       "domains",   "rate_limit", "max_tokens",    "audit_payload",
                                       "retention", NULL};
    static const char *const key_keys[] = {"id", "hash", "rate_limit", NULL};
    static const char *const roles[] = {"user", "admin", "auditor", NULL};
    policy_config *cfg = &c->p->cfg;
    if (!as_seq(c, v, "tenants"))
        return;
    int n = v->n ? v->n : 1;
    policy_tenant *tn = arena_alloc(c->a, sizeof *tn * (size_t)n);
    const char **ids = arena_alloc(c->a, sizeof(char *) * (size_t)n);
    const pnode **id_at = arena_alloc(c->a, sizeof(pnode *) * (size_t)n);
    if (!tn || !ids || !id_at)
        return;
    cfg->tenants = tn;
    if (v->n == 0)
        verr(c, v, "tenants: expected at least one tenant");
    /* every key and subject so far, for cross-tenant duplicates */
    int total_keys = 0, total_subj = 0;
    for (int i = 0; i < v->n; i++) {
        const pnode *ak = get(v->vals[i], "api_keys"), *ms = get(v->vals[i], "mtls_subjects");
        total_keys += ak && ak->kind == PN_SEQ ? ak->n : 0;
        total_subj += ms && ms->kind == PN_SEQ ? ms->n : 0;
    }
    const policy_api_key **all = arena_alloc(c->a, sizeof(void *) * (size_t)(total_keys + 1));
    const pnode **all_at = arena_alloc(c->a, sizeof(void *) * (size_t)(total_keys + 1));
    const char **all_path = arena_alloc(c->a, sizeof(void *) * (size_t)(total_keys + 1));
    const char **subj = arena_alloc(c->a, sizeof(void *) * (size_t)(total_subj + 1));
    const pnode **subj_at = arena_alloc(c->a, sizeof(void *) * (size_t)(total_subj + 1));
    if (!all || !all_at || !all_path || !subj || !subj_at)
        return;
    int n_all = 0, n_subj = 0;
    c->p->keys = all;

    for (int i = 0; i < v->n; i++) {
        const pnode *m = v->vals[i];
        char path[64], field[128];
        snprintf(path, sizeof path, "tenants[%d]", i);
        if (!check_map(c, m, path, keys))
            continue;
        policy_tenant *t = &tn[cfg->n_tenants++];
        t->id = entry_name(c, m, path, "id", "tenant id", ids, id_at, i);
        t->audit_payload = cfg->audit.payload;
        validate_rate(c, m, path, &t->rate);
        int64_t mt;
        if (opt_int(c, m, path, "max_tokens", 1, 1 << 24, &mt))
            t->max_tokens = (int)mt;
        int pm;
        if (opt_enum(c, m, path, "audit_payload", payload_names, &pm)) {
            t->audit_payload = (policy_payload)pm;
            if (pm == POLICY_PAYLOAD_CLEAR)
                vwarn(c, get(m, "audit_payload"),
                      "%s.audit_payload: clear keeps this tenant's prompts and answers readable "
                      "in the audit database",
                      path);
        }
        if (get(m, "audit_payload") && t->audit_payload == POLICY_PAYLOAD_ENCRYPT &&
            !c->have_enc_key)
            verr(c, get(m, "audit_payload"),
                 "%s.audit_payload: encrypt needs audit.encryption_key_file", path);
        const pnode *rv = get(m, "retention");
        if (rv) {
            const char *r = as_str(c, rv, path, "retention");
            if (r && !(t->retention_days = parse_retention(r)))
                verr(c, rv,
                     "%s.retention: expected a preset (securities-6y, hipaa-6y, cn-network-6m, "
                     "sox-7y) or a duration from 1d to 100y such as 400d, 26w, 18m or 7y",
                     path);
            else if (r)
                t->retention = arena_strndup(c->a, r, strlen(r));
        }

        /* roles */
        t->roles = POLICY_ROLE_USER;
        const pnode *rl = get(m, "roles");
        snprintf(field, sizeof field, "%s.roles", path);
        if (rl && as_seq(c, rl, field)) {
            t->roles = 0;
            if (rl->n == 0)
                verr(c, rl, "%s: expected at least one of: user, admin, auditor", field);
            for (int k = 0; k < rl->n; k++) {
                const pnode *it = rl->vals[k];
                int x = -1;
                for (int q = 0; roles[q] && it->kind == PN_SCALAR; q++)
                    if (!strcmp(it->str, roles[q]))
                        x = q;
                if (x < 0)
                    verr(c, it, "%s[%d]: expected one of: user, admin, auditor", field, k);
                else
                    t->roles |= 1u << x;
            }
        }

        /* allowed domains: each must exist */
        const pnode *dl = need(c, m, path, "domains");
        snprintf(field, sizeof field, "%s.domains", path);
        if (dl) {
            const char **ds = NULL;
            int nd = str_list(c, dl, field, &ds);
            if (dl->kind == PN_SEQ && nd == 0)
                verr(c, dl, "%s: expected at least one domain", field);
            const char **kept = arena_alloc(c->a, sizeof(char *) * (size_t)(nd ? nd : 1));
            for (int k = 0; k < nd && kept; k++) {
                if (!ds[k])
                    continue;
                const policy_domain *dom = NULL;
                for (int q = 0; q < cfg->n_domains; q++)
                    if (cfg->domains[q].name && !strcmp(cfg->domains[q].name, ds[k]))
                        dom = &cfg->domains[q];
                char s[SHOW_MAX + 4];
                if (!dom) {
                    char defined[512];
                    const char *ns[64];
                    int nn = 0;
                    for (int q = 0; q < cfg->n_domains && nn < 64; q++)
                        ns[nn++] = cfg->domains[q].name;
                    list_names(defined, sizeof defined, ns, nn);
                    verr(c, dl->vals[k], "%s[%d]: unknown domain '%s' (defined: %s)", field, k,
                         show(s, ds[k], strlen(ds[k])), defined[0] ? defined : "none");
                    continue;
                }
                bool dup = false;
                for (int q = 0; q < t->n_domains; q++)
                    dup |= !strcmp(kept[q], dom->name);
                if (dup)
                    vwarn(c, dl->vals[k], "%s[%d]: domain '%s' is listed twice", field, k,
                          dom->name);
                else
                    kept[t->n_domains++] = dom->name;
            }
            t->domains = kept;
        }

        /* API keys */
        const pnode *kl = get(m, "api_keys");
        snprintf(field, sizeof field, "%s.api_keys", path);
        if (kl && as_seq(c, kl, field)) {
            policy_api_key *ks = arena_alloc(c->a, sizeof *ks * (size_t)(kl->n ? kl->n : 1));
            if (!ks)
                continue;
            t->keys = ks;
            int first_key = n_all;
            for (int k = 0; k < kl->n; k++) {
                const pnode *km = kl->vals[k];
                char kp[160], kf[192];
                snprintf(kp, sizeof kp, "%s[%d]", field, k);
                if (!check_map(c, km, kp, key_keys))
                    continue;
                policy_api_key *key = &ks[t->n_keys];
                key->tenant = t;
                key->id = need_name(c, km, kp, "id");
                snprintf(kf, sizeof kf, "%s.id", kp);
                bool dup = false;
                for (int q = first_key; q < n_all && key->id; q++)
                    if (all[q]->id && !strcmp(all[q]->id, key->id)) {
                        verr(c, get(km, "id"),
                             "%s: duplicate key id '%s' in this tenant (first "
                             "at %d:%d)",
                             kf, key->id, all_at[q]->line, all_at[q]->column);
                        dup = true;
                    }
                const pnode *hv = need(c, km, kp, "hash");
                bool ok = false;
                if (hv)
                    check_key_hash(c, hv, kp, key->hash, &ok);
                for (int q = 0; q < n_all && ok; q++)
                    if (!memcmp(all[q]->hash, key->hash, 32)) {
                        verr(c, hv,
                             "%s.hash: same hash as %s (first at %d:%d); a key belongs to "
                             "one tenant and one id",
                             kp, all_path[q], all_at[q]->line, all_at[q]->column);
                        ok = false;
                    }
                validate_rate(c, km, kp, &key->rate);
                if (!ok || dup || !key->id)
                    continue;
                t->n_keys++;
                all_at[n_all] = hv;
                all_path[n_all] = arena_strndup(c->a, kp, strlen(kp));
                all[n_all++] = key;
                if (t->max_tokens && key->rate.tokens_per_minute &&
                    t->max_tokens > key->rate.tokens_per_minute)
                    vwarn(c, get(km, "rate_limit"),
                          "%s.rate_limit.tokens_per_minute: %lld is below the tenant's "
                          "max_tokens %d, so a request asking for max_tokens is never admitted",
                          kp, (long long)key->rate.tokens_per_minute, t->max_tokens);
            }
        }

        /* client certificate subjects */
        const pnode *sl = get(m, "mtls_subjects");
        snprintf(field, sizeof field, "%s.mtls_subjects", path);
        if (sl) {
            const char **ss = NULL;
            int ns = str_list(c, sl, field, &ss);
            const char **kept = arena_alloc(c->a, sizeof(char *) * (size_t)(ns ? ns : 1));
            for (int k = 0; k < ns && kept; k++) {
                if (!ss[k])
                    continue;
                if (!strchr(ss[k], '=')) {
                    verr(c, sl->vals[k],
                         "%s[%d]: expected a distinguished name such as CN=client,O=Example "
                         "(RFC 2253, as 'openssl x509 -noout -subject -nameopt RFC2253' prints it)",
                         field, k);
                    continue;
                }
                bool dup = false;
                for (int q = 0; q < n_subj && !dup; q++)
                    if (!strcmp(subj[q], ss[k])) {
                        verr(c, sl->vals[k],
                             "%s[%d]: subject already belongs to another entry (first at %d:%d)",
                             field, k, subj_at[q]->line, subj_at[q]->column);
                        dup = true;
                    }
                if (dup)
                    continue;
                subj[n_subj] = ss[k];
                subj_at[n_subj++] = sl->vals[k];
                kept[t->n_mtls_subjects++] = ss[k];
            }
            t->mtls_subjects = kept;
            if (ns > 0 && !c->have_client_ca)
                verr(c, sl, "%s: client certificate subjects need server.tls_client_ca%s", field,
                     c->tls ? "" : " (and server.tls on)");
        }
        /* as written: entries with errors were reported already */
        const pnode *kw = get(m, "api_keys"), *sw = get(m, "mtls_subjects");
        if ((!kw || (kw->kind == PN_SEQ && kw->n == 0)) &&
            (!sw || (sw->kind == PN_SEQ && sw->n == 0)))
            vwarn(c, m,
                  "%s: no api_keys and no mtls_subjects: no client can authenticate as "
                  "this tenant",
                  path);
        if (t->max_tokens && t->rate.tokens_per_minute && t->max_tokens > t->rate.tokens_per_minute)
            vwarn(c, get(m, "max_tokens"),
                  "%s.max_tokens: %d exceeds rate_limit.tokens_per_minute %lld, so a request "
                  "asking for max_tokens is never admitted",
                  path, t->max_tokens, (long long)t->rate.tokens_per_minute);
    }
    c->p->n_keys = n_all;
}

/* ---- the whole file ------------------------------------------------------------------- */

static void validate(vctx *c, const pnode *root)
{
    static const char *const keys[] = {"server",  "model",          "adapters", "domains",
                                       "tenants", "redaction",      "audit",    "logging",
                                       "router",  "content_labels", NULL};
    c->p->cfg.logging.output = "stderr";
    if (root->kind != PN_MAP) {
        verr(c, root, "expected a mapping with server, model, domains, tenants and audit, got %s",
             kind_name(root));
        return;
    }
    check_map(c, root, "top level", keys);
    const pnode *v;
    if ((v = need(c, root, "top level", "server")))
        validate_server(c, v);
    if ((v = need(c, root, "top level", "model")))
        validate_model(c, v);
    if ((v = get(root, "adapters")))
        validate_adapters(c, v);
    if ((v = need(c, root, "top level", "domains")))
        validate_domains(c, v);
    if ((v = need(c, root, "top level", "audit")))
        validate_audit(c, v);
    if ((v = get(root, "redaction")))
        validate_redaction(c, v);
    validate_logging(c, get(root, "logging"));
    if ((v = get(root, "content_labels")))
        validate_content_labels(c, v);
    if ((v = get(root, "router")))
        validate_router(c, v);
    if ((v = need(c, root, "top level", "tenants")))
        validate_tenants(c, v);
}

/* ---- entry points ---------------------------------------------------------------------- */

const char *policy_diag_format(const policy_diag *d, char *buf, size_t buflen)
{
    const char *sev = d->severity == POLICY_ERROR ? "error" : "warning";
    if (d->line > 0)
        snprintf(buf, buflen, "%s:%d:%d: %s: %s", d->file, d->line, d->column, sev, d->message);
    else
        snprintf(buf, buflen, "%s: %s: %s", d->file, sev, d->message);
    return buf;
}

static void policy_free_now(policy *p)
{
    redactor_free(p->red);
    arena_free(&p->a);
    free(p);
}

int policy_load_memory(policy **out, const char *name, const char *data, size_t len,
                       const policy_load_opts *opts, char *err, size_t errlen)
{
    pdiags d = {.file = name ? name : "policy"};
    arena tree = {0};
    char base[PATH_MAX];
    int rc = MG_ENOMEM;
    policy *p = calloc(1, sizeof *p);
    if (!p || redactor_create(&p->red))
        goto fail;
    atomic_init(&p->refs, 1);
    p->generation = 1;
    vctx c = {.d = &d, .a = &p->a, .p = p};
    const char *bd = opts && opts->base_dir ? opts->base_dir : ".";
    c.base_dir = realpath(bd, base) ? base : bd;
    p->cfg.path = arena_strndup(&p->a, d.file, strlen(d.file));
    if (!p->cfg.path)
        goto fail;
    if (len > MAX_FILE_BYTES)
        pdiags_add(&d, POLICY_ERROR, 0, 0, "the file is larger than %u bytes", MAX_FILE_BYTES);
    else {
        pnode *root = yaml_tree_parse(&tree, &d, data, len);
        if (root)
            validate(&c, root);
    }
    pdiags_sort(&d);
    for (int i = 0; opts && opts->on_diag && i < d.n; i++) {
        policy_diag pd = {d.v[i].severity, d.file, d.v[i].line, d.v[i].column, d.v[i].message};
        opts->on_diag(opts->ud, &pd);
    }
    if (d.oom)
        goto fail;
    if (d.n_errors) {
        rc = MG_EFORMAT;
        for (int i = 0; i < d.n; i++)
            if (d.v[i].severity == POLICY_ERROR) {
                char more[64] = "";
                if (d.n_errors > 1)
                    snprintf(more, sizeof more, " (and %d more error%s)", d.n_errors - 1,
                             d.n_errors > 2 ? "s" : "");
                if (d.v[i].line)
                    mg_err_set(err, errlen, "policy: %s:%d:%d: %s%s", d.file, d.v[i].line,
                               d.v[i].column, d.v[i].message, more);
                else
                    mg_err_set(err, errlen, "policy: %s: %s%s", d.file, d.v[i].message, more);
                break;
            }
        goto fail;
    }
    arena_free(&tree);
    pdiags_free(&d);
    *out = p;
    return 0;
fail:
    if (rc == MG_ENOMEM)
        mg_err_set(err, errlen, "policy: out of memory loading %s", d.file);
    arena_free(&tree);
    pdiags_free(&d);
    if (p)
        policy_free_now(p);
    return rc;
}

int policy_load(policy **out, const char *path, const policy_load_opts *opts, char *err,
                size_t errlen)
{
    if (!out || !path) {
        mg_err_set(err, errlen, "policy: no file given");
        return MG_EINVAL;
    }
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    int rc = MG_EIO;
    if (!f) {
        mg_err_set(err, errlen, "policy: cannot open '%s': %s", path, strerror(errno));
        return MG_EIO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        mg_err_set(err, errlen, "policy: '%s' is not a regular file", path);
        goto fail;
    }
    if (st.st_size > (off_t)MAX_FILE_BYTES) {
        mg_err_set(err, errlen, "policy: '%s' is larger than %u bytes", path, MAX_FILE_BYTES);
        goto fail;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = MG_ENOMEM;
        mg_err_set(err, errlen, "policy: out of memory reading '%s'", path);
        goto fail;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    if (ferror(f) || n != (size_t)st.st_size) {
        mg_err_set(err, errlen, "policy: error reading '%s'", path);
        goto fail;
    }
    policy_load_opts o = opts ? *opts : (policy_load_opts){0};
    char dir[PATH_MAX];
    if (!o.base_dir) {
        const char *slash = strrchr(path, '/');
        if (!slash)
            snprintf(dir, sizeof dir, ".");
        else if (slash == path)
            snprintf(dir, sizeof dir, "/");
        else
            snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
        o.base_dir = dir;
    }
    rc = policy_load_memory(out, path, buf, n, &o, err, errlen);
fail:
    free(buf);
    fclose(f);
    return rc;
}

const policy *policy_retain(const policy *p)
{
    if (p)
        atomic_fetch_add(&((policy *)p)->refs, 1);
    return p;
}

void policy_release(const policy *p)
{
    if (p && atomic_fetch_sub(&((policy *)p)->refs, 1) == 1)
        policy_free_now((policy *)p);
}

const policy_config *policy_get_config(const policy *p)
{
    return &p->cfg;
}

uint64_t policy_generation(const policy *p)
{
    return p->generation;
}
