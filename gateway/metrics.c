/* moegate gateway — Prometheus metrics.
 *
 * Counters by (endpoint, tenant, domain, status) and token counters by
 * (tenant, domain) live in fixed open-addressing tables (label values are
 * copied: a reload may free the policy strings); histograms of latency and
 * time to first token have fixed buckets. One mutex guards the tables;
 * the histograms and the connection gauge are atomics. A table that fills
 * up (more label combinations than MAX_SERIES) counts the rest under
 * tenant "_other", so memory stays bounded whatever clients send.
 *
 * Domain events (how "auto" routed, which blocked topics were refused)
 * are counted in a third table by (kind, two labels), bounded the same way.
 *
 * Gauges that belong to other modules (engine queue and KV cache, audit
 * queue and spool) are read when /metrics is rendered.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "gateway/gateway_internal.h"

#define MAX_SERIES 1024 /* power of two */
#define LABEL_MAX  72

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5,   1,      2.5,   5,    10,    30,   60,  120};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

typedef struct series {
    bool used;
    char endpoint[32], tenant[LABEL_MAX], domain[LABEL_MAX];
    int status;
    int64_t count;
} series;

typedef struct tokens {
    bool used;
    char tenant[LABEL_MAX], domain[LABEL_MAX];
    int64_t in, out;
} tokens;

typedef struct event {
    bool used;
    int kind; /* enum gw_event */
    char a[LABEL_MAX], b[LABEL_MAX];
    int64_t count;
} event;

#define MAX_EVENTS 256 /* power of two */

typedef struct histo {
    atomic_llong b[N_BUCKETS + 1]; /* last: +Inf */
    atomic_llong count;
    _Atomic double sum;
} histo;

struct gw_metrics {
    pthread_mutex_t mu; /* guards req[] and tok[] */
    series req[MAX_SERIES];
    tokens tok[MAX_SERIES];
    event ev[MAX_EVENTS];
    histo latency, ttft;
    atomic_llong connections, connections_total;
};

int gw_metrics_create(gw_metrics **out)
{
    gw_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return MG_ENOMEM;
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return 0;
}

void gw_metrics_free(gw_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h ^ 0xff;
}

static void copy_label(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "");
}

static void observe(histo *h, double v)
{
    size_t i = 0;
    while (i < N_BUCKETS && v > buckets[i])
        i++;
    atomic_fetch_add(&h->b[i], 1);
    atomic_fetch_add(&h->count, 1);
    double old = atomic_load(&h->sum);
    while (!atomic_compare_exchange_weak(&h->sum, &old, old + v))
        ;
}

void gw_metrics_request(gw_metrics *m, const char *endpoint, const char *tenant, const char *domain,
                        int status, int64_t prompt_tokens, int64_t completion_tokens,
                        double latency_s, double ttft_s)
{
    if (!m)
        return;
    endpoint = endpoint ? endpoint : "other";
    tenant = tenant ? tenant : "";
    domain = domain ? domain : "";
    uint64_t h = fnv(fnv(fnv(0xcbf29ce484222325ull, endpoint), tenant), domain) ^
                 (uint64_t)status * 0x9e3779b97f4a7c15ull;
    pthread_mutex_lock(&m->mu);
    for (int probe = 0; probe < 2; probe++) {
        size_t i = h & (MAX_SERIES - 1);
        size_t n;
        for (n = 0; n < MAX_SERIES; n++, i = (i + 1) & (MAX_SERIES - 1)) {
            series *s = &m->req[i];
            if (!s->used) {
                if (n > MAX_SERIES / 2 && probe == 0)
                    break; /* nearly full: fold into _other */
                s->used = true;
                copy_label(s->endpoint, sizeof s->endpoint, endpoint);
                copy_label(s->tenant, sizeof s->tenant, tenant);
                copy_label(s->domain, sizeof s->domain, domain);
                s->status = status;
            }
            if (s->status == status && !strcmp(s->endpoint, endpoint) &&
                !strcmp(s->tenant, tenant) && !strcmp(s->domain, domain)) {
                s->count++;
                goto counted;
            }
        }
        tenant = "_other";
        domain = "";
        h = fnv(fnv(fnv(0xcbf29ce484222325ull, endpoint), tenant), domain) ^
            (uint64_t)status * 0x9e3779b97f4a7c15ull;
    }
counted:
    if (prompt_tokens || completion_tokens) {
        uint64_t th = fnv(fnv(0x84222325cbf29ce4ull, tenant), domain);
        size_t i = th & (MAX_SERIES - 1);
        for (size_t n = 0; n < MAX_SERIES; n++, i = (i + 1) & (MAX_SERIES - 1)) {
            tokens *t = &m->tok[i];
            if (!t->used) {
                t->used = true;
                copy_label(t->tenant, sizeof t->tenant, tenant);
                copy_label(t->domain, sizeof t->domain, domain);
            }
            if (!strcmp(t->tenant, tenant) && !strcmp(t->domain, domain)) {
                t->in += prompt_tokens;
                t->out += completion_tokens;
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (latency_s >= 0 &&
        (!strcmp(endpoint, "chat.completions") || !strcmp(endpoint, "completions")))
        observe(&m->latency, latency_s);
    if (ttft_s >= 0)
        observe(&m->ttft, ttft_s);
}

void gw_metrics_event(gw_metrics *m, enum gw_event kind, const char *a, const char *b)
{
    if (!m)
        return;
    a = a ? a : "";
    b = b ? b : "";
    pthread_mutex_lock(&m->mu);
    for (int probe = 0; probe < 2; probe++) {
        uint64_t h = fnv(fnv(0x9e3779b97f4a7c15ull ^ (uint64_t)kind, a), b);
        size_t i = h & (MAX_EVENTS - 1);
        for (size_t n = 0; n < MAX_EVENTS; n++, i = (i + 1) & (MAX_EVENTS - 1)) {
            event *e = &m->ev[i];
            if (!e->used) {
                if (n > MAX_EVENTS / 2 && probe == 0)
                    break; /* nearly full: fold into _other */
                e->used = true;
                e->kind = kind;
                copy_label(e->a, sizeof e->a, a);
                copy_label(e->b, sizeof e->b, b);
            }
            if (e->kind == (int)kind && !strcmp(e->a, a) && !strcmp(e->b, b)) {
                e->count++;
                pthread_mutex_unlock(&m->mu);
                return;
            }
        }
        b = "_other";
    }
    pthread_mutex_unlock(&m->mu);
}

void gw_metrics_connection(gw_metrics *m, int delta)
{
    if (!m)
        return;
    atomic_fetch_add(&m->connections, delta);
    if (delta > 0)
        atomic_fetch_add(&m->connections_total, delta);
}

static void render_histo(gw_buf *b, const char *name, const char *help, histo *h)
{
    gw_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    long long cum = 0;
    for (size_t i = 0; i <= N_BUCKETS; i++) {
        cum += atomic_load(&h->b[i]);
        if (i < N_BUCKETS)
            gw_buf_printf(b, "%s_bucket{le=\"%g\"} %lld\n", name, buckets[i], cum);
        else
            gw_buf_printf(b, "%s_bucket{le=\"+Inf\"} %lld\n", name, cum);
    }
    gw_buf_printf(b, "%s_sum %.6f\n%s_count %lld\n", name, atomic_load(&h->sum), name,
                  (long long)atomic_load(&h->count));
}

/* label values are policy names ([A-Za-z0-9._-]); escaped anyway */
static void label(gw_buf *b, const char *k, const char *v, bool comma)
{
    gw_buf_printf(b, "%s%s=\"", comma ? "," : "", k);
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            gw_buf_put(b, "\\", 1);
        if (*v == '\n')
            gw_buf_puts(b, "\\n");
        else
            gw_buf_put(b, v, 1);
    }
    gw_buf_put(b, "\"", 1);
}

static void gauge(gw_buf *b, const char *name, const char *help, double v)
{
    gw_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void counter(gw_buf *b, const char *name, const char *help, double v)
{
    gw_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %.17g\n", name, help, name, name, v);
}

void gw_metrics_render(gw_metrics *m, const gw_gauges *g, gw_buf *b)
{
    gw_buf_puts(b, "# HELP moegate_requests_total Finished HTTP requests by endpoint, tenant, "
                   "domain and status.\n"
                   "# TYPE moegate_requests_total counter\n");
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < MAX_SERIES; i++) {
        series *s = &m->req[i];
        if (!s->used)
            continue;
        gw_buf_puts(b, "moegate_requests_total{");
        label(b, "endpoint", s->endpoint, false);
        label(b, "tenant", s->tenant, true);
        label(b, "domain", s->domain, true);
        gw_buf_printf(b, ",status=\"%d\"} %lld\n", s->status, (long long)s->count);
    }
    gw_buf_puts(b, "# HELP moegate_tokens_total Prompt (in) and completion (out) tokens by tenant "
                   "and domain.\n"
                   "# TYPE moegate_tokens_total counter\n");
    for (size_t i = 0; i < MAX_SERIES; i++) {
        tokens *t = &m->tok[i];
        if (!t->used)
            continue;
        for (int dir = 0; dir < 2; dir++) {
            gw_buf_puts(b, "moegate_tokens_total{");
            label(b, "tenant", t->tenant, false);
            label(b, "domain", t->domain, true);
            gw_buf_printf(b, ",direction=\"%s\"} %lld\n", dir ? "out" : "in",
                          (long long)(dir ? t->out : t->in));
        }
    }
    static const struct {
        const char *name, *help, *a, *b;
    } ev_meta[] = {
        [GW_EVENT_ROUTE] =
            {"moegate_route_total",
             "model auto: the router's most likely domain (none: out of domain) and what answered "
             "(a domain, or base).",
             "best", "answered"},
        [GW_EVENT_REFUSAL] = {"moegate_refusals_total",
                              "Requests answered with a domain pack's refusal, by topic.", "domain",
                              "topic"},
    };
    for (int k = 0; k < (int)(sizeof ev_meta / sizeof ev_meta[0]); k++) {
        gw_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", ev_meta[k].name, ev_meta[k].help,
                      ev_meta[k].name);
        for (size_t i = 0; i < MAX_EVENTS; i++) {
            event *e = &m->ev[i];
            if (!e->used || e->kind != k)
                continue;
            gw_buf_printf(b, "%s{", ev_meta[k].name);
            label(b, ev_meta[k].a, e->a, false);
            label(b, ev_meta[k].b, e->b, true);
            gw_buf_printf(b, "} %lld\n", (long long)e->count);
        }
    }
    pthread_mutex_unlock(&m->mu);
    render_histo(b, "moegate_request_duration_seconds",
                 "Latency of completion requests, arrival to last byte queued.", &m->latency);
    render_histo(b, "moegate_time_to_first_token_seconds", "Arrival to the first generated text.",
                 &m->ttft);
    gauge(b, "moegate_connections", "Open client connections.",
          (double)atomic_load(&m->connections));
    counter(b, "moegate_connections_total", "Client connections accepted.",
            (double)atomic_load(&m->connections_total));
    const serve_stats *s = g->serve;
    if (s) {
        gauge(b, "moegate_queue_depth", "Requests waiting for a sequence slot.", s->waiting);
        gauge(b, "moegate_running_sequences", "Sequences generating.", s->running);
        gauge(b, "moegate_slots_total", "Sequence slots.", s->slots_total);
        counter(b, "moegate_engine_prompt_tokens_total", "Prompt tokens evaluated by the engine.",
                (double)s->prompt_tokens);
        counter(b, "moegate_engine_generated_tokens_total", "Tokens generated by the engine.",
                (double)s->generated_tokens);
        gauge(b, "moegate_kv_blocks_total", "KV cache blocks.", s->kv_blocks_total);
        gauge(b, "moegate_kv_blocks_used", "KV cache blocks held by sequences.", s->kv_blocks_used);
        gauge(b, "moegate_kv_blocks_cached", "KV cache blocks kept for prefix reuse.",
              s->kv_blocks_cached);
        gauge(b, "moegate_kv_blocks_free", "Free KV cache blocks.", s->kv_blocks_free);
        gauge(b, "moegate_kv_bytes", "Bytes of the KV cache pool.", (double)s->kv_bytes);
        counter(b, "moegate_prefix_hit_tokens_total", "Prompt tokens found in the prefix cache.",
                (double)s->prefix_hit_tokens);
    }
    const audit_stats *a = g->audit;
    if (a) {
        gauge(b, "moegate_audit_queue_depth", "Audit records queued for the writer.",
              (double)a->queue_depth);
        gauge(b, "moegate_audit_spool_bytes", "Bytes in the audit spool.", (double)a->spool_bytes);
        gauge(b, "moegate_audit_spool_records", "Audit records waiting in the spool.",
              (double)a->spool_records);
        counter(b, "moegate_audit_written_total", "Audit records committed to PostgreSQL.",
                (double)a->written);
        counter(b, "moegate_audit_failed_total", "Failed audit transactions or spool writes.",
                (double)a->failed);
        gauge(b, "moegate_audit_connected", "1 when the audit writer is connected to PostgreSQL.",
              a->connected);
    }
    gauge(b, "moegate_adapters_loaded", "LoRA adapters in the registry.", g->adapters);
    gauge(b, "moegate_policy_generation", "Generation of the policy in force.",
          (double)g->policy_generation);
    counter(b, "moegate_policy_reloads_total", "Successful policy reloads.", (double)g->reloads_ok);
    counter(b, "moegate_policy_reload_failures_total", "Refused policy reloads.",
            (double)g->reloads_failed);
}
