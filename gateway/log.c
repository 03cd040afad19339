/* moegate gateway — log lines.
 *
 * One line per event and one per finished request, JSON (logging.format:
 * json) or key=value text, to stderr, stdout or a file (opened O_APPEND).
 * Each line is formatted in memory and written with one write(2), so lines
 * from concurrent threads never interleave.
 *
 * What a line may hold: time, level, request id, method, route, client
 * address, tenant, key id, domain, status, token counts, latency, an error
 * message the gateway wrote. Never a prompt, a completion, a header value or
 * a key: callers pass only those fields, and error messages never quote
 * request content beyond a model name.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "gateway/gateway_internal.h"

struct gw_log {
    int fd;
    bool own;
    bool json;
    policy_log_level level;
};

int gw_log_open(gw_log **out, const policy_logging *cfg, char *err, size_t errlen)
{
    gw_log *l = calloc(1, sizeof *l);
    if (!l)
        return MG_ENOMEM;
    l->json = cfg->json;
    l->level = cfg->level;
    if (!cfg->output || !strcmp(cfg->output, "stderr"))
        l->fd = 2;
    else if (!strcmp(cfg->output, "stdout"))
        l->fd = 1;
    else {
        l->fd = open(cfg->output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (l->fd < 0) {
            mg_err_set(err, errlen, "gateway: cannot open log file '%s': %s", cfg->output, strerror(errno));
            free(l);
            return MG_EIO;
        }
        l->own = true;
    }
    *out = l;
    return 0;
}

void gw_log_close(gw_log *l)
{
    if (!l)
        return;
    if (l->own)
        close(l->fd);
    free(l);
}

bool gw_log_enabled(const gw_log *l, policy_log_level lvl)
{
    return l && lvl <= l->level;
}

static const char *level_name(policy_log_level l)
{
    static const char *const n[] = {"error", "warn", "info", "debug"};
    return (unsigned)l < 4 ? n[l] : "info";
}

static void put_time(gw_buf *b)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    gw_buf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static void emit(gw_log *l, gw_buf *b)
{
    gw_buf_put(b, "\n", 1);
    if (b->oom)
        return;
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(l->fd, b->p + off, b->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere to report a failing log */
        off += (size_t)w;
    }
}

/* "key":value or key=value; s is escaped in both forms. */
static void field_s(gw_log *l, gw_buf *b, const char *k, const char *s)
{
    if (!s)
        return;
    if (l->json) {
        gw_buf_printf(b, ",\"%s\":", k);
        gw_buf_jsonz(b, s);
    } else {
        gw_buf_printf(b, " %s=", k);
        gw_buf_jsonz(b, s); /* quoted and escaped: a value never breaks the line */
    }
}

static void field_i(gw_log *l, gw_buf *b, const char *k, int64_t v)
{
    gw_buf_printf(b, l->json ? ",\"%s\":%lld" : " %s=%lld", k, (long long)v);
}

static void field_f(gw_log *l, gw_buf *b, const char *k, double v)
{
    gw_buf_printf(b, l->json ? ",\"%s\":%.3f" : " %s=%.3f", k, v);
}

static void start(gw_log *l, gw_buf *b, policy_log_level lvl)
{
    if (l->json) {
        gw_buf_puts(b, "{\"time\":\"");
        put_time(b);
        gw_buf_printf(b, "\",\"level\":\"%s\"", level_name(lvl));
    } else {
        put_time(b);
        gw_buf_printf(b, " %s", level_name(lvl));
    }
}

void gw_log_event(gw_log *l, policy_log_level lvl, const char *request_id, const char *fmt, ...)
{
    if (!gw_log_enabled(l, lvl))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gw_buf b = {0};
    start(l, &b, lvl);
    field_s(l, &b, "msg", msg);
    field_s(l, &b, "request_id", request_id);
    if (l->json)
        gw_buf_put(&b, "}", 1);
    emit(l, &b);
    gw_buf_free(&b);
}

void gw_log_req(gw_log *l, const gw_log_request *r)
{
    policy_log_level lvl = r->status >= 500 ? POLICY_LOG_WARN : POLICY_LOG_INFO;
    if (!gw_log_enabled(l, lvl))
        return;
    gw_buf b = {0};
    start(l, &b, lvl);
    field_s(l, &b, "msg", "request");
    field_s(l, &b, "request_id", r->request_id);
    field_s(l, &b, "method", r->method);
    field_s(l, &b, "path", r->path);
    field_s(l, &b, "client", r->client);
    field_s(l, &b, "tenant", r->tenant);
    field_s(l, &b, "key_id", r->key_id);
    field_s(l, &b, "domain", r->domain);
    field_i(l, &b, "status", r->status);
    if (r->prompt_tokens || r->completion_tokens) {
        field_i(l, &b, "prompt_tokens", r->prompt_tokens);
        field_i(l, &b, "completion_tokens", r->completion_tokens);
    }
    field_f(l, &b, "latency_ms", r->latency_ms);
    if (r->ttft_ms >= 0)
        field_f(l, &b, "ttft_ms", r->ttft_ms);
    if (r->stream)
        gw_buf_puts(&b, l->json ? ",\"stream\":true" : " stream=true");
    field_s(l, &b, "error", r->error);
    if (l->json)
        gw_buf_put(&b, "}", 1);
    emit(l, &b);
    gw_buf_free(&b);
}
