/* moegate template — renders conversations with a built-in chat template.
 *
 *   moegate template (--name NAME | --text FILE | -m MODEL.gguf | --hf DIR) [--bos S] [--eos S]
 *                    < conversations.jsonl
 *
 * Each input line is one conversation as JSON: {"messages": [...],
 * "add_generation_prompt": bool, "enable_thinking": bool, "tools": [...]}
 * with OpenAI-style messages (role, content, reasoning_content, tool_calls).
 * Each output line is the rendered prompt as a JSON string, or
 * {"error": "..."} when the template refuses the conversation. With -m or
 * --hf the template is chosen from the model's own template text and BOS/EOS
 * come from its tokenizer. --text FILE chooses the built-in template the way
 * a model's template text FILE would choose it.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/chat.h"
#include "core/errors.h"
#include "core/gguf.h"
#include "core/tokenizer.h"

void cli_conversation_free(chat_request *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_messages; i++)
        free((void *)r->messages[i].tool_calls);
    free((void *)r->messages);
    free((void *)r->tools_json);
    memset(r, 0, sizeof *r);
}

static const char *opt_str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Fills r from a conversation object; strings point into conv, which must
 * outlive r. Returns 0, or 1 with a message in err. */
int cli_conversation_parse(json_t *conv, chat_request *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->enable_thinking = -1;
    json_t *msgs = json_object_get(conv, "messages");
    if (!json_is_array(msgs)) {
        snprintf(err, errlen, "\"messages\" must be an array");
        return 1;
    }
    size_t n = json_array_size(msgs);
    chat_message *m = calloc(n ? n : 1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    r->messages = m;
    r->n_messages = n;
    for (size_t i = 0; i < n; i++) {
        json_t *jm = json_array_get(msgs, i);
        if (!json_is_object(jm) || !opt_str(jm, "role")) {
            snprintf(err, errlen, "messages[%zu] needs a string \"role\"", i);
            return 1;
        }
        m[i].role = opt_str(jm, "role");
        m[i].content = opt_str(jm, "content");
        json_t *c = json_object_get(jm, "content");
        if (c && !json_is_string(c) && !json_is_null(c)) {
            snprintf(err, errlen, "messages[%zu].content must be a string or null", i);
            return 1;
        }
        m[i].reasoning_content = opt_str(jm, "reasoning_content");
        json_t *tcs = json_object_get(jm, "tool_calls");
        if (json_is_array(tcs) && json_array_size(tcs) > 0) {
            size_t k = json_array_size(tcs);
            chat_tool_call *tc = calloc(k, sizeof *tc);
            if (!tc) {
                snprintf(err, errlen, "out of memory");
                return 1;
            }
            m[i].tool_calls = tc;
            m[i].n_tool_calls = k;
            for (size_t j = 0; j < k; j++) {
                json_t *jt = json_array_get(tcs, j), *fn = json_object_get(jt, "function");
                tc[j].type = opt_str(jt, "type");
                tc[j].nested = json_is_object(fn);
                json_t *src = tc[j].nested ? fn : jt;
                tc[j].name = opt_str(src, "name");
                json_t *args = json_object_get(src, "arguments");
                if (json_is_string(args)) {
                    tc[j].arguments = json_string_value(args);
                    tc[j].arguments_is_string = true;
                } else if (args) {
                    /* kept as JSON text; the template serialises it itself */
                    char *s = json_dumps(args, JSON_ENCODE_ANY | JSON_COMPACT);
                    json_object_set_new(src, "\x01text", json_string(s ? s : "null"));
                    free(s);
                    tc[j].arguments = opt_str(src, "\x01text");
                }
            }
        }
    }
    json_t *tools = json_object_get(conv, "tools");
    if (tools && !json_is_null(tools)) {
        r->tools_json = json_dumps(tools, JSON_ENCODE_ANY | JSON_COMPACT);
    }
    r->add_generation_prompt = json_is_true(json_object_get(conv, "add_generation_prompt"));
    json_t *et = json_object_get(conv, "enable_thinking");
    if (json_is_boolean(et))
        r->enable_thinking = json_is_true(et);
    return 0;
}

int cmd_template(int argc, char **argv)
{
    const char *name = NULL, *model = NULL, *hf = NULL, *bos = NULL, *eos = NULL, *text_file = NULL;
    for (int i = 0; i < argc; i++) {
        bool more = i + 1 < argc;
        if (!strcmp(argv[i], "--name") && more)
            name = argv[++i];
        else if (!strcmp(argv[i], "-m") && more)
            model = argv[++i];
        else if (!strcmp(argv[i], "--text") && more)
            text_file = argv[++i];
        else if (!strcmp(argv[i], "--hf") && more)
            hf = argv[++i];
        else if (!strcmp(argv[i], "--bos") && more)
            bos = argv[++i];
        else if (!strcmp(argv[i], "--eos") && more)
            eos = argv[++i];
        else {
            fprintf(stderr, "usage: moegate template (--name NAME | -m MODEL.gguf | --hf DIR) [--bos S] [--eos S] "
                            "< conversations.jsonl\n");
            return 2;
        }
    }
    if (!!name + !!model + !!hf + !!text_file != 1) {
        fprintf(stderr, "moegate template: give exactly one of --name, --text, -m, --hf\n");
        return 2;
    }
    enum chat_template t = CHAT_TEMPLATE_NONE;
    tokenizer *tok = NULL;
    char err[512];
    char bosbuf[256] = "", eosbuf[256] = "";
    if (name) {
        t = chat_template_by_name(name);
        if (t == CHAT_TEMPLATE_NONE) {
            fprintf(stderr, "moegate template: unknown template '%s'\n", name);
            return 2;
        }
    } else if (text_file) {
        FILE *f = fopen(text_file, "rb");
        char *text = f ? calloc(1, 1 << 20) : NULL;
        size_t n = text ? fread(text, 1, (1 << 20) - 1, f) : 0;
        if (f)
            fclose(f);
        if (!text || !n) {
            fprintf(stderr, "moegate template: cannot read %s\n", text_file);
            free(text);
            return 1;
        }
        int rc = chat_template_detect(text, NULL, NULL, &t, err, sizeof err);
        free(text);
        if (rc) {
            fprintf(stderr, "moegate: %s\n", err);
            return 1;
        }
    } else {
        tok = cli_open_tokenizer(model, hf, NULL, NULL);
        if (!tok)
            return 1;
        char arch[64] = "";
        gguf *g = NULL;
        if (model && gguf_open(&g, model, err, sizeof err) == 0) {
            gguf_get_cstr(g, "general.architecture", arch, sizeof arch);
            gguf_close(g);
        }
        if (chat_template_detect(tokenizer_chat_template(tok), tokenizer_pre(tok), arch[0] ? arch : NULL, &t, err,
                                 sizeof err)) {
            fprintf(stderr, "moegate: %s\n", err);
            tokenizer_free(tok);
            return 1;
        }
        int32_t ids[2] = {tokenizer_bos(tok), tokenizer_eos(tok)};
        char *dst[2] = {bosbuf, eosbuf};
        for (int k = 0; k < 2; k++) {
            int n = ids[k] >= 0 ? tokenizer_token_bytes(tok, ids[k], true, dst[k], sizeof bosbuf - 1) : 0;
            dst[k][n > 0 && n < (int)sizeof bosbuf ? n : 0] = '\0';
        }
    }
    if (!bos)
        bos = bosbuf;
    if (!eos)
        eos = eosbuf;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        json_error_t je;
        json_t *conv = json_loadb(line, (size_t)n, 0, &je);
        chat_request r;
        if (!conv || cli_conversation_parse(conv, &r, err, sizeof err)) {
            fprintf(stderr, "moegate template: stdin line %ld: %s\n", lineno, conv ? err : je.text);
            if (conv)
                cli_conversation_free(&r);
            json_decref(conv);
            rc = 1;
            break;
        }
        r.bos = bos;
        r.eos = eos;
        chat_prompt pr;
        json_t *res;
        if (chat_render(t, &r, &pr, err, sizeof err))
            res = json_pack("{s:s}", "error", err);
        else
            res = json_stringn(pr.text, pr.len);
        char *s = json_dumps(res, JSON_ENCODE_ANY | JSON_COMPACT);
        puts(s ? s : "null");
        free(s);
        chat_prompt_free(&pr);
        json_decref(res);
        cli_conversation_free(&r);
        json_decref(conv);
    }
    free(line);
    tokenizer_free(tok);
    return rc;
}
