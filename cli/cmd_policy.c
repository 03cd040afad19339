/* moegate policy — check a policy file, make API key hashes.
 *
 *   moegate policy check FILE
 *       validates FILE; prints every error and warning as
 *       FILE:LINE:COLUMN: error|warning: MESSAGE on stderr, then a summary
 *       on stdout; exit status 1 when there is any error. The domain packs
 *       the policy names are validated too (as `moegate serve` loads them).
 *   moegate policy hash-key [--generate]
 *       reads one key from stdin (echo off on a terminal) and prints the
 *       "sha256:..." hash the policy stores; --generate makes a new random
 *       key and prints it once with its hash. A key is never taken from
 *       the command line, where ps and shell history would keep it.
 */
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "core/errors.h"
#include "gateway/gateway.h"
#include "policies/policy.h"

static void usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  moegate policy check FILE\n"
               "  moegate policy hash-key [--generate]   (the key is read from stdin)\n");
}

static void print_diag(void *ud, const policy_diag *d)
{
    int *counts = ud;
    counts[d->severity == POLICY_ERROR ? 0 : 1]++;
    char line[1400];
    fprintf(stderr, "%s\n", policy_diag_format(d, line, sizeof line));
}

static int cmd_check(int argc, char **argv)
{
    if (argc != 1) {
        usage(stderr);
        return 2;
    }
    int counts[2] = {0, 0};
    policy_load_opts o = {.on_diag = print_diag, .ud = counts};
    policy *p = NULL;
    char err[1024];
    int rc = policy_load(&p, argv[0], &o, err, sizeof err);
    if (rc == MG_EFORMAT) {
        fprintf(stderr, "moegate policy check: %s is not valid: %d error%s, %d warning%s\n",
                argv[0], counts[0], counts[0] == 1 ? "" : "s", counts[1],
                counts[1] == 1 ? "" : "s");
        return 1;
    }
    if (rc) {
        fprintf(stderr, "moegate: %s\n", err);
        return 1;
    }
    /* the packs, as the gateway loads them */
    domain_load_opts dl = {.on_diag = print_diag, .ud = counts};
    int before = counts[0];
    if ((rc = gateway_check_domains(p, &dl, err, sizeof err))) {
        if (counts[0] == before)
            fprintf(stderr, "%s\n", err);
        fprintf(stderr, "moegate policy check: %s is not valid: its domain packs: %d error%s\n",
                argv[0], counts[0] - before > 0 ? counts[0] - before : 1,
                counts[0] - before > 1 ? "s" : "");
        policy_release(p);
        return 1;
    }
    const policy_config *c = policy_get_config(p);
    int n_keys = 0;
    for (int i = 0; i < c->n_tenants; i++)
        n_keys += c->tenants[i].n_keys;
    printf("%s: valid: %d tenants, %d API keys, %d domains, %d adapters, %d redaction rules; "
           "listening on %s (%s)",
           argv[0], c->n_tenants, n_keys, c->n_domains, c->n_adapters, c->n_redaction_rules,
           c->server.listen, c->server.tls ? "TLS" : "plain HTTP");
    if (counts[1])
        printf("; %d warning%s", counts[1], counts[1] == 1 ? "" : "s");
    printf("\n");
    policy_release(p);
    return 0;
}

/* Reads one line from stdin into buf without echo on a terminal; returns
 * its length without the line end, or -1. */
static long read_key(char *buf, size_t cap)
{
    struct termios old, quiet;
    int tty = isatty(0) && tcgetattr(0, &old) == 0;
    if (tty) {
        fprintf(stderr, "API key: ");
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(0, TCSAFLUSH, &quiet);
    }
    size_t n = 0;
    int ch;
    while (n + 1 < cap && (ch = getchar()) != EOF && ch != '\n')
        buf[n++] = (char)ch;
    bool too_long = n + 1 >= cap;
    if (tty) {
        tcsetattr(0, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    while (n && (buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = 0;
    return too_long ? -1 : (long)n;
}

static int cmd_hash_key(int argc, char **argv)
{
    bool generate = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--generate"))
            generate = true;
        else {
            fprintf(stderr, "moegate policy hash-key: unknown argument (keys are read from "
                            "stdin, never from the command line)\n");
            usage(stderr);
            return 2;
        }
    }
    char key[4096], hash[POLICY_KEY_HASH_LEN + 1], err[256];
    long n;
    if (generate) {
        if (policy_key_generate(key, sizeof key, err, sizeof err)) {
            fprintf(stderr, "moegate: %s\n", err);
            return 1;
        }
        n = (long)strlen(key);
    } else {
        n = read_key(key, sizeof key);
        if (n < 0) {
            OPENSSL_cleanse(key, sizeof key);
            fprintf(stderr, "moegate policy hash-key: the key is longer than %zu bytes\n",
                    sizeof key - 2);
            return 1;
        }
        if (n == 0) {
            fprintf(stderr, "moegate policy hash-key: no key on stdin\n");
            return 1;
        }
        if (n < 32)
            fprintf(stderr,
                    "moegate policy hash-key: warning: a key of %ld characters is "
                    "short; use random keys of at least 32 (hash-key --generate)\n",
                    n);
    }
    int rc = policy_key_hash(key, (size_t)n, hash, sizeof hash);
    if (rc == 0 && generate) {
        printf("key:  %s\nhash: %s\n", key, hash);
        fprintf(stderr, "moegate: give the key to its holder now; it is not stored anywhere. "
                        "Put the hash in the policy file.\n");
    } else if (rc == 0) {
        printf("%s\n", hash);
    }
    OPENSSL_cleanse(key, sizeof key);
    if (rc) {
        fprintf(stderr, "moegate policy hash-key: %s\n", mg_err_name(rc));
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

int cmd_policy(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "check"))
        return cmd_check(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "hash-key"))
        return cmd_hash_key(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "help"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
