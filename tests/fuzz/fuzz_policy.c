/* moegate — libFuzzer target for the policy loader (and what it builds).
 *
 * Each input is loaded as a policy file from memory, relative paths
 * resolving into a small fixture tree made once at start-up (so inputs can
 * reach the validation past "file not found"). The loader must answer 0 or
 * MG_EFORMAT, never crash or leak; an error must come with an err message
 * starting "policy: " and at least one error diagnostic; every diagnostic
 * must have a message and a sane position. A snapshot that loads is then
 * used the way the gateway uses it: key lookups, tenant and domain checks,
 * a rate-limit admission and redaction of fixed mixed text and of the
 * input itself, whole and streamed (custom patterns from the input included).
 *
 *   make fuzz && build/fuzz/fuzz_policy -max_total_time=60 tests/fuzz/corpus/fuzz_policy
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "policies/policy.h"

static char tree[64];

static const char *const dirs[] = {"tls", "packs", "packs/finance", "packs/medical", "spool",
                                   "secrets", "keys", "models", "adapters"};
static const char *const files[] = {"tls/server.crt", "tls/server.key", "tls/ca.crt",
                                    "model.gguf", "models/m.gguf", "secrets/db.conninfo",
                                    "keys/audit.key", "adapters/a.gguf"};

static void fixture(const char *rel, int dir)
{
    char p[160];
    snprintf(p, sizeof p, "%s/%s", tree, rel);
    if (dir) {
        mkdir(p, 0700);
        return;
    }
    FILE *f = fopen(p, "w");
    if (f) {
        if (strstr(rel, ".key")) /* the size of an AES-256 key */
            fputs("0123456789abcdef0123456789abcdef", f);
        fclose(f);
    }
    chmod(p, 0600);
}

/* the fixture tree goes when libFuzzer exits */
static void cleanup(void)
{
    char p[160];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tree, files[i]);
        unlink(p);
    }
    for (size_t i = sizeof dirs / sizeof dirs[0]; i-- > 0;) {
        snprintf(p, sizeof p, "%s/%s", tree, dirs[i]);
        rmdir(p);
    }
    rmdir(tree);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(tree, sizeof tree, "/tmp/mg_fuzz_policy_XXXXXX");
    if (!mkdtemp(tree))
        abort();
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        fixture(dirs[i], 1);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        fixture(files[i], 0);
    atexit(cleanup);
    return 0;
}

typedef struct seen {
    int errors;
} seen;

static void check_diag(void *ud, const policy_diag *d)
{
    seen *s = ud;
    if (!d->message || !d->message[0] || d->line < 0 || d->column < 0 ||
        (d->line == 0) != (d->column == 0) || strcmp(d->file, "fuzz.yaml")) {
        fprintf(stderr, "fuzz_policy: bad diagnostic\n");
        __builtin_trap();
    }
    s->errors += d->severity == POLICY_ERROR;
}

static void redact_once(policy_redaction *r, policy_direction dir, const char *text, size_t len)
{
    policy_redact_result res;
    char err[256] = "";
    int rc = policy_redact(r, dir, text, len, &res, err, sizeof err);
    if (rc == 0) {
        if (!res.text || strlen(res.text) != res.len || (res.blocked && !res.blocked_by))
            __builtin_trap();
        free(res.text);
    } else if ((rc != MG_EINVAL && rc != MG_EBUSY) || strncmp(err, "policy: ", 8)) {
        fprintf(stderr, "fuzz_policy: redact gave %s \"%s\"\n", mg_err_name(rc), err);
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1); /* exactly sized: ASan sees overreads */
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    seen s = {0};
    policy_load_opts o = {.on_diag = check_diag, .ud = &s, .base_dir = tree};
    policy *p = NULL;
    char err[1024] = "";
    int rc = policy_load_memory(&p, "fuzz.yaml", copy, size, &o, err, sizeof err);
    if (rc == 0) {
        if (!p || s.errors)
            __builtin_trap();
        const policy_config *c = policy_get_config(p);
        policy_find_key(p, copy, size);
        policy_find_key(p, "mg_key", 6);
        policy_find_subject(p, "CN=a");
        policy_limiter *l = NULL;
        if (policy_limiter_create(&l) == 0) {
            for (int i = 0; i < c->n_tenants; i++) {
                const policy_tenant *t = &c->tenants[i];
                if (!t->id || policy_find_tenant(p, t->id) == NULL)
                    __builtin_trap();
                for (int k = 0; k < t->n_domains; k++)
                    if (!policy_tenant_allows_domain(t, t->domains[k]) ||
                        !policy_find_domain(p, t->domains[k]))
                        __builtin_trap();
                policy_admission a;
                policy_limiter_admit(l, t, t->n_keys ? &t->keys[0] : NULL, 10, 1000, &a);
            }
            policy_limiter_free(l);
        }
        policy_redaction *r = NULL;
        if (policy_redaction_create(&r, p) == 0) {
            static const char mixed[] =
                "身份证11010519491231002X，手机13800138000，card 4111 1111 1111 1111, "
                "mail a@b.cn, IP 10.0.0.1, SSN 078-05-1120, IBAN GB82WEST12345698765432";
            redact_once(r, POLICY_INPUT, mixed, sizeof mixed - 1);
            redact_once(r, POLICY_OUTPUT, copy, size);
            /* the input again as a stream of 7-byte chunks */
            for (size_t off = 0;; off += 7) {
                size_t len = off + 7 > size ? size - off : 7;
                bool final = off + 7 >= size;
                policy_redact_result res;
                char serr[256] = "";
                int src = policy_redact_stream(r, copy + off, len, final, &res, serr, sizeof serr);
                if (src == 0)
                    free(res.text);
                else if ((src != MG_EINVAL && src != MG_EBUSY) || strncmp(serr, "policy: ", 8))
                    __builtin_trap();
                if (src || final)
                    break;
            }
            policy_finding f[64];
            if (policy_redaction_findings(r, f, 64) > c->n_redaction_rules)
                __builtin_trap();
            policy_redaction_free(r);
        }
        policy_release(p);
    } else if (p || rc != MG_EFORMAT || strncmp(err, "policy: ", 8) || s.errors == 0) {
        fprintf(stderr, "fuzz_policy: load gave %s \"%s\" (%d errors)\n", mg_err_name(rc), err,
                s.errors);
        __builtin_trap();
    }
    free(copy);
    return 0;
}
