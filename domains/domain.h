/* moegate — domain packs and the `model: "auto"` router.
 *
 * A domain pack is a folder (schema in domains/README.md): domain.yaml
 * with the name, description, optional adapter, system prompts in Chinese
 * and English, generation defaults and guardrails (redaction rules, a
 * disclaimer, blocked topics with refusals, a token cap), example prompts
 * that train the router, and eval prompts. Operators add a domain by adding
 * a folder.
 *
 *   1. Loading. domain_set_load() reads every pack under a folder (or one
 *      pack) and validates it the way policies/ validates the policy: every
 *      problem is a diagnostic FILE:LINE:COLUMN: message, and any error
 *      refuses the whole set. Paths in domain.yaml are relative to the pack
 *      folder and may not leave it. The set is immutable once loaded.
 *   2. Guardrails helpers: the system prompt and disclaimer per language,
 *      which blocked topic (if any) a request touches.
 *   3. The router (domains/router.c): a multinomial naive Bayes classifier
 *      over hashed character 1-3 grams (plus whole Latin words) of the NFC,
 *      lower-cased text, trained at load on the packs' examples and an
 *      out-of-domain set. Deterministic: the same packs give the same model
 *      and the same answers on every machine.
 *
 * Ownership: everything a set hands out lives as long as the set. A router
 * borrows nothing from the set after training (it keeps copies of the
 * names). Thread safety: a loaded set and a trained router are read-only
 * and may be used from any number of threads.
 */
#ifndef MOEGATE_DOMAINS_DOMAIN_H
#define MOEGATE_DOMAINS_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>

#include "policies/policy.h" /* policy_diag, policy_diag_format */

typedef struct domain_set domain_set;
typedef struct domain_router domain_router;

typedef enum domain_lang {
    DOMAIN_ZH = 0,
    DOMAIN_EN = 1,
} domain_lang;
#define DOMAIN_N_LANGS 2

typedef struct domain_topic {
    const char *name;
    const char *const *keywords[DOMAIN_N_LANGS]; /* folded (see domain_blocked_topic) */
    int n_keywords[DOMAIN_N_LANGS];
    const char *refusal[DOMAIN_N_LANGS];
} domain_topic;

typedef struct domain_pack {
    const char *name; /* equals the folder's name */
    const char *description;
    const char *dir;     /* the pack folder, as found */
    const char *adapter; /* a policy adapter name, or NULL for the base model */
    const char *system_prompt[DOMAIN_N_LANGS]; /* file contents, trimmed */
    double temperature;                        /* defaults: 0..2 */
    double top_p;                              /* (0, 1] */
    int default_max_tokens;                    /* 1..max_tokens */
    int max_tokens;               /* guardrails.max_tokens: the cap on completion tokens */
    const char *const *redaction; /* built-in detector names of the policy */
    int n_redaction;
    const char *disclaimer[DOMAIN_N_LANGS]; /* NULL when the domain has none */
    const domain_topic *topics;
    int n_topics;
    const char *const *examples; /* router training prompts, both languages */
    int n_examples;
    const char *eval_path; /* resolved path of the eval JSONL */
    int n_eval;            /* prompts in it */
} domain_pack;

typedef struct domain_load_opts {
    /* Called once per diagnostic, sorted by file and position, before the
     * load returns; the diag's strings are valid during the call only. */
    void (*on_diag)(void *ud, const policy_diag *d);
    void *ud;
} domain_load_opts;

/* Loads every pack under dir: each sub-folder holding a domain.yaml (folders
 * whose names start with '.' or '_' are skipped: _router holds the router's
 * out-of-domain examples), in name order. A folder that holds domain.yaml
 * itself is loaded as a set of one. Returns 0 and *out (free with
 * domain_set_free); MG_EIO when dir cannot be read; MG_EFORMAT when any
 * error was found (err: "domains: FILE:LINE:COL: message" and how many
 * more; every diagnostic went to opts->on_diag); MG_ENOTFOUND when dir
 * holds no pack; MG_ENOMEM. opts may be NULL. */
int domain_set_load(domain_set **out, const char *dir, const domain_load_opts *opts, char *err,
                    size_t errlen);

/* The packs in the folders dirs[0..n) (each holds domain.yaml), in that
 * order: the policy's domains[].pack list. Same codes as domain_set_load
 * (two folders with the same name are an error). */
int domain_set_load_packs(domain_set **out, const char *const *dirs, int n,
                          const domain_load_opts *opts, char *err, size_t errlen);

/* One pack from memory: yaml[0..len) stands for pack_dir/domain.yaml (name
 * is used in diagnostics); the files it names are read from pack_dir. For
 * the fuzzer and the tests. Same codes as domain_set_load. */
int domain_set_load_memory(domain_set **out, const char *name, const char *yaml, size_t len,
                           const char *pack_dir, const domain_load_opts *opts, char *err,
                           size_t errlen);

void domain_set_free(domain_set *s); /* accepts NULL */

int domain_set_count(const domain_set *s);
const domain_pack *domain_set_get(const domain_set *s, int i); /* NULL when out of range */
/* Exact, case-sensitive; NULL when absent. */
const domain_pack *domain_set_find(const domain_set *s, const char *name);
int domain_set_index(const domain_set *s, const char *name); /* -1 when absent */

/* DOMAIN_ZH when the text holds any CJK ideograph, else DOMAIN_EN. */
domain_lang domain_detect_lang(const char *text, size_t len);

/* The first blocked topic of p whose keyword occurs in text (either
 * language), or NULL. Keywords and text are compared folded, so trivial
 * disguises do not hide a keyword: ASCII case, full-width ASCII, any run
 * of white space (ideographic and no-break spaces too) as one space, no
 * space between two Han characters, zero-width characters and soft
 * hyphens dropped. Out of memory: the first topic (fail closed). */
const domain_topic *domain_blocked_topic(const domain_pack *p, const char *text, size_t len);

/* ---- the router --------------------------------------------------------------- */

/* Default confidence below which "auto" answers with the base model; set
 * from the held-out measurement (domains/README.md). */
#define DOMAIN_ROUTER_THRESHOLD 0.6

typedef struct domain_router_opts {
    double threshold; /* 0: DOMAIN_ROUTER_THRESHOLD */
} domain_router_opts;

/* Trains on every pack's examples and the out-of-domain prompts in
 * ood_path (one per line, '#' comments; NULL: none, then only the
 * threshold sends requests to the base model). Returns 0, MG_EIO when
 * ood_path cannot be read, MG_EINVAL when the set is empty, MG_ENOMEM. */
int domain_router_train(domain_router **out, const domain_set *s, const char *ood_path,
                        const domain_router_opts *opts, char *err, size_t errlen);
void domain_router_free(domain_router *r); /* accepts NULL */

typedef struct domain_route {
    int domain;   /* index into the set, or -1: the base model answers */
    int best;     /* the most likely domain index (or -1 for out-of-domain) */
    double score; /* confidence of `best`, 0..1; domain is -1 when below threshold */
} domain_route;

/* Classifies text[0..len) (UTF-8; invalid bytes count as U+FFFD). Never
 * fails for non-NULL arguments; returns 0, MG_EINVAL, MG_ENOMEM. */
int domain_router_classify(const domain_router *r, const char *text, size_t len, domain_route *out);

#endif
