/* moegate — the gateway: HTTPS with an OpenAI-compatible API in front of the
 * serving engine, the only way in.
 *
 * One gateway serves one base model (and the LoRA adapters of its domains)
 * on the address, TLS certificate and limits the policy names. Endpoints:
 *
 *   POST /v1/chat/completions   OpenAI chat completions, JSON or SSE stream
 *   POST /v1/completions        OpenAI (legacy) text completions
 *   GET  /v1/models[/ID]        the models this tenant may use
 *   GET  /health                alive (always public)
 *   GET  /ready                 model loaded and audit writable
 *   GET  /metrics               Prometheus text format (admin role)
 *   POST /admin/adapters        load an adapter the policy defines   (admin)
 *   DELETE /admin/adapters/NAME unload it                            (admin)
 *   POST /admin/policy/reload   re-read the policy file (also SIGHUP) (admin)
 *   GET  /admin/stats           engine, audit and registry state     (admin)
 *
 * Everything but /health (and /ready, /metrics when the policy lists them
 * in server.public_endpoints) needs `Authorization: Bearer KEY` (checked
 * against the policy's key hashes) or a client certificate whose subject a
 * tenant lists (mTLS, with server.tls_client_ca).
 *
 * Model names: a request's "model" is the base model id (gateway_opts
 * model_id, by default the GGUF file name without .gguf), the name of a
 * domain from the policy (its pack and adapter are applied), DOMAIN@VERSION
 * (one of the domain's adapter versions pinned), or "auto" (the domain
 * router picks one, or the base model). Any other name is 404; a domain the
 * tenant is not allowed is 403. Domain packs, "auto" and content labels:
 * gateway/README.md.
 *
 * Threads: libmicrohttpd's pool (one per core) parses, authorises, submits
 * to the engine and streams; it never runs inference and never waits for
 * it: connections are suspended and resumed as tokens arrive. One gateway
 * thread writes audit records and waits for their durability; one watches
 * the sockets of suspended requests so a client that leaves cancels its
 * sequence at once; gateway_run's thread handles reloads.
 *
 * Details of the API surface and the decisions taken: gateway/README.md.
 */
#ifndef MOEGATE_GATEWAY_H
#define MOEGATE_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adapters/lora.h"
#include "audit/audit.h"
#include "core/chat.h"
#include "core/model.h"
#include "core/serve.h"
#include "core/tokenizer.h"
#include "domains/domain.h"
#include "policies/policy.h"

typedef struct gateway gateway;

typedef struct gateway_opts {
    policy_store *policies;   /* the policy in force (borrowed; reloads go through it) */
    model *model;             /* borrowed; the model the engine serves */
    const tokenizer *tok;     /* borrowed */
    serve *serve;             /* borrowed; the engine */
    lora_registry *adapters;  /* borrowed; adapters by the policy's names (may be NULL: none) */
    audit_writer *audit;      /* borrowed; NULL: requests are not audited (tests only) */
    const char *model_id;     /* the base model's name for clients; NULL: the model file's
                               * name without directory and .gguf */
    const char *model_sha256; /* 64 hex digits for audit records, or NULL */
    int n_ctx;                /* positions per sequence the engine was opened with (serve_opts
                               * n_ctx); <= 0: min(4096, the model's) */
    int n_threads;            /* HTTP threads; <= 0: one per online CPU */
    bool quiet;               /* no request log lines (benchmarks) */
} gateway_opts;

/* Opens the listening socket named by the policy (server.listen; port 0
 * picks a free one: gateway_port), with TLS from server.tls_cert/tls_key
 * (TLS 1.2 and 1.3 only, AEAD suites only) and optional client
 * certificates, and starts serving. The chat template is the policy's
 * model.chat_template, or detected from the tokenizer. Refuses plain HTTP
 * on a non-loopback address unless the policy allows it explicitly.
 * Errors: MG_EINVAL (options, policy), MG_EIO (socket, certificate files),
 * MG_EUNSUPPORTED (libmicrohttpd without TLS), MG_ENOMEM. */
int gateway_open(gateway **out, const gateway_opts *opts, char *err, size_t errlen);

/* The TCP port the gateway listens on. */
int gateway_port(const gateway *g);

/* Runs until gateway_stop: reloads the policy on SIGHUP (when the caller
 * installed policy_sighup_install) and on POST /admin/policy/reload. */
void gateway_run(gateway *g);

/* Makes gateway_run return. Async-signal-safe. */
void gateway_stop(gateway *g);

/* Stops accepting, cancels requests in flight (their clients get what was
 * generated so far, or an error), waits for them and their audit records,
 * stops the threads, frees. Accepts NULL. */
void gateway_close(gateway *g);

/* Loads every adapter of policy p that registry r does not hold yet, each
 * only after checking its file's SHA-256 against the policy. Returns 0 or
 * the first error (named; the others are still tried). */
int gateway_load_adapters(lora_registry *r, const policy *p, char *err, size_t errlen);

/* What gateway_open does with the policy's domain packs, without serving:
 * loads and validates every domains[].pack (diagnostics FILE:LINE:COL to
 * opts->on_diag; a warning when a domain has no adapter though the policy
 * defines the one its pack names) and trains the "auto" router on
 * the packs' examples and router.ood_examples. 0, or the error (err). */
int gateway_check_domains(const policy *p, const domain_load_opts *opts, char *err, size_t errlen);

/* SHA-256 of a file as 64 lower-case hex digits. MG_EIO when unreadable. */
int gateway_file_sha256(const char *path, char hex[65], char *err, size_t errlen);

/* ---- request parsing (also the fuzzing entry point) --------------------------- */

enum gateway_endpoint {
    GATEWAY_CHAT = 0,   /* /v1/chat/completions */
    GATEWAY_COMPLETION, /* /v1/completions */
};

#define GATEWAY_MAX_STOP 4

/* A parsed and validated request body. Strings are owned (free with
 * gateway_request_free). */
typedef struct gateway_request {
    enum gateway_endpoint endpoint;
    char *model;
    bool stream;
    bool include_usage;   /* stream_options.include_usage */
    int64_t max_tokens;   /* max_tokens / max_completion_tokens; -1: not given */
    double temperature;   /* 0..2, default 1 */
    double top_p;         /* 0..1, default 1 */
    bool has_temperature; /* given (not absent or null): a domain's default does not apply */
    bool has_top_p;
    double presence_penalty;  /* -2..2, default 0 */
    double frequency_penalty; /* -2..2, default 0 */
    bool has_seed;
    int64_t seed;
    char *stop[GATEWAY_MAX_STOP];
    size_t n_stop;
    /* chat: messages with owned role and content strings */
    chat_message *messages;
    size_t n_messages;
    /* completions */
    char *prompt;
    /* when parsing fails: the JSON path of the offending field ("messages[1].content"),
     * or "" when the body as a whole is at fault */
    char err_param[96];
} gateway_request;

/* Parses body[0..len) as an OpenAI request for endpoint ep. Strict: a body
 * that is not a JSON object, a field of the wrong type or out of range, an
 * unknown field, or a documented OpenAI field we do not implement given
 * anything but its neutral value (logprobs: true, n: 2, tools: [...]) is
 * refused with MG_EINVAL, err naming the field (also in out->err_param).
 * On success *out owns its strings; on failure nothing is left to free
 * (gateway_request_free is still safe). */
int gateway_request_parse(gateway_request *out, enum gateway_endpoint ep, const char *body,
                          size_t len, char *err, size_t errlen);
void gateway_request_free(gateway_request *r); /* accepts NULL; zeroes *r */

#endif
