/* moegate — the deployment policy: one YAML file (schema in policies/README.md).
 *
 * Four things live here, each usable on its own:
 *
 *   1. Loading. policy_load() reads and validates a policy file into an
 *      immutable snapshot (`policy`). Every problem is a diagnostic with
 *      file:line:column (errors refuse the file; warnings do not). Relative
 *      paths in the file resolve against the file's directory. Secrets are
 *      never read: files holding keys or connection strings are checked for
 *      existence and permissions only, and no diagnostic quotes a value from
 *      a field that may hold one.
 *   2. The store. A policy_store holds the snapshot in force. Requests take a
 *      reference (policy_store_acquire / policy_release) and keep using that
 *      snapshot to the end even when a reload swaps in a new one; a reload
 *      that fails validation leaves the old snapshot in force.
 *   3. Rate limiting. A policy_limiter keeps token buckets (requests/minute
 *      and tokens/minute, per tenant and per API key) keyed by tenant and key
 *      ids, so its state outlives reloads. Thread-safe.
 *   4. Redaction. A policy_redaction is one request's state: it scans input
 *      and output text with the snapshot's detectors, replaces findings with
 *      placeholders that stay consistent within the request, decides whether
 *      the request must be blocked, and counts what was found per type for
 *      the audit record (never the values).
 *
 * Ownership: a snapshot is immutable and reference-counted; everything it
 * hands out (config structs, tenants, keys) lives as long as the reference.
 * Thread safety: snapshots, policy_store and policy_limiter may be used from
 * any number of threads; a policy_redaction belongs to one request (one
 * thread at a time).
 */
#ifndef MOEGATE_POLICIES_POLICY_H
#define MOEGATE_POLICIES_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct policy policy;                     /* immutable snapshot */
typedef struct policy_store policy_store;         /* the snapshot in force */
typedef struct policy_limiter policy_limiter;     /* token buckets */
typedef struct policy_redaction policy_redaction; /* one request's redaction state */

/* ---- the configuration, as plain read-only values ------------------------- */

typedef enum policy_chat_template {
    POLICY_TEMPLATE_AUTO = 0, /* from the model's metadata */
    POLICY_TEMPLATE_QWEN3,
    POLICY_TEMPLATE_CHATML,
    POLICY_TEMPLATE_DEEPSEEK3,
    POLICY_TEMPLATE_MISTRAL,
    POLICY_TEMPLATE_QWEN2,
    POLICY_TEMPLATE_DEEPSEEK_R1,
    POLICY_TEMPLATE_MISTRAL_LEGACY,
} policy_chat_template; /* the names are core/chat.h's chat_template_by_name() names */

/* How prompts and answers are kept in the audit record. */
typedef enum policy_payload {
    POLICY_PAYLOAD_HASH = 0, /* SHA-256 of the text only */
    POLICY_PAYLOAD_ENCRYPT,  /* AES-256-GCM with audit.encryption_key_file */
    POLICY_PAYLOAD_CLEAR,    /* the text itself (a warning at load) */
    POLICY_PAYLOAD_NONE,     /* neither text nor hash; sizes and findings only */
} policy_payload;

typedef enum policy_on_failure {
    POLICY_AUDIT_SPOOL = 0, /* database down: write the local spool, replay later */
    POLICY_AUDIT_REJECT,    /* database down: refuse requests */
} policy_on_failure;

typedef enum policy_durability {
    POLICY_DURABILITY_STRICT = 0, /* the response waits for the record to be durable */
    POLICY_DURABILITY_ASYNC,      /* records are written behind the response */
} policy_durability;

typedef enum policy_log_level {
    POLICY_LOG_ERROR = 0,
    POLICY_LOG_WARN,
    POLICY_LOG_INFO,
    POLICY_LOG_DEBUG,
} policy_log_level;

enum policy_role {
    POLICY_ROLE_USER = 1u << 0,    /* completions */
    POLICY_ROLE_ADMIN = 1u << 1,   /* admin endpoints: reload, adapters, metrics */
    POLICY_ROLE_AUDITOR = 1u << 2, /* audit export and verification */
};

/* A rate in units per minute; 0 means unlimited. */
typedef struct policy_rate {
    int64_t requests_per_minute;
    int64_t tokens_per_minute;
} policy_rate;

typedef struct policy_server {
    const char *listen; /* as written: "host:port" or "[v6]:port" */
    const char *host;   /* without brackets */
    int port;           /* 1..65535 */
    bool tls;           /* default true */
    bool loopback;      /* host is 127.0.0.0/8, ::1 or localhost */
    bool allow_insecure_nonloopback;
    const char *tls_cert; /* resolved paths; NULL when tls is off */
    const char *tls_key;
    const char *tls_client_ca;      /* NULL: no client certificates (no mTLS) */
    int64_t max_body_bytes;         /* request body cap (default 1 MiB) */
    int max_connections;            /* default 256 */
    int max_connections_per_client; /* per client address (default min(64, max_connections)) */
    int request_timeout_s;          /* default 300 */
    int idle_timeout_s;             /* a connection silent this long is closed (default 30) */
    int max_queue;                  /* queued requests before 503 (default 64) */
    bool public_ready;              /* public_endpoints: GET /ready without a key */
    bool public_metrics;            /* public_endpoints: GET /metrics without a key */
} policy_server;

typedef struct policy_model {
    const char *path;        /* resolved GGUF path */
    int threads;             /* 0: one per core */
    int context_length;      /* 0: the model's own, capped by kv_memory */
    int64_t kv_memory_bytes; /* 0: derived from context_length */
    policy_chat_template chat_template;
} policy_model;

typedef struct policy_adapter {
    const char *name;
    const char *path;       /* resolved */
    const char *sha256_hex; /* 64 lower-case hex digits */
    uint8_t sha256[32];     /* the adapter registry checks the file against it */
    const char *version;    /* label: as written (1-64 of [A-Za-z0-9._-]), or the
                               first 12 digits of sha256_hex; never NULL after load */
} policy_adapter;

typedef struct policy_domain {
    const char *name;
    const char *pack;    /* resolved folder of the domain pack */
    const char *adapter; /* NULL or the name of an entry of adapters */
    /* Names of adapters (entries of adapters) a client may pin with
     * model: "domain@VERSION", besides `adapter`; in file order, without
     * repeats. Only with `adapter` set. Within one domain (adapter and
     * versions together) no two distinct adapters share a version label. */
    const char *const *versions;
    int n_versions;
} policy_domain;

/* Labelling of AI-generated content (China's Measures for Labeling
 * AI-Generated Synthetic Content, GB 45438-2025): the implicit label names
 * the provider, the explicit label is a sentence added to the answer. */
typedef struct policy_content_labels {
    bool enabled;                 /* the section is present */
    const char *provider;         /* the service provider's name; NULL when not enabled */
    const char *provider_code;    /* e.g. the unified social credit code, or NULL */
    bool explicit_at_start;       /* false: appended at the end */
    const char *explicit_text[2]; /* [0] Chinese, [1] English; never NULL when enabled */
} policy_content_labels;

/* The model: "auto" domain router. */
typedef struct policy_router {
    const char *ood_examples; /* resolved path, or NULL */
    double threshold;         /* in (0, 1); 0: the router's default */
} policy_router;

typedef struct policy_tenant policy_tenant;

typedef struct policy_api_key {
    const char *id;              /* names the key in audit records and logs */
    uint8_t hash[32];            /* SHA-256 of the key */
    policy_rate rate;            /* this key's own limits */
    const policy_tenant *tenant; /* the tenant the key belongs to */
} policy_api_key;

struct policy_tenant {
    const char *id;
    const policy_api_key *keys;
    int n_keys;
    const char *const *mtls_subjects; /* client certificate subjects, as written */
    int n_mtls_subjects;
    unsigned roles;             /* enum policy_role bits */
    const char *const *domains; /* allowed domain names; each exists in domains */
    int n_domains;
    policy_rate rate;             /* the tenant's limits, all its keys together */
    int max_tokens;               /* cap on completion tokens; 0: none */
    policy_payload audit_payload; /* defaults to audit.payload */
    const char *retention;        /* as written ("securities-6y", "400d") or NULL */
    int retention_days;           /* 0: not set; rounded up (a month is 31 days) */
};

typedef struct policy_audit {
    const char *connection_file; /* resolved path, or NULL */
    const char *connection_env;  /* variable name, or NULL; exactly one is set */
    policy_on_failure on_failure;
    const char *spool_dir; /* resolved; required with spool, optional with reject */
    policy_durability durability;
    policy_payload payload;          /* default payload mode for tenants */
    const char *encryption_key_file; /* resolved, or NULL */
    const char *encryption_key_id;   /* recorded with encrypted payloads, or NULL */
    const char *writer_id;           /* audit chain id of this instance, or NULL */
    const char *checkpoint_key_file; /* Ed25519 private key (PEM), or NULL */
} policy_audit;

typedef struct policy_logging {
    policy_log_level level; /* default info */
    bool json;              /* format: json (default text) */
    const char *output;     /* "stderr", "stdout" or a resolved file path */
} policy_logging;

typedef struct policy_config {
    const char *path; /* the policy file, as given to policy_load */
    policy_server server;
    policy_model model;
    const policy_adapter *adapters;
    int n_adapters;
    const policy_domain *domains;
    int n_domains;
    const policy_tenant *tenants;
    int n_tenants;
    policy_audit audit;
    policy_logging logging;
    int n_redaction_rules;
    policy_content_labels content_labels;
    policy_router router;
} policy_config;

/* ---- loading -------------------------------------------------------------- */

typedef enum policy_severity {
    POLICY_ERROR = 0,
    POLICY_WARNING = 1,
} policy_severity;

/* One finding of the validator. Positions are 1-based (line, column in
 * characters); both are 0 when the problem is the file as a whole. */
typedef struct policy_diag {
    policy_severity severity;
    const char *file;
    int line;
    int column;
    const char *message; /* "server.listen: expected ..."; no trailing newline */
} policy_diag;

typedef struct policy_load_opts {
    /* Called once per diagnostic, sorted by position, before policy_load
     * returns; the diag's strings are valid during the call only. */
    void (*on_diag)(void *ud, const policy_diag *d);
    void *ud;
    /* Folder that relative paths resolve against; NULL: the policy file's
     * folder (for policy_load_memory: the current folder). */
    const char *base_dir;
} policy_load_opts;

/* Reads and validates the policy file at path. On success *out holds a
 * snapshot with one reference (free it with policy_release) and warnings,
 * if any, went to opts->on_diag. Returns MG_EIO when the file cannot be read
 * (or exceeds 4 MiB), MG_EFORMAT when any error was found (err gets the
 * first one as "policy: FILE:LINE:COL: message" plus how many more), MG_ENOMEM.
 * opts may be NULL. */
int policy_load(policy **out, const char *path, const policy_load_opts *opts, char *err,
                size_t errlen);

/* The same from memory; name stands for the file in diagnostics. */
int policy_load_memory(policy **out, const char *name, const char *data, size_t len,
                       const policy_load_opts *opts, char *err, size_t errlen);

/* "FILE:LINE:COL: error: MESSAGE" (or "FILE: warning: ..." without a
 * position) into buf; returns buf. */
const char *policy_diag_format(const policy_diag *d, char *buf, size_t buflen);

/* Takes one more reference to p (returns p). */
const policy *policy_retain(const policy *p);
/* Drops a reference; the last one frees the snapshot. Accepts NULL. */
void policy_release(const policy *p);

const policy_config *policy_get_config(const policy *p);
/* Which load this snapshot came from: 1 for the first, +1 per successful
 * reload of the same store (1 for snapshots loaded outside a store). */
uint64_t policy_generation(const policy *p);

/* ---- API keys and tenants ------------------------------------------------- */

/* Stored form of an API key: "sha256:" + 64 lower-case hex digits of
 * SHA-256(key). buf needs POLICY_KEY_HASH_LEN + 1 bytes. Keys are random
 * tokens of >= 128 bits, so a fast hash is enough: there is nothing to
 * brute-force (policies/README.md). Returns 0, MG_EINVAL for an empty key. */
#define POLICY_KEY_HASH_LEN 71
int policy_key_hash(const char *key, size_t len, char *buf, size_t buflen);

/* Makes a new key "mg_" + 43 base64url characters (256 random bits from
 * the OpenSSL CSPRNG). buf needs POLICY_KEY_LEN + 1 bytes. */
#define POLICY_KEY_LEN 46
int policy_key_generate(char *buf, size_t buflen, char *err, size_t errlen);

/* The key whose hash matches, or NULL. The comparison runs over every key
 * of the policy in constant time per key, so timing does not reveal which
 * key or how much of a hash matched. */
const policy_api_key *policy_find_key(const policy *p, const char *key, size_t len);

/* The tenant that owns a client certificate subject (exact match), or NULL. */
const policy_tenant *policy_find_subject(const policy *p, const char *subject);

/* Lookups by name (exact, case-sensitive); NULL / false when absent or
 * given NULL. */
const policy_tenant *policy_find_tenant(const policy *p, const char *id);
bool policy_tenant_allows_domain(const policy_tenant *t, const char *domain);
const policy_domain *policy_find_domain(const policy *p, const char *name);
/* The adapter entry by name, or NULL. */
const policy_adapter *policy_find_adapter(const policy *p, const char *name);

/* The adapter domain d answers with: version NULL -> d's adapter (NULL when
 * d has none); otherwise the adapter among d->adapter and d->versions whose
 * version label equals `version` exactly, or whose sha256 hex starts with
 * `version` (8..64 lower-case hex digits); NULL when none matches.
 * A label match wins over a digest-prefix match. A prefix that matches
 * adapters with different digests is ambiguous: NULL (the client gives
 * more digits). d must be a domain of p's configuration. */
const policy_adapter *policy_domain_adapter(const policy *p, const policy_domain *d,
                                            const char *version);

/* ---- the store: snapshot in force, atomic reload ---------------------------- */

/* Loads path (as policy_load) and keeps it as the snapshot in force. The
 * store copies path and *opts; opts' base_dir and ud must outlive it, and
 * on_diag is called again (from the reloading thread) at every reload. */
int policy_store_open(policy_store **out, const char *path, const policy_load_opts *opts, char *err,
                      size_t errlen);
/* Frees the store's own reference; snapshots still held stay valid until
 * released. Accepts NULL. */
void policy_store_close(policy_store *s);

/* The snapshot in force, with a reference the caller releases with
 * policy_release when the request is done. Never NULL. */
const policy *policy_store_acquire(policy_store *s);

/* Reads and validates the store's file again. On success the new snapshot
 * replaces the old one for every later acquire (requests holding the old
 * one finish with it). On any error the old snapshot stays in force and
 * err says why. Concurrent reloads are serialised. */
int policy_store_reload(policy_store *s, char *err, size_t errlen);

/* SIGHUP as a reload request: install sets a handler that only raises a
 * flag; take returns whether it was raised since the last take and clears
 * it (async-signal-safe handler; take is thread-safe). */
int policy_sighup_install(void);
bool policy_sighup_take(void);

/* ---- rate limiting ------------------------------------------------------------ */

typedef struct policy_admission {
    bool admitted;
    double retry_after_s; /* when refused: seconds until the refusing bucket holds enough */
    const char *limit;    /* when refused: "tenant requests", "tenant tokens",
                             "key requests" or "key tokens" */
} policy_admission;

int policy_limiter_create(policy_limiter **out);
void policy_limiter_free(policy_limiter *l); /* accepts NULL */

/* Monotonic clock in nanoseconds, the time base of the limiter. */
int64_t policy_now_ns(void);

/* Admits one request of tenant t (through key k, or NULL for mTLS clients)
 * that may use up to `tokens` tokens (prompt + max completion), or refuses
 * it: all four buckets (requests and tokens, tenant and key) are checked
 * and charged together under their locks, so concurrent callers never
 * over-admit. Each bucket holds one minute of its rate and refills
 * continuously; the rates are read from t and k, so a reload that changes
 * them applies at once while the buckets' contents carry over. Returns 0
 * (see res->admitted), MG_ERANGE when `tokens` exceeds a per-minute token
 * limit (waiting would never help), MG_EINVAL, MG_ENOMEM. */
int policy_limiter_admit(policy_limiter *l, const policy_tenant *t, const policy_api_key *k,
                         int64_t tokens, int64_t now_ns, policy_admission *res);

/* After the request: gives back reserved - used tokens (or charges the
 * excess when used > reserved, which may leave the buckets in debt). */
void policy_limiter_settle(policy_limiter *l, const policy_tenant *t, const policy_api_key *k,
                           int64_t reserved, int64_t used, int64_t now_ns);

/* ---- redaction and guardrails -------------------------------------------------- */

typedef enum policy_direction {
    POLICY_INPUT = 0, /* prompt text, before the model sees it */
    POLICY_OUTPUT,    /* generated text, before the client sees it */
} policy_direction;

/* One request's state; keeps a reference to p. */
int policy_redaction_create(policy_redaction **out, const policy *p);

/* Extra detectors that a domain pack turns on, on top of the policy's own
 * rules. Immutable once created; one set may serve any number of
 * redactions in any number of threads at once. */
typedef struct policy_detectors policy_detectors;

/* Compiles the built-in detectors named (e.g. "cn_mobile"), each with
 * action redact (input and output); a name given twice counts once.
 * MG_EINVAL with err naming an unknown name (and listing the built-in
 * names); MG_ENOMEM. n may be 0 (then *out is still a valid empty set). */
int policy_detectors_create(policy_detectors **out, const char *const *names, int n, char *err,
                            size_t errlen);
void policy_detectors_free(policy_detectors *d); /* accepts NULL */

/* Like policy_redaction_create, with the detectors of `extra` (may be
 * NULL) applied after the policy's own rules: a detector the policy
 * already has as a built-in rule is skipped (the policy's action wins),
 * and where findings overlap the policy's rules win; among themselves the
 * extras keep the built-in priority order. Findings of extra detectors are
 * reported by policy_redaction_findings like the policy's (rule = the
 * detector name), after the policy's. extra must outlive the redaction. */
int policy_redaction_create_ex(policy_redaction **out, const policy *p,
                               const policy_detectors *extra);
/* Wipes the values it remembered and frees. Accepts NULL. */
void policy_redaction_free(policy_redaction *r);

typedef struct policy_redact_result {
    char *text; /* redacted copy, NUL-terminated; free() it */
    size_t len;
    int n_found;            /* findings in this text */
    bool blocked;           /* an input finding of a rule with action block */
    const char *blocked_by; /* that rule's name (valid while the snapshot is) */
} policy_redact_result;

/* Scans text[0..len) (UTF-8) with the rules that apply to dir and writes
 * the redacted copy: every finding becomes "[LABEL_n]", where n numbers the
 * distinct values of that label within this request, so the same value
 * gets the same placeholder in input and output. Returns 0, MG_EINVAL when
 * text is not valid UTF-8, MG_EBUSY when a custom pattern exceeded its
 * match limit (fail closed: treat the request as blocked), MG_ENOMEM. */
int policy_redact(policy_redaction *r, policy_direction dir, const char *text, size_t len,
                  policy_redact_result *res, char *err, size_t errlen);

/* Streamed output (SSE): pass generated text as it arrives; res->text is
 * the redacted part that is safe to send now (possibly empty). The last
 * POLICY_STREAM_HOLDBACK bytes or more are held back, and never cut next to
 * a letter, digit or one of . - + @ _ % :, so a finding is released only
 * once it is complete; a finding still open at the cut stays held back
 * whole. Call once more with final = true (chunk may be empty) to release
 * the rest. Findings longer than the holdback (custom patterns only) may be
 * missed across a cut. Same codes as policy_redact; an incomplete UTF-8
 * character at the end of a chunk waits for the next one. */
#define POLICY_STREAM_HOLDBACK 256
int policy_redact_stream(policy_redaction *r, const char *chunk, size_t len, bool final,
                         policy_redact_result *res, char *err, size_t errlen);

typedef struct policy_finding {
    const char *rule;  /* "cn_resident_id", or a custom rule's name */
    const char *label; /* placeholder label: "ID_CARD", "MRN" */
    int input;         /* occurrences found in input so far */
    int output;        /* occurrences found in output so far */
} policy_finding;

/* The request's findings so far, one entry per rule that found something,
 * in rule order; returns how many there are (fills at most max). */
int policy_redaction_findings(const policy_redaction *r, policy_finding *out, int max);

#endif
