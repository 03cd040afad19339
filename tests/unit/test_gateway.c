/* test_gateway — the gateway's pure parts: request parsing (every refusal
 * names its field), the JSON encoders (escaping, invalid UTF-8), the error
 * object, metrics rendering and its bounded label table. The server itself
 * is tested end to end by tests/gateway/suite.sh with real clients.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/errors.h"
#include "gateway/gateway.h"
#include "gateway/gateway_internal.h"

static int parse(enum gateway_endpoint ep, const char *body, gateway_request *r, char *err, size_t errlen)
{
    return gateway_request_parse(r, ep, body, strlen(body), err, errlen);
}

static void test_parse_chat_full(void **state)
{
    (void)state;
    gateway_request r;
    char err[256];
    const char *body =
        "{\"model\":\"finance\",\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":50,\"max_completion_tokens\":20,"
        "\"temperature\":0.5,\"top_p\":0.9,\"stop\":[\"x\",\"\",\"END\"],\"seed\":-3,\"presence_penalty\":1,"
        "\"frequency_penalty\":-1,\"n\":1,\"user\":\"u\",\"logprobs\":false,\"tools\":[]}";
    assert_int_equal(parse(GATEWAY_CHAT, body, &r, err, sizeof err), 0);
    assert_string_equal(r.model, "finance");
    assert_true(r.stream && r.include_usage);
    assert_int_equal(r.max_tokens, 20); /* the smaller of the two */
    assert_true(r.temperature == 0.5 && r.top_p == 0.9);
    assert_true(r.presence_penalty == 1 && r.frequency_penalty == -1);
    assert_int_equal(r.n_stop, 2);      /* "" stops nothing */
    assert_string_equal(r.stop[1], "END");
    assert_true(r.has_seed && r.seed == -3);
    assert_int_equal(r.n_messages, 2);
    assert_string_equal(r.messages[0].role, "system"); /* developer is the system role */
    assert_string_equal(r.messages[1].content, "a\nb");
    gateway_request_free(&r);
    gateway_request_free(&r); /* twice is safe */
}

static void test_parse_defaults(void **state)
{
    (void)state;
    gateway_request r;
    char err[256];
    assert_int_equal(parse(GATEWAY_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"once\"]}", &r, err, sizeof err), 0);
    assert_string_equal(r.prompt, "once");
    assert_int_equal(r.max_tokens, -1);
    assert_true(r.temperature == 1 && r.top_p == 1 && !r.stream && !r.has_seed);
    gateway_request_free(&r);
}

typedef struct refusal {
    enum gateway_endpoint ep;
    const char *body;
    const char *param; /* err_param */
    const char *words; /* in the message */
} refusal;

static void test_parse_refusals(void **state)
{
    (void)state;
    static const refusal cases[] = {
        {GATEWAY_CHAT, "", "", "empty"},
        {GATEWAY_CHAT, "{", "", "not valid JSON"},
        {GATEWAY_CHAT, "[]", "", "must be a JSON object"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"model\":\"n\",\"messages\":[]}", "", "duplicate"},
        {GATEWAY_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model", "required"},
        {GATEWAY_CHAT, "{\"model\":\"m\"}", "messages", "required"},
        {GATEWAY_CHAT, "{\"model\":\"\",\"messages\":[]}", "model", "1 to 256"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages", "at least one"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[1]}", "messages[0]", "message object"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"god\",\"content\":\"x\"}]}", "messages[0].role", "one of"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", "messages[0].content", "required"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"x\":1}]}", "messages[0].x", "unknown field"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
         "messages[0].content[0]", "text only"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":[{}]}]}",
         "messages[0].tool_calls", "not supported"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}", "temperature", "between 0 and 2"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":\"1\"}", "top_p", "a number"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", "max_tokens", "between 1"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3}", "n", "n = 1"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", "at most 4"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true}", "logprobs", "not supported"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"}}", "response_format", "not supported"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{\"include_usage\":true}}", "stream_options", "stream: true"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{\"foo\":1},\"stream\":true}", "stream_options.foo", "unknown field"},
        {GATEWAY_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_k\":5}", "top_k", "unknown field"},
        {GATEWAY_COMPLETION, "{\"model\":\"m\",\"prompt\":[1,2]}", "prompt", "a string"},
        {GATEWAY_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"echo\":true}", "echo", "not supported"},
        {GATEWAY_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"messages\":[]}", "messages", "unknown field"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gateway_request r;
        char err[256] = "";
        int rc = parse(cases[i].ep, cases[i].body, &r, err, sizeof err);
        if (rc != MG_EINVAL || strcmp(r.err_param, cases[i].param) || !strstr(err, cases[i].words))
            fail_msg("case %zu (%s): rc %d param '%s' err '%s'", i, cases[i].body, rc, r.err_param, err);
        assert_null(r.model);
        assert_null(r.messages);
        gateway_request_free(&r);
    }
}

static void test_parse_invalid_utf8_and_nul(void **state)
{
    (void)state;
    gateway_request r;
    char err[256];
    const char bad[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}";
    assert_int_equal(gateway_request_parse(&r, GATEWAY_CHAT, bad, sizeof bad - 1, err, sizeof err), MG_EINVAL);
    const char nul[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}";
    assert_int_equal(gateway_request_parse(&r, GATEWAY_CHAT, nul, sizeof nul - 1, err, sizeof err), MG_EINVAL);
    /* a body that is not NUL-terminated is read within its length only */
    char exact[] = {'{', '}'};
    assert_int_equal(gateway_request_parse(&r, GATEWAY_CHAT, exact, 2, err, sizeof err), MG_EINVAL);
    assert_string_equal(r.err_param, "model");
}

static void test_json_escaping(void **state)
{
    (void)state;
    gw_buf b = {0};
    const char s[] = "a\"b\\c\n\t\x01 \xe4\xbd\xa0 \xff \xe4\xbd end";
    gw_buf_json(&b, s, sizeof s - 1);
    assert_false(b.oom);
    json_error_t je;
    json_t *j = json_loadb(b.p, b.len, JSON_DECODE_ANY, &je);
    assert_non_null(j);
    /* valid characters survive, each invalid byte is one U+FFFD */
    assert_string_equal(json_string_value(j), "a\"b\\c\n\t\x01 \xe4\xbd\xa0 \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd end");
    json_decref(j);
    gw_buf_free(&b);
    gw_buf_utf8(&b, "ok \xc0\x80 \xed\xa0\x80", 9);
    assert_int_equal(b.len, 3 + 6 + 1 + 9);
    gw_buf_free(&b);
}

static void test_error_object(void **state)
{
    (void)state;
    gw_buf b = {0};
    gw_encode_error(&b, "bad \"thing\"", gw_error_type(429), NULL, "rate_limit_exceeded");
    json_error_t je;
    json_t *j = json_loadb(b.p, b.len, 0, &je);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_int_equal(json_object_size(e), 4);
    assert_string_equal(json_string_value(json_object_get(e, "message")), "bad \"thing\"");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "rate_limit_error");
    assert_true(json_is_null(json_object_get(e, "param")));
    json_decref(j);
    gw_buf_free(&b);
    assert_string_equal(gw_error_type(401), "authentication_error");
    assert_string_equal(gw_error_type(403), "permission_error");
    assert_string_equal(gw_error_type(404), "invalid_request_error");
    assert_string_equal(gw_error_type(503), "server_error");
}

static void test_metrics(void **state)
{
    (void)state;
    gw_metrics *m;
    assert_int_equal(gw_metrics_create(&m), 0);
    gw_metrics_request(m, "chat.completions", "acme", "finance", 200, 10, 5, 0.02, 0.005);
    gw_metrics_request(m, "chat.completions", "acme", "finance", 200, 10, 5, 0.03, 0.006);
    gw_metrics_request(m, "models", "a\"b", "", 401, 0, 0, 0.001, -1);
    /* far more label combinations than the table holds: bounded, folded into _other */
    char t[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(t, sizeof t, "t%d", i);
        gw_metrics_request(m, "models", t, "", 200, 0, 0, 0.001, -1);
    }
    gw_metrics_event(m, GW_EVENT_ROUTE, "finance", "finance");
    gw_metrics_event(m, GW_EVENT_ROUTE, "finance", "finance");
    gw_metrics_event(m, GW_EVENT_ROUTE, "none", "base");
    /* refusal topics beyond the event table: bounded, every one counted */
    for (int i = 0; i < 1000; i++) {
        snprintf(t, sizeof t, "topic%d", i);
        gw_metrics_event(m, GW_EVENT_REFUSAL, "finance", t);
    }
    serve_stats s = {.waiting = 3, .kv_blocks_total = 10};
    gw_gauges g = {.serve = &s};
    gw_buf b = {0};
    gw_metrics_render(m, &g, &b);
    assert_false(b.oom);
    assert_non_null(strstr(b.p, "moegate_requests_total{endpoint=\"chat.completions\",tenant=\"acme\",domain=\"finance\",status=\"200\"} 2\n"));
    assert_non_null(strstr(b.p, "tenant=\"a\\\"b\""));
    assert_non_null(strstr(b.p, "moegate_tokens_total{tenant=\"acme\",domain=\"finance\",direction=\"in\"} 20\n"));
    assert_non_null(strstr(b.p, "moegate_time_to_first_token_seconds_count 2\n"));
    assert_non_null(strstr(b.p, "moegate_request_duration_seconds_bucket{le=\"0.025\"} 1\n"));
    assert_non_null(strstr(b.p, "moegate_queue_depth 3\n"));
    assert_non_null(strstr(b.p, "tenant=\"_other\""));
    assert_null(strstr(b.p, "moegate_audit_queue_depth")); /* no audit writer */
    assert_non_null(strstr(b.p, "moegate_route_total{best=\"finance\",answered=\"finance\"} 2\n"));
    assert_non_null(strstr(b.p, "moegate_route_total{best=\"none\",answered=\"base\"} 1\n"));
    long long refusals = 0;
    int lines = 0;
    for (const char *p = b.p; (p = strstr(p, "\nmoegate_refusals_total{")); p++) {
        const char *v = strstr(p, "} ");
        assert_non_null(v);
        refusals += atoll(v + 2);
        lines++;
    }
    assert_int_equal(refusals, 1000);
    assert_true(lines <= 256);
    assert_non_null(strstr(b.p, "moegate_refusals_total{domain=\"finance\",topic=\"_other\"}"));
    gw_buf_free(&b);
    gw_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_chat_full),
        cmocka_unit_test(test_parse_defaults),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_parse_invalid_utf8_and_nul),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_error_object),
        cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
