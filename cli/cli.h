/* cli.h — the `moegate` subcommands that live in their own files.
 *
 * Each takes the arguments after its command words (argv[0] is the first
 * argument, not the program name) and returns the process exit status:
 * 0 success, 1 a failure the command reports, 2 a usage error.
 */
#ifndef MOEGATE_CLI_H
#define MOEGATE_CLI_H

#include <stddef.h>

/* moegate policy check|hash-key ... (cli/cmd_policy.c) */
int cmd_policy(int argc, char **argv);
/* moegate adapter inspect ... (cli/cmd_adapter.c) */
int cmd_adapter(int argc, char **argv);
/* moegate db migrate ... (cli/cmd_audit.c) */
int cmd_db(int argc, char **argv);
/* moegate audit verify|export ... (cli/cmd_audit.c) */
int cmd_audit(int argc, char **argv);

/* moegate domains check|route ... (cli/cmd_domains.c) */
int cmd_domains(int argc, char **argv);

/* moegate serve --policy FILE (cli/cmd_serve.c) */
int cmd_serve(int argc, char **argv);

/* moegate tokenize ... (cli/cmd_tokenize.c) */
int cmd_tokenize(int argc, char **argv);

/* moegate template ... (cli/cmd_template.c) */
int cmd_template(int argc, char **argv);

/* A conversation in OpenAI's JSON shape -> chat_request (strings borrowed
 * from conv). Returns 0, or 1 with a message in err; free with
 * cli_conversation_free either way. */
struct chat_request;
struct json_t;
int cli_conversation_parse(struct json_t *conv, struct chat_request *r, char *err, size_t errlen);
void cli_conversation_free(struct chat_request *r);

/* Opens a tokenizer from a GGUF model, an HF folder (tokenizer.json and,
 * when present, tokenizer_config.json) or explicit HF files; exactly one of
 * model, hf_dir, json is set. Prints the error and returns NULL on failure. */
struct tokenizer;
struct tokenizer *cli_open_tokenizer(const char *model, const char *hf_dir, const char *json,
                                     const char *config);

#endif
