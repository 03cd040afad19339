/* moegate gateway — OpenAI request bodies to gateway_request.
 *
 * Strict by design: every field is checked for type and range and an
 * unknown field is an error that names it, so a client never believes a
 * setting took effect when it did not. Documented OpenAI fields we do not
 * implement are accepted only with their neutral value (logprobs: false,
 * n: 1, tools: [] ...), which is what SDKs send by default; anything else
 * is refused as "not supported". The tables below are the whole contract.
 *
 * Input is untrusted bytes (this is the fuzzing entry point): jansson
 * validates UTF-8, refuses NUL in strings and duplicate keys; sizes are
 * capped here (messages, stop strings) so a request cannot make us build
 * something huge out of a small body.
 *
 * Thread safety: pure functions of their arguments.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/errors.h"
#include "gateway/gateway.h"

#define MAX_MESSAGES   4096
#define MAX_STOP_BYTES 256

typedef struct pctx {
    gateway_request *r;
    char *err;
    size_t errlen;
} pctx;

static int fail(pctx *c, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(pctx *c, const char *param, const char *fmt, ...)
{
    snprintf(c->r->err_param, sizeof c->r->err_param, "%s", param);
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (param[0])
        mg_err_set(c->err, c->errlen, "%s: %s", param, msg);
    else
        mg_err_set(c->err, c->errlen, "%s", msg);
    return MG_EINVAL;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "something else";
}

static char *dup_str(const json_t *v)
{
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, json_string_value(v), n);
        s[n] = 0;
    }
    return s;
}

/* A number in [lo, hi]; null leaves *out as is. */
static int get_num(pctx *c, const json_t *v, const char *name, double lo, double hi, double *out)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return fail(c, name, "expected a number, got %s", type_name(v));
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return fail(c, name, "must be between %g and %g, got %g", lo, hi, x);
    *out = x;
    return 0;
}

static int get_int(pctx *c, const json_t *v, const char *name, int64_t lo, int64_t hi, int64_t *out)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return fail(c, name, "expected an integer, got %s", type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return fail(c, name, "must be between %lld and %lld, got %lld", (long long)lo,
                    (long long)hi, (long long)x);
    *out = x;
    return 0;
}

static int get_bool(pctx *c, const json_t *v, const char *name, bool *out)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return fail(c, name, "expected a boolean, got %s", type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* ---- neutral values of fields we accept but do not implement -------------------------- */

static bool is_false_or_null(const json_t *v)
{
    return json_is_null(v) || json_is_false(v);
}
static bool is_empty_or_null(const json_t *v)
{
    return json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0) ||
           (json_is_array(v) && json_array_size(v) == 0);
}
static bool is_one_or_null(const json_t *v)
{
    return json_is_null(v) || (json_is_integer(v) && json_integer_value(v) == 1);
}
static bool is_zero_or_null(const json_t *v)
{
    return json_is_null(v) || (json_is_integer(v) && json_integer_value(v) == 0);
}
static bool is_string_in(const json_t *v, const char *const *ok)
{
    if (json_is_null(v))
        return true;
    if (!json_is_string(v))
        return false;
    for (int i = 0; ok[i]; i++)
        if (!strcmp(json_string_value(v), ok[i]))
            return true;
    return false;
}
static bool is_text_format(const json_t *v)
{
    if (json_is_null(v))
        return true;
    const json_t *t = json_object_get(v, "type");
    return json_is_object(v) && json_object_size(v) == 1 && json_is_string(t) &&
           !strcmp(json_string_value(t), "text");
}
static bool is_null(const json_t *v)
{
    return json_is_null(v);
}
static bool is_any_bool(const json_t *v)
{
    return json_is_null(v) || json_is_boolean(v);
}
static bool is_tool_choice_none(const json_t *v)
{
    static const char *const ok[] = {"none", "auto", NULL};
    return is_string_in(v, ok);
}
static bool is_service_tier(const json_t *v)
{
    static const char *const ok[] = {"auto", "default", NULL};
    return is_string_in(v, ok);
}
static bool is_text_modalities(const json_t *v)
{
    if (json_is_null(v))
        return true;
    return json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0)) &&
           !strcmp(json_string_value(json_array_get(v, 0)), "text");
}
static bool is_empty_string_or_null(const json_t *v)
{
    return json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

typedef struct neutral {
    const char *name;
    bool (*ok)(const json_t *v);
    const char *neutral; /* what we accept, for the message */
} neutral;

static const neutral chat_neutral[] = {
    {"logprobs", is_false_or_null, "false"},
    {"top_logprobs", is_zero_or_null, "0"},
    {"logit_bias", is_empty_or_null, "{}"},
    {"response_format", is_text_format, "{\"type\": \"text\"}"},
    {"tools", is_empty_or_null, "[]"},
    {"functions", is_empty_or_null, "[]"},
    {"tool_choice", is_tool_choice_none, "\"none\" or \"auto\" without tools"},
    {"function_call", is_tool_choice_none, "\"none\" or \"auto\""},
    {"parallel_tool_calls", is_any_bool, "a boolean"},
    {"store", is_false_or_null, "false"},
    {"metadata", is_empty_or_null, "{}"},
    {"service_tier", is_service_tier, "\"auto\" or \"default\""},
    {"modalities", is_text_modalities, "[\"text\"]"},
    {"prediction", is_null, "null"},
    {"audio", is_null, "null"},
    {"reasoning_effort", is_null, "null"},
    {"web_search_options", is_null, "null"},
    {NULL, NULL, NULL},
};

static const neutral completion_neutral[] = {
    {"logprobs", is_zero_or_null, "null"},  {"echo", is_false_or_null, "false"},
    {"best_of", is_one_or_null, "1"},       {"suffix", is_empty_string_or_null, "null"},
    {"logit_bias", is_empty_or_null, "{}"}, {NULL, NULL, NULL},
};

/* ---- shared fields ------------------------------------------------------------------ */

static int parse_stop(pctx *c, const json_t *v)
{
    gateway_request *r = c->r;
    if (json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0)
            return 0; /* "" stops nothing */
        if (json_string_length(v) > MAX_STOP_BYTES)
            return fail(c, "stop", "a stop string is at most %d bytes", MAX_STOP_BYTES);
        if (!(r->stop[0] = dup_str(v)))
            return MG_ENOMEM;
        r->n_stop = 1;
        return 0;
    }
    if (!json_is_array(v))
        return fail(c, "stop", "expected a string or an array of strings, got %s", type_name(v));
    if (json_array_size(v) > GATEWAY_MAX_STOP)
        return fail(c, "stop", "at most %d stop strings, got %zu", GATEWAY_MAX_STOP,
                    json_array_size(v));
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *s = json_array_get(v, i);
        char name[32];
        snprintf(name, sizeof name, "stop[%zu]", i);
        if (!json_is_string(s))
            return fail(c, name, "expected a string, got %s", type_name(s));
        if (json_string_length(s) > MAX_STOP_BYTES)
            return fail(c, name, "a stop string is at most %d bytes", MAX_STOP_BYTES);
        if (json_string_length(s) == 0)
            continue;
        if (!(r->stop[r->n_stop] = dup_str(s)))
            return MG_ENOMEM;
        r->n_stop++;
    }
    return 0;
}

/* The fields both endpoints share; *handled tells whether key was one. */
static int parse_common(pctx *c, const char *key, const json_t *v, bool *handled)
{
    gateway_request *r = c->r;
    *handled = true;
    if (!strcmp(key, "model")) {
        if (!json_is_string(v))
            return fail(c, "model", "expected a string, got %s", type_name(v));
        if (json_string_length(v) == 0 || json_string_length(v) > 256)
            return fail(c, "model", "expected a model name of 1 to 256 bytes");
        return (r->model = dup_str(v)) ? 0 : MG_ENOMEM;
    }
    if (!strcmp(key, "stream"))
        return get_bool(c, v, "stream", &r->stream);
    if (!strcmp(key, "stream_options")) {
        if (json_is_null(v))
            return 0;
        if (!json_is_object(v))
            return fail(c, "stream_options", "expected an object, got %s", type_name(v));
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            if (!strcmp(k, "include_usage")) {
                int rc = get_bool(c, x, "stream_options.include_usage", &r->include_usage);
                if (rc)
                    return rc;
            } else if (!strcmp(k, "include_obfuscation")) {
                if (!is_any_bool(x))
                    return fail(c, "stream_options.include_obfuscation", "expected a boolean");
            } else {
                char name[96];
                snprintf(name, sizeof name, "stream_options.%.60s", k);
                return fail(c, name, "unknown field");
            }
        }
        return 0;
    }
    if (!strcmp(key, "max_tokens") || !strcmp(key, "max_completion_tokens")) {
        int64_t x = -1;
        int rc = get_int(c, v, key, 1, 1 << 24, &x);
        if (rc)
            return rc;
        if (x > 0)
            r->max_tokens = r->max_tokens > 0 && r->max_tokens < x ? r->max_tokens : x;
        return 0;
    }
    if (!strcmp(key, "temperature")) {
        r->has_temperature = !json_is_null(v);
        return get_num(c, v, "temperature", 0, 2, &r->temperature);
    }
    if (!strcmp(key, "top_p")) {
        r->has_top_p = !json_is_null(v);
        return get_num(c, v, "top_p", 0, 1, &r->top_p);
    }
    if (!strcmp(key, "presence_penalty"))
        return get_num(c, v, "presence_penalty", -2, 2, &r->presence_penalty);
    if (!strcmp(key, "frequency_penalty"))
        return get_num(c, v, "frequency_penalty", -2, 2, &r->frequency_penalty);
    if (!strcmp(key, "seed")) {
        if (json_is_null(v))
            return 0;
        int rc = get_int(c, v, "seed", INT64_MIN, INT64_MAX, &r->seed);
        r->has_seed = rc == 0;
        return rc;
    }
    if (!strcmp(key, "stop"))
        return parse_stop(c, v);
    if (!strcmp(key, "n")) {
        if (!is_one_or_null(v))
            return json_is_integer(v) ? fail(c, "n", "only n = 1 is supported")
                                      : fail(c, "n", "expected an integer, got %s", type_name(v));
        return 0;
    }
    if (!strcmp(key, "user")) {
        if (!json_is_null(v) && !json_is_string(v))
            return fail(c, "user", "expected a string, got %s", type_name(v));
        return 0; /* an end-user id: not used, never logged */
    }
    *handled = false;
    return 0;
}

static int check_neutral(pctx *c, const neutral *tab, const char *key, const json_t *v,
                         bool *handled)
{
    for (int i = 0; tab[i].name; i++)
        if (!strcmp(tab[i].name, key)) {
            *handled = true;
            if (!tab[i].ok(v))
                return fail(c, key, "not supported; only %s is accepted", tab[i].neutral);
            return 0;
        }
    *handled = false;
    return 0;
}

/* ---- chat messages ------------------------------------------------------------------- */

/* content: a string, or an array of {"type": "text", "text": ...} parts
 * (joined with newlines); null only where the role allows it. */
static int parse_content(pctx *c, const json_t *v, const char *at, char **out)
{
    char name[96];
    snprintf(name, sizeof name, "%s.content", at);
    if (json_is_null(v))
        return 0;
    if (json_is_string(v))
        return (*out = dup_str(v)) ? 0 : MG_ENOMEM;
    if (!json_is_array(v))
        return fail(c, name, "expected a string or an array of text parts, got %s", type_name(v));
    size_t total = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *p = json_array_get(v, i);
        char pname[192];
        snprintf(pname, sizeof pname, "%s[%zu]", name, i);
        if (!json_is_object(p))
            return fail(c, pname, "expected a content part object, got %s", type_name(p));
        const json_t *t = json_object_get(p, "type");
        if (!json_is_string(t))
            return fail(c, pname, "a content part needs \"type\"");
        if (strcmp(json_string_value(t), "text"))
            return fail(c, pname, "content parts of type '%.40s' are not supported (text only)",
                        json_string_value(t));
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)p, k, x)
        {
            if (strcmp(k, "type") && strcmp(k, "text")) {
                char fname[256];
                snprintf(fname, sizeof fname, "%s.%.40s", pname, k);
                return fail(c, fname, "unknown field");
            }
        }
        const json_t *tx = json_object_get(p, "text");
        if (!json_is_string(tx)) {
            char fname[256];
            snprintf(fname, sizeof fname, "%s.text", pname);
            return fail(c, fname, "expected a string, got %s", tx ? type_name(tx) : "nothing");
        }
        total += json_string_length(tx) + 1;
    }
    char *s = malloc(total + 1), *w = s;
    if (!s)
        return MG_ENOMEM;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *tx = json_object_get(json_array_get(v, i), "text");
        if (i)
            *w++ = '\n';
        memcpy(w, json_string_value(tx), json_string_length(tx));
        w += json_string_length(tx);
    }
    *w = 0;
    *out = s;
    return 0;
}

static int parse_messages(pctx *c, const json_t *v)
{
    gateway_request *r = c->r;
    if (!json_is_array(v))
        return fail(c, "messages", "expected an array of messages, got %s", type_name(v));
    size_t n = json_array_size(v);
    if (n == 0)
        return fail(c, "messages", "at least one message is required");
    if (n > MAX_MESSAGES)
        return fail(c, "messages", "at most %d messages", MAX_MESSAGES);
    r->messages = calloc(n, sizeof *r->messages);
    if (!r->messages)
        return MG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(v, i);
        char at[48];
        snprintf(at, sizeof at, "messages[%zu]", i);
        if (!json_is_object(m))
            return fail(c, at, "expected a message object, got %s", type_name(m));
        chat_message *cm = &r->messages[r->n_messages++];
        const json_t *role = json_object_get(m, "role");
        char name[128];
        snprintf(name, sizeof name, "%s.role", at);
        if (!json_is_string(role))
            return fail(c, name, role ? "expected a string" : "required");
        const char *rs = json_string_value(role);
        /* "developer" is OpenAI's newer name for the system role */
        static const char *const roles[] = {"system",    "developer", "user",
                                            "assistant", "tool",      NULL};
        int ri = -1;
        for (int k = 0; roles[k]; k++)
            if (!strcmp(rs, roles[k]))
                ri = k;
        if (ri < 0)
            return fail(c, name, "expected one of system, developer, user, assistant, tool");
        cm->role = strdup(ri == 1 ? "system" : rs);
        if (!cm->role)
            return MG_ENOMEM;
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)m, k, x)
        {
            snprintf(name, sizeof name, "%s.%.40s", at, k);
            if (!strcmp(k, "role"))
                continue;
            if (!strcmp(k, "content")) {
                char *s = NULL;
                int rc = parse_content(c, x, at, &s);
                if (rc)
                    return rc;
                cm->content = s;
            } else if (!strcmp(k, "name")) {
                if (!json_is_string(x))
                    return fail(c, name, "expected a string, got %s", type_name(x));
            } else if (!strcmp(k, "tool_call_id")) {
                if (!json_is_string(x) || ri != 4)
                    return fail(c, name, "expected a string, in a tool message");
            } else if (!strcmp(k, "tool_calls") || !strcmp(k, "function_call")) {
                if (!is_empty_or_null(x))
                    return fail(c, name, "tool calls are not supported");
            } else if (!strcmp(k, "refusal") || !strcmp(k, "audio")) {
                if (!json_is_null(x) && !(json_is_string(x) && ri == 3 && !strcmp(k, "refusal")))
                    return fail(c, name, "expected null");
            } else {
                return fail(c, name, "unknown field");
            }
        }
        if (!cm->content && ri != 3) {
            snprintf(name, sizeof name, "%s.content", at);
            return fail(c, name, "required for a %s message", cm->role);
        }
    }
    return 0;
}

/* ---- entry point ------------------------------------------------------------------------- */

void gateway_request_free(gateway_request *r)
{
    if (!r)
        return;
    free(r->model);
    for (size_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    for (size_t i = 0; i < r->n_messages; i++) {
        free((void *)r->messages[i].role);
        free((void *)r->messages[i].content);
    }
    free(r->messages);
    free(r->prompt);
    char keep[sizeof r->err_param];
    memcpy(keep, r->err_param, sizeof keep);
    memset(r, 0, sizeof *r);
    memcpy(r->err_param, keep, sizeof keep);
}

int gateway_request_parse(gateway_request *out, enum gateway_endpoint ep, const char *body,
                          size_t len, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->endpoint = ep;
    out->max_tokens = -1;
    out->temperature = 1;
    out->top_p = 1;
    pctx c = {out, err, errlen};
    if (!body || len == 0)
        return fail(&c, "", "the request body is empty; expected a JSON object");
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(&c, "", "the request body is not valid JSON: %s (line %d, column %d)", je.text,
                    je.line, je.column);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = fail(&c, "", "the request body must be a JSON object, got %s", type_name(root));
        goto done;
    }
    const neutral *tab = ep == GATEWAY_CHAT ? chat_neutral : completion_neutral;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        bool handled;
        if ((rc = parse_common(&c, key, v, &handled)) || handled)
            goto next;
        if ((rc = check_neutral(&c, tab, key, v, &handled)) || handled)
            goto next;
        if (ep == GATEWAY_CHAT && !strcmp(key, "messages")) {
            rc = parse_messages(&c, v);
        } else if (ep == GATEWAY_COMPLETION && !strcmp(key, "prompt")) {
            if (json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0)))
                v = json_array_get(v, 0);
            if (!json_is_string(v))
                rc = fail(&c, "prompt", "expected a string (or an array of one string), got %s",
                          type_name(v));
            else if (!(out->prompt = dup_str(v)))
                rc = MG_ENOMEM;
        } else {
            char name[96];
            snprintf(name, sizeof name, "%.80s", key);
            rc = fail(&c, name, "unknown field");
        }
    next:
        if (rc)
            goto done;
    }
    if (!out->model)
        rc = fail(&c, "model", "required");
    else if (ep == GATEWAY_CHAT && !out->messages)
        rc = fail(&c, "messages", "required");
    else if (ep == GATEWAY_COMPLETION && !out->prompt)
        rc = fail(&c, "prompt", "required");
    else if (out->include_usage && !out->stream)
        rc = fail(&c, "stream_options", "only allowed with stream: true");
done:
    json_decref(root);
    if (rc == MG_ENOMEM)
        fail(&c, "", "out of memory");
    if (rc)
        gateway_request_free(out);
    return rc;
}
