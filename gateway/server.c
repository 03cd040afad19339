/* moegate gateway — the HTTP(S) server and the life of a request.
 *
 * libmicrohttpd runs a pool of threads (one per core), each with its own
 * epoll loop, on a listening socket we bind ourselves (so "localhost" and
 * IPv6 work and the port can be read back). TLS is libmicrohttpd's (GnuTLS)
 * with our priority string: TLS 1.2 and 1.3, ECDHE, AEAD ciphers only.
 * Connection limits (total, per client address) and the idle timeout are
 * libmicrohttpd's; the body cap is ours (Content-Length is checked before
 * any byte is read, a chunked body as it arrives).
 *
 * A request (gw_req) goes through states:
 *
 *   GW_NEW/GW_BODY   headers, then the body, arrive; GET endpoints answer at
 *                    once. Refusals before the body is read (401, 413) are
 *                    answered at once too.
 *   GW_GENERATING    a non-streaming generation is in the engine; the
 *                    connection is suspended; the engine's callback appends
 *                    text to r->out and resumes it at the end.
 *   GW_STREAMING     an SSE response is queued; its content reader drains
 *                    r->out into chunks and suspends the connection when
 *                    there is nothing to send (no busy waiting); the
 *                    engine's callback resumes it.
 *   GW_AUDITING      the response is ready; the audit thread writes the
 *                    record (and, in strict durability, waits until it is
 *                    durable), then resumes the connection. Only then does
 *                    the last byte go out. On a stream, the content chunks
 *                    go first and the final chunk and [DONE] wait.
 *   GW_DONE          queued.
 *
 * Suspension protocol: r->mu guards r->suspended. Only an MHD thread (in the
 * access handler or the content reader) suspends, and it checks under mu
 * that the thing it waits for has not happened yet; any other thread that
 * makes progress possible resumes under mu if and only if r->suspended,
 * clearing it. So every suspend is matched by exactly one resume, and a
 * resume never races a completed connection (MHD never completes a
 * suspended one; gateway_close resumes everything before stopping).
 *
 * Lifetime: r is reference counted: MHD's reference (dropped when MHD
 * reports the request completed), the engine's (dropped by the last serve
 * callback), the audit thread's (while queued).
 *
 * Disconnects: while suspended, MHD does not see a client leave. The
 * watcher thread has the socket of every request in the engine in an epoll
 * set (EPOLLRDHUP, one shot); when the peer closes, it cancels the
 * sequence at once. MHD then fails the next write and completes the
 * request with an error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/errors.h"
#include "gateway/gateway_internal.h"

/* TLS 1.2 and 1.3; ECDHE key exchange; AES-GCM and ChaCha20-Poly1305 only:
 * no CBC, SHA-1 MACs, RC4, 3DES, NULL, anonymous or export suites. */
static const char tls_priorities[] =
    "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:"
    "+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-RSA:+ECDHE-ECDSA:-SIGN-RSA-SHA1:"
    "-SIGN-ECDSA-SHA1:-SIGN-DSA-SHA1:%SERVER_PRECEDENCE";

#define MAX_FILE_BYTES (1 << 20) /* certificates and keys */
#define MAX_DISCARD                                                                                \
    ((size_t)64 << 20) /* body bytes read and dropped after the cap before we hang up */

/* ---- time ------------------------------------------------------------------------------ */

double gw_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int64_t gw_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- requests ------------------------------------------------------------------------- */

static void req_free(gw_req *r)
{
    gateway *g = r->g;
    if (r->admitted)
        policy_limiter_settle(g->lim, r->tenant, r->key, r->reserved, r->n_prompt + r->n_completion,
                              policy_now_ns());
    gateway_request_free(&r->preq);
    policy_redaction_free(r->red);
    policy_release(r->pol);
    gw_domains_release(r->dom);
    free(r->body);
    free(r->out);
    free(r->prompt_text);
    free(r->client_subject);
    gw_buf_free(&r->resp);
    gw_buf_free(&r->completion);
    gw_buf_free(&r->sse);
    pthread_mutex_destroy(&r->mu);
    free(r);
    pthread_mutex_lock(&g->act_mu);
    g->n_inflight--;
    pthread_cond_broadcast(&g->act_cv);
    pthread_mutex_unlock(&g->act_mu);
}

void gw_req_release(gw_req *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        req_free(r);
}

static const struct {
    const char *method, *path;
    enum gw_route route;
    bool prefix; /* path followed by /ARG */
} routes[] = {
    {"GET", "/health", GW_R_HEALTH, false},
    {"GET", "/ready", GW_R_READY, false},
    {"GET", "/metrics", GW_R_METRICS, false},
    {"GET", "/v1/models", GW_R_MODELS, false},
    {"GET", "/v1/models", GW_R_MODEL, true},
    {"POST", "/v1/chat/completions", GW_R_CHAT, false},
    {"POST", "/v1/completions", GW_R_COMPLETIONS, false},
    {"POST", "/admin/adapters", GW_R_ADAPTER_LOAD, false},
    {"DELETE", "/admin/adapters", GW_R_ADAPTER_UNLOAD, true},
    {"POST", "/admin/policy/reload", GW_R_RELOAD, false},
    {"GET", "/admin/stats", GW_R_STATS, false},
};

/* Finds the route; *allowed lists the methods of a path that exists. */
static enum gw_route route_of(const char *method, const char *url, char *arg, size_t argcap,
                              char *pattern, size_t patcap, char *allowed, size_t alcap)
{
    allowed[0] = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t n = strlen(routes[i].path);
        bool match;
        if (routes[i].prefix)
            match = !strncmp(url, routes[i].path, n) && url[n] == '/' && url[n + 1] &&
                    !strchr(url + n + 1, '/');
        else
            match = !strcmp(url, routes[i].path);
        if (!match)
            continue;
        if (!strcmp(method, routes[i].method) ||
            (!strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET"))) {
            if (routes[i].prefix) {
                snprintf(arg, argcap, "%s", url + n + 1);
                snprintf(pattern, patcap, "%s/{id}", routes[i].path);
            } else
                snprintf(pattern, patcap, "%s", routes[i].path);
            return routes[i].route;
        }
        size_t used = strlen(allowed);
        snprintf(allowed + used, alcap - used, "%s%s", used ? ", " : "", routes[i].method);
    }
    return GW_R_NONE;
}

static gw_req *req_new(gateway *g, struct MHD_Connection *conn)
{
    gw_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->g = g;
    r->conn = conn;
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->mu, NULL);
    r->t0 = gw_now();
    r->received_us = gw_wall_us();
    r->status = 200;
    unsigned char rnd[12];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        /* the CSPRNG failing is not a reason to reuse ids: mix time and address */
        uint64_t x = (uint64_t)r->received_us ^ (uint64_t)(uintptr_t)r;
        memcpy(rnd, &x, 8);
        memset(rnd + 8, 0, 4);
    }
    static const char hex[] = "0123456789abcdef";
    memcpy(r->id, "req_", 4);
    for (int i = 0; i < 12; i++) {
        r->id[4 + 2 * i] = hex[rnd[i] >> 4];
        r->id[5 + 2 * i] = hex[rnd[i] & 15];
    }
    r->id[28] = 0;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->cx = ci ? ci->socket_context : NULL;
    if (r->cx)
        snprintf(r->client_addr, sizeof r->client_addr, "%s", r->cx->addr);
    r->dom = gw_domains_acquire(g);
    r->pol = policy_retain(r->dom->pol);
    pthread_mutex_lock(&g->act_mu);
    g->n_inflight++;
    pthread_mutex_unlock(&g->act_mu);
    return r;
}

void gw_req_error(gw_req *r, int status, const char *code, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err_msg, sizeof r->err_msg, fmt, ap);
    va_end(ap);
    r->status = status;
    snprintf(r->err_code, sizeof r->err_code, "%s", code ? code : "");
    gw_buf_free(&r->resp);
    gw_encode_error(&r->resp, r->err_msg, gw_error_type(status), param, code);
}

static void add_common_headers(gw_req *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "x-request-id", r->id);
    if (r->status == 429 && r->retry_after > 0) {
        char ra[32];
        snprintf(ra, sizeof ra, "%.0f", ceil(r->retry_after));
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    } else if (r->status == 503)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (r->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
}

enum MHD_Result gw_req_respond(gw_req *r)
{
    size_t len = 0;
    if (r->resp.len == 0 && r->status >= 400)
        gw_encode_error(&r->resp, r->err_msg[0] ? r->err_msg : "error", gw_error_type(r->status),
                        NULL, r->err_code);
    char *body = gw_buf_take(&r->resp, &len);
    if (!body)
        return MHD_NO; /* out of memory: close the connection */
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    bool generation = r->route == GW_R_CHAT || r->route == GW_R_COMPLETIONS;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->route == GW_R_METRICS && r->status == 200
                                ? "text/plain; version=0.0.4; charset=utf-8"
                            : generation && r->parsed && r->preq.stream && r->status == 200
                                ? "text/event-stream; charset=utf-8" /* a refusal, answered whole */
                                : "application/json");
    add_common_headers(r, resp);
    if (generation)
        gw_generate_headers(r, resp);
    if (r->status == 405 && r->arg[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->arg);
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    r->state = GW_DONE;
    return ret;
}

/* ---- suspend and resume ------------------------------------------------------------------ */

void gw_req_suspend_locked(gw_req *r)
{
    if (!r->suspended && !r->mhd_done) {
        r->suspended = true;
        atomic_fetch_add(&r->g->n_suspended, 1);
        MHD_suspend_connection(r->conn);
    }
}

void gw_req_resume_locked(gw_req *r)
{
    if (r->suspended) {
        r->suspended = false;
        atomic_fetch_sub(&r->g->n_suspended, 1);
        MHD_resume_connection(r->conn);
    }
}

void gw_req_wake(gw_req *r)
{
    pthread_mutex_lock(&r->mu);
    gw_req_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
}

/* ---- the engine list and the disconnect watcher ------------------------------------------ */

void gw_req_track(gw_req *r)
{
    gateway *g = r->g;
    pthread_mutex_lock(&g->act_mu);
    r->act_prev = NULL;
    r->act_next = g->act_head;
    if (g->act_head)
        g->act_head->act_prev = r;
    g->act_head = r;
    r->on_act = true;
    r->watch_id = ++g->next_watch_id;
    if (r->cx && r->cx->fd >= 0 && g->epfd >= 0 && !r->watched) {
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.u64 = r->watch_id};
        r->watched = epoll_ctl(g->epfd, EPOLL_CTL_ADD, r->cx->fd, &ev) == 0;
    }
    pthread_mutex_unlock(&g->act_mu);
}

void gw_req_untrack(gw_req *r)
{
    gateway *g = r->g;
    pthread_mutex_lock(&g->act_mu);
    if (r->on_act) {
        if (r->act_prev)
            r->act_prev->act_next = r->act_next;
        else
            g->act_head = r->act_next;
        if (r->act_next)
            r->act_next->act_prev = r->act_prev;
        r->on_act = false;
    }
    pthread_mutex_unlock(&g->act_mu);
}

static void *watch_main(void *arg)
{
    gateway *g = arg;
    struct epoll_event ev[64];
    for (;;) {
        int n = epoll_wait(g->epfd, ev, 64, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        uint64_t gone[64];
        int n_gone = 0;
        bool quit = false;
        pthread_mutex_lock(&g->act_mu);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 0) {
                quit = true;
                continue;
            }
            for (gw_req *r = g->act_head; r; r = r->act_next)
                if (r->watch_id == ev[i].data.u64) {
                    atomic_store(&r->peer_closed, true);
                    if (r->serve_id)
                        gone[n_gone++] = r->serve_id;
                    break;
                }
        }
        pthread_mutex_unlock(&g->act_mu);
        /* outside act_mu: the engine's callbacks take it */
        for (int i = 0; i < n_gone; i++)
            serve_cancel(g->o.serve, gone[i]);
        if (quit)
            break;
    }
    return NULL;
}

/* ---- the audit thread ---------------------------------------------------------------------- */

static audit_payload_mode payload_mode(policy_payload p)
{
    switch (p) {
    case POLICY_PAYLOAD_ENCRYPT: return AUDIT_PAYLOAD_AES256GCM;
    case POLICY_PAYLOAD_CLEAR: return AUDIT_PAYLOAD_CLEAR;
    case POLICY_PAYLOAD_NONE: return AUDIT_PAYLOAD_NONE;
    default: return AUDIT_PAYLOAD_SHA256;
    }
}

/* The redaction findings as JSON: [{"rule","label","input","output"}]; types and counts only. */
static char *redaction_json(const gw_req *r)
{
    if (!r->red)
        return NULL;
    policy_finding f[64];
    int n = policy_redaction_findings(r->red, f, 64);
    if (n <= 0)
        return NULL;
    gw_buf b = {0};
    gw_buf_put(&b, "[", 1);
    for (int i = 0; i < n && i < 64; i++) {
        gw_buf_puts(&b, i ? ",{\"rule\":" : "{\"rule\":");
        gw_buf_jsonz(&b, f[i].rule);
        gw_buf_puts(&b, ",\"label\":");
        gw_buf_jsonz(&b, f[i].label);
        gw_buf_printf(&b, ",\"input\":%d,\"output\":%d}", f[i].input, f[i].output);
    }
    gw_buf_put(&b, "]", 1);
    return gw_buf_take(&b, NULL);
}

static int audit_one(gateway *g, gw_req *r, uint64_t *ticket, char *err, size_t errlen)
{
    int64_t now = gw_wall_us();
    char *red = redaction_json(r);
    const policy_tenant *t = r->tenant;
    audit_record ar = {
        .request_id = r->id,
        .received_us = r->received_us,
        .finished_us = now,
        .tenant = t ? t->id : NULL,
        .key_id = r->key ? r->key->id : NULL,
        .client_addr = r->client_addr[0] ? r->client_addr : NULL,
        .client_subject = r->client_subject,
        .endpoint = r->endpoint,
        .domain = r->domain,
        .adapter_name = r->adapter,
        .adapter_sha256 = r->adapter_sha256,
        .model_sha256 = g->model_sha256[0] ? g->model_sha256 : NULL,
        .sampling = r->sampling_json[0] ? r->sampling_json : NULL,
        .prompt_tokens = r->n_prompt,
        .completion_tokens = r->n_completion,
        .status = r->status,
        .error = r->status >= 400 && r->err_msg[0] ? r->err_msg : NULL,
        .latency_us = now - r->received_us,
        .redaction = red,
        .payload_mode = t ? payload_mode(t->audit_payload) : AUDIT_PAYLOAD_NONE,
        .prompt = r->prompt_text,
        .prompt_len = r->prompt_text ? r->prompt_len : 0,
        .completion = r->completion.p,
        .completion_len = r->completion.p ? r->completion.len : 0,
    };
    if (ar.prompt_len > AUDIT_MAX_PAYLOAD)
        ar.prompt_len = AUDIT_MAX_PAYLOAD;
    if (ar.completion_len > AUDIT_MAX_PAYLOAD)
        ar.completion_len = AUDIT_MAX_PAYLOAD;
    int rc = audit_submit(g->o.audit, &ar, ticket, err, errlen);
    free(red);
    return rc;
}

static void audit_finish(gw_req *r, bool failed)
{
    pthread_mutex_lock(&r->mu);
    r->audit_done = true;
    r->audit_failed = failed;
    gw_req_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
}

static void *fin_main(void *arg)
{
    gateway *g = arg;
    for (;;) {
        pthread_mutex_lock(&g->fin_mu);
        while (!g->fin_head && !g->fin_quit)
            pthread_cond_wait(&g->fin_cv, &g->fin_mu);
        gw_req *list = g->fin_head;
        g->fin_head = g->fin_tail = NULL;
        bool quit = g->fin_quit;
        pthread_mutex_unlock(&g->fin_mu);
        if (!list && quit)
            break;
        /* submit them all, then wait: one transaction (or fsync) covers the batch */
        enum { MAXB = 256 };
        gw_req *batch[MAXB];
        uint64_t ticket[MAXB];
        int rc[MAXB];
        while (list) {
            int n = 0;
            while (list && n < MAXB) {
                batch[n] = list;
                list = list->fin_next;
                char err[256];
                rc[n] = audit_one(g, batch[n], &ticket[n], err, sizeof err);
                if (rc[n])
                    gw_log_event(g->log, POLICY_LOG_ERROR, batch[n]->id, "audit record refused: %s",
                                 err);
                n++;
            }
            for (int i = 0; i < n; i++) {
                gw_req *r = batch[i];
                const policy_config *c = policy_get_config(r->pol);
                if (!rc[i] && c->audit.durability == POLICY_DURABILITY_STRICT) {
                    rc[i] = audit_wait_durable(g->o.audit, ticket[i], 15000);
                    if (rc[i])
                        gw_log_event(g->log, POLICY_LOG_ERROR, r->id,
                                     "audit record not durable: %s", mg_err_name(rc[i]));
                }
                audit_finish(r, rc[i] != 0);
                gw_req_release(r);
            }
        }
    }
    return NULL;
}

void gw_req_audit(gw_req *r)
{
    gateway *g = r->g;
    if (!r->audited || !g->o.audit || !r->tenant) {
        audit_finish(r, false);
        return;
    }
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_lock(&g->fin_mu);
    r->fin_next = NULL;
    if (g->fin_tail)
        g->fin_tail->fin_next = r;
    else
        g->fin_head = r;
    g->fin_tail = r;
    pthread_cond_signal(&g->fin_cv);
    pthread_mutex_unlock(&g->fin_mu);
}

/* After the audit: the response, unless the record could not be made
 * durable and the policy says to refuse such work. */
static enum MHD_Result respond_after_audit(gw_req *r)
{
    pthread_mutex_lock(&r->mu);
    if (!r->audit_done) {
        gw_req_suspend_locked(r);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    bool failed = r->audit_failed;
    pthread_mutex_unlock(&r->mu);
    if (failed && policy_get_config(r->pol)->audit.on_failure == POLICY_AUDIT_REJECT)
        gw_req_error(r, 503, "audit_unavailable", NULL,
                     "the request could not be recorded in the audit log");
    return gw_req_respond(r);
}

enum MHD_Result gw_req_finish_audited(gw_req *r)
{
    r->state = GW_AUDITING;
    gw_req_audit(r);
    return respond_after_audit(r);
}

/* ---- simple endpoints ---------------------------------------------------------------------- */

static bool ready(gateway *g, char *why, size_t cap)
{
    if (atomic_load(&g->stopping)) {
        snprintf(why, cap, "shutting down");
        return false;
    }
    if (g->o.audit && !audit_writable(g->o.audit)) {
        snprintf(why, cap, "the audit log is not writable");
        return false;
    }
    return true;
}

static enum MHD_Result handle_get(gw_req *r)
{
    gateway *g = r->g;
    const policy_config *c = policy_get_config(r->pol);
    switch (r->route) {
    case GW_R_HEALTH: gw_buf_puts(&r->resp, "{\"status\":\"ok\"}"); return gw_req_respond(r);
    case GW_R_READY: {
        if (!c->server.public_ready && !gw_auth(r))
            return gw_req_respond(r);
        char why[128];
        if (!ready(g, why, sizeof why)) {
            gw_req_error(r, 503, "not_ready", NULL, "not ready: %s", why);
            return gw_req_respond(r);
        }
        gw_buf_puts(&r->resp, "{\"status\":\"ready\",\"model\":");
        gw_buf_jsonz(&r->resp, g->model_id);
        gw_buf_puts(&r->resp, "}");
        return gw_req_respond(r);
    }
    case GW_R_METRICS:
        if (!c->server.public_metrics &&
            (!gw_auth(r) || !gw_auth_role(r, POLICY_ROLE_ADMIN, "/metrics")))
            return gw_req_respond(r);
        return gw_admin(r);
    case GW_R_STATS:
        if (!gw_auth(r) || !gw_auth_role(r, POLICY_ROLE_ADMIN, "/admin/stats"))
            return gw_req_respond(r);
        return gw_admin(r);
    case GW_R_MODELS:
    case GW_R_MODEL:
        if (!gw_auth(r) || !gw_auth_role(r, POLICY_ROLE_USER | POLICY_ROLE_ADMIN, "/v1/models"))
            return gw_req_respond(r);
        gw_models_json(g, r->pol, r->tenant, r->dom->router != NULL,
                       r->route == GW_R_MODEL ? r->arg : NULL, &r->resp);
        if (r->resp.len == 0)
            gw_req_error(r, 404, "model_not_found", "model",
                         "the model '%.200s' does not exist or you do not have access to it",
                         r->arg);
        return gw_req_respond(r);
    default: break;
    }
    gw_req_error(r, 404, "not_found", NULL, "no such endpoint");
    return gw_req_respond(r);
}

/* ---- libmicrohttpd callbacks -------------------------------------------------------------- */

static bool needs_body(enum gw_route rt)
{
    return rt == GW_R_CHAT || rt == GW_R_COMPLETIONS || rt == GW_R_ADAPTER_LOAD ||
           rt == GW_R_RELOAD || rt == GW_R_ADAPTER_UNLOAD;
}

/* Body complete: the POST/DELETE endpoints. */
static enum MHD_Result handle_body(gw_req *r)
{
    if (r->route == GW_R_CHAT || r->route == GW_R_COMPLETIONS) {
        r->audited = true;
        return gw_generate_start(r);
    }
    r->audited = true;
    r->endpoint = r->route == GW_R_RELOAD         ? "admin.policy_reload"
                  : r->route == GW_R_ADAPTER_LOAD ? "admin.adapter_load"
                                                  : "admin.adapter_unload";
    gw_admin(r); /* sets the response (or error) without queuing it */
    return gw_req_finish_audited(r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    gateway *g = cls;
    gw_req *r = *con_cls;
    if (!r) {
        r = req_new(g, conn);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        char allowed[64];
        r->route = route_of(method, url, r->arg, sizeof r->arg, r->path, sizeof r->path, allowed,
                            sizeof allowed);
        r->method = !strcmp(method, "GET")      ? "GET"
                    : !strcmp(method, "POST")   ? "POST"
                    : !strcmp(method, "DELETE") ? "DELETE"
                    : !strcmp(method, "HEAD")   ? "HEAD"
                                                : "other";
        if (r->route == GW_R_NONE) {
            snprintf(r->path, sizeof r->path, "other");
            if (allowed[0]) {
                snprintf(r->arg, sizeof r->arg, "%s", allowed);
                gw_req_error(r, 405, "method_not_allowed", NULL, "method not allowed here; use %s",
                             allowed);
            } else
                gw_req_error(r, 404, "not_found", NULL, "no such endpoint");
            return gw_req_respond(r);
        }
        r->state = GW_BODY;
        /* GET endpoints answer at the next call: a response queued before
         * the request is complete would cost the keep-alive */
        if (!needs_body(r->route))
            return MHD_YES;
        /* refusals before reading a byte of the body: not audited */
        if (!gw_auth(r))
            return gw_req_respond(r);
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t max = policy_get_config(r->pol)->server.max_body_bytes;
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || n > (unsigned long long)max) {
                gw_req_error(r, 413, "request_too_large", NULL,
                             "the request body exceeds %lld bytes", (long long)max);
                return gw_req_respond(r);
            }
        }
        r->state = GW_BODY;
        return MHD_YES;
    }
    if (r->state == GW_BODY && *upload_data_size && needs_body(r->route)) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        int64_t max = policy_get_config(r->pol)->server.max_body_bytes;
        if (r->body_too_large || r->body_len + n > (size_t)max) {
            /* a chunked body over the cap: libmicrohttpd cannot answer in the
             * middle of an upload, so the rest is read and dropped (up to
             * MAX_DISCARD, then the connection is cut) and 413 follows */
            if (!r->body_too_large) {
                r->body_too_large = true;
                free(r->body);
                r->body = NULL;
                r->body_len = r->body_cap = 0;
            }
            r->discarded += n;
            return r->discarded > MAX_DISCARD ? MHD_NO : MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 4096;
            while (cap < r->body_len + n + 1)
                cap *= 2;
            char *p = realloc(r->body, cap);
            if (!p)
                return MHD_NO;
            r->body = p;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        return MHD_YES;
    }
    if (*upload_data_size) { /* body bytes after we answered: discard */
        *upload_data_size = 0;
        return MHD_YES;
    }
    switch (r->state) {
    case GW_BODY:
        if (r->body_too_large) {
            gw_req_error(r, 413, "request_too_large", NULL, "the request body exceeds %lld bytes",
                         (long long)policy_get_config(r->pol)->server.max_body_bytes);
            return gw_req_respond(r);
        }
        return needs_body(r->route) ? handle_body(r) : handle_get(r);
    case GW_GENERATING: return gw_generate_resume(r);
    case GW_AUDITING: return respond_after_audit(r);
    default: return MHD_YES;
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    gateway *g = cls;
    gw_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&g->act_mu);
    if (r->watched) {
        epoll_ctl(g->epfd, EPOLL_CTL_DEL, r->cx->fd, NULL);
        r->watched = false;
    }
    pthread_mutex_unlock(&g->act_mu);
    pthread_mutex_lock(&r->mu);
    r->mhd_done = true;
    if (r->suspended) { /* not expected: MHD does not complete suspended connections */
        r->suspended = false;
        atomic_fetch_sub(&g->n_suspended, 1);
    }
    bool cancel = r->in_engine;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        r->client_gone = true;
    uint64_t sid = r->serve_id;
    int64_t n_completion = r->n_completion;
    double t_first = r->t_first;
    pthread_mutex_unlock(&r->mu);
    if (cancel && sid)
        serve_cancel(g->o.serve, sid);
    /* a generation cut short by the client is a 499 in logs and metrics (nginx's word for it) */
    int status = r->status;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
        (r->route == GW_R_CHAT || r->route == GW_R_COMPLETIONS))
        status = 499;
    double lat = gw_now() - r->t0;
    double ttft = t_first > 0 ? t_first - r->t0 : -1;
    const char *tenant = r->tenant ? r->tenant->id : NULL;
    gw_metrics_request(g->met, r->endpoint ? r->endpoint : r->path, tenant, r->domain, status,
                       r->n_prompt, n_completion, lat, ttft);
    if (!g->o.quiet) {
        gw_log_request lr = {
            .request_id = r->id,
            .method = r->method,
            .path = r->path,
            .client = r->client_addr,
            .tenant = tenant,
            .key_id = r->key ? r->key->id : NULL,
            .domain = r->domain,
            .error = status >= 400 && r->err_msg[0] ? r->err_msg : NULL,
            .status = status,
            .prompt_tokens = r->n_prompt,
            .completion_tokens = n_completion,
            .latency_ms = lat * 1e3,
            .ttft_ms = ttft >= 0 ? ttft * 1e3 : -1,
            .stream = r->state == GW_DONE && r->preq.stream,
        };
        gw_log_req(g->log, &lr);
    }
    gw_req_release(r);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    gateway *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        gw_conn *cx = calloc(1, sizeof *cx);
        if (!cx)
            return;
        cx->fd = -1;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr) {
            const struct sockaddr *sa = ci->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
                          cx->addr, sizeof cx->addr);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                          cx->addr, sizeof cx->addr);
        }
        ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci)
            cx->fd = ci->connect_fd;
        *socket_context = cx;
        gw_metrics_connection(g->met, 1);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (*socket_context) {
            free(*socket_context);
            *socket_context = NULL;
            gw_metrics_connection(g->met, -1);
        }
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    gateway *g = cls;
    if (!gw_log_enabled(g->log, POLICY_LOG_DEBUG))
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    gw_log_event(g->log, POLICY_LOG_DEBUG, NULL, "libmicrohttpd: %s", msg);
}

/* ---- open, run, close ---------------------------------------------------------------------- */

static int read_small_file(const char *path, const char *what, char **out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || st.st_size <= 0 || st.st_size > MAX_FILE_BYTES) {
        mg_err_set(err, errlen, "gateway: cannot read %s '%s'%s", what, path,
                   fd < 0 ? "" : " (empty or larger than 1 MiB)");
        if (fd >= 0)
            close(fd);
        return MG_EIO;
    }
    char *p = malloc((size_t)st.st_size + 1);
    if (!p) {
        close(fd);
        return MG_ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, p + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got != (size_t)st.st_size) {
        OPENSSL_cleanse(p, (size_t)st.st_size);
        free(p);
        mg_err_set(err, errlen, "gateway: short read of %s '%s'", what, path);
        return MG_EIO;
    }
    p[got] = 0;
    *out = p;
    return 0;
}

static int open_listener(gateway *g, const policy_server *sv, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", sv->port);
    int rc = getaddrinfo(sv->host, port, &hints, &ai);
    if (rc) {
        mg_err_set(err, errlen, "gateway: server.listen '%s': %s", sv->listen, gai_strerror(rc));
        return MG_EINVAL;
    }
    int fd = -1, last = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0)
            break;
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        mg_err_set(err, errlen, "gateway: cannot listen on %s: %s", sv->listen, strerror(last));
        return MG_EIO;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        g->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    g->listen_fd = fd;
    return 0;
}

static void special_text(const tokenizer *tok, int32_t id, char *buf, size_t cap)
{
    int n = id >= 0 ? tokenizer_token_bytes(tok, id, true, buf, cap - 1) : 0;
    buf[n > 0 && (size_t)n < cap ? n : 0] = '\0';
}

int gateway_open(gateway **out, const gateway_opts *opts, char *err, size_t errlen)
{
    if (!opts || !opts->policies || !opts->model || !opts->tok || !opts->serve) {
        mg_err_set(err, errlen, "gateway: policies, model, tokenizer and serve are required");
        return MG_EINVAL;
    }
    if (!MHD_is_feature_supported(MHD_FEATURE_TLS) ||
        !MHD_is_feature_supported(MHD_FEATURE_EPOLL)) {
        mg_err_set(err, errlen, "gateway: this libmicrohttpd lacks TLS or epoll support");
        return MG_EUNSUPPORTED;
    }
    gateway *g = calloc(1, sizeof *g);
    if (!g)
        return MG_ENOMEM;
    g->o = *opts;
    g->listen_fd = g->epfd = g->wake_fd = -1;
    g->started_us = gw_wall_us();
    pthread_mutex_init(&g->fin_mu, NULL);
    pthread_cond_init(&g->fin_cv, NULL);
    pthread_mutex_init(&g->act_mu, NULL);
    pthread_cond_init(&g->act_cv, NULL);
    pthread_mutex_init(&g->dom_mu, NULL);
    char *cert = NULL, *key = NULL, *ca = NULL;
    const policy *p = policy_store_acquire(opts->policies);
    const policy_config *c = policy_get_config(p);
    const policy_server *sv = &c->server;
    int rc = 0;

    /* the model's name for clients */
    if (opts->model_id)
        snprintf(g->model_id, sizeof g->model_id, "%s", opts->model_id);
    else {
        const char *base = strrchr(c->model.path, '/');
        base = base ? base + 1 : c->model.path;
        snprintf(g->model_id, sizeof g->model_id, "%s", base);
        size_t n = strlen(g->model_id);
        if (n > 5 && !strcmp(g->model_id + n - 5, ".gguf"))
            g->model_id[n - 5] = 0;
    }
    if (opts->model_sha256)
        snprintf(g->model_sha256, sizeof g->model_sha256, "%s", opts->model_sha256);
    const model_info *mi = model_get_info(opts->model);
    g->n_vocab = mi->n_vocab;
    g->n_ctx =
        opts->n_ctx > 0 ? opts->n_ctx : (int)(mi->n_ctx_train < 4096 ? mi->n_ctx_train : 4096);
    if (chat_template_detect(tokenizer_chat_template(opts->tok), tokenizer_pre(opts->tok),
                             mi->arch_name, &g->tmpl_detected, g->tmpl_err, sizeof g->tmpl_err))
        g->tmpl_detected = CHAT_TEMPLATE_NONE;
    special_text(opts->tok, tokenizer_bos(opts->tok), g->bos, sizeof g->bos);
    special_text(opts->tok, tokenizer_eos(opts->tok), g->eos, sizeof g->eos);

    if ((rc = gw_log_open(&g->log, &c->logging, err, errlen)) ||
        (rc = gw_metrics_create(&g->met)) || (rc = policy_limiter_create(&g->lim)) ||
        (rc = gw_domains_build(&g->dom, p, &(domain_load_opts){gw_domains_diag_to_log, g}, err,
                               errlen)))
        goto fail;
    if (!sv->tls && !sv->loopback && !sv->allow_insecure_nonloopback) {
        mg_err_set(err, errlen,
                   "gateway: plain HTTP on non-loopback address '%s' needs "
                   "server.allow_insecure_nonloopback: true",
                   sv->host);
        rc = MG_EINVAL;
        goto fail;
    }
    g->tls = sv->tls;
    if (g->tls) {
        if ((rc = read_small_file(sv->tls_cert, "server.tls_cert", &cert, err, errlen)) ||
            (rc = read_small_file(sv->tls_key, "server.tls_key", &key, err, errlen)))
            goto fail;
        if (sv->tls_client_ca) {
            if ((rc = read_small_file(sv->tls_client_ca, "server.tls_client_ca", &ca, err, errlen)))
                goto fail;
            g->client_ca = true;
        }
    }
    if ((rc = open_listener(g, sv, err, errlen)))
        goto fail;
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    g->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (g->epfd < 0 || g->wake_fd < 0) {
        mg_err_set(err, errlen, "gateway: epoll: %s", strerror(errno));
        rc = MG_EIO;
        goto fail;
    }
    struct epoll_event wev = {.events = EPOLLIN, .data.u64 = 0};
    epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->wake_fd, &wev);

    int n_threads = opts->n_threads > 0 ? opts->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > 64)
        n_threads = 64;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (g->tls)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, key},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)tls_priorities},
        {ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, ca},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem none[] = {{MHD_OPTION_END, 0, NULL}};
    g->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, g, MHD_OPTION_LISTEN_SOCKET, g->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)n_threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)sv->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)sv->max_connections_per_client, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)sv->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, g, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        g, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, g, MHD_OPTION_ARRAY, g->tls ? tls_opts : none,
        MHD_OPTION_END);
    if (!g->d) {
        mg_err_set(
            err, errlen, "gateway: the HTTP server did not start on %s%s", sv->listen,
            g->tls
                ? " (check that server.tls_cert and server.tls_key are a matching PEM certificate "
                  "and key)"
                : "");
        rc = MG_EIO;
        goto fail;
    }
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(cert);
    free(key);
    free(ca);
    cert = key = ca = NULL;
    if (pthread_create(&g->fin_thread, NULL, fin_main, g) == 0)
        g->fin_started = true;
    if (pthread_create(&g->watch_thread, NULL, watch_main, g) == 0)
        g->watch_started = true;
    if (!g->fin_started || !g->watch_started) {
        mg_err_set(err, errlen, "gateway: cannot start threads");
        rc = MG_ENOMEM;
        goto fail;
    }
    gw_log_event(g->log, POLICY_LOG_INFO, NULL,
                 "listening on %s port %d (%s%s), model '%s', %d HTTP threads", sv->host, g->port,
                 g->tls ? "TLS" : "plain HTTP", g->client_ca ? ", client certificates" : "",
                 g->model_id, n_threads);
    gw_domains_log(g, g->dom);
    policy_release(p);
    *out = g;
    return 0;
fail:
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(cert);
    free(key);
    free(ca);
    policy_release(p);
    gateway_close(g);
    return rc;
}

int gateway_port(const gateway *g)
{
    return g->port;
}

int gw_reload(gateway *g, char *err, size_t errlen)
{
    int rc = policy_store_reload(g->o.policies, err, errlen);
    if (rc) {
        atomic_fetch_add(&g->reloads_failed, 1);
        gw_log_event(g->log, POLICY_LOG_ERROR, NULL,
                     "policy reload refused, the old policy stays in force: %s", err);
        return rc;
    }
    const policy *p = policy_store_acquire(g->o.policies);
    /* the packs come with the policy: requests go on with the old pair
     * unless both are good */
    gw_domains *d = NULL;
    if ((rc = gw_domains_build(&d, p, &(domain_load_opts){gw_domains_diag_to_log, g}, err,
                               errlen))) {
        policy_release(p);
        atomic_fetch_add(&g->reloads_failed, 1);
        gw_log_event(g->log, POLICY_LOG_ERROR, NULL,
                     "policy reload refused (domain packs), the old policy stays in force: %s",
                     err);
        return rc;
    }
    gw_domains_log(g, d);
    gw_domains_swap(g, d);
    atomic_fetch_add(&g->reloads_ok, 1);
    char aerr[512] = "";
    if (g->o.adapters && gateway_load_adapters(g->o.adapters, p, aerr, sizeof aerr))
        gw_log_event(g->log, POLICY_LOG_ERROR, NULL, "policy reload: adapter not loaded: %s", aerr);
    gw_log_event(g->log, POLICY_LOG_INFO, NULL,
                 "policy reloaded (generation %llu); server address, TLS and connection limits "
                 "apply at restart",
                 (unsigned long long)policy_generation(p));
    policy_release(p);
    return 0;
}

void gateway_run(gateway *g)
{
    while (!atomic_load(&g->stop)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (policy_sighup_take()) {
            char err[512];
            gw_reload(g, err, sizeof err);
        }
    }
}

void gateway_stop(gateway *g)
{
    atomic_store(&g->stop, 1);
}

void gateway_close(gateway *g)
{
    if (!g)
        return;
    atomic_store(&g->stopping, 1);
    if (g->d) {
        /* cancel what the engine holds; their connections resume with what
         * they have and the audit thread resumes the rest: stopping the
         * daemon with a connection suspended is not allowed */
        int quiet_rounds = 0;
        for (int round = 0; round < 600 && quiet_rounds < 2; round++) {
            uint64_t ids[256];
            int n = 0;
            pthread_mutex_lock(&g->act_mu);
            for (gw_req *r = g->act_head; r && n < 256; r = r->act_next)
                if (r->serve_id)
                    ids[n++] = r->serve_id;
            bool busy = g->act_head != NULL;
            pthread_mutex_unlock(&g->act_mu);
            for (int i = 0; i < n; i++)
                serve_cancel(g->o.serve, ids[i]);
            busy = busy || atomic_load(&g->n_suspended) > 0;
            quiet_rounds = busy ? 0 : quiet_rounds + 1;
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        MHD_stop_daemon(g->d);
    }
    if (g->fin_started) {
        pthread_mutex_lock(&g->fin_mu);
        g->fin_quit = true;
        pthread_cond_signal(&g->fin_cv);
        pthread_mutex_unlock(&g->fin_mu);
        pthread_join(g->fin_thread, NULL);
    }
    if (g->watch_started) {
        uint64_t one = 1;
        if (write(g->wake_fd, &one, sizeof one) < 0)
            (void)0;
        pthread_join(g->watch_thread, NULL);
    }
    /* requests the engine still references (cancelled, callbacks pending) end on their own */
    pthread_mutex_lock(&g->act_mu);
    for (int i = 0; i < 600 && g->n_inflight > 0; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&g->act_cv, &g->act_mu, &ts);
    }
    int left = g->n_inflight;
    pthread_mutex_unlock(&g->act_mu);
    if (left > 0) {
        /* something still points at g: leaking it beats a use after free */
        gw_log_event(g->log, POLICY_LOG_ERROR, NULL,
                     "close: %d requests did not end; not freeing the gateway", left);
        return;
    }
    if (g->listen_fd >= 0)
        close(g->listen_fd);
    if (g->epfd >= 0)
        close(g->epfd);
    if (g->wake_fd >= 0)
        close(g->wake_fd);
    if (g->log && g->d)
        gw_log_event(g->log, POLICY_LOG_INFO, NULL, "stopped");
    gw_metrics_free(g->met);
    gw_log_close(g->log);
    policy_limiter_free(g->lim);
    gw_domains_release(g->dom);
    pthread_mutex_destroy(&g->dom_mu);
    pthread_mutex_destroy(&g->fin_mu);
    pthread_cond_destroy(&g->fin_cv);
    pthread_mutex_destroy(&g->act_mu);
    pthread_cond_destroy(&g->act_cv);
    free(g);
}
