/* moegate — libFuzzer target for the gateway's request parsing.
 *
 * Each input is a request body; the first byte picks the endpoint (chat or
 * text completions), the rest is the body. gateway_request_parse must
 * answer 0 or MG_EINVAL (never crash, leak or read past the body, which is
 * copied into an exactly sized buffer); a refusal carries a message. A body
 * that parses is then taken as far as the gateway takes it without a model:
 * every field within its documented range, every string valid UTF-8 and
 * NUL-free, and the messages rendered by every built-in chat template
 * (which may refuse a conversation, with a message, but never crash); the
 * response encoders get the parsed strings too.
 *
 *   make fuzz && build/fuzz/fuzz_gateway_request -max_total_time=60 tests/fuzz/corpus/fuzz_gateway_request
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/chat.h"
#include "core/errors.h"
#include "gateway/gateway.h"
#include "gateway/gateway_internal.h"

static int valid_utf8(const char *s)
{
    gw_buf b = {0};
    gw_buf_utf8(&b, s, strlen(s));
    int same = b.len == strlen(s) && (b.len == 0 || !memcmp(b.p, s, b.len));
    gw_buf_free(&b);
    return same;
}

static void check_str(const char *s)
{
    if (s && !valid_utf8(s))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum gateway_endpoint ep = data[0] & 1 ? GATEWAY_COMPLETION : GATEWAY_CHAT;
    size_t n = size - 1;
    char *body = malloc(n ? n : 1); /* exactly sized: ASan sees overreads */
    if (!body)
        return 0;
    memcpy(body, data + 1, n);
    gateway_request r;
    char err[512] = "";
    int rc = gateway_request_parse(&r, ep, body, n, err, sizeof err);
    if (rc) {
        if (rc != MG_EINVAL || !err[0] || r.model || r.messages || r.prompt) {
            fprintf(stderr, "fuzz_gateway_request: %s \"%s\"\n", mg_err_name(rc), err);
            __builtin_trap();
        }
        free(body);
        return 0;
    }
    /* the contract of a parsed request */
    if (!r.model || !r.model[0] || (ep == GATEWAY_CHAT) != (r.messages != NULL) ||
        (ep == GATEWAY_COMPLETION) != (r.prompt != NULL) || r.n_stop > GATEWAY_MAX_STOP ||
        !(r.temperature >= 0 && r.temperature <= 2) || !(r.top_p >= 0 && r.top_p <= 1) ||
        !(r.presence_penalty >= -2 && r.presence_penalty <= 2) ||
        !(r.frequency_penalty >= -2 && r.frequency_penalty <= 2) || (r.max_tokens != -1 && r.max_tokens < 1) ||
        (r.include_usage && !r.stream))
        __builtin_trap();
    check_str(r.model);
    check_str(r.prompt);
    for (size_t i = 0; i < r.n_stop; i++)
        if (!r.stop[i] || !r.stop[i][0])
            __builtin_trap();
        else
            check_str(r.stop[i]);
    for (size_t i = 0; i < r.n_messages; i++) {
        check_str(r.messages[i].role);
        check_str(r.messages[i].content);
    }
    /* every template on the conversation */
    if (r.messages) {
        for (int t = CHAT_QWEN3; t <= CHAT_MISTRAL_LEGACY; t++) {
            chat_request cr = {.messages = r.messages, .n_messages = r.n_messages, .add_generation_prompt = true,
                               .enable_thinking = -1, .bos = "<s>", .eos = "</s>"};
            chat_prompt cp = {0};
            char cerr[512] = "";
            int crc = chat_render((enum chat_template)t, &cr, &cp, cerr, sizeof cerr);
            if (crc == 0) {
                if (!cp.text || strlen(cp.text) != cp.len)
                    __builtin_trap();
                for (size_t k = 0; k + 1 < 2 * cp.n_plain; k++)
                    if (cp.plain[k] > cp.plain[k + 1] || cp.plain[k + 1] > cp.len)
                        __builtin_trap();
            } else if (!cerr[0]) {
                __builtin_trap();
            }
            chat_prompt_free(&cp);
        }
    }
    /* the encoders: a string made of the input, escaped, must round-trip as JSON text */
    gw_buf b = {0};
    gw_buf_json(&b, body, n);
    json_error_t je;
    json_t *j = b.oom ? NULL : json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j || !json_is_string(j))
        __builtin_trap();
    json_decref(j);
    gw_buf_free(&b);
    gw_encode_error(&b, r.model, "invalid_request_error", r.model, NULL);
    j = b.oom ? NULL : json_loadb(b.p, b.len, 0, &je);
    if (!j || !json_is_object(json_object_get(j, "error")))
        __builtin_trap();
    json_decref(j);
    gw_buf_free(&b);
    gateway_request_free(&r);
    free(body);
    return 0;
}
