/* moegate policies — the YAML document as a tree with positions, the arena
 * it lives in, and the diagnostics list.
 *
 * libyaml's event parser feeds an explicit stack (no recursion on input
 * depth), building pnode trees in an arena. Every node keeps the line and
 * column where it starts, which is what diagnostics point at.
 *
 * Deliberately refused: anchors and aliases (a reviewer must see each
 * setting where it applies, and aliases allow exponential expansion),
 * tags other than YAML's core !!str/!!int/!!bool/!!map/!!seq, several
 * documents, nesting deeper than MAX_DEPTH. Scalars keep whether they were
 * plain, so the validator can tell the string "8080" from the integer.
 *
 * Single-threaded; the tree is read-only once built.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/errors.h"
#include "policies/policy_internal.h"

#define MAX_DEPTH 32

/* ---- arena ---------------------------------------------------------------- */

struct arena_block {
    arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *arena_alloc(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->cap = cap;
        b->used = 0;
        /* a big one-off block goes behind the current one, which may still
         * have room for small allocations */
        if (a->head && n > 16384) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

char *arena_printf(arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = arena_alloc(a, (size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void arena_free(arena *a)
{
    arena_block *b = a->head;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- diagnostics ------------------------------------------------------------ */

void pdiags_addv(pdiags *d, policy_severity sev, int line, int column, const char *fmt,
                 va_list ap)
{
    if (sev == POLICY_ERROR)
        d->n_errors++;
    else
        d->n_warnings++;
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 16;
        pdiag *v = realloc(d->v, sizeof *v * (size_t)cap);
        if (!v) {
            d->oom = true;
            return;
        }
        d->v = v;
        d->cap = cap;
    }
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    char *msg = strdup(buf);
    if (!msg) {
        d->oom = true;
        return;
    }
    d->v[d->n] = (pdiag){sev, line, column, d->n, msg};
    d->n++;
}

void pdiags_add(pdiags *d, policy_severity sev, int line, int column, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pdiags_addv(d, sev, line, column, fmt, ap);
    va_end(ap);
}

static int diag_cmp(const void *a, const void *b)
{
    const pdiag *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->column != y->column)
        return x->column < y->column ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void pdiags_sort(pdiags *d)
{
    if (d->n > 1)
        qsort(d->v, (size_t)d->n, sizeof *d->v, diag_cmp);
}

void pdiags_free(pdiags *d)
{
    for (int i = 0; i < d->n; i++)
        free(d->v[i].message);
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}

/* ---- tree building -------------------------------------------------------------- */

/* A node under construction: children collect in a growable list (keys and
 * values interleaved for maps) and move into the arena when it closes. */
typedef struct frame {
    pnode *node;
    pnode **kids;
    int n, cap;
} frame;

static int frame_push_kid(frame *f, pnode *kid)
{
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 8;
        pnode **k = realloc(f->kids, sizeof *k * (size_t)cap);
        if (!k)
            return MG_ENOMEM;
        f->kids = k;
        f->cap = cap;
    }
    f->kids[f->n++] = kid;
    return 0;
}

static int frame_close(arena *a, frame *f)
{
    pnode *nd = f->node;
    if (nd->kind == PN_MAP) {
        nd->n = f->n / 2;
        nd->keys = arena_alloc(a, sizeof(pnode *) * (size_t)(nd->n ? nd->n : 1));
        nd->vals = arena_alloc(a, sizeof(pnode *) * (size_t)(nd->n ? nd->n : 1));
        if (!nd->keys || !nd->vals)
            return MG_ENOMEM;
        for (int i = 0; i < nd->n; i++) {
            nd->keys[i] = f->kids[2 * i];
            nd->vals[i] = f->kids[2 * i + 1];
        }
    } else {
        nd->n = f->n;
        nd->vals = arena_alloc(a, sizeof(pnode *) * (size_t)(nd->n ? nd->n : 1));
        if (!nd->vals)
            return MG_ENOMEM;
        if (nd->n)
            memcpy(nd->vals, f->kids, sizeof(pnode *) * (size_t)nd->n);
    }
    free(f->kids);
    f->kids = NULL;
    return 0;
}

/* Core-schema tags only; anything else would mean "interpret this
 * specially", which a policy never needs. */
static bool tag_ok(const yaml_char_t *tag)
{
    static const char *const ok[] = {
        "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "!",
    };
    if (!tag)
        return true;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp((const char *)tag, ok[i]))
            return true;
    return false;
}

static pnode *node_new(arena *a, pnode_kind kind, const yaml_mark_t *m)
{
    pnode *nd = arena_alloc(a, sizeof *nd);
    if (nd) {
        nd->kind = kind;
        nd->line = (int)m->line + 1;
        nd->column = (int)m->column + 1;
    }
    return nd;
}

pnode *yaml_tree_parse(arena *a, pdiags *d, const char *data, size_t len)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    frame stack[MAX_DEPTH + 1];
    int depth = 0, n_docs = 0;
    pnode *root = NULL;
    bool ok = false, done = false;

    if (!yaml_parser_initialize(&parser)) {
        pdiags_add(d, POLICY_ERROR, 0, 0, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            const yaml_mark_t *m = &parser.problem_mark;
            if (parser.context)
                pdiags_add(d, POLICY_ERROR, (int)m->line + 1, (int)m->column + 1,
                           "YAML syntax: %s %s (line %d)",
                           parser.problem ? parser.problem : "error", parser.context,
                           (int)parser.context_mark.line + 1);
            else
                pdiags_add(d, POLICY_ERROR, (int)m->line + 1, (int)m->column + 1,
                           "YAML syntax: %s", parser.problem ? parser.problem : "error");
            goto fail;
        }
        const yaml_mark_t *m = &ev.start_mark;
        int line = (int)m->line + 1, col = (int)m->column + 1;
        pnode *nd = NULL;
        const yaml_char_t *anchor = NULL, *tag = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++n_docs > 1) {
                pdiags_add(d, POLICY_ERROR, line, col,
                           "a policy file holds one YAML document; found a second one");
                yaml_event_delete(&ev);
                goto fail;
            }
            break;
        case YAML_ALIAS_EVENT:
            pdiags_add(d, POLICY_ERROR, line, col,
                       "aliases (*name) are not allowed in a policy file: write each setting "
                       "where it applies");
            yaml_event_delete(&ev);
            goto fail;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            tag = ev.data.scalar.tag;
            nd = node_new(a, PN_SCALAR, m);
            if (nd) {
                nd->str = arena_strndup(a, (const char *)ev.data.scalar.value,
                                        ev.data.scalar.length);
                nd->len = ev.data.scalar.length;
                nd->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag;
                if (!nd->str)
                    nd = NULL;
            }
            break;
        case YAML_SEQUENCE_START_EVENT:
            anchor = ev.data.sequence_start.anchor;
            tag = ev.data.sequence_start.tag;
            nd = node_new(a, PN_SEQ, m);
            break;
        case YAML_MAPPING_START_EVENT:
            anchor = ev.data.mapping_start.anchor;
            tag = ev.data.mapping_start.tag;
            nd = node_new(a, PN_MAP, m);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: {
            /* the parser guarantees balance: depth > 0 here */
            frame *f = &stack[--depth];
            if (frame_close(a, f)) {
                pdiags_add(d, POLICY_ERROR, 0, 0, "out of memory");
                yaml_event_delete(&ev);
                goto fail;
            }
            nd = f->node;
            break;
        }
        default:
            break;
        }
        /* yaml_event_delete zeroes the event: keep what we need of it */
        bool opened = ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT;
        bool closed = ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT;
        bool scalar = ev.type == YAML_SCALAR_EVENT;
        if (scalar || opened) {
            if (anchor) {
                pdiags_add(d, POLICY_ERROR, line, col,
                           "anchors (&name) are not allowed in a policy file: write each "
                           "setting where it applies");
                yaml_event_delete(&ev);
                goto fail;
            }
            if (!tag_ok(tag)) {
                pdiags_add(d, POLICY_ERROR, line, col,
                           "tags other than !!str, !!int, !!bool, !!map and !!seq are not "
                           "allowed in a policy file");
                yaml_event_delete(&ev);
                goto fail;
            }
            if (!nd) {
                pdiags_add(d, POLICY_ERROR, 0, 0, "out of memory");
                yaml_event_delete(&ev);
                goto fail;
            }
        }
        yaml_event_delete(&ev);
        /* attach a finished node (scalar or closed collection) to its parent */
        if (scalar || closed) {
            if (depth == 0)
                root = nd;
            else if (frame_push_kid(&stack[depth - 1], nd)) {
                pdiags_add(d, POLICY_ERROR, 0, 0, "out of memory");
                goto fail;
            }
        }
        if (opened) {
            if (depth == MAX_DEPTH) {
                pdiags_add(d, POLICY_ERROR, line, col,
                           "nesting deeper than %d levels; a policy needs at most 5", MAX_DEPTH);
                goto fail;
            }
            stack[depth++] = (frame){nd, NULL, 0, 0};
        }
    }
    ok = true;
    if (!root)
        pdiags_add(d, POLICY_ERROR, 0, 0,
                   "the file is empty; expected a mapping with server, model, domains, tenants "
                   "and audit");
fail:
    for (int i = 0; i < depth; i++)
        free(stack[i].kids);
    yaml_parser_delete(&parser);
    return ok ? root : NULL;
}
