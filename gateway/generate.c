/* moegate gateway — chat and text completions.
 *
 * gw_generate_start runs on an HTTP thread once the body is in, and goes
 * straight down the checks, each answering with OpenAI's error object and
 * the right status when it fails:
 *
 *   role user (403) -> body (400, naming the field) -> model name: the base
 *   model or a domain (404 unknown, 403 not allowed) -> audit writable when
 *   the policy rejects unaudited work (503) -> input redaction (400 when a
 *   blocking rule matches) -> chat template and tokens (400) -> max_tokens
 *   (the tenant's cap; 400 when the context cannot hold it) -> rate limits
 *   (429 with Retry-After) -> the adapter (503 when not loaded) -> the
 *   engine (503 when its queue is full).
 *
 * Then the request is in the engine. The engine's callback (scheduler
 * thread; must not block) appends text to r->out under r->mu and resumes
 * the connection when the HTTP side waits for it: at every piece of text
 * for a stream, at the end otherwise. Output redaction runs on the HTTP
 * thread: policy_redact on the whole answer, or policy_redact_stream on a
 * stream, so the scheduler thread only copies bytes.
 *
 * finish_reason: a stop string, stop token or end-of-turn token is "stop";
 * max_tokens or the context is "length". A deadline (server.limits.
 * request_timeout_s) that passes is 504 (an error event on a stream); an
 * engine error is 500; a client that left is cancelled and gets nothing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "core/errors.h"
#include "gateway/gateway_internal.h"

static enum chat_template policy_template(gateway *g, policy_chat_template t)
{
    switch (t) {
    case POLICY_TEMPLATE_QWEN3: return CHAT_QWEN3;
    case POLICY_TEMPLATE_CHATML: return CHAT_CHATML;
    case POLICY_TEMPLATE_DEEPSEEK3: return CHAT_DEEPSEEK3;
    case POLICY_TEMPLATE_MISTRAL: return CHAT_MISTRAL;
    case POLICY_TEMPLATE_QWEN2: return CHAT_QWEN2;
    case POLICY_TEMPLATE_DEEPSEEK_R1: return CHAT_DEEPSEEK_R1;
    case POLICY_TEMPLATE_MISTRAL_LEGACY: return CHAT_MISTRAL_LEGACY;
    default: return g->tmpl_detected;
    }
}

/* ---- the engine's callback (scheduler thread) ------------------------------------------- */

static void on_text(void *ud, const char *text, size_t len, int32_t token, enum serve_finish f)
{
    gw_req *r = ud;
    pthread_mutex_lock(&r->mu);
    if (len) {
        if (r->out_len + len > r->out_cap) {
            size_t cap = r->out_cap ? r->out_cap : 256;
            while (cap < r->out_len + len)
                cap *= 2;
            char *p = realloc(r->out, cap);
            if (p) {
                r->out = p;
                r->out_cap = cap;
            }
        }
        if (r->out_len + len <= r->out_cap) {
            memcpy(r->out + r->out_len, text, len);
            r->out_len += len;
        }
    }
    if (f == SERVE_RUNNING) {
        r->n_completion++;
        if (r->t_first == 0)
            r->t_first = gw_now();
    } else {
        r->finished = true;
        r->finish = f;
        r->in_engine = false;
    }
    if (f != SERVE_RUNNING || (r->preq.stream && len))
        gw_req_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
    if (f != SERVE_RUNNING) {
        gw_req_untrack(r);
        gw_req_release(r);
    }
}

/* ---- response shapes ------------------------------------------------------------------------ */

static bool is_chat(const gw_req *r)
{
    return r->route == GW_R_CHAT;
}

static long long created(const gw_req *r)
{
    return (long long)(r->received_us / 1000000);
}

/* The implicit content label (GB 45438-2025 metadata fields): what the
 * response carries in its "AIGC" field and X-AIGC-Label header. */
static void put_aigc(const gw_req *r, gw_buf *b)
{
    const policy_content_labels *cl = &policy_get_config(r->pol)->content_labels;
    gw_buf_puts(b, "{\"Label\":\"1\",\"ContentProducer\":");
    gw_buf_jsonz(b, cl->provider_code ? cl->provider_code : cl->provider);
    gw_buf_printf(b, ",\"ProduceID\":\"%s\"}", r->id);
}

static const char *domain_name_at(const gw_req *r, int i)
{
    return i >= 0 ? policy_get_config(r->pol)->domains[i].name : NULL;
}

/* ,"route":{domain, best, score[, above_threshold, tenant_denied]} of model "auto";
 * the audit record gets the two flags as well. */
static void put_route(const gw_req *r, gw_buf *b, bool for_audit)
{
    gw_buf_puts(b, ",\"route\":{\"domain\":");
    gw_buf_jsonz(b, domain_name_at(r, r->rt.domain));
    gw_buf_puts(b, ",\"best\":");
    gw_buf_jsonz(b, domain_name_at(r, r->rt.best));
    gw_buf_printf(b, ",\"score\":%.4f", r->rt.score);
    if (for_audit)
        gw_buf_printf(b, ",\"above_threshold\":%s,\"tenant_denied\":%s",
                      r->rt.above ? "true" : "false", r->rt.denied ? "true" : "false");
    gw_buf_puts(b, "}");
}

static void put_head(gw_req *r, gw_buf *b, bool chunk)
{
    gw_buf_printf(b, "{\"id\":\"%s%s\",\"object\":\"%s\",\"created\":%lld,\"model\":",
                  is_chat(r) ? "chatcmpl-" : "cmpl-", r->id,
                  is_chat(r) ? (chunk ? "chat.completion.chunk" : "chat.completion")
                             : "text_completion",
                  created(r));
    gw_buf_jsonz(b, r->model_name);
    if (r->routed)
        put_route(r, b, false);
    if (policy_get_config(r->pol)->content_labels.enabled) {
        gw_buf_puts(b, ",\"AIGC\":");
        put_aigc(r, b);
    }
}

/* Valid UTF-8 s[0..n) with every non-ASCII character as a \\uXXXX escape
 * (a JSON text stays the same JSON text, now fit for a header). */
static void put_ascii(gw_buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        if (c < 0x80) {
            gw_buf_put(b, s + i, 1);
            i++;
            continue;
        }
        int k = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
        uint32_t u = c & (0x3fu >> k);
        for (int j = 1; j <= k && i + (size_t)j < n; j++)
            u = (u << 6) | (p[i + (size_t)j] & 0x3f);
        i += (size_t)k + 1;
        if (u >= 0x10000) {
            u -= 0x10000;
            gw_buf_printf(b, "\\u%04x\\u%04x", 0xd800 + (u >> 10), 0xdc00 + (u & 0x3ff));
        } else
            gw_buf_printf(b, "\\u%04x", u);
    }
}

void gw_generate_headers(gw_req *r, struct MHD_Response *resp)
{
    if (r->status != 200 || !r->parsed)
        return;
    if (policy_get_config(r->pol)->content_labels.enabled) {
        gw_buf a = {0}, h = {0};
        put_aigc(r, &a);
        if (a.p)
            put_ascii(&h, a.p, a.len);
        if (h.p && !h.oom && !a.oom)
            MHD_add_response_header(resp, "X-AIGC-Label", h.p);
        gw_buf_free(&a);
        gw_buf_free(&h);
    }
    if (r->routed) {
        char v[200];
        const char *d = domain_name_at(r, r->rt.domain);
        snprintf(v, sizeof v, "%s; score=%.4f", d ? d : "none", r->rt.score);
        MHD_add_response_header(resp, "x-moegate-route", v);
    }
}

/* What is added around a domain's answer: the explicit content label (at
 * the start or the end) and the disclaimer (at the end, model answers only). */
static const char *explicit_label(const gw_req *r, bool start)
{
    const policy_content_labels *cl = &policy_get_config(r->pol)->content_labels;
    if (!cl->enabled || cl->explicit_at_start != start)
        return NULL;
    return cl->explicit_text[r->lang == DOMAIN_ZH ? 0 : 1];
}

static void answer_prefix(const gw_req *r, gw_buf *b)
{
    const char *l = explicit_label(r, true);
    if (l)
        gw_buf_printf(b, "%s\n\n", l);
}

static void answer_suffix(const gw_req *r, gw_buf *b, bool model_answer)
{
    const char *d =
        model_answer && r->pack && r->pack->pack ? r->pack->pack->disclaimer[r->lang] : NULL;
    if (d && !*d)
        d = NULL;
    if (d)
        gw_buf_printf(b, "\n\n%s", d);
    const char *l = explicit_label(r, false);
    if (l)
        gw_buf_printf(b, "\n\n%s", l);
}

static void put_usage(gw_req *r, gw_buf *b, int64_t n_completion)
{
    gw_buf_printf(
        b, "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}",
        (long long)r->n_prompt, (long long)n_completion, (long long)(r->n_prompt + n_completion));
}

static const char *finish_name(const gw_req *r, enum serve_finish f)
{
    return r->blocked ? "content_filter" : f == SERVE_LENGTH ? "length" : "stop";
}

/* One SSE event with a piece of content, or the final one (finish != NULL). */
static void put_chunk(gw_req *r, const char *text, size_t len, const char *finish, bool role)
{
    gw_buf *b = &r->sse;
    gw_buf_puts(b, "data: ");
    put_head(r, b, true);
    if (is_chat(r)) {
        gw_buf_puts(b, ",\"choices\":[{\"index\":0,\"delta\":{");
        if (role)
            gw_buf_puts(b, "\"role\":\"assistant\",\"content\":\"\"");
        else if (!finish) {
            gw_buf_puts(b, "\"content\":");
            gw_buf_json(b, text, len);
        }
        gw_buf_puts(b, "},\"logprobs\":null,\"finish_reason\":");
    } else {
        gw_buf_puts(b, ",\"choices\":[{\"text\":");
        gw_buf_json(b, text, len);
        gw_buf_puts(b, ",\"index\":0,\"logprobs\":null,\"finish_reason\":");
    }
    gw_buf_jsonz(b, finish);
    gw_buf_puts(b, "}]");
    if (r->preq.include_usage)
        gw_buf_puts(b, ",\"usage\":null");
    gw_buf_puts(b, "}\n\n");
}

static void sse_text(gw_req *r, const char *raw, size_t raw_len, bool final)
{
    /* the engine emits bytes a model never completed into a character as
     * they are: made valid here, so redaction and the audit see UTF-8 */
    gw_buf clean = {0};
    gw_buf_utf8(&clean, raw, raw_len);
    const char *text = clean.p ? clean.p : "";
    size_t len = clean.len;
    const char *send = text;
    size_t n = len;
    char *owned = NULL;
    if (r->red) {
        policy_redact_result res;
        char err[256];
        if (policy_redact_stream(r->red, text, len, final, &res, err, sizeof err) == 0) {
            owned = res.text;
            send = res.text;
            n = res.len;
        } else {
            /* fail closed: a scan that cannot finish releases nothing */
            send = "";
            n = 0;
            r->sse_error = true;
            gw_req_error(r, 500, "redaction_failed", NULL,
                         "the answer could not be checked against the redaction rules");
        }
    }
    if (n) {
        gw_buf_put(&r->completion, send, n);
        put_chunk(r, send, n, NULL, false);
    }
    free(owned);
    gw_buf_free(&clean);
}

/* The error (deadline, engine error) that ended a generation, or 0. */
static int finish_error(gw_req *r, enum serve_finish f)
{
    if (f == SERVE_CANCELLED) {
        if (atomic_load(&r->peer_closed))
            gw_req_error(r, 499, "client_closed_request", NULL, "the client closed the connection");
        else if (atomic_load(&r->g->stopping))
            gw_req_error(r, 503, "shutting_down", NULL, "the server is shutting down");
        else
            gw_req_error(r, 504, "request_timeout", NULL,
                         "the request exceeded its deadline of %d s",
                         policy_get_config(r->pol)->server.request_timeout_s);
        return r->status;
    }
    if (f == SERVE_ERROR) {
        gw_req_error(r, 500, "engine_error", NULL, "the engine failed while generating");
        return 500;
    }
    return 0;
}

static void sse_error_event(gw_req *r)
{
    gw_buf_puts(&r->sse, "data: ");
    gw_encode_error(&r->sse, r->err_msg, gw_error_type(r->status), NULL, r->err_code);
    gw_buf_puts(&r->sse, "\n\n");
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    gw_req *r = cls;
    for (;;) {
        if (r->sse.oom)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (r->sse_off < r->sse.len) {
            size_t n = r->sse.len - r->sse_off;
            if (n > max)
                n = max;
            memcpy(buf, r->sse.p + r->sse_off, n);
            r->sse_off += n;
            if (r->sse_off == r->sse.len)
                r->sse_off = r->sse.len = 0;
            return (ssize_t)n;
        }
        if (r->sse_phase == 3)
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&r->mu);
        if (r->sse_phase == 0) {
            if (r->out_len) {
                char *text = r->out;
                size_t len = r->out_len;
                r->out = NULL;
                r->out_len = r->out_cap = 0;
                pthread_mutex_unlock(&r->mu);
                sse_text(r, text, len, false);
                free(text);
                continue;
            }
            if (r->finished) {
                enum serve_finish f = r->finish;
                pthread_mutex_unlock(&r->mu);
                sse_text(r, "", 0, true); /* what redaction still held */
                if (!r->sse_error)
                    finish_error(r, f);
                if (r->status < 400) {
                    gw_buf tail = {0};
                    answer_suffix(r, &tail, true);
                    if (tail.len) {
                        gw_buf_put(&r->completion, tail.p, tail.len);
                        put_chunk(r, tail.p, tail.len, NULL, false);
                    }
                    gw_buf_free(&tail);
                }
                r->sse_phase = 1;
                r->state = GW_AUDITING;
                gw_req_audit(r);
                continue;
            }
            gw_req_suspend_locked(r);
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        /* phase 1: the audit record */
        if (!r->audit_done) {
            gw_req_suspend_locked(r);
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        bool failed = r->audit_failed;
        enum serve_finish f = r->finish;
        int64_t n_completion = r->n_completion;
        pthread_mutex_unlock(&r->mu);
        if (failed && policy_get_config(r->pol)->audit.on_failure == POLICY_AUDIT_REJECT)
            gw_req_error(r, 503, "audit_unavailable", NULL,
                         "the request could not be recorded in the audit log");
        if (r->status >= 400) {
            sse_error_event(r);
        } else {
            put_chunk(r, "", 0, finish_name(r, f), false);
            if (r->preq.include_usage) {
                gw_buf_puts(&r->sse, "data: ");
                put_head(r, &r->sse, true);
                gw_buf_puts(&r->sse, ",\"choices\":[],");
                put_usage(r, &r->sse, n_completion);
                gw_buf_puts(&r->sse, "}\n\n");
            }
        }
        gw_buf_puts(&r->sse, "data: [DONE]\n\n");
        r->sse_phase = 3;
        r->state = GW_DONE;
    }
}

/* The JSON body of a finished non-streaming generation. */
static void json_response(gw_req *r, const char *text, size_t len, enum serve_finish f,
                          int64_t n_completion)
{
    gw_buf *b = &r->resp;
    gw_buf_free(b);
    put_head(r, b, false);
    if (is_chat(r)) {
        gw_buf_puts(b,
                    ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
        gw_buf_json(b, text, len);
        /* a blocked topic: the pack's refusal, also where OpenAI clients look for one */
        const char *refusal = r->blocked ? r->blocked->refusal[r->lang] : NULL;
        gw_buf_puts(b, ",\"refusal\":");
        gw_buf_jsonz(b, refusal);
        gw_buf_puts(b, "},\"logprobs\":null,\"finish_reason\":");
    } else {
        gw_buf_puts(b, ",\"choices\":[{\"text\":");
        gw_buf_json(b, text, len);
        gw_buf_puts(b, ",\"index\":0,\"logprobs\":null,\"finish_reason\":");
    }
    gw_buf_jsonz(b, finish_name(r, f));
    gw_buf_puts(b, "}],");
    put_usage(r, b, n_completion);
    gw_buf_puts(b, "}");
}

enum MHD_Result gw_generate_resume(gw_req *r)
{
    pthread_mutex_lock(&r->mu);
    if (!r->finished) {
        gw_req_suspend_locked(r);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    char *text = r->out;
    size_t len = r->out_len;
    r->out = NULL;
    r->out_len = r->out_cap = 0;
    enum serve_finish f = r->finish;
    int64_t n_completion = r->n_completion;
    pthread_mutex_unlock(&r->mu);
    gw_buf clean = {0};
    gw_buf_utf8(&clean, text ? text : "", len);
    free(text);
    text = gw_buf_take(&clean, &len);
    if (!text) {
        gw_req_error(r, 500, "internal_error", NULL, "out of memory");
        f = SERVE_RUNNING;
    }
    if (f != SERVE_RUNNING && !finish_error(r, f)) {
        if (r->red) {
            policy_redact_result res;
            char err[256];
            if (policy_redact(r->red, POLICY_OUTPUT, text ? text : "", len, &res, err,
                              sizeof err) == 0) {
                free(text);
                text = res.text;
                len = res.len;
            } else {
                gw_req_error(r, 500, "redaction_failed", NULL,
                             "the answer could not be checked against the redaction rules");
            }
        }
        if (r->status < 400) {
            answer_prefix(r, &r->completion);
            gw_buf_put(&r->completion, text ? text : "", len);
            answer_suffix(r, &r->completion, true);
            json_response(r, r->completion.p ? r->completion.p : "", r->completion.len, f,
                          n_completion);
        }
    }
    free(text);
    return gw_req_finish_audited(r);
}

/* ---- the checks, in order ----------------------------------------------------------------------
 */

/* Charges the rate limiter for one request that may use `tokens` tokens;
 * false: refused (error set: 400 when `tokens` exceeds a per-minute token
 * limit, 429 with Retry-After otherwise). */
static bool admit(gw_req *r, int64_t tokens)
{
    policy_admission adm;
    int rc = policy_limiter_admit(r->g->lim, r->tenant, r->key, tokens, policy_now_ns(), &adm);
    if (rc == MG_ERANGE) {
        gw_req_error(r, 400, "tokens_exceed_limit", "max_tokens",
                     "%lld prompt + max tokens exceed a tokens-per-minute limit; lower max_tokens",
                     (long long)tokens);
        return false;
    }
    if (rc || !adm.admitted) {
        r->retry_after = rc ? 1 : adm.retry_after_s;
        gw_req_error(r, 429, "rate_limit_exceeded", NULL,
                     "rate limit reached (%s); retry after %.0f s", rc ? "limiter" : adm.limit,
                     ceil(r->retry_after));
        return false;
    }
    r->admitted = true;
    r->reserved = tokens;
    return true;
}

/* Answers what was decided before the engine (an error, a refusal):
 * audited like every answer. */
static enum MHD_Result refuse(gw_req *r)
{
    return gw_req_finish_audited(r);
}

/* Input redaction over every message (or the prompt), in place. false: refused (error set). */
static bool redact_input(gw_req *r)
{
    const policy_config *c = policy_get_config(r->pol);
    const policy_detectors *det = r->pack ? r->pack->det : NULL;
    if (c->n_redaction_rules == 0 && !det)
        return true;
    if (policy_redaction_create_ex(&r->red, r->pol, det)) {
        gw_req_error(r, 500, "internal_error", NULL, "out of memory");
        return false;
    }
    size_t n = is_chat(r) ? r->preq.n_messages : 1;
    for (size_t i = 0; i < n; i++) {
        char **text = is_chat(r) ? (char **)&r->preq.messages[i].content : &r->preq.prompt;
        if (!*text)
            continue;
        policy_redact_result res;
        char err[256];
        if (policy_redact(r->red, POLICY_INPUT, *text, strlen(*text), &res, err, sizeof err)) {
            gw_req_error(r, 400, "redaction_failed", NULL,
                         "the request could not be checked against the redaction rules");
            return false;
        }
        if (res.blocked) {
            free(res.text);
            gw_req_error(r, 400, "blocked_by_policy", is_chat(r) ? "messages" : "prompt",
                         "the request contains data the policy does not allow (rule '%s')",
                         res.blocked_by);
            return false;
        }
        free(*text);
        *text = res.text;
    }
    return true;
}

/* The prompt's tokens; r->prompt_text keeps the text the model sees. */
static bool encode_prompt(gw_req *r, tokenizer_ids *ids)
{
    gateway *g = r->g;
    char err[512];
    if (is_chat(r)) {
        enum chat_template t = policy_template(g, policy_get_config(r->pol)->model.chat_template);
        if (t == CHAT_TEMPLATE_NONE) {
            gw_req_error(
                r, 500, "no_chat_template", NULL,
                "this model has no chat template the server knows; set model.chat_template in the "
                "policy (%s)",
                g->tmpl_err);
            return false;
        }
        chat_request cr = {.messages = r->preq.messages,
                           .n_messages = r->preq.n_messages,
                           .add_generation_prompt = true,
                           .enable_thinking = -1,
                           .bos = g->bos,
                           .eos = g->eos};
        chat_prompt cp = {0};
        if (chat_render(t, &cr, &cp, err, sizeof err)) {
            chat_prompt_free(&cp);
            gw_req_error(r, 400, "invalid_messages", "messages", "%s", err);
            return false;
        }
        int rc = tokenizer_encode_chat(g->o.tok, cp.text, cp.len, cp.plain, cp.n_plain, ids);
        r->prompt_text = cp.text;
        r->prompt_len = cp.len;
        cp.text = NULL;
        chat_prompt_free(&cp);
        if (rc) {
            gw_req_error(r, 500, "internal_error", NULL, "tokenizer: %s", mg_err_name(rc));
            return false;
        }
    } else {
        size_t n = strlen(r->preq.prompt);
        if (tokenizer_encode(g->o.tok, r->preq.prompt, n, TOKENIZER_ADD_SPECIAL, ids)) {
            gw_req_error(r, 500, "internal_error", NULL, "out of memory");
            return false;
        }
        r->prompt_text = r->preq.prompt;
        r->prompt_len = n;
        r->preq.prompt = NULL;
    }
    if (ids->n == 0) {
        gw_req_error(r, 400, "empty_prompt", is_chat(r) ? "messages" : "prompt",
                     "the prompt is empty");
        return false;
    }
    return true;
}

/* The text a request is about: its last user message, or the prompt. */
static const char *request_text(const gw_req *r)
{
    if (!is_chat(r))
        return r->preq.prompt ? r->preq.prompt : "";
    for (size_t i = r->preq.n_messages; i-- > 0;)
        if (r->preq.messages[i].role && !strcmp(r->preq.messages[i].role, "user") &&
            r->preq.messages[i].content)
            return r->preq.messages[i].content;
    return "";
}

static void use_domain(gw_req *r, int i, const policy_adapter *a)
{
    r->domain = policy_get_config(r->pol)->domains[i].name;
    r->pack = &r->dom->dom[i];
    r->adapter = a ? a->name : NULL;
    r->adapter_sha256 = a ? a->sha256_hex : NULL;
}

/* model "auto": the router picks a domain the tenant may use, or the base model. */
static bool route_auto(gw_req *r)
{
    const char *text = request_text(r);
    if (!r->dom->router) {
        gw_req_error(
            r, 404, "model_not_found", "model",
            "the model 'auto' is not available: no domain of this server has a domain pack");
        return false;
    }
    if (gw_domains_route(r->dom, r->tenant, text, strlen(text), &r->rt)) {
        gw_req_error(r, 500, "internal_error", NULL, "out of memory");
        return false;
    }
    r->routed = true;
    gw_metrics_event(r->g->met, GW_EVENT_ROUTE,
                     r->rt.best >= 0 ? domain_name_at(r, r->rt.best) : "none",
                     r->rt.domain >= 0 ? domain_name_at(r, r->rt.domain) : "base");
    if (r->rt.domain >= 0) {
        use_domain(r, r->rt.domain, r->dom->dom[r->rt.domain].adapter);
        snprintf(r->model_name, sizeof r->model_name, "%s", r->domain);
    } else
        snprintf(r->model_name, sizeof r->model_name, "%s", r->g->model_id);
    return true;
}

/* The model name: the base model, "auto", a domain the tenant may use, or
 * DOMAIN@VERSION pinning one of the domain's adapter versions. */
static bool resolve_model(gw_req *r)
{
    gateway *g = r->g;
    const char *m = r->preq.model;
    snprintf(r->model_name, sizeof r->model_name, "%s", m);
    if (!strcmp(m, g->model_id))
        return true;
    if (!strcmp(m, "auto"))
        return route_auto(r);
    char name[260];
    const char *at = strchr(m, '@');
    snprintf(name, sizeof name, "%.*s", (int)(at ? (size_t)(at - m) : strlen(m)), m);
    int di = gw_domains_index(r->dom, name);
    if (di < 0) {
        gw_req_error(r, 404, "model_not_found", "model",
                     "the model '%.200s' does not exist or you do not have access to it", m);
        return false;
    }
    const policy_domain *d = &policy_get_config(r->pol)->domains[di];
    if (!policy_tenant_allows_domain(r->tenant, d->name)) {
        gw_req_error(r, 403, "model_not_allowed", "model", "tenant '%s' may not use the model '%s'",
                     r->tenant->id, d->name);
        return false;
    }
    const policy_adapter *a = r->dom->dom[di].adapter;
    if (at) {
        a = at[1] ? policy_domain_adapter(r->pol, d, at + 1) : NULL;
        if (!a) {
            gw_req_error(
                r, 404, "model_not_found", "model",
                "the model '%.200s' does not exist: domain '%s' has no adapter version '%.80s'", m,
                d->name, at + 1);
            return false;
        }
    }
    use_domain(r, di, a);
    return true;
}

/* The domain's system prompt, in the request's language, before the
 * client's own system message (one message: every template takes one). */
static bool add_system_prompt(gw_req *r)
{
    if (!is_chat(r) || !r->pack || !r->pack->pack)
        return true;
    const domain_pack *p = r->pack->pack;
    const char *sp =
        p->system_prompt[r->lang] ? p->system_prompt[r->lang] : p->system_prompt[!r->lang];
    if (!sp || !*sp)
        return true;
    gateway_request *q = &r->preq;
    /* a template with no system role (the original Mixtral one): the
     * prompt opens the first user turn, as Mistral's later templates put
     * a system message there */
    bool fold = policy_template(r->g, policy_get_config(r->pol)->model.chat_template) ==
                CHAT_MISTRAL_LEGACY;
    if (q->n_messages && q->messages[0].role &&
        !strcmp(q->messages[0].role, fold ? "user" : "system")) {
        const char *own = q->messages[0].content ? q->messages[0].content : "";
        size_t n = strlen(sp) + 2 + strlen(own) + 1;
        char *c = malloc(n);
        if (!c)
            goto oom;
        snprintf(c, n, "%s%s%s", sp, *own ? "\n\n" : "", own);
        free((void *)q->messages[0].content);
        q->messages[0].content = c;
        return true;
    }
    chat_message *m = realloc(q->messages, sizeof *m * (q->n_messages + 1));
    if (!m)
        goto oom;
    q->messages = m;
    char *role = strdup("system"), *content = strdup(sp);
    if (!role || !content) {
        free(role);
        free(content);
        goto oom;
    }
    memmove(m + 1, m, sizeof *m * q->n_messages);
    memset(m, 0, sizeof *m);
    m[0].role = role;
    m[0].content = content;
    q->n_messages++;
    return true;
oom:
    gw_req_error(r, 500, "internal_error", NULL, "out of memory");
    return false;
}

/* What the audit record keeps beside the sampling parameters: how the
 * model name was resolved and which guardrails acted. */
static void put_resolution(gw_req *r, gw_buf *b)
{
    gw_buf_puts(b, "\"requested_model\":");
    gw_buf_jsonz(b, r->preq.model);
    if (r->routed)
        put_route(r, b, true);
    if (r->pack && r->pack->pack) {
        gw_buf_puts(b, ",\"pack\":");
        gw_buf_jsonz(b, r->pack->pack->name);
        gw_buf_printf(b, ",\"lang\":\"%s\"", r->lang == DOMAIN_ZH ? "zh" : "en");
    }
    if (r->blocked) {
        gw_buf_puts(b, ",\"blocked_topic\":");
        gw_buf_jsonz(b, r->blocked->name);
    }
}

static void set_sampling_json(gw_req *r, const char *params)
{
    gw_buf b = {0};
    gw_buf_puts(&b, "{");
    if (params)
        gw_buf_printf(&b, "%s,", params);
    put_resolution(r, &b);
    gw_buf_puts(&b, "}");
    if (b.p && !b.oom && b.len < sizeof r->sampling_json)
        memcpy(r->sampling_json, b.p, b.len + 1);
    else
        snprintf(r->sampling_json, sizeof r->sampling_json, "{%s}", params ? params : "");
    gw_buf_free(&b);
}

/* A blocked topic: the pack's refusal is the answer, without the model. */
static enum MHD_Result answer_refusal(gw_req *r)
{
    const char *text = r->blocked->refusal[r->lang]; /* both languages are required by the loader */
    if (!text)
        text = "";
    answer_prefix(r, &r->completion);
    gw_buf_puts(&r->completion, text);
    answer_suffix(r, &r->completion, false);
    set_sampling_json(r, NULL);
    r->status = 200;
    const char *c = r->completion.p ? r->completion.p : "";
    size_t n = r->completion.len;
    if (!r->preq.stream)
        json_response(r, c, n, SERVE_STOP, 0);
    else {
        if (is_chat(r))
            put_chunk(r, NULL, 0, NULL, true);
        put_chunk(r, c, n, NULL, false);
        put_chunk(r, "", 0, finish_name(r, SERVE_STOP), false);
        if (r->preq.include_usage) {
            gw_buf_puts(&r->sse, "data: ");
            put_head(r, &r->sse, true);
            gw_buf_puts(&r->sse, ",\"choices\":[],");
            put_usage(r, &r->sse, 0);
            gw_buf_puts(&r->sse, "}\n\n");
        }
        gw_buf_puts(&r->sse, "data: [DONE]\n\n");
        gw_buf_free(&r->resp);
        r->resp = r->sse;
        memset(&r->sse, 0, sizeof r->sse);
    }
    return refuse(r);
}

enum MHD_Result gw_generate_start(gw_req *r)
{
    gateway *g = r->g;
    const policy_config *c = policy_get_config(r->pol);
    r->endpoint = is_chat(r) ? "chat.completions" : "completions";
    if (atomic_load(&g->stopping)) {
        gw_req_error(r, 503, "shutting_down", NULL, "the server is shutting down");
        return refuse(r);
    }
    if (!gw_auth_role(r, POLICY_ROLE_USER, is_chat(r) ? "chat completions" : "completions"))
        return refuse(r);
    char err[512];
    if (gateway_request_parse(&r->preq, is_chat(r) ? GATEWAY_CHAT : GATEWAY_COMPLETION, r->body,
                              r->body_len, err, sizeof err)) {
        gw_req_error(r, 400, "invalid_request", r->preq.err_param, "%s", err);
        return refuse(r);
    }
    r->parsed = true;
    free(r->body);
    r->body = NULL;
    if (!resolve_model(r))
        return refuse(r);
    if (g->o.audit && c->audit.on_failure == POLICY_AUDIT_REJECT && !audit_writable(g->o.audit)) {
        gw_req_error(r, 503, "audit_unavailable", NULL,
                     "the audit log is not writable; requests are refused");
        return refuse(r);
    }
    {
        const char *t = request_text(r);
        r->lang = domain_detect_lang(t, strlen(t));
        if (r->pack && r->pack->pack &&
            (r->blocked = domain_blocked_topic(r->pack->pack, t, strlen(t)))) {
            /* a refusal costs no tokens but counts as a request */
            if (!admit(r, 0)) {
                r->blocked = NULL;
                return refuse(r);
            }
            gw_metrics_event(g->met, GW_EVENT_REFUSAL, r->domain, r->blocked->name);
            return answer_refusal(r);
        }
    }
    if (!redact_input(r) || !add_system_prompt(r))
        return refuse(r);
    tokenizer_ids ids = {0};
    if (!encode_prompt(r, &ids)) {
        tokenizer_ids_free(&ids);
        return refuse(r);
    }
    r->n_prompt = (int64_t)ids.n;

    /* max_tokens: asked for (or the endpoint's default), capped by the tenant */
    int64_t room = g->n_ctx - r->n_prompt;
    int64_t mt = r->preq.max_tokens > 0 ? r->preq.max_tokens : is_chat(r) ? room : 16;
    const domain_pack *pk = r->pack ? r->pack->pack : NULL;
    if (pk && r->preq.max_tokens <= 0)
        mt = pk->default_max_tokens;
    if (pk && mt > pk->max_tokens)
        mt = pk->max_tokens;
    if (r->tenant->max_tokens > 0 && mt > r->tenant->max_tokens)
        mt = r->tenant->max_tokens;
    if (r->preq.max_tokens <= 0 && mt > room)
        mt = room;
    if (r->preq.max_tokens <= 0) {
        /* no max_tokens: at most what the KV pool could ever hold beside
         * the prompt (the engine reserves prompt + max_tokens up front) */
        serve_stats ss;
        serve_get_stats(g->o.serve, &ss);
        int64_t pool_room = (int64_t)ss.kv_blocks_total * ss.block_tokens - r->n_prompt;
        if (mt > pool_room)
            mt = pool_room;
    }
    if (mt < 1 || mt > room) {
        gw_req_error(
            r, 400, "context_length_exceeded", r->preq.max_tokens > 0 ? "max_tokens" : "messages",
            "this model's context is %d tokens; the prompt has %lld and %lld more were asked for",
            g->n_ctx, (long long)r->n_prompt, (long long)(mt < 1 ? 1 : mt));
        tokenizer_ids_free(&ids);
        return refuse(r);
    }
    r->max_tokens = mt;

    /* rate limits: the prompt and the most this request may generate */
    if (!admit(r, r->n_prompt + mt)) {
        tokenizer_ids_free(&ids);
        return refuse(r);
    }

    /* sampling */
    serve_params sp = {0};
    sp.sampling = sampler_defaults();
    if (pk && !r->preq.has_temperature)
        r->preq.temperature = pk->temperature;
    if (pk && !r->preq.has_top_p)
        r->preq.top_p = pk->top_p;
    sp.sampling.temperature = (float)r->preq.temperature;
    sp.sampling.top_p = (float)r->preq.top_p;
    if (r->preq.top_p <= 0) { /* top_p 0 keeps only the most likely token */
        sp.sampling.temperature = 0;
        sp.sampling.top_p = 1;
    }
    sp.sampling.top_k = 0;
    sp.sampling.min_p = 0;
    sp.sampling.repeat_penalty = 1;
    sp.sampling.presence_penalty = (float)r->preq.presence_penalty;
    sp.sampling.frequency_penalty = (float)r->preq.frequency_penalty;
    sp.sampling.repeat_last_n = -1;
    uint64_t seed = (uint64_t)r->preq.seed;
    if (!r->preq.has_seed && RAND_bytes((unsigned char *)&seed, sizeof seed) != 1)
        seed = (uint64_t)r->received_us;
    sp.sampling.seed = seed;
    sp.max_tokens = (int)mt;
    sp.stop = (const char *const *)r->preq.stop;
    sp.n_stop = r->preq.n_stop;
    sp.deadline = gw_now() + c->server.request_timeout_s;
    char params[512];
    snprintf(
        params, sizeof params,
        "\"temperature\":%g,\"top_p\":%g,\"max_tokens\":%lld,\"seed\":%llu,\"presence_penalty\":%g,"
        "\"frequency_penalty\":%g,\"stop\":%zu,\"stream\":%s",
        r->preq.temperature, r->preq.top_p, (long long)mt, (unsigned long long)seed,
        r->preq.presence_penalty, r->preq.frequency_penalty, r->preq.n_stop,
        r->preq.stream ? "true" : "false");
    set_sampling_json(r, params);
    model_lora *lora = NULL;
    if (r->adapter) {
        lora = g->o.adapters ? lora_registry_acquire(g->o.adapters, r->adapter) : NULL;
        if (!lora) {
            gw_req_error(r, 503, "adapter_not_loaded", "model",
                         "the adapter '%s' of model '%s' is not loaded", r->adapter, r->model_name);
            tokenizer_ids_free(&ids);
            return refuse(r);
        }
        sp.lora = lora;
    }

    /* into the engine */
    r->state = r->preq.stream ? GW_STREAMING : GW_GENERATING;
    atomic_fetch_add(&r->refs, 1);
    r->in_engine = true;
    gw_req_track(r);
    uint64_t id = 0;
    int rc = serve_submit(g->o.serve, ids.ids, ids.n, &sp, on_text, r, &id, err, sizeof err);
    tokenizer_ids_free(&ids);
    model_lora_release(lora);
    if (rc) {
        r->in_engine = false;
        gw_req_untrack(r);
        atomic_fetch_sub(&r->refs, 1);
        if (rc == MG_EBUSY)
            gw_req_error(r, 503, "overloaded", NULL, "the server is busy; retry later");
        else if (rc == MG_ERANGE)
            gw_req_error(r, 400, "context_length_exceeded", "max_tokens", "%s", err);
        else
            gw_req_error(r, 400, "invalid_request", NULL, "%s", err);
        r->state = GW_NEW;
        return refuse(r);
    }
    atomic_store(&r->serve_id, id);

    if (!r->preq.stream)
        return gw_generate_resume(r);
    if (is_chat(r))
        put_chunk(r, NULL, 0, NULL, true); /* the role comes first */
    answer_prefix(r, &r->completion);
    if (r->completion.len)
        put_chunk(r, r->completion.p, r->completion.len, NULL, false);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_reader, r, NULL);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "x-request-id", r->id);
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    gw_generate_headers(r, resp);
    enum MHD_Result ret = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}
