/* moegate — chat templates: a conversation to the prompt text a model was
 * trained on.
 *
 * Built in, each written from the model's published Jinja template and
 * checked character for character against that template rendered by
 * @huggingface/jinja (tests/tokenizer/test_chat.py):
 *   qwen3           Qwen3: tools, <think> blocks, enable_thinking
 *   qwen2           Qwen1.5/Qwen2 ChatML with the default system prompt
 *   chatml          plain ChatML
 *   deepseek3       DeepSeek-V3 (<｜User｜>/<｜Assistant｜>, tool calls)
 *   deepseek-r1     DeepSeek-R1 (and R1-Distill): last system message,
 *                   history stripped of reasoning, tool-call blocks closed,
 *                   generation opens a <think> block
 *   mistral         Mistral/Mixtral [INST] with an optional system message
 *   mistral-legacy  the original Mixtral-8x7B-Instruct [INST] template
 * We do not interpret Jinja: a template text we do not recognise is refused,
 * and the operator names the built-in template to use instead (policy
 * model.chat_template).
 *
 * The rendered text contains control tokens (<|im_start|>): encode it with
 * TOKENIZER_PARSE_SPECIAL. Message contents are the users' and are NOT
 * encoded that way by anything else.
 *
 * Thread safety: pure functions.
 */
#ifndef MOEGATE_CORE_CHAT_H
#define MOEGATE_CORE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

enum chat_template {
    CHAT_TEMPLATE_NONE = 0,
    CHAT_QWEN3,
    CHAT_QWEN2,
    CHAT_CHATML,
    CHAT_DEEPSEEK3,
    CHAT_DEEPSEEK_R1,
    CHAT_MISTRAL,
    CHAT_MISTRAL_LEGACY,
};

typedef struct chat_tool_call {
    const char *type;      /* "function"; NULL when absent */
    const char *name;      /* function name */
    const char *arguments; /* JSON text */
    bool arguments_is_string; /* the message carried arguments as a JSON string
                                 (OpenAI style) rather than an object */
    bool nested;           /* {"type":..., "function": {name, arguments}} form */
} chat_tool_call;

typedef struct chat_message {
    const char *role;              /* system, user, assistant, tool */
    const char *content;           /* NULL: null / absent */
    const char *reasoning_content; /* NULL when absent */
    const chat_tool_call *tool_calls;
    size_t n_tool_calls;
} chat_message;

typedef struct chat_request {
    const chat_message *messages;
    size_t n_messages;
    const char *tools_json; /* JSON array of tool definitions, or NULL */
    bool add_generation_prompt;
    int enable_thinking; /* -1: not given, 0: false, 1: true */
    const char *bos;     /* the tokenizer's BOS / EOS text ("" when none) */
    const char *eos;
} chat_request;

/* Template by name ("qwen3", "chatml", ...); CHAT_TEMPLATE_NONE if unknown. */
enum chat_template chat_template_by_name(const char *name);
const char *chat_template_name(enum chat_template t);

/* Chooses the template from a model's template text (may be NULL), its
 * tokenizer.ggml.pre and its architecture. MG_EUNSUPPORTED with a message
 * when the text is present but not one we recognise, or absent and the
 * model gives no other hint. */
int chat_template_detect(const char *template_text, const char *pre, const char *arch,
                         enum chat_template *out, char *err, size_t errlen);

/* A rendered prompt: the text, and the byte ranges of it that came from the
 * messages (contents, tool definitions and arguments, ChatML roles) rather
 * than from the template: plain[2k] .. plain[2k+1], sorted and disjoint.
 * Encode it with tokenizer_encode_chat, which matches control tokens only
 * outside those ranges, so a user typing "<|im_end|>" cannot end a turn. */
typedef struct chat_prompt {
    char *text; /* NUL-terminated */
    size_t len;
    size_t *plain;
    size_t n_plain;
} chat_prompt;

/* Renders the conversation into *out (free with chat_prompt_free).
 * MG_EINVAL with a message for conversations the template refuses (the
 * reference template raises an error for them too: roles out of order, a
 * role the template does not know, missing content). */
int chat_render(enum chat_template t, const chat_request *req, chat_prompt *out, char *err, size_t errlen);
void chat_prompt_free(chat_prompt *p); /* accepts NULL */

#endif
