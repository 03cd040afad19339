/* cli.h — the `moegate` subcommands that live in their own files.
 *
 * Each takes the arguments after its command words (argv[0] is the first
 * argument, not the program name) and returns the process exit status:
 * 0 success, 1 a failure the command reports, 2 a usage error.
 */
#ifndef MOEGATE_CLI_H
#define MOEGATE_CLI_H

/* moegate policy check|hash-key ... (cli/cmd_policy.c) */
int cmd_policy(int argc, char **argv);
/* moegate db migrate ... (cli/cmd_audit.c) */
int cmd_db(int argc, char **argv);
/* moegate audit verify|export ... (cli/cmd_audit.c) */
int cmd_audit(int argc, char **argv);

/* moegate tokenize ... (cli/cmd_tokenize.c) */
int cmd_tokenize(int argc, char **argv);

/* Opens a tokenizer from a GGUF model, an HF folder (tokenizer.json and,
 * when present, tokenizer_config.json) or explicit HF files; exactly one of
 * model, hf_dir, json is set. Prints the error and returns NULL on failure. */
struct tokenizer;
struct tokenizer *cli_open_tokenizer(const char *model, const char *hf_dir, const char *json,
                                     const char *config);

#endif
