/* chat.c — the built-in chat templates (see chat.h).
 *
 * Each renderer follows its published Jinja template statement by
 * statement, quirks included (DeepSeek-V3's template, for instance, closes a
 * tool-call block only after a second call): the model was trained on what
 * the template produces, not on what it should have produced.
 *
 * Values the templates print with `tojson` (Qwen3's tool definitions and
 * object-valued tool arguments) are re-serialised the way the Jinja
 * implementations do: ", " and ": " separators, keys in their original
 * order, strings as JSON.stringify writes them.
 */
#include "core/chat.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

/* ---- a growable string ------------------------------------------------------ */

typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
    size_t *plain; /* [2k], [2k+1]: byte ranges that came from messages */
    size_t n_plain, plain_cap;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void sb_put(sbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

/* Marks s[start..n) as text from a message (not the template's own). */
static void sb_mark(sbuf *b, size_t start)
{
    if (b->oom || start == b->n)
        return;
    if (b->n_plain && b->plain[2 * b->n_plain - 1] == start) {
        b->plain[2 * b->n_plain - 1] = b->n; /* extends the previous range */
        return;
    }
    if (b->n_plain == b->plain_cap) {
        size_t cap = b->plain_cap ? b->plain_cap * 2 : 16;
        size_t *p = realloc(b->plain, 2 * cap * sizeof *p);
        if (!p) {
            b->oom = true;
            return;
        }
        b->plain = p;
        b->plain_cap = cap;
    }
    b->plain[2 * b->n_plain] = start;
    b->plain[2 * b->n_plain + 1] = b->n;
    b->n_plain++;
}

/* Text from a message: users' words, which must never become control
 * tokens. */
static void sb_usern(sbuf *b, const char *s, size_t n)
{
    size_t start = b->n;
    sb_putn(b, s, n);
    sb_mark(b, start);
}

static void sb_user(sbuf *b, const char *s)
{
    sb_usern(b, s, strlen(s));
}

/* tojson of a value from the request, marked as message text. */
static void tojson(sbuf *b, json_t *v);
static void sb_user_json(sbuf *b, json_t *v)
{
    size_t start = b->n;
    tojson(b, v);
    sb_mark(b, start);
}

/* Several strings in a row (NULL-terminated list). */
static void sb_cat(sbuf *b, ...)
{
    va_list ap;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *));)
        sb_put(b, s);
    va_end(ap);
}

/* ---- Jinja `tojson` ---------------------------------------------------------- */

static void json_string_js(sbuf *b, const char *s, size_t n)
{
    sb_put(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        switch (c) {
        case '"': sb_put(b, "\\\""); break;
        case '\\': sb_put(b, "\\\\"); break;
        case '\b': sb_put(b, "\\b"); break;
        case '\f': sb_put(b, "\\f"); break;
        case '\n': sb_put(b, "\\n"); break;
        case '\r': sb_put(b, "\\r"); break;
        case '\t': sb_put(b, "\\t"); break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                sb_put(b, esc);
            } else {
                sb_putn(b, (const char *)&s[i], 1);
            }
        }
    }
    sb_put(b, "\"");
}

static void tojson(sbuf *b, json_t *v)
{
    char num[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        sb_put(b, "{");
        const char *k;
        json_t *x;
        bool first = true;
        json_object_foreach(v, k, x)
        {
            if (!first)
                sb_put(b, ", ");
            first = false;
            json_string_js(b, k, strlen(k));
            sb_put(b, ": ");
            tojson(b, x);
        }
        sb_put(b, "}");
        break;
    }
    case JSON_ARRAY: {
        sb_put(b, "[");
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                sb_put(b, ", ");
            tojson(b, json_array_get(v, i));
        }
        sb_put(b, "]");
        break;
    }
    case JSON_STRING: json_string_js(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        sb_put(b, num);
        break;
    case JSON_REAL: {
        /* JS prints the shortest form that reads back exactly */
        double d = json_real_value(v);
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(num, sizeof num, "%.*g", prec, d);
            if (strtod(num, NULL) == d)
                break;
        }
        sb_put(b, num);
        break;
    }
    case JSON_TRUE: sb_put(b, "true"); break;
    case JSON_FALSE: sb_put(b, "false"); break;
    default: sb_put(b, "null"); break;
    }
}

/* ---- helpers ----------------------------------------------------------------- */

static bool role_is(const chat_message *m, const char *r)
{
    return m->role && !strcmp(m->role, r);
}

static bool starts_with(const char *s, const char *p)
{
    return !strncmp(s, p, strlen(p));
}

static bool ends_with(const char *s, const char *p)
{
    size_t n = strlen(s), k = strlen(p);
    return n >= k && !memcmp(s + n - k, p, k);
}

/* Python's str.strip('\n') family on a [begin, end) view. */
static void strip_nl(const char **b, const char **e, bool left, bool right)
{
    while (left && *b < *e && **b == '\n')
        (*b)++;
    while (right && *e > *b && (*e)[-1] == '\n')
        (*e)--;
}

/* Last occurrence of needle in [b, e), or NULL. */
static const char *rfind(const char *b, const char *e, const char *needle)
{
    size_t k = strlen(needle);
    for (const char *p = e - k; p >= b && e - b >= (ptrdiff_t)k; p--)
        if (!memcmp(p, needle, k))
            return p;
    return NULL;
}

static int fail(char *err, size_t errlen, const char *msg)
{
    mg_err_set(err, errlen, "chat: %s", msg);
    return MG_EINVAL;
}

/* Every message must have a role, and a content string unless the template
 * allows null (assistant messages with tool calls). */
static int check_contents(const chat_request *r, bool null_ok_for_tool_calls, char *err, size_t errlen)
{
    if (r->n_messages == 0)
        return fail(err, errlen, "the conversation has no messages");
    for (size_t i = 0; i < r->n_messages; i++) {
        const chat_message *m = &r->messages[i];
        if (!m->role)
            return fail(err, errlen, "a message has no role");
        if (!m->content && !(null_ok_for_tool_calls && role_is(m, "assistant") && m->n_tool_calls)) {
            mg_err_set(err, errlen, "chat: message %zu (%s) has no content", i, m->role);
            return MG_EINVAL;
        }
    }
    return 0;
}

/* ---- Qwen3 ------------------------------------------------------------------- */

static int render_qwen3(const chat_request *r, sbuf *b, char *err, size_t errlen)
{
    int rc = check_contents(r, false, err, errlen);
    if (rc)
        return rc;
    const chat_message *msg = r->messages;
    size_t n = r->n_messages;
    json_t *tools = NULL;
    if (r->tools_json) {
        json_error_t je;
        tools = json_loads(r->tools_json, JSON_DECODE_ANY, &je);
        if (!json_is_array(tools)) {
            json_decref(tools);
            return fail(err, errlen, "tools is not a JSON array");
        }
    }
    if (tools && json_array_size(tools) > 0) {
        sb_put(b, "<|im_start|>system\n");
        if (role_is(&msg[0], "system")) {
            sb_user(b, msg[0].content);
            sb_put(b, "\n\n");
        }
        sb_put(b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                  "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
        for (size_t i = 0; i < json_array_size(tools); i++) {
            sb_put(b, "\n");
            sb_user_json(b, json_array_get(tools, i));
        }
        sb_put(b, "\n</tools>\n\nFor each function call, return a json object with function name and "
                  "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
                  "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
    } else if (role_is(&msg[0], "system")) {
        sb_put(b, "<|im_start|>system\n");
        sb_user(b, msg[0].content);
        sb_put(b, "<|im_end|>\n");
    }
    json_decref(tools);
    /* the last user turn that is a real query, not a tool response */
    size_t last_query = n - 1;
    for (size_t k = n; k-- > 0;) {
        const chat_message *m = &msg[k];
        if (role_is(m, "user") &&
            !(starts_with(m->content, "<tool_response>") && ends_with(m->content, "</tool_response>"))) {
            last_query = k;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const chat_message *m = &msg[i];
        if (role_is(m, "user") || (role_is(m, "system") && i != 0)) {
            sb_cat(b, "<|im_start|>", m->role, "\n", NULL);
            sb_user(b, m->content);
            sb_put(b, "<|im_end|>\n");
        } else if (role_is(m, "assistant")) {
            const char *c = m->content, *ce = c + strlen(c);
            const char *rb = "", *re = rb;
            if (m->reasoning_content) {
                rb = m->reasoning_content;
                re = rb + strlen(rb);
            } else if (strstr(m->content, "</think>")) {
                const char *full = m->content, *fe = full + strlen(full);
                const char *last = rfind(full, fe, "</think>");
                c = last + strlen("</think>");
                strip_nl(&c, &ce, true, false);
                /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
                const char *first = strstr(full, "</think>");
                rb = full;
                re = first;
                strip_nl(&rb, &re, false, true);
                const char *open = rfind(rb, re, "<think>");
                if (open)
                    rb = open + strlen("<think>");
                strip_nl(&rb, &re, true, false);
            }
            if (i > last_query && (i == n - 1 || re > rb)) {
                const char *sb0 = rb, *se0 = re;
                strip_nl(&sb0, &se0, true, true);
                const char *cb = c, *cend = ce;
                strip_nl(&cb, &cend, true, false);
                sb_put(b, "<|im_start|>assistant\n<think>\n");
                sb_usern(b, sb0, (size_t)(se0 - sb0));
                sb_put(b, "\n</think>\n\n");
                sb_usern(b, cb, (size_t)(cend - cb));
            } else {
                sb_put(b, "<|im_start|>assistant\n");
                sb_usern(b, c, (size_t)(ce - c));
            }
            for (size_t j = 0; j < m->n_tool_calls; j++) {
                const chat_tool_call *tc = &m->tool_calls[j];
                if ((j == 0 && ce > c) || j > 0)
                    sb_put(b, "\n");
                sb_put(b, "<tool_call>\n{\"name\": \"");
                sb_user(b, tc->name ? tc->name : "");
                sb_put(b, "\", \"arguments\": ");
                if (tc->arguments_is_string) {
                    sb_user(b, tc->arguments ? tc->arguments : "");
                } else {
                    json_error_t je;
                    json_t *a = json_loads(tc->arguments ? tc->arguments : "null", JSON_DECODE_ANY, &je);
                    if (!a)
                        return fail(err, errlen, "tool call arguments are not JSON");
                    sb_user_json(b, a);
                    json_decref(a);
                }
                sb_put(b, "}\n</tool_call>");
            }
            sb_put(b, "<|im_end|>\n");
        } else if (role_is(m, "tool")) {
            if (i == 0 || !role_is(&msg[i - 1], "tool"))
                sb_put(b, "<|im_start|>user");
            sb_put(b, "\n<tool_response>\n");
            sb_user(b, m->content);
            sb_put(b, "\n</tool_response>");
            if (i == n - 1 || !role_is(&msg[i + 1], "tool"))
                sb_put(b, "<|im_end|>\n");
        }
    }
    if (r->add_generation_prompt) {
        sb_put(b, "<|im_start|>assistant\n");
        if (r->enable_thinking == 0)
            sb_put(b, "<think>\n\n</think>\n\n");
    }
    return 0;
}

/* ---- ChatML (Qwen2) ------------------------------------------------------------ */

static int render_chatml(const chat_request *r, bool default_system, sbuf *b, char *err, size_t errlen)
{
    int rc = check_contents(r, false, err, errlen);
    if (rc)
        return rc;
    for (size_t i = 0; i < r->n_messages; i++) {
        const chat_message *m = &r->messages[i];
        if (default_system && i == 0 && !role_is(m, "system"))
            sb_put(b, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
        /* any role string goes through ChatML: it is the caller's text */
        sb_put(b, "<|im_start|>");
        sb_user(b, m->role);
        sb_put(b, "\n");
        sb_user(b, m->content);
        sb_put(b, "<|im_end|>\n");
    }
    if (r->add_generation_prompt)
        sb_put(b, "<|im_start|>assistant\n");
    return 0;
}

/* ---- DeepSeek-V3 / R1 ------------------------------------------------------------ */

#define DS_BAR "\xef\xbd\x9c" /* U+FF5C FULLWIDTH VERTICAL LINE */
#define DS_SP "\xe2\x96\x81"  /* U+2581 */
#define DS_USER "<" DS_BAR "User" DS_BAR ">"
#define DS_ASSISTANT "<" DS_BAR "Assistant" DS_BAR ">"
#define DS_EOS "<" DS_BAR "end" DS_SP "of" DS_SP "sentence" DS_BAR ">"
#define DS_CALLS_BEGIN "<" DS_BAR "tool" DS_SP "calls" DS_SP "begin" DS_BAR ">"
#define DS_CALLS_END "<" DS_BAR "tool" DS_SP "calls" DS_SP "end" DS_BAR ">"
#define DS_CALL_BEGIN "<" DS_BAR "tool" DS_SP "call" DS_SP "begin" DS_BAR ">"
#define DS_CALL_END "<" DS_BAR "tool" DS_SP "call" DS_SP "end" DS_BAR ">"
#define DS_SEP "<" DS_BAR "tool" DS_SP "sep" DS_BAR ">"
#define DS_OUTS_BEGIN "<" DS_BAR "tool" DS_SP "outputs" DS_SP "begin" DS_BAR ">"
#define DS_OUTS_END "<" DS_BAR "tool" DS_SP "outputs" DS_SP "end" DS_BAR ">"
#define DS_OUT_BEGIN "<" DS_BAR "tool" DS_SP "output" DS_SP "begin" DS_BAR ">"
#define DS_OUT_END "<" DS_BAR "tool" DS_SP "output" DS_SP "end" DS_BAR ">"

/* type<｜tool▁sep｜>name\n```json\nargs\n```<｜tool▁call▁end｜> */
static void ds_call(sbuf *b, const chat_tool_call *tc)
{
    sb_user(b, tc->type);
    sb_put(b, DS_SEP);
    sb_user(b, tc->name);
    sb_put(b, "\n```json\n");
    sb_user(b, tc->arguments);
    sb_put(b, "\n```" DS_CALL_END);
}

/* One tool result; the first of the conversation opens the outputs block
 * (both DeepSeek templates never reopen it). */
static void ds_tool_output(sbuf *b, const char *content, bool *output_first)
{
    sb_put(b, *output_first ? DS_OUTS_BEGIN DS_OUT_BEGIN : "\n" DS_OUT_BEGIN);
    sb_user(b, content);
    sb_put(b, DS_OUT_END);
    *output_first = false;
}

static int render_deepseek3(const chat_request *r, sbuf *b, char *err, size_t errlen)
{
    int rc = check_contents(r, true, err, errlen);
    if (rc)
        return rc;
    const chat_message *msg = r->messages;
    size_t n = r->n_messages;
    sb_put(b, r->bos ? r->bos : "");
    bool first_sp = true;
    for (size_t i = 0; i < n; i++) {
        if (!role_is(&msg[i], "system"))
            continue;
        if (!first_sp)
            sb_put(b, "\n\n");
        sb_user(b, msg[i].content);
        first_sp = false;
    }
    bool is_first = false, is_tool = false, output_first = true;
    for (size_t i = 0; i < n; i++) {
        const chat_message *m = &msg[i];
        if (role_is(m, "user")) {
            is_tool = false;
            sb_put(b, DS_USER);
            sb_user(b, m->content);
        }
        if (role_is(m, "assistant") && !m->content) {
            is_tool = false;
            for (size_t j = 0; j < m->n_tool_calls; j++) {
                const chat_tool_call *tc = &m->tool_calls[j];
                if (!tc->type || !tc->name || !tc->arguments || !tc->arguments_is_string)
                    return fail(err, errlen, "DeepSeek tool calls need a type, a function name and string arguments");
                if (!is_first) {
                    sb_put(b, DS_ASSISTANT DS_CALLS_BEGIN DS_CALL_BEGIN);
                    ds_call(b, tc);
                    is_first = true;
                } else {
                    sb_put(b, "\n" DS_CALL_BEGIN);
                    ds_call(b, tc);
                    sb_put(b, DS_CALLS_END DS_EOS);
                }
            }
        }
        if (role_is(m, "assistant") && m->content) {
            const char *c = m->content;
            if (is_tool) {
                sb_put(b, DS_OUTS_END);
                sb_user(b, c);
                sb_put(b, DS_EOS);
                is_tool = false;
            } else {
                sb_put(b, DS_ASSISTANT);
                sb_user(b, c);
                sb_put(b, DS_EOS);
            }
        }
        if (role_is(m, "tool")) {
            is_tool = true;
            ds_tool_output(b, m->content, &output_first);
        }
    }
    if (is_tool)
        sb_put(b, DS_OUTS_END);
    if (r->add_generation_prompt && !is_tool)
        sb_put(b, DS_ASSISTANT);
    return 0;
}

/* DeepSeek-R1's template differs from V3's: only the last system message
 * counts, a tool-call block is always closed, earlier answers lose their
 * reasoning (everything up to the last </think>), and the generation prompt
 * opens a <think> block. */
static int render_deepseek_r1(const chat_request *r, sbuf *b, char *err, size_t errlen)
{
    int rc = check_contents(r, true, err, errlen);
    if (rc)
        return rc;
    const chat_message *msg = r->messages;
    size_t n = r->n_messages;
    const char *system = "";
    for (size_t i = 0; i < n; i++)
        if (role_is(&msg[i], "system"))
            system = msg[i].content;
    sb_put(b, r->bos ? r->bos : "");
    sb_user(b, system);
    bool is_first = false, is_tool = false, output_first = true;
    for (size_t i = 0; i < n; i++) {
        const chat_message *m = &msg[i];
        if (role_is(m, "user")) {
            is_tool = false;
            sb_put(b, DS_USER);
            sb_user(b, m->content);
        }
        if (role_is(m, "assistant") && m->n_tool_calls) {
            is_tool = false;
            for (size_t j = 0; j < m->n_tool_calls; j++) {
                const chat_tool_call *tc = &m->tool_calls[j];
                if (!tc->type || !tc->name || !tc->arguments || !tc->arguments_is_string)
                    return fail(err, errlen, "DeepSeek tool calls need a type, a function name and string arguments");
                sb_put(b, is_first ? "\n" DS_CALL_BEGIN : DS_ASSISTANT DS_CALLS_BEGIN DS_CALL_BEGIN);
                ds_call(b, tc);
                is_first = true;
            }
            sb_put(b, DS_CALLS_END DS_EOS);
        }
        if (role_is(m, "assistant") && m->content) {
            if (is_tool) {
                sb_put(b, DS_OUTS_END);
                sb_user(b, m->content);
                sb_put(b, DS_EOS);
                is_tool = false;
            } else {
                const char *c = m->content;
                const char *t = rfind(c, c + strlen(c), "</think>");
                if (t)
                    c = t + strlen("</think>");
                sb_put(b, DS_ASSISTANT);
                sb_user(b, c);
                sb_put(b, DS_EOS);
            }
        }
        if (role_is(m, "tool")) {
            is_tool = true;
            ds_tool_output(b, m->content, &output_first);
        }
    }
    if (is_tool)
        sb_put(b, DS_OUTS_END);
    if (r->add_generation_prompt && !is_tool)
        sb_put(b, DS_ASSISTANT "<think>\n");
    return 0;
}

/* ---- Mistral / Mixtral ------------------------------------------------------------ */

static void mistral_inst(sbuf *b, const char *open, const char *system, const char *content)
{
    sb_put(b, open);
    if (system) {
        sb_user(b, system);
        sb_put(b, "\n\n");
    }
    sb_user(b, content);
    sb_put(b, " [/INST]");
}

static int render_mistral(const chat_request *r, bool legacy, sbuf *b, char *err, size_t errlen)
{
    int rc = check_contents(r, false, err, errlen);
    if (rc)
        return rc;
    const chat_message *msg = r->messages;
    size_t n = r->n_messages, start = 0;
    const char *system = NULL;
    if (!legacy && role_is(&msg[0], "system")) {
        system = msg[0].content;
        start = 1;
    }
    sb_put(b, r->bos ? r->bos : "");
    for (size_t i = start; i < n; i++) {
        const chat_message *m = &msg[i];
        size_t k = i - start;
        if (role_is(m, "user") != (k % 2 == 0))
            return fail(err, errlen,
                        legacy ? "Conversation roles must alternate user/assistant/user/assistant/..."
                               : "After the optional system message, conversation roles must alternate "
                                 "user/assistant/user/assistant/...");
        if (role_is(m, "user")) {
            if (legacy)
                mistral_inst(b, "[INST] ", NULL, m->content);
            else if (k == 0 && system)
                mistral_inst(b, " [INST] ", system, m->content);
            else
                mistral_inst(b, " [INST] ", NULL, m->content);
        } else if (role_is(m, "assistant")) {
            sb_put(b, legacy ? "" : " ");
            sb_user(b, m->content);
            sb_put(b, r->eos ? r->eos : "");
        } else {
            return fail(err, errlen,
                        legacy ? "Only user and assistant roles are supported!"
                               : "Only user and assistant roles are supported, with the exception of an "
                                 "initial optional system message!");
        }
    }
    return 0;
}

/* ---- choosing ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    enum chat_template t;
} names[] = {
    {"qwen3", CHAT_QWEN3},         {"qwen2", CHAT_QWEN2},
    {"chatml", CHAT_CHATML},       {"deepseek3", CHAT_DEEPSEEK3},
    {"deepseek-r1", CHAT_DEEPSEEK_R1}, {"mistral", CHAT_MISTRAL},
    {"mistral-legacy", CHAT_MISTRAL_LEGACY},
};

enum chat_template chat_template_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i].name))
            return names[i].t;
    return CHAT_TEMPLATE_NONE;
}

const char *chat_template_name(enum chat_template t)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].t == t)
            return names[i].name;
    return "none";
}

int chat_template_detect(const char *text, const char *pre, const char *arch, enum chat_template *out,
                         char *err, size_t errlen)
{
    enum chat_template t = CHAT_TEMPLATE_NONE;
    if (text) {
        /* each family by the markers its published template is made of */
        if (strstr(text, "<|im_start|>") && strstr(text, "<tool_call>") && strstr(text, "</think>") &&
            strstr(text, "last_query_index"))
            t = CHAT_QWEN3;
        else if (strstr(text, "<|im_start|>") && strstr(text, "You are a helpful assistant.") &&
                 !strstr(text, "tool"))
            t = CHAT_QWEN2;
        else if (strstr(text, "<|im_start|>") && strstr(text, "message['role']") && !strstr(text, "tool"))
            t = CHAT_CHATML;
        else if (strstr(text, DS_USER) && strstr(text, DS_ASSISTANT) && strstr(text, DS_CALLS_BEGIN))
            t = strstr(text, "</think>") ? CHAT_DEEPSEEK_R1 : CHAT_DEEPSEEK3;
        else if (strstr(text, "[INST]") && strstr(text, "[/INST]") && !strstr(text, "[AVAILABLE_TOOLS]") &&
                 !strstr(text, "<<SYS>>"))
            t = strstr(text, "system_message") ? CHAT_MISTRAL : CHAT_MISTRAL_LEGACY;
        if (t == CHAT_TEMPLATE_NONE) {
            mg_err_set(err, errlen,
                       "chat: the model's chat template is not one we implement (qwen3, qwen2, chatml, "
                       "deepseek3, deepseek-r1, mistral, mistral-legacy); name the one to use with the "
                       "policy's model.chat_template");
            return MG_EUNSUPPORTED;
        }
    } else if (pre && !strcmp(pre, "deepseek-v3")) {
        t = CHAT_DEEPSEEK3;
    } else if (pre && !strcmp(pre, "qwen2") && arch) {
        t = !strcmp(arch, "qwen3moe") || !strcmp(arch, "qwen3") ? CHAT_QWEN3 : CHAT_QWEN2;
    } else if (arch && !strcmp(arch, "llama") && pre && !strcmp(pre, "default")) {
        t = CHAT_MISTRAL_LEGACY;
    } else {
        mg_err_set(err, errlen,
                   "chat: the model has no chat template and nothing else says which to use; name one "
                   "with the policy's model.chat_template");
        return MG_EUNSUPPORTED;
    }
    *out = t;
    return 0;
}

void chat_prompt_free(chat_prompt *p)
{
    if (!p)
        return;
    free(p->text);
    free(p->plain);
    memset(p, 0, sizeof *p);
}

int chat_render(enum chat_template t, const chat_request *req, chat_prompt *out, char *err, size_t errlen)
{
    sbuf b = {0};
    int rc;
    memset(out, 0, sizeof *out);
    switch (t) {
    case CHAT_QWEN3: rc = render_qwen3(req, &b, err, errlen); break;
    case CHAT_QWEN2: rc = render_chatml(req, true, &b, err, errlen); break;
    case CHAT_CHATML: rc = render_chatml(req, false, &b, err, errlen); break;
    case CHAT_DEEPSEEK3: rc = render_deepseek3(req, &b, err, errlen); break;
    case CHAT_DEEPSEEK_R1: rc = render_deepseek_r1(req, &b, err, errlen); break;
    case CHAT_MISTRAL: rc = render_mistral(req, false, &b, err, errlen); break;
    case CHAT_MISTRAL_LEGACY: rc = render_mistral(req, true, &b, err, errlen); break;
    default: rc = fail(err, errlen, "no chat template chosen");
    }
    if (!rc && b.oom)
        rc = MG_ENOMEM;
    if (!rc && !b.s && !(b.s = calloc(1, 1)))
        rc = MG_ENOMEM;
    if (rc) {
        free(b.s);
        free(b.plain);
        return rc;
    }
    out->text = b.s;
    out->len = b.n;
    out->plain = b.plain;
    out->n_plain = b.n_plain;
    return 0;
}
