/* moegate gateway — what the gateway's .c files share.
 *
 *   server.c    the HTTP server: TLS, limits, routing, request lifecycle,
 *               suspend/resume, the disconnect watcher, the audit thread
 *   generate.c  chat and text completions: policy, tokens, the engine,
 *               JSON and SSE responses
 *   request.c   request bodies (gateway_request_parse)
 *   encode.c    a byte buffer and OpenAI's response shapes
 *   auth.c      API keys and client certificates
 *   admin.c     the admin endpoints, /metrics, adapter loading
 *   metrics.c   counters and histograms
 *   log.c       JSON (or text) log lines
 *   domains.c   the domain packs and the "auto" router of the policy in force
 */
#ifndef MOEGATE_GATEWAY_INTERNAL_H
#define MOEGATE_GATEWAY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <microhttpd.h>

#include "domains/domain.h"
#include "gateway/gateway.h"

/* ---- a growable byte buffer (encode.c) ---------------------------------------------- */

typedef struct gw_buf {
    char *p;
    size_t len, cap;
    bool oom; /* an append failed; the content is incomplete */
} gw_buf;

void gw_buf_free(gw_buf *b);
void gw_buf_put(gw_buf *b, const char *s, size_t n);
void gw_buf_puts(gw_buf *b, const char *s);
void gw_buf_printf(gw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s[0..n) as a JSON string with quotes; bytes that are not UTF-8 become U+FFFD. */
void gw_buf_json(gw_buf *b, const char *s, size_t n);
void gw_buf_jsonz(gw_buf *b, const char *s); /* NULL: null */
/* s[0..n) with every byte that is not part of valid UTF-8 replaced by U+FFFD. */
void gw_buf_utf8(gw_buf *b, const char *s, size_t n);
/* Takes the buffer's memory (NUL-terminated; free() it); NULL when out of memory. */
char *gw_buf_take(gw_buf *b, size_t *len);

/* OpenAI's error object: {"error": {"message", "type", "param", "code"}}. */
void gw_encode_error(gw_buf *b, const char *message, const char *type, const char *param,
                     const char *code);
/* The error type OpenAI uses for an HTTP status. */
const char *gw_error_type(int status);

/* ---- logs (log.c) ------------------------------------------------------------------- */

typedef struct gw_log gw_log;

int gw_log_open(gw_log **out, const policy_logging *cfg, char *err, size_t errlen);
void gw_log_close(gw_log *l);
bool gw_log_enabled(const gw_log *l, policy_log_level lvl);
/* One event line: msg is free text (never a prompt, completion or key). */
void gw_log_event(gw_log *l, policy_log_level lvl, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef struct gw_log_request {
    const char *request_id, *method, *path, *client, *tenant, *key_id, *domain, *error;
    int status;
    int64_t prompt_tokens, completion_tokens;
    double latency_ms, ttft_ms; /* ttft < 0: none */
    bool stream;
} gw_log_request;
void gw_log_req(gw_log *l, const gw_log_request *r);

/* ---- metrics (metrics.c) ---------------------------------------------------------------- */

typedef struct gw_metrics gw_metrics;

int gw_metrics_create(gw_metrics **out);
void gw_metrics_free(gw_metrics *m);
/* One finished request. ttft_s < 0: none (no token or not a generation). */
void gw_metrics_request(gw_metrics *m, const char *endpoint, const char *tenant, const char *domain,
                        int status, int64_t prompt_tokens, int64_t completion_tokens,
                        double latency_s, double ttft_s);
void gw_metrics_connection(gw_metrics *m, int delta);
enum gw_event {
    GW_EVENT_ROUTE =
        0, /* a: the router's best domain or "none"; b: the domain that answered or "base" */
    GW_EVENT_REFUSAL, /* a: domain; b: blocked topic */
};
void gw_metrics_event(gw_metrics *m, enum gw_event kind, const char *a, const char *b);
typedef struct gw_gauges {
    const serve_stats *serve;
    const audit_stats *audit; /* NULL: no audit writer */
    int adapters;
    uint64_t policy_generation;
    int64_t reloads_ok, reloads_failed;
} gw_gauges;
void gw_metrics_render(gw_metrics *m, const gw_gauges *g, gw_buf *out);

/* ---- domain packs (domains.c) ------------------------------------------------------------ */

typedef struct gw_domain {         /* one entry of the policy's domains, in its order */
    const domain_pack *pack;       /* NULL: the domain names no pack */
    int pack_index;                /* in the set, or -1 */
    const policy_adapter *adapter; /* the policy's adapter, else the pack's; NULL: base weights */
    policy_detectors *det;         /* the pack's extra redaction detectors, or NULL */
} gw_domain;

typedef struct gw_domains {
    atomic_int refs;
    const policy *pol; /* the snapshot these packs belong to (a reference) */
    domain_set *set;   /* NULL when no domain names a pack */
    domain_router *router;
    int n;          /* == the policy's n_domains */
    gw_domain *dom; /* [n] */
    int *of_pack;   /* pack index -> the first policy domain using it */
} gw_domains;

typedef struct gw_routed {
    int domain;   /* policy domain index the router sent the request to, or -1: the base model */
    int best;     /* the most likely policy domain, or -1 (out of domain) */
    double score; /* the router's confidence in best */
    bool above;   /* score reached the threshold */
    bool denied;  /* above the threshold, but the tenant may not use that domain */
} gw_routed;

/* Loads the packs of p's domains (diagnostics to lo->on_diag) and trains the router. */
int gw_domains_build(gw_domains **out, const policy *p, const domain_load_opts *lo, char *err,
                     size_t errlen);
void gw_domains_diag_to_log(void *ud, const policy_diag *d); /* ud: the gateway */
void gw_domains_log(gateway *g, const gw_domains *d); /* what is in force, one line per domain */
gw_domains *gw_domains_acquire(gateway *g);           /* the set in force, with a reference */
void gw_domains_release(gw_domains *d);               /* accepts NULL */
void gw_domains_swap(gateway *g, gw_domains *d);      /* puts d in force (takes its reference) */
int gw_domains_index(const gw_domains *d, const char *name); /* policy domain index or -1 */
/* Routes text for tenant t ("auto"). */
int gw_domains_route(const gw_domains *d, const policy_tenant *t, const char *text, size_t len,
                     gw_routed *out);

/* ---- the gateway ---------------------------------------------------------------------- */

typedef struct gw_req gw_req;

/* One TCP connection (libmicrohttpd's socket context). */
typedef struct gw_conn {
    char addr[64]; /* client address, text */
    int fd;
    bool cert_checked; /* the fields below are filled */
    int cert_state;    /* 0 none presented, 1 verified, -1 presented but not trusted */
    char subject[512]; /* RFC 2253 subject of a verified certificate */
} gw_conn;

struct gateway {
    gateway_opts o;
    char model_id[256];
    char model_sha256[65];
    enum chat_template tmpl_detected; /* CHAT_TEMPLATE_NONE: none found (chat refused unless the
                                         policy names one) */
    char tmpl_err[256];
    char bos[64], eos[64];
    int n_ctx;
    int64_t n_vocab;
    struct MHD_Daemon *d;
    int listen_fd, port;
    bool tls, client_ca;
    policy_limiter *lim;
    gw_log *log;
    gw_metrics *met;
    int64_t started_us;
    atomic_int stop;       /* gateway_stop was called */
    atomic_int reload_req; /* a reload is asked for */
    atomic_int stopping;   /* gateway_close began: new generations get 503 */
    atomic_llong reloads_ok, reloads_failed;
    pthread_mutex_t dom_mu; /* guards dom */
    gw_domains *dom;        /* the policy and packs in force */
    /* the audit thread: requests whose record is to be written, in order */
    pthread_t fin_thread;
    bool fin_started;
    pthread_mutex_t fin_mu; /* guards fin_head, fin_tail, fin_quit */
    pthread_cond_t fin_cv;
    gw_req *fin_head, *fin_tail;
    bool fin_quit;
    /* the disconnect watcher: epoll over the sockets of requests in the engine */
    pthread_t watch_thread;
    bool watch_started;
    int epfd, wake_fd;
    /* requests the engine holds, for the watcher and for close */
    pthread_mutex_t act_mu; /* guards the act list, n_inflight and gw_req.watched */
    pthread_cond_t act_cv;  /* signalled when n_inflight drops */
    gw_req *act_head;
    int n_inflight; /* gw_req objects alive */
    uint64_t next_watch_id;
    atomic_int n_suspended; /* connections we suspended and have not resumed */
};

/* Request state: see server.c's design comment. */
enum gw_state {
    GW_NEW = 0,
    GW_BODY,       /* receiving the body */
    GW_GENERATING, /* in the engine; a JSON response waits for the end */
    GW_STREAMING,  /* in the engine; the SSE response is queued */
    GW_AUDITING,   /* response ready; waiting for the audit thread */
    GW_DONE,       /* response queued */
};

enum gw_route {
    GW_R_NONE = 0,
    GW_R_HEALTH,
    GW_R_READY,
    GW_R_METRICS,
    GW_R_MODELS,
    GW_R_MODEL,
    GW_R_CHAT,
    GW_R_COMPLETIONS,
    GW_R_ADAPTER_LOAD,
    GW_R_ADAPTER_UNLOAD,
    GW_R_RELOAD,
    GW_R_STATS,
};

struct gw_req {
    gateway *g;
    struct MHD_Connection *conn;
    gw_conn *cx;
    atomic_int refs;     /* MHD's, the engine's, the audit thread's */
    char id[40];         /* request id (x-request-id) */
    int64_t received_us; /* wall clock */
    double t0;           /* monotonic seconds at arrival */
    double t_first;      /* first generated text (monotonic), 0: none yet */
    enum gw_route route;
    enum gw_state state;
    const char *method;   /* a string constant */
    char path[96];        /* route path for logs (the route's pattern) */
    char arg[128];        /* /v1/models/{id}, /admin/adapters/{name} */
    bool audited;         /* this route leaves an audit record */
    char client_addr[64]; /* copied: the connection may close before the audit */
    char *client_subject; /* verified client certificate subject, or NULL */
    /* body */
    char *body;
    size_t body_len, body_cap;
    bool body_too_large;
    size_t discarded; /* body bytes dropped after the cap */
    /* who */
    gw_domains *dom;   /* packs for the whole request (a reference) */
    const policy *pol; /* snapshot for the whole request: dom->pol */
    const policy_tenant *tenant;
    const policy_api_key *key;
    /* what */
    gateway_request preq;
    bool parsed;
    const char *endpoint;        /* "chat.completions", "completions", "admin.*" */
    char model_name[260];        /* as the client asked (validated) */
    const char *domain;          /* policy domain name, or NULL (base model) */
    const gw_domain *pack;       /* the domain's pack entry, or NULL */
    domain_lang lang;            /* the request's language (system prompt, disclaimer, labels) */
    bool routed;                 /* model "auto": route below is set */
    gw_routed rt;                /* model "auto": where the router sent it */
    const domain_topic *blocked; /* a blocked topic answered with its refusal */
    const char *adapter;         /* adapter name, or NULL */
    const char *adapter_sha256;
    char sampling_json[1024];
    int64_t n_prompt, max_tokens, reserved;
    bool admitted; /* the rate limiter charged us: settle at the end */
    policy_redaction *red;
    char *prompt_text; /* what the model saw (after redaction), for the audit */
    size_t prompt_len;
    /* the engine's output; mu guards everything down to `suspended` */
    pthread_mutex_t mu;
    char *out; /* raw generated text not yet consumed */
    size_t out_len, out_cap;
    int64_t n_completion;
    bool in_engine; /* submitted and not finished */
    bool finished;
    enum serve_finish finish;
    bool client_gone;        /* MHD ended the request with an error */
    atomic_bool peer_closed; /* the watcher saw the client close its socket */
    bool audit_done;
    bool audit_failed;
    bool suspended; /* we suspended the connection; resume exactly once */
    bool mhd_done;  /* MHD completed the request: never touch conn again */
    /* the engine's id, 0 before; set once, read by the watcher and the
     * completion without a common lock */
    _Atomic uint64_t serve_id;
    /* the response */
    int status;
    char err_msg[400];
    char err_code[48];
    double retry_after;
    gw_buf resp;       /* JSON body (non-streaming) */
    gw_buf completion; /* what the client got (after redaction) */
    /* SSE */
    gw_buf sse; /* encoded bytes not yet handed to MHD */
    size_t sse_off;
    int sse_phase;  /* 0 content, 1 waiting for the audit, 2 final written, 3 end */
    bool sse_error; /* the stream ended with an error event */
    /* lists */
    gw_req *fin_next;            /* audit thread queue */
    gw_req *act_next, *act_prev; /* engine list */
    bool on_act;
    bool watched; /* fd registered with the watcher (act_mu) */
    uint64_t watch_id;
};

/* server.c */
double gw_now(void);
int64_t gw_wall_us(void);
void gw_req_release(gw_req *r);
/* Sets the error response (status, OpenAI error object). */
void gw_req_error(gw_req *r, int status, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Wakes the connection if we suspended it (any thread; _locked: mu held). */
void gw_req_wake(gw_req *r);
void gw_req_resume_locked(gw_req *r);
/* Suspends the connection unless `ready` became true; mu held by the caller. */
void gw_req_suspend_locked(gw_req *r);
/* Hands the request to the audit thread (or marks the audit done when it is not audited). */
void gw_req_audit(gw_req *r);
/* Registers the request as in the engine (watcher, close). */
void gw_req_track(gw_req *r);
void gw_req_untrack(gw_req *r);
/* Hands the request to the audit thread and answers once its record is
 * durable (or at once when not audited): r->resp, or 503 when the record
 * failed and audit.on_failure is reject. Every audited route ends here. */
enum MHD_Result gw_req_finish_audited(gw_req *r);
/* Queues r->resp (or the error) as the response, with the standard headers. */
enum MHD_Result gw_req_respond(gw_req *r);

/* generate.c: the chat and completion handlers, from GW_NEW on; and the
 * re-entries after a resume. */
enum MHD_Result gw_generate_start(gw_req *r);
enum MHD_Result gw_generate_resume(gw_req *r);
/* Adds the content label and route headers of a generation answered 200. */
void gw_generate_headers(gw_req *r, struct MHD_Response *resp);

/* auth.c: the tenant of the request, or an error response set (401/403). */
bool gw_auth(gw_req *r);
bool gw_auth_role(gw_req *r, unsigned role, const char *what);

/* admin.c */
enum MHD_Result gw_admin(gw_req *r);
/* The models tenant t may use ("auto" too when with_auto), or only the one named. */
void gw_models_json(gateway *g, const policy *p, const policy_tenant *t, bool with_auto,
                    const char *only, gw_buf *b);
int gw_reload(gateway *g, char *err, size_t errlen);

#endif
