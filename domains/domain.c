/* moegate domains — loading and validating domain packs.
 *
 * The YAML goes through the policy module's positioned tree (libyaml events
 * into pnodes, anchors, aliases and odd tags refused) and each key is
 * checked here against the schema in domains/README.md: unknown keys,
 * duplicate keys, wrong types, numbers out of range, files that are
 * missing, empty, not UTF-8 or outside the pack all become diagnostics
 * FILE:LINE:COLUMN: message, collected across every pack and sorted, so an
 * operator sees all problems at once. Any error refuses the whole set.
 *
 * A set owns one arena holding every string and array of every pack; it
 * is immutable after load. Single-threaded while loading.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/errors.h"
#include "core/unicode.h"
#include "domains/domain.h"
#include "policies/policy_internal.h"

#define MAX_FILE_BYTES (1u << 20)
#define MAX_PACKS      256

struct domain_set {
    arena a;
    domain_pack *packs;
    int n;
};

/* One diagnostic list per file; all are merged at the end. */
typedef struct loader {
    arena *a;
    pdiags *files; /* one per file that got a diagnostic */
    int n_files, cap_files;
    bool oom;
} loader;

static pdiags *ld_file(loader *L, const char *file)
{
    for (int i = 0; i < L->n_files; i++)
        if (strcmp(L->files[i].file, file) == 0)
            return &L->files[i];
    if (L->n_files == L->cap_files) {
        int cap = L->cap_files ? 2 * L->cap_files : 8;
        pdiags *v = realloc(L->files, sizeof *v * (size_t)cap);
        if (!v) {
            L->oom = true;
            return NULL;
        }
        L->files = v;
        L->cap_files = cap;
    }
    char *f = arena_strndup(L->a, file, strlen(file));
    if (!f) {
        L->oom = true;
        return NULL;
    }
    L->files[L->n_files] = (pdiags){.file = f};
    return &L->files[L->n_files++];
}

__attribute__((format(printf, 5, 6))) static void ld_err(loader *L, const char *file, int line,
                                                         int col, const char *fmt, ...)
{
    pdiags *d = ld_file(L, file);
    if (!d)
        return;
    va_list ap;
    va_start(ap, fmt);
    pdiags_addv(d, POLICY_ERROR, line, col, fmt, ap);
    va_end(ap);
}

static int ld_errors(const loader *L)
{
    int n = 0;
    for (int i = 0; i < L->n_files; i++)
        n += L->files[i].n_errors;
    return n;
}

/* ---- one pack's context ------------------------------------------------------ */

typedef struct pctx {
    loader *L;
    const char *file; /* the domain.yaml path, for diagnostics */
    const char *dir;  /* the pack folder */
    domain_pack *p;
} pctx;

#define E(c, n, ...) ld_err((c)->L, (c)->file, (n)->line, (n)->column, __VA_ARGS__)

static const char *kind_name(const pnode *n)
{
    return n->kind == PN_MAP ? "a mapping" : n->kind == PN_SEQ ? "a list" : "a scalar";
}

/* A non-empty string scalar (plain or quoted), or NULL after a diagnostic. */
static const char *want_str(pctx *c, const pnode *n, const char *what)
{
    if (n->kind != PN_SCALAR) {
        E(c, n, "%s: expected a string, got %s", what, kind_name(n));
        return NULL;
    }
    if (n->len == 0 || strlen(n->str) != n->len) {
        E(c, n, "%s: expected a non-empty string without NUL bytes", what);
        return NULL;
    }
    if (!unicode_utf8_valid(n->str, n->len)) {
        E(c, n, "%s: not valid UTF-8", what);
        return NULL;
    }
    return n->str;
}

static bool want_kind(pctx *c, const pnode *n, pnode_kind k, const char *what)
{
    if (n->kind == k)
        return true;
    E(c, n, "%s: expected %s, got %s", what, k == PN_MAP ? "a mapping" : "a list", kind_name(n));
    return false;
}

static bool want_num(pctx *c, const pnode *n, const char *what, double lo, double hi, bool lo_open,
                     double *out)
{
    if (n->kind != PN_SCALAR || !n->plain || n->len == 0) {
        E(c, n, "%s: expected a number", what);
        return false;
    }
    char *end;
    errno = 0;
    double v = strtod(n->str, &end);
    if (*end || errno || !isfinite(v) ||
        !(isdigit((unsigned char)n->str[0]) || n->str[0] == '-' || n->str[0] == '.')) {
        E(c, n, "%s: expected a number, got \"%s\"", what, n->str);
        return false;
    }
    if (v > hi || v < lo || (lo_open && v == lo)) {
        E(c, n, "%s: %g is out of range %s%g, %g]", what, v, lo_open ? "(" : "[", lo, hi);
        return false;
    }
    *out = v;
    return true;
}

static bool want_int(pctx *c, const pnode *n, const char *what, long lo, long hi, int *out)
{
    if (n->kind != PN_SCALAR || !n->plain || n->len == 0) {
        E(c, n, "%s: expected an integer", what);
        return false;
    }
    char *end;
    errno = 0;
    long v = strtol(n->str, &end, 10);
    if (*end || errno || !(isdigit((unsigned char)n->str[0]) || n->str[0] == '-')) {
        E(c, n, "%s: expected an integer, got \"%s\"", what, n->str);
        return false;
    }
    if (v < lo || v > hi) {
        E(c, n, "%s: %ld is out of range [%ld, %ld]", what, v, lo, hi);
        return false;
    }
    *out = (int)v;
    return true;
}

/* Checks a mapping's keys against names[]; unknown and duplicate keys are
 * errors. vals[i] gets the value of names[i] or NULL. */
static void map_keys(pctx *c, const pnode *m, const char *what, const char *const *names, int n,
                     const pnode **vals)
{
    for (int i = 0; i < n; i++)
        vals[i] = NULL;
    for (int k = 0; k < m->n; k++) {
        const pnode *key = m->keys[k];
        if (key->kind != PN_SCALAR) {
            E(c, key, "%s: keys must be strings", what);
            continue;
        }
        int j = 0;
        while (j < n && strcmp(names[j], key->str) != 0)
            j++;
        if (j == n) {
            char list[256] = "";
            for (int i = 0; i < n; i++) {
                strncat(list, names[i], sizeof list - strlen(list) - 1);
                if (i + 1 < n)
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
            }
            E(c, key, "%s: unknown key \"%.64s\" (expected one of: %s)", what, key->str, list);
            continue;
        }
        if (vals[j]) {
            E(c, key, "%s: duplicate key \"%s\"", what, names[j]);
            continue;
        }
        vals[j] = m->vals[k];
    }
}

static void require(pctx *c, const pnode *m, const pnode *v, const char *what)
{
    if (!v)
        E(c, m, "missing required key %s", what);
}

/* ---- files --------------------------------------------------------------------- */

static char *read_all(const char *path, size_t max, size_t *len, int *err_no)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err_no = errno;
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        *err_no = EISDIR;
        return NULL;
    }
    if ((size_t)st.st_size > max) {
        fclose(f);
        *err_no = EFBIG;
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        *err_no = ENOMEM;
        return NULL;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* A path in domain.yaml: relative, no "..", resolved under the pack. */
static const char *pack_path(pctx *c, const pnode *n, const char *what)
{
    const char *rel = want_str(c, n, what);
    if (!rel)
        return NULL;
    if (rel[0] == '/' || strcmp(rel, "..") == 0 || strncmp(rel, "../", 3) == 0 ||
        strstr(rel, "/../") || (n->len >= 3 && strcmp(rel + n->len - 3, "/..") == 0)) {
        E(c, n, "%s: \"%s\" must be a path inside the pack folder", what, rel);
        return NULL;
    }
    return arena_printf(c->L->a, "%s/%s", c->dir, rel);
}

/* The trimmed contents of a text file named by node n, or NULL after a
 * diagnostic at n. */
static const char *text_file(pctx *c, const pnode *n, const char *what, size_t *len_out)
{
    const char *path = pack_path(c, n, what);
    if (!path)
        return NULL;
    size_t len = 0;
    int en = 0;
    char *buf = read_all(path, MAX_FILE_BYTES, &len, &en);
    if (!buf) {
        if (en == EFBIG)
            E(c, n, "%s: %s is larger than 1 MiB", what, n->str);
        else if (en == ENOMEM)
            c->L->oom = true;
        else
            E(c, n, "%s: cannot read %s: %s", what, n->str,
              en == EISDIR ? "not a regular file" : strerror(en));
        return NULL;
    }
    const char *res = NULL;
    size_t b = 0, e = len;
    while (b < e && isspace((unsigned char)buf[b]))
        b++;
    while (e > b && isspace((unsigned char)buf[e - 1]))
        e--;
    if (memchr(buf, 0, len) || !unicode_utf8_valid(buf, len))
        E(c, n, "%s: %s is not UTF-8 text", what, n->str);
    else if (b == e)
        E(c, n, "%s: %s is empty", what, n->str);
    else if (!(res = arena_strndup(c->L->a, buf + b, e - b)))
        c->L->oom = true;
    free(buf);
    if (len_out && res)
        *len_out = e - b;
    return res;
}

/* ---- sections -------------------------------------------------------------------- */

static const char *const lang_keys[DOMAIN_N_LANGS] = {"zh", "en"};

/* {zh: X, en: Y}, both required; files: read the named files. */
static void lang_pair(pctx *c, const pnode *n, const char *what, bool files,
                      const char *out[DOMAIN_N_LANGS])
{
    if (!want_kind(c, n, PN_MAP, what))
        return;
    const pnode *v[DOMAIN_N_LANGS];
    map_keys(c, n, what, lang_keys, DOMAIN_N_LANGS, v);
    for (int l = 0; l < DOMAIN_N_LANGS; l++) {
        char w[96];
        snprintf(w, sizeof w, "%s.%s", what, lang_keys[l]);
        if (!v[l]) {
            E(c, n, "%s: missing required key %s", what, lang_keys[l]);
            continue;
        }
        out[l] = files ? text_file(c, v[l], w, NULL) : want_str(c, v[l], w);
    }
}

static bool is_han(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x20000 && cp <= 0x2FFFF);
}

/* The form blocked-topic keywords and request texts are compared in, so
 * that trivial disguises do not slip past a keyword: full-width ASCII
 * (Ｉｎｓｉｄｅｒ) becomes ASCII, ASCII letters lower case, every run of
 * white space (ideographic and no-break spaces too) one space, and a space
 * between two Han characters (内幕 消息) none; zero-width and soft-hyphen
 * characters are dropped. Invalid UTF-8 bytes are dropped. Returns a
 * malloc'd NUL-terminated string (*out_len its length), NULL when out of
 * memory. */
static char *fold_text(const char *text, size_t len, size_t *out_len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    const uint8_t *u = (const uint8_t *)text;
    size_t o = 0;
    bool space = false; /* a space is pending */
    uint32_t prev = 0;  /* the last code point written */
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = unicode_utf8_decode(u + i, len - i, &cp);
        if (n == 0)
            n = 1;
        bool bad = cp == 0xFFFD && !(n == 3 && u[i] == 0xEF);
        i += n;
        if (bad || cp == 0xAD || (cp >= 0x200B && cp <= 0x200F) || cp == 0x2060 || cp == 0xFEFF)
            continue;
        if (cp >= 0xFF01 && cp <= 0xFF5E)
            cp -= 0xFEE0;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || cp == 0xA0 || cp == 0x3000 ||
            (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F) {
            space = o > 0;
            continue;
        }
        if (cp < 0x80)
            cp = (uint32_t)tolower((int)cp);
        if (space && !(is_han(prev) && is_han(cp)))
            out[o++] = ' ';
        space = false;
        char buf[4];
        int k = unicode_utf8_encode(cp, buf);
        memcpy(out + o, buf, (size_t)k);
        o += (size_t)k;
        prev = cp;
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

static char *fold_keyword(arena *a, const char *s)
{
    size_t n;
    char *f = fold_text(s, strlen(s), &n);
    char *r = f ? arena_strndup(a, f, n) : NULL;
    free(f);
    return r;
}

static void topics(pctx *c, const pnode *n)
{
    if (!want_kind(c, n, PN_SEQ, "guardrails.blocked_topics"))
        return;
    domain_topic *t = arena_alloc(c->L->a, sizeof *t * (size_t)(n->n ? n->n : 1));
    if (!t) {
        c->L->oom = true;
        return;
    }
    static const char *const keys[] = {"name", "keywords", "refusal"};
    for (int i = 0; i < n->n; i++) {
        const pnode *it = n->vals[i];
        char what[64];
        snprintf(what, sizeof what, "guardrails.blocked_topics[%d]", i);
        if (!want_kind(c, it, PN_MAP, what))
            continue;
        const pnode *v[3];
        map_keys(c, it, what, keys, 3, v);
        char w[96];
        snprintf(w, sizeof w, "%s.name", what);
        if (v[0] && (t[i].name = want_str(c, v[0], w)))
            for (int j = 0; j < i; j++)
                if (t[j].name && strcmp(t[j].name, t[i].name) == 0)
                    E(c, v[0], "%s: duplicate topic name \"%s\"", w, t[i].name);
        snprintf(w, sizeof w, "%s.keywords", what);
        if (v[1] && want_kind(c, v[1], PN_MAP, w)) {
            const pnode *kw[DOMAIN_N_LANGS];
            map_keys(c, v[1], w, lang_keys, DOMAIN_N_LANGS, kw);
            int total = 0;
            for (int l = 0; l < DOMAIN_N_LANGS; l++) {
                char wl[112];
                snprintf(wl, sizeof wl, "%s.%s", w, lang_keys[l]);
                if (!kw[l] || !want_kind(c, kw[l], PN_SEQ, wl))
                    continue;
                const char **list = arena_alloc(c->L->a, sizeof *list * (size_t)(kw[l]->n + 1));
                if (!list) {
                    c->L->oom = true;
                    return;
                }
                for (int k = 0; k < kw[l]->n; k++) {
                    const char *s = want_str(c, kw[l]->vals[k], wl);
                    if (!s)
                        continue;
                    char *f = fold_keyword(c->L->a, s);
                    if (!f)
                        c->L->oom = true;
                    else if (!*f)
                        E(c, kw[l]->vals[k], "%s: a keyword of only spaces matches nothing", wl);
                    else
                        list[t[i].n_keywords[l]++] = f;
                }
                t[i].keywords[l] = list;
                total += kw[l]->n;
            }
            if (total == 0)
                E(c, v[1], "%s: at least one keyword is needed", w);
        }
        snprintf(w, sizeof w, "%s.refusal", what);
        if (v[2])
            lang_pair(c, v[2], w, false, t[i].refusal);
        if (!v[0] || !v[1] || !v[2])
            E(c, it, "%s: name, keywords and refusal are required", what);
    }
    c->p->topics = t;
    c->p->n_topics = n->n;
}

static void guardrails(pctx *c, const pnode *n, const pnode **max_tokens_node)
{
    if (!want_kind(c, n, PN_MAP, "guardrails"))
        return;
    static const char *const keys[] = {"redaction", "disclaimer", "blocked_topics", "max_tokens"};
    const pnode *v[4];
    map_keys(c, n, "guardrails", keys, 4, v);
    if (v[0] && want_kind(c, v[0], PN_SEQ, "guardrails.redaction")) {
        const char **r = arena_alloc(c->L->a, sizeof *r * (size_t)(v[0]->n + 1));
        if (!r) {
            c->L->oom = true;
            return;
        }
        for (int i = 0; i < v[0]->n; i++) {
            const pnode *it = v[0]->vals[i];
            const char *s = want_str(c, it, "guardrails.redaction");
            if (!s)
                continue;
            if (redactor_builtin_find(s) < 0) {
                E(c, it, "guardrails.redaction: unknown detector \"%.64s\" (built-in: %s)", s,
                  redactor_builtin_names());
                continue;
            }
            bool dup = false;
            for (int j = 0; j < c->p->n_redaction; j++)
                dup |= strcmp(r[j], s) == 0;
            if (dup)
                E(c, it, "guardrails.redaction: \"%s\" listed twice", s);
            else
                r[c->p->n_redaction++] = s;
        }
        c->p->redaction = r;
    }
    if (v[1])
        lang_pair(c, v[1], "guardrails.disclaimer", false, c->p->disclaimer);
    if (v[2])
        topics(c, v[2]);
    require(c, n, v[3], "guardrails.max_tokens");
    if (v[3])
        want_int(c, v[3], "guardrails.max_tokens", 1, 1 << 20, &c->p->max_tokens);
    *max_tokens_node = v[3];
}

static void defaults(pctx *c, const pnode *n, const pnode **max_tokens_node)
{
    if (!want_kind(c, n, PN_MAP, "defaults"))
        return;
    static const char *const keys[] = {"temperature", "top_p", "max_tokens"};
    const pnode *v[3];
    map_keys(c, n, "defaults", keys, 3, v);
    if (v[0])
        want_num(c, v[0], "defaults.temperature", 0, 2, false, &c->p->temperature);
    if (v[1])
        want_num(c, v[1], "defaults.top_p", 0, 1, true, &c->p->top_p);
    if (v[2])
        want_int(c, v[2], "defaults.max_tokens", 1, 1 << 20, &c->p->default_max_tokens);
    *max_tokens_node = v[2];
}

/* Example prompts: one per line, '#' starts a comment line, blank lines
 * are skipped. */
static void examples(pctx *c, const pnode *n, const char ***list, int *count, int *cap)
{
    if (!want_kind(c, n, PN_SEQ, "examples"))
        return;
    if (n->n == 0)
        E(c, n, "examples: at least one file is needed");
    for (int i = 0; i < n->n; i++) {
        size_t len = 0;
        const char *txt = text_file(c, n->vals[i], "examples", &len);
        if (!txt)
            continue;
        int before = *count;
        for (const char *s = txt; *s;) {
            const char *e = strchr(s, '\n');
            size_t l = e ? (size_t)(e - s) : strlen(s);
            size_t b = 0;
            while (b < l && isspace((unsigned char)s[b]))
                b++;
            while (l > b && isspace((unsigned char)s[l - 1]))
                l--;
            if (l > b && s[b] != '#') {
                if (*count == *cap) {
                    int nc = *cap ? 2 * *cap : 64;
                    const char **nl = arena_alloc(c->L->a, sizeof *nl * (size_t)nc);
                    if (!nl) {
                        c->L->oom = true;
                        return;
                    }
                    if (*count)
                        memcpy(nl, *list, sizeof *nl * (size_t)*count);
                    *list = nl;
                    *cap = nc;
                }
                (*list)[(*count)++] = arena_strndup(c->L->a, s + b, l - b);
            }
            s = e ? e + 1 : s + strlen(s);
        }
        if (*count == before)
            E(c, n->vals[i], "examples: %s holds no prompt", n->vals[i]->str);
    }
}

/* eval JSONL: one object per line with prompt (string), lang ("zh"|"en")
 * and the properties an answer must have: must_include and
 * must_not_include (lists of strings), must_end_with_disclaimer and
 * must_refuse (booleans). Diagnostics point into the JSONL file. */
static void eval_file(pctx *c, const pnode *n)
{
    const char *path = pack_path(c, n, "eval");
    if (!path)
        return;
    size_t len = 0;
    int en = 0;
    char *buf = read_all(path, MAX_FILE_BYTES, &len, &en);
    if (!buf) {
        E(c, n, "eval: cannot read %s: %s", n->str,
          en == EFBIG    ? "larger than 1 MiB"
          : en == EISDIR ? "not a regular file"
                         : strerror(en));
        return;
    }
    c->p->eval_path = path;
    int line = 0, count = 0;
    static const char *const known[] = {
        "prompt",      "lang", "must_include", "must_not_include", "must_end_with_disclaimer",
        "must_refuse", "note"};
    for (char *s = buf; *s;) {
        char *e = strchr(s, '\n');
        if (e)
            *e = 0;
        line++;
        size_t l = strlen(s);
        bool blank = true;
        for (size_t i = 0; i < l; i++)
            blank &= isspace((unsigned char)s[i]) != 0;
        if (!blank) {
            json_error_t je;
            json_t *o = json_loadb(s, l, 0, &je);
            if (!o) {
                ld_err(c->L, path, line, je.column > 0 ? je.column : 1, "eval: %s", je.text);
            } else if (!json_is_object(o)) {
                ld_err(c->L, path, line, 1, "eval: expected a JSON object");
            } else {
                const char *k;
                json_t *v;
                json_object_foreach(o, k, v)
                {
                    size_t j = 0;
                    while (j < sizeof known / sizeof known[0] && strcmp(known[j], k) != 0)
                        j++;
                    if (j == sizeof known / sizeof known[0])
                        ld_err(c->L, path, line, 1, "eval: unknown key \"%.64s\"", k);
                    else if ((j == 2 || j == 3) && !json_is_array(v))
                        ld_err(c->L, path, line, 1, "eval: %s must be a list of strings", k);
                    else if ((j == 4 || j == 5) && !json_is_boolean(v))
                        ld_err(c->L, path, line, 1, "eval: %s must be true or false", k);
                    if (j == 2 || j == 3) {
                        size_t ai;
                        json_t *av;
                        json_array_foreach(v, ai,
                                           av) if (!json_is_string(av) || !json_string_length(av))
                            ld_err(c->L, path, line, 1, "eval: %s[%zu] must be a non-empty string",
                                   k, ai);
                    }
                }
                json_t *p = json_object_get(o, "prompt"), *lg = json_object_get(o, "lang");
                if (!json_is_string(p) || !json_string_length(p))
                    ld_err(c->L, path, line, 1, "eval: prompt must be a non-empty string");
                if (!json_is_string(lg) || (strcmp(json_string_value(lg), "zh") != 0 &&
                                            strcmp(json_string_value(lg), "en") != 0))
                    ld_err(c->L, path, line, 1, "eval: lang must be \"zh\" or \"en\"");
                if (json_is_true(json_object_get(o, "must_end_with_disclaimer")) &&
                    !c->p->disclaimer[0])
                    ld_err(c->L, path, line, 1,
                           "eval: must_end_with_disclaimer but the domain has no disclaimer");
                count++;
            }
            json_decref(o);
        }
        s = e ? e + 1 : s + l;
    }
    free(buf);
    if (count == 0)
        E(c, n, "eval: %s holds no prompt", n->str);
    c->p->n_eval = count;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !islower((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_' &&
            s[i] != '-')
            return false;
    return true;
}

/* Validates one domain.yaml (data) of the pack in dir into *p. */
static void load_pack(loader *L, const char *file, const char *dir, const char *folder_name,
                      const char *data, size_t len, domain_pack *p)
{
    pctx c = {L, file, dir, p};
    /* the tree's own diagnostics go through a scratch list: its message
     * for an empty file speaks of the policy's sections */
    pdiags td = {.file = file};
    pnode *root = yaml_tree_parse(L->a, &td, data, len);
    if (!root && td.n_errors <= 1 && (td.n == 0 || td.v[0].line == 0))
        ld_err(L, file, 1, 1, "empty document: expected a mapping");
    else
        for (int i = 0; i < td.n; i++)
            ld_err(L, file, td.v[i].line, td.v[i].column, "%s", td.v[i].message);
    if (td.oom)
        L->oom = true;
    pdiags_free(&td);
    if (!root)
        return;
    p->dir = dir;
    p->temperature = 0.7;
    p->top_p = 1.0;
    if (!want_kind(&c, root, PN_MAP, "domain.yaml"))
        return;
    static const char *const keys[] = {"name",     "description", "adapter",  "system_prompt",
                                       "defaults", "guardrails",  "examples", "eval"};
    const pnode *v[8];
    map_keys(&c, root, "domain.yaml", keys, 8, v);
    static const char *const req[] = {"name",       "description", "system_prompt",
                                      "guardrails", "examples",    "eval"};
    static const int req_i[] = {0, 1, 3, 5, 6, 7};
    for (int i = 0; i < 6; i++)
        if (!v[req_i[i]])
            ld_err(L, file, root->line, root->column, "missing required key %s", req[i]);
    if (v[0] && (p->name = want_str(&c, v[0], "name"))) {
        if (!name_ok(p->name))
            E(&c, v[0], "name: \"%.64s\" must be 1-64 of a-z 0-9 _ - starting with a letter",
              p->name);
        else if (folder_name && strcmp(folder_name, p->name) != 0)
            E(&c, v[0], "name: \"%s\" differs from the pack's folder \"%s\"", p->name, folder_name);
    }
    if (v[1])
        p->description = want_str(&c, v[1], "description");
    if (v[2] && (p->adapter = want_str(&c, v[2], "adapter")) && !name_ok(p->adapter))
        E(&c, v[2], "adapter: \"%.64s\" is not an adapter name", p->adapter);
    if (v[3])
        lang_pair(&c, v[3], "system_prompt", true, p->system_prompt);
    const pnode *dmax = NULL, *gmax = NULL;
    if (v[4])
        defaults(&c, v[4], &dmax);
    if (v[5])
        guardrails(&c, v[5], &gmax);
    if (p->max_tokens > 0) {
        if (!dmax)
            p->default_max_tokens = p->max_tokens;
        else if (p->default_max_tokens > p->max_tokens)
            E(&c, dmax, "defaults.max_tokens: %d exceeds guardrails.max_tokens %d",
              p->default_max_tokens, p->max_tokens);
    }
    int cap = 0;
    if (v[6])
        examples(&c, v[6], (const char ***)&p->examples, &p->n_examples, &cap);
    if (v[7])
        eval_file(&c, v[7]);
}

/* ---- sets ---------------------------------------------------------------------------- */

static void report(loader *L, const domain_load_opts *opts, char *err, size_t errlen)
{
    /* files in name order, each sorted by position */
    for (int i = 0; i < L->n_files; i++)
        for (int j = i + 1; j < L->n_files; j++)
            if (strcmp(L->files[j].file, L->files[i].file) < 0) {
                pdiags t = L->files[i];
                L->files[i] = L->files[j];
                L->files[j] = t;
            }
    bool first = true;
    int total = ld_errors(L);
    for (int i = 0; i < L->n_files; i++) {
        pdiags *d = &L->files[i];
        pdiags_sort(d);
        for (int k = 0; k < d->n; k++) {
            policy_diag pd = {d->v[k].severity, d->file, d->v[k].line, d->v[k].column,
                              d->v[k].message};
            if (opts && opts->on_diag)
                opts->on_diag(opts->ud, &pd);
            if (first && pd.severity == POLICY_ERROR) {
                first = false;
                if (pd.line > 0)
                    mg_err_set(err, errlen, "domains: %s:%d:%d: %s%s", pd.file, pd.line, pd.column,
                               pd.message, total > 1 ? " (and more errors)" : "");
                else
                    mg_err_set(err, errlen, "domains: %s: %s%s", pd.file, pd.message,
                               total > 1 ? " (and more errors)" : "");
            }
        }
    }
}

static void loader_free(loader *L)
{
    for (int i = 0; i < L->n_files; i++)
        pdiags_free(&L->files[i]);
    free(L->files);
}

static int finish(domain_set *s, loader *L, const domain_load_opts *opts, domain_set **out,
                  char *err, size_t errlen)
{
    /* duplicate names (two folders cannot share a name, but a set of one
     * loaded with another can be merged by a caller later) */
    for (int i = 0; i < s->n; i++)
        for (int j = i + 1; j < s->n; j++)
            if (s->packs[i].name && s->packs[j].name &&
                strcmp(s->packs[i].name, s->packs[j].name) == 0)
                ld_err(L, s->packs[j].dir, 0, 0, "duplicate domain name \"%s\"", s->packs[j].name);
    int rc = 0;
    if (L->oom) {
        mg_err_set(err, errlen, "domains: out of memory");
        rc = MG_ENOMEM;
    } else if (ld_errors(L) > 0) {
        rc = MG_EFORMAT;
    }
    report(L, opts, err, errlen);
    loader_free(L);
    if (rc) {
        domain_set_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int load_dir_pack(domain_set *s, loader *L, const char *dir, const char *folder_name)
{
    char *file = arena_printf(&s->a, "%s/domain.yaml", dir);
    char *d = arena_strndup(&s->a, dir, strlen(dir));
    if (!file || !d)
        return MG_ENOMEM;
    size_t len = 0;
    int en = 0;
    char *data = read_all(file, MAX_FILE_BYTES, &len, &en);
    domain_pack *p = &s->packs[s->n++];
    if (!data) {
        ld_err(L, file, 0, 0, "cannot read: %s", en == EFBIG ? "larger than 1 MiB" : strerror(en));
        return 0;
    }
    load_pack(L, file, d, folder_name, data, len, p);
    free(data);
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A folder's last name, trailing slashes aside. */
static const char *folder_base(arena *a, const char *dir)
{
    size_t nl = strlen(dir);
    while (nl > 1 && dir[nl - 1] == '/')
        nl--;
    const char *e = dir + nl, *b = e;
    while (b > dir && b[-1] != '/')
        b--;
    return arena_strndup(a, b, (size_t)(e - b));
}

static int load_oom(domain_set *s, loader *L, char *err, size_t errlen)
{
    loader_free(L);
    domain_set_free(s);
    mg_err_set(err, errlen, "domains: out of memory");
    return MG_ENOMEM;
}

int domain_set_load(domain_set **out, const char *dir, const domain_load_opts *opts, char *err,
                    size_t errlen)
{
    if (!out || !dir) {
        mg_err_set(err, errlen, "domains: no folder given");
        return MG_EINVAL;
    }
    domain_set *s = calloc(1, sizeof *s);
    if (!s)
        return MG_ENOMEM;
    loader L = {.a = &s->a};
    s->packs = arena_alloc(&s->a, sizeof *s->packs * MAX_PACKS);
    if (!s->packs)
        goto oom;
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/domain.yaml", dir);
    struct stat st;
    if (stat(probe, &st) == 0) { /* a pack folder itself */
        const char *base = folder_base(&s->a, dir);
        if (!base || load_dir_pack(s, &L, dir, base) != 0)
            goto oom;
        return finish(s, &L, opts, out, err, errlen);
    }
    DIR *dh = opendir(dir);
    if (!dh) {
        mg_err_set(err, errlen, "domains: cannot open %s: %s", dir, strerror(errno));
        loader_free(&L);
        domain_set_free(s);
        return MG_EIO;
    }
    char *names[MAX_PACKS];
    int n = 0;
    bool too_many = false;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (de->d_name[0] == '.' || de->d_name[0] == '_')
            continue;
        char f[4096];
        snprintf(f, sizeof f, "%s/%s/domain.yaml", dir, de->d_name);
        if (stat(f, &st) != 0)
            continue;
        if (n == MAX_PACKS) {
            too_many = true;
            break;
        }
        names[n] = arena_strndup(&s->a, de->d_name, strlen(de->d_name));
        if (!names[n]) {
            closedir(dh);
            goto oom;
        }
        n++;
    }
    closedir(dh);
    if (too_many)
        ld_err(&L, dir, 0, 0, "more than %d domain packs", MAX_PACKS);
    if (n == 0) {
        mg_err_set(err, errlen, "domains: %s holds no pack (no */domain.yaml)", dir);
        loader_free(&L);
        domain_set_free(s);
        return MG_ENOTFOUND;
    }
    qsort(names, (size_t)n, sizeof *names, name_cmp);
    for (int i = 0; i < n; i++) {
        char *pd = arena_printf(&s->a, "%s/%s", dir, names[i]);
        if (!pd || load_dir_pack(s, &L, pd, names[i]) != 0)
            goto oom;
    }
    return finish(s, &L, opts, out, err, errlen);
oom:
    return load_oom(s, &L, err, errlen);
}

int domain_set_load_packs(domain_set **out, const char *const *dirs, int n,
                          const domain_load_opts *opts, char *err, size_t errlen)
{
    bool null_dir = false;
    for (int i = 0; dirs && i < n; i++)
        null_dir = null_dir || !dirs[i];
    if (!out || (n && !dirs) || n < 0 || null_dir) {
        mg_err_set(err, errlen, "domains: bad arguments");
        return MG_EINVAL;
    }
    if (n == 0) {
        mg_err_set(err, errlen, "domains: no pack given");
        return MG_ENOTFOUND;
    }
    if (n > MAX_PACKS) {
        mg_err_set(err, errlen, "domains: more than %d domain packs", MAX_PACKS);
        return MG_EINVAL;
    }
    domain_set *s = calloc(1, sizeof *s);
    if (!s)
        return MG_ENOMEM;
    loader L = {.a = &s->a};
    s->packs = arena_alloc(&s->a, sizeof *s->packs * (size_t)n);
    if (!s->packs)
        goto oom;
    for (int i = 0; i < n; i++) {
        const char *base = folder_base(&s->a, dirs[i]);
        if (!base || load_dir_pack(s, &L, dirs[i], base) != 0)
            goto oom;
    }
    return finish(s, &L, opts, out, err, errlen);
oom:
    return load_oom(s, &L, err, errlen);
}

int domain_set_load_memory(domain_set **out, const char *name, const char *yaml, size_t len,
                           const char *pack_dir, const domain_load_opts *opts, char *err,
                           size_t errlen)
{
    if (!out || !name || (!yaml && len) || !pack_dir) {
        mg_err_set(err, errlen, "domains: bad arguments");
        return MG_EINVAL;
    }
    domain_set *s = calloc(1, sizeof *s);
    if (!s)
        return MG_ENOMEM;
    loader L = {.a = &s->a};
    s->packs = arena_alloc(&s->a, sizeof *s->packs);
    char *d = arena_strndup(&s->a, pack_dir, strlen(pack_dir));
    char *f = arena_strndup(&s->a, name, strlen(name));
    if (!s->packs || !d || !f) {
        domain_set_free(s);
        return MG_ENOMEM;
    }
    const char *base = strrchr(d, '/');
    s->n = 1;
    load_pack(&L, f, d, base ? base + 1 : d, yaml ? yaml : "", len, &s->packs[0]);
    return finish(s, &L, opts, out, err, errlen);
}

void domain_set_free(domain_set *s)
{
    if (!s)
        return;
    arena_free(&s->a);
    free(s);
}

int domain_set_count(const domain_set *s)
{
    return s ? s->n : 0;
}

const domain_pack *domain_set_get(const domain_set *s, int i)
{
    return s && i >= 0 && i < s->n ? &s->packs[i] : NULL;
}

int domain_set_index(const domain_set *s, const char *name)
{
    if (!s || !name)
        return -1;
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->packs[i].name, name) == 0)
            return i;
    return -1;
}

const domain_pack *domain_set_find(const domain_set *s, const char *name)
{
    return domain_set_get(s, domain_set_index(s, name));
}

/* ---- guardrail helpers ------------------------------------------------------------- */

domain_lang domain_detect_lang(const char *text, size_t len)
{
    const uint8_t *u = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += unicode_utf8_decode(u + i, len - i, &cp);
        if (is_han(cp))
            return DOMAIN_ZH;
    }
    return DOMAIN_EN;
}

const domain_topic *domain_blocked_topic(const domain_pack *p, const char *text, size_t len)
{
    if (!p || !text || !p->n_topics)
        return NULL;
    size_t n;
    char *f = fold_text(text, len, &n);
    if (!f)
        return p->topics; /* out of memory: fail closed, refuse */
    const domain_topic *hit = NULL;
    for (int t = 0; t < p->n_topics && !hit; t++)
        for (int l = 0; l < DOMAIN_N_LANGS && !hit; l++)
            for (int k = 0; k < p->topics[t].n_keywords[l] && !hit; k++)
                if (strstr(f, p->topics[t].keywords[l][k]))
                    hit = &p->topics[t];
    free(f);
    return hit;
}
