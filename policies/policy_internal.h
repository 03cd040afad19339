/* moegate policies — shared between the module's files, not part of its API.
 *
 *   arena      bump allocator: a snapshot's strings and arrays, a parse tree
 *   pnode      the YAML document as a tree with positions (policy_yaml.c)
 *   pdiags     collected diagnostics (policy_yaml.c)
 *   redactor   compiled detectors of one snapshot (redact.c)
 *
 * One outside user, by design: domains/domain.c reads domain.yaml with the
 * same arena, YAML tree and diagnostics, so a pack is parsed and reported
 * (FILE:LINE:COL, the same rules on tags, anchors and duplicates) exactly
 * like the policy. A change here must keep domains/ building and its tests
 * passing.
 */
#ifndef MOEGATE_POLICIES_INTERNAL_H
#define MOEGATE_POLICIES_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policies/policy.h"

/* ---- arena ---------------------------------------------------------------- */

typedef struct arena_block arena_block;
typedef struct arena {
    arena_block *head;
} arena;

/* 16-byte aligned, zeroed memory freed with the arena; NULL when out of memory. */
void *arena_alloc(arena *a, size_t n);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(arena *a);

/* ---- diagnostics ------------------------------------------------------------ */

typedef struct pdiag {
    policy_severity severity;
    int line, column;
    int seq; /* emission order, to keep the sort stable */
    char *message;
} pdiag;

typedef struct pdiags {
    const char *file;
    pdiag *v;
    int n, cap;
    int n_errors, n_warnings;
    bool oom; /* a diagnostic could not be stored */
} pdiags;

void pdiags_add(pdiags *d, policy_severity sev, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void pdiags_addv(pdiags *d, policy_severity sev, int line, int column, const char *fmt,
                 va_list ap);
void pdiags_sort(pdiags *d);
void pdiags_free(pdiags *d);

/* ---- the YAML tree ------------------------------------------------------------ */

typedef enum pnode_kind {
    PN_SCALAR = 0,
    PN_MAP,
    PN_SEQ,
} pnode_kind;

typedef struct pnode pnode;
struct pnode {
    pnode_kind kind;
    int line, column; /* 1-based, where the node starts */
    /* scalar: bytes (NUL-terminated, may hold NULs inside); plain: written
     * without quotes or a tag, so "true" and true differ. */
    const char *str;
    size_t len;
    bool plain;
    /* map: n pairs keys[i] -> vals[i] in file order; seq: n items in vals */
    int n;
    pnode **keys;
    pnode **vals;
};

/* Parses one YAML document into a tree allocated in a. Anchors, aliases,
 * tags other than the core ones and more than one document are refused
 * (a policy must say everything where it applies); nesting is limited to
 * 32 levels. Problems go to d; returns the root, or NULL after an error. */
pnode *yaml_tree_parse(arena *a, pdiags *d, const char *data, size_t len);

/* ---- redactor ------------------------------------------------------------------ */

enum redact_action {
    REDACT_BOTH = 0,   /* redact input and output */
    REDACT_INPUT,      /* redact input only */
    REDACT_OUTPUT,     /* redact output only */
    REDACT_BLOCK,      /* refuse input containing it; redact it in output */
};

enum redact_validator {
    REDACT_VALIDATE_NONE = 0,
    REDACT_VALIDATE_LUHN,
    REDACT_VALIDATE_MOD97,
};

typedef struct redactor redactor;

int redactor_create(redactor **out);
void redactor_free(redactor *r);
/* Index of a built-in detector by name ("cn_resident_id"), or -1. */
int redactor_builtin_find(const char *name);
/* Comma-separated names of the built-in detectors (for messages). */
const char *redactor_builtin_names(void);
int redactor_add_builtin(redactor *r, int builtin, enum redact_action action);
/* Compiles a custom pattern (PCRE2, UTF-8). On a pattern error returns
 * MG_EFORMAT with err holding PCRE2's message and *erroffset the byte
 * offset in the pattern. name and label must outlive the redactor. */
int redactor_add_custom(redactor *r, const char *name, const char *label, const char *pattern,
                        size_t pattern_len, enum redact_validator v, enum redact_action action,
                        size_t *erroffset, char *err, size_t errlen);
int redactor_n_rules(const redactor *r);

/* Snapshot internals the store and redaction need. */
struct policy {
    atomic_long refs;
    uint64_t generation;
    arena a;
    policy_config cfg;
    redactor *red;
    const policy_api_key **keys; /* every key of every tenant */
    int n_keys;
};

/* validators, exposed for the tests */
bool redact_luhn_ok(const char *digits, size_t n);
bool redact_cn_id_ok(const char *s, size_t n);
bool redact_iban_ok(const char *s, size_t n);

#endif
