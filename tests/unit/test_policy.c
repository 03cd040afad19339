/* Policy loading and the store: a valid file loads with the values it
 * says; each class of mistake gives its exact message at its exact
 * position; keys hash to SHA-256 (reference digests computed outside
 * moegate, with Python's hashlib) and are found in constant time; a reload
 * swaps the snapshot for new requests only, keeps the old one when the
 * new file is invalid, and drops no request while readers hammer it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "policies/policy.h"

/* hashlib.sha256(b'test-key-acme-0001-abcdefghijklmnopqrstuvwxyz') and
 * the -beta-0002- one */
#define KEY_A  "test-key-acme-0001-abcdefghijklmnopqrstuvwxyz"
#define HASH_A "614dcb9971599c051ea081a4286fd2f2bee9aad64b7436e20c9a0a7c4f866e2e"
#define KEY_B  "test-key-beta-0002-abcdefghijklmnopqrstuvwxyz"
#define HASH_B "5c83436958c0313bdb3921341e0345846ba04b97d7f2e73ab9492c9e2153f171"

static char dir[256];

/* Creates dir/rel holding n bytes. */
static void fill(const char *rel, int mode, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc((int)(i * 37 % 251), f);
    fclose(f);
    chmod(p, (mode_t)mode);
}

static void touch(const char *rel, int mode)
{
    fill(rel, mode, 0);
}

static void mkd(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    mkdir(p, 0755);
}

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/mg_policy_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    mkd("tls");
    mkd("packs");
    mkd("packs/finance");
    mkd("packs/medical");
    mkd("spool");
    touch("tls/server.crt", 0644);
    touch("tls/server.key", 0600);
    touch("tls/ca.crt", 0644);
    touch("model.gguf", 0644);
    fill("enc.key", 0600, 32);
    setenv("MG_TEST_DSN", "host=/nonexistent", 1);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The smallest valid policy, line by line, so tests can name positions. */
static const char *const BASE = "server:\n"                         /* 1 */
                                "  listen: 127.0.0.1:8443\n"        /* 2 */
                                "  tls_cert: tls/server.crt\n"      /* 3 */
                                "  tls_key: tls/server.key\n"       /* 4 */
                                "model:\n"                          /* 5 */
                                "  path: model.gguf\n"              /* 6 */
                                "domains:\n"                        /* 7 */
                                "  - name: finance\n"               /* 8 */
                                "    pack: packs/finance\n"         /* 9 */
                                "  - name: medical\n"               /* 10 */
                                "    pack: packs/medical\n"         /* 11 */
                                "audit:\n"                          /* 12 */
                                "  connection_env: MG_TEST_DSN\n"   /* 13 */
                                "  on_failure: reject\n"            /* 14 */
                                "tenants:\n"                        /* 15 */
                                "  - id: acme\n"                    /* 16 */
                                "    api_keys:\n"                   /* 17 */
                                "      - id: k1\n"                  /* 18 */
                                "        hash: sha256:" HASH_A "\n" /* 19 */
                                "    domains: [finance]\n";         /* 20 */

typedef struct diags {
    int n, errors;
    char line[32][400];
} diags;

static void collect(void *ud, const policy_diag *d)
{
    diags *g = ud;
    if (d->severity == POLICY_ERROR)
        g->errors++;
    if (g->n < 32)
        snprintf(g->line[g->n++], sizeof g->line[0], "%d:%d: %s: %s", d->line, d->column,
                 d->severity == POLICY_ERROR ? "error" : "warning", d->message);
}

static void write_file(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Loads text as dir/policy.yaml; returns the load's code. */
static int load_text(const char *text, diags *g, policy **out)
{
    write_file("policy.yaml", text);
    memset(g, 0, sizeof *g);
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/policy.yaml", dir);
    policy_load_opts o = {.on_diag = collect, .ud = g};
    policy *p = NULL;
    int rc = policy_load(&p, path, &o, err, sizeof err);
    if (out)
        *out = p;
    else
        policy_release(p);
    return rc;
}

/* BASE with the line starting with `from` replaced by `to` (which may hold
 * several lines or be empty). */
static char *edit(const char *from, const char *to)
{
    static char buf[8192];
    const char *at = strstr(BASE, from);
    assert_non_null(at);
    const char *eol = strchr(at, '\n');
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - BASE), BASE, to, eol + 1);
    return buf;
}

/* One error exactly: "line:col: error: message". */
static void expect_one(const char *text, const char *want)
{
    diags g;
    int rc = load_text(text, &g, NULL);
    if (g.n != 1 || strcmp(g.line[0], want)) {
        for (int i = 0; i < g.n; i++)
            fprintf(stderr, "  got: %s\n", g.line[i]);
        fprintf(stderr, "  want: %s\n", want);
    }
    assert_int_equal(g.n, 1);
    assert_string_equal(g.line[0], want);
    assert_int_equal(rc, strstr(want, ": error: ") ? MG_EFORMAT : 0);
}

static void test_base_loads(void **st)
{
    (void)st;
    diags g;
    policy *p = NULL;
    assert_int_equal(load_text(BASE, &g, &p), 0);
    assert_int_equal(g.n, 0);
    const policy_config *c = policy_get_config(p);
    assert_string_equal(c->server.host, "127.0.0.1");
    assert_int_equal(c->server.port, 8443);
    assert_true(c->server.tls && c->server.loopback);
    char want[700], real[600];
    assert_non_null(realpath(dir, real));
    snprintf(want, sizeof want, "%s/tls/server.key", real);
    assert_string_equal(c->server.tls_key, want); /* relative to the file's folder */
    assert_int_equal(c->n_domains, 2);
    assert_int_equal(c->n_tenants, 1);
    const policy_tenant *t = policy_find_tenant(p, "acme");
    assert_non_null(t);
    assert_true(policy_tenant_allows_domain(t, "finance"));
    assert_false(policy_tenant_allows_domain(t, "medical"));
    assert_int_equal(t->roles, POLICY_ROLE_USER);
    assert_int_equal(c->audit.on_failure, POLICY_AUDIT_REJECT);
    assert_int_equal(c->model.chat_template, POLICY_TEMPLATE_AUTO);
    assert_int_equal(c->server.max_body_bytes, 1 << 20);
    assert_int_equal(c->server.max_connections_per_client, 64);
    assert_int_equal(c->server.idle_timeout_s, 30);
    assert_false(c->server.public_ready || c->server.public_metrics);
    policy_release(p);
}

/* The gateway's connection limits and public endpoints. */
static void test_gateway_settings(void **st)
{
    (void)st;
    diags g;
    policy *p = NULL;
    assert_int_equal(
        load_text(edit("  listen:", "  listen: 127.0.0.1:8443\n"
                                    "  limits: {max_connections: 10, idle_timeout_s: 5}\n"
                                    "  public_endpoints: [ready, metrics]\n"),
                  &g, &p),
        0);
    const policy_config *c = policy_get_config(p);
    assert_int_equal(c->server.max_connections_per_client, 10); /* never above the total */
    assert_int_equal(c->server.idle_timeout_s, 5);
    assert_true(c->server.public_ready && c->server.public_metrics);
    policy_release(p);
    expect_one(edit("  listen:", "  listen: 127.0.0.1:8443\n  public_endpoints: [health]\n"),
               "3:22: error: server.public_endpoints[0]: expected one of: ready, metrics");
    expect_one(
        edit("  listen:", "  listen: 127.0.0.1:8443\n  limits: {idle_timeout_s: 0}\n"),
        "3:28: error: server.limits.idle_timeout_s: expected an integer from 1 to 3600, got 0");
}

static void test_values(void **st)
{
    (void)st;
    diags g;
    policy *p = NULL;
    const char *text = edit("model:\n", "model:\n  threads: 8\n  context_length: 32768\n"
                                        "  kv_memory: 24GiB\n  chat_template: deepseek3\n");
    char buf[8192];
    snprintf(buf, sizeof buf,
             "%s"
             "    rate_limit: {requests_per_minute: 60, tokens_per_minute: 9000}\n"
             "    max_tokens: 2048\n"
             "    retention: cn-network-6m\n"
             "    roles: [user, admin]\n"
             "    mtls_subjects: [\"CN=a,O=b\"]\n",
             text);
    /* mTLS needs a client CA */
    char *ca = strstr(buf, "  tls_key: tls/server.key\n");
    assert_non_null(ca);
    char full[8192];
    snprintf(full, sizeof full, "%.*s  tls_client_ca: tls/ca.crt\n%s", (int)(ca - buf), buf, ca);
    assert_int_equal(load_text(full, &g, &p), 0);
    assert_int_equal(g.n, 0);
    const policy_config *c = policy_get_config(p);
    assert_int_equal(c->model.threads, 8);
    assert_int_equal(c->model.context_length, 32768);
    assert_int_equal(c->model.kv_memory_bytes, (int64_t)24 << 30);
    assert_int_equal(c->model.chat_template, POLICY_TEMPLATE_DEEPSEEK3);
    const policy_tenant *t = &c->tenants[0];
    assert_int_equal(t->rate.requests_per_minute, 60);
    assert_int_equal(t->rate.tokens_per_minute, 9000);
    assert_int_equal(t->max_tokens, 2048);
    assert_int_equal(t->retention_days, 186);
    assert_int_equal(t->roles, POLICY_ROLE_USER | POLICY_ROLE_ADMIN);
    assert_ptr_equal(policy_find_subject(p, "CN=a,O=b"), t);
    assert_null(policy_find_subject(p, "CN=a,O=c"));
    policy_release(p);
}

/* ---- every class of mistake, exact message and position ----------------------------- */

static void test_unknown_key(void **st)
{
    (void)st;
    expect_one(edit("  listen:", "  listen: 127.0.0.1:8443\n  tsl: on\n"),
               "3:3: error: server: unknown key 'tsl' (did you mean 'tls'?)");
    expect_one(edit("model:\n", "model:\n  colour: blue\n"),
               "6:3: error: model: unknown key 'colour' (expected one of: path, threads, "
               "context_length, kv_memory, chat_template)");
}

static void test_wrong_type(void **st)
{
    (void)st;
    expect_one(edit("model:\n", "model:\n  threads: many\n"),
               "6:12: error: model.threads: expected an integer from 0 to 4096, got text");
    expect_one(edit("model:\n", "model:\n  threads: \"8\"\n"),
               "6:12: error: model.threads: expected an integer from 0 to 4096, got a quoted "
               "string");
    expect_one(edit("  path: model.gguf", "  path: [a, b]\n"),
               "6:9: error: model.path: expected a string, got a list");
    expect_one(edit("  listen:", "  listen: 127.0.0.1:8443\n  tls: yes\n"),
               "3:8: error: server.tls: expected on or off");
    expect_one(edit("model:\n", "model:\n  chat_template: llama\n"),
               "6:18: error: model.chat_template: expected one of: auto, qwen3, chatml, "
               "deepseek3, mistral, qwen2, deepseek-r1, mistral-legacy");
    expect_one(edit("model:\n", "model:\n  kv_memory: 3 apples\n"),
               "6:14: error: model.kv_memory: expected a size from 0 to 1125899906842624 "
               "bytes, such as 512MiB or 8GiB");
}

static void test_missing_required(void **st)
{
    (void)st;
    expect_one(edit("  path: model.gguf", "  threads: 2\n"),
               "6:3: error: model: missing required key 'path'");
    expect_one(edit("        hash: sha256:", ""),
               "18:9: error: tenants[0].api_keys[0]: missing required key 'hash'");
}

static void test_missing_file(void **st)
{
    (void)st;
    char real[600], want[1400];
    assert_non_null(realpath(dir, real));
    snprintf(want, sizeof want,
             "6:9: error: model.path: file 'nope.gguf' not found (resolved to '%s/nope.gguf')",
             real);
    expect_one(edit("  path: model.gguf", "  path: nope.gguf\n"), want);
    snprintf(want, sizeof want,
             "9:11: error: domains[0].pack: 'model.gguf' is not a folder (resolved to "
             "'%s/model.gguf')",
             real);
    expect_one(edit("    pack: packs/finance", "    pack: model.gguf\n"), want);
}

static void test_duplicates(void **st)
{
    (void)st;
    expect_one(edit("    domains: [finance]", "    domains: [finance]\n  - id: acme\n"
                                              "    api_keys: [{id: k2, hash: sha256:" HASH_B "}]\n"
                                              "    domains: [medical]\n"),
               "21:9: error: tenants[1].id: duplicate tenant id 'acme' (first at 16:9)");
    expect_one(edit("    pack: packs/medical", "    pack: packs/medical\n    pack: packs/x\n"),
               "12:5: error: domains[1]: duplicate key 'pack' (first at 11:5)");
    expect_one(edit("  - name: medical", "  - name: finance\n"),
               "10:11: error: domains[1].name: duplicate domain 'finance' (first at 8:11)");
    expect_one(edit("    domains: [finance]", "    domains: [finance]\n  - id: beta\n"
                                              "    api_keys: [{id: k1, hash: sha256:" HASH_A "}]\n"
                                              "    domains: [medical]\n"),
               "22:31: error: tenants[1].api_keys[0].hash: same hash as tenants[0].api_keys[0] "
               "(first at 19:15); a key belongs to one tenant and one id");
}

static void test_contradictions(void **st)
{
    (void)st;
    expect_one(edit("    domains: [finance]", "    domains: [finance, legal]\n"),
               "20:24: error: tenants[0].domains[1]: unknown domain 'legal' (defined: finance, "
               "medical)");
    expect_one(
        edit("    domains: [finance]", "    domains: [finance]\n    mtls_subjects: [CN=x]\n"),
        "21:20: error: tenants[0].mtls_subjects: client certificate subjects need "
        "server.tls_client_ca");
    diags g;
    assert_int_equal(load_text(edit("    domains: [finance]",
                                    "    domains: [finance]\n    mtls_subjects: [client-7]\n"),
                               &g, NULL),
                     MG_EFORMAT);
    assert_int_equal(g.n, 2); /* and the missing client CA, at 21:20 */
    assert_string_equal(g.line[1], "21:21: error: tenants[0].mtls_subjects[0]: expected a "
                                   "distinguished name such as CN=client,O=Example (RFC 2253, as "
                                   "'openssl x509 -noout -subject -nameopt RFC2253' prints it)");
    expect_one(edit("  on_failure: reject", "  on_failure: reject\n  payload: encrypt\n"),
               "15:12: error: audit.payload: encrypt needs audit.encryption_key_file");
    expect_one(
        edit("    pack: packs/medical", "    pack: packs/medical\n    adapter: legal-lora\n"),
        "12:14: error: domains[1].adapter: unknown adapter 'legal-lora' (no adapters are "
        "defined)");
}

static void test_weak_settings(void **st)
{
    (void)st;
    diags g;
    assert_int_equal(load_text(edit("  listen:", "  listen: 0.0.0.0:8080\n  tls: off\n"), &g, NULL),
                     MG_EFORMAT);
    assert_int_equal(g.errors, 1);
    assert_string_equal(g.line[0], "3:8: error: server.tls: TLS is off on non-loopback address "
                                   "'0.0.0.0'; plain HTTP there needs "
                                   "server.allow_insecure_nonloopback: true");
    /* explicitly allowed: a warning, and the cert settings are ignored ones */
    assert_int_equal(load_text(edit("  listen:", "  listen: 10.1.2.3:8080\n  tls: off\n"
                                                 "  allow_insecure_nonloopback: true\n"),
                               &g, NULL),
                     0);
    assert_int_equal(g.errors, 0);
    assert_int_equal(g.n, 3);
    assert_string_equal(g.line[0], "3:8: warning: server.tls: TLS is off on non-loopback address "
                                   "'10.1.2.3': API keys, prompts and answers cross the network "
                                   "in clear text");
    assert_string_equal(g.line[1],
                        "5:13: warning: server.tls_cert: ignored because server.tls is off");
    /* loopback without TLS is fine */
    assert_int_equal(load_text(edit("  listen:", "  listen: '[::1]:8080'\n  tls: off\n"), &g, NULL),
                     0);
    assert_int_equal(g.n, 2); /* the two ignored cert settings */
    /* a raw key where the hash belongs: refused, and never quoted */
    const char *secret = "sk-live-3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c";
    char line[200];
    snprintf(line, sizeof line, "        hash: %s\n", secret);
    assert_int_equal(load_text(edit("        hash:", line), &g, NULL), MG_EFORMAT);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.line[0], "19:15: error: tenants[0].api_keys[0].hash: not a key hash: "
                                   "expected 'sha256:' followed by 64 hex digits (make one with "
                                   "'moegate policy hash-key'); if this value is a key, it is "
                                   "exposed: rotate it");
    assert_null(strstr(g.line[0], secret));
    /* a secret file others can read */
    fill("open.key", 0644, 32);
    expect_one(
        edit("  on_failure: reject", "  on_failure: reject\n  encryption_key_file: open.key\n"),
        "15:24: warning: audit.encryption_key_file: 'open.key' holds a secret but is "
        "readable by group or others (mode 0644); chmod 600 it");
    /* a key file of the wrong size: said without reading it */
    fill("short.key", 0600, 16);
    expect_one(
        edit("  on_failure: reject", "  on_failure: reject\n  encryption_key_file: short.key\n"),
        "15:24: error: audit.encryption_key_file: the file holds 16 bytes; an AES-256 key "
        "file holds 32 bytes, or 64 hex digits and an optional newline");
    /* a connection string in the file: refused without quoting it */
    assert_int_equal(
        load_text(edit("  connection_env:", "  connection: postgres://u:hunter2@db/a\n"), &g, NULL),
        MG_EFORMAT);
    assert_int_equal(g.n, 1);
    assert_null(strstr(g.line[0], "hunter2"));
    assert_string_equal(g.line[0], "13:3: error: audit.connection: a connection string is a "
                                   "secret and must not be written in the policy; name a file "
                                   "(connection_file) or an environment variable (connection_env)");
}

static void test_yaml_level(void **st)
{
    (void)st;
    expect_one("server:\n  listen: [a\nmodel: {}\n",
               "3:6: error: YAML syntax: did not find expected ',' or ']' while parsing a flow "
               "sequence (line 2)");
    expect_one(edit("  - name: medical", "  - name: &m medical\n"),
               "10:11: error: anchors (&name) are not allowed in a policy file: write each "
               "setting where it applies");
    expect_one("", "0:0: error: the file is empty; expected a mapping with server, model, "
                   "domains, tenants and audit");
    expect_one("- a\n- b\n", "1:1: error: expected a mapping with server, model, domains, "
                             "tenants and audit, got a list");
}

static void test_redaction_schema(void **st)
{
    (void)st;
    char buf[8192];
    snprintf(buf, sizeof buf, "%sredaction:\n  rules:\n    - detector: cn_passport\n", BASE);
    expect_one(buf, "23:17: error: redaction.rules[0].detector: unknown detector 'cn_passport' "
                    "(built-in: cn_resident_id, imsi, imei, bank_card, cn_mobile, us_ssn, iban, "
                    "email, ipv4)");
    snprintf(buf, sizeof buf,
             "%sredaction:\n  rules:\n    - name: mrn\n      pattern: 'MRN(\\d+'\n", BASE);
    expect_one(buf, "24:16: error: redaction.rules[0].pattern: invalid regular expression at "
                    "offset 7: missing closing parenthesis");
    snprintf(buf, sizeof buf,
             "%sredaction:\n  rules:\n    - {detector: email}\n    - {detector: email, action: "
             "block}\n",
             BASE);
    expect_one(buf, "24:18: error: redaction.rules[1].detector: duplicate rule 'email' (first at "
                    "23:18)");
    snprintf(buf, sizeof buf, "%sredaction:\n  rules:\n    - {detector: email, action: erase}\n",
             BASE);
    expect_one(buf, "23:33: error: redaction.rules[0].action: expected one of: redact, "
                    "redact_input, redact_output, block");
}

static void test_all_errors_listed(void **st)
{
    (void)st;
    /* several mistakes: all reported, sorted by position */
    diags g;
    const char *text = "server:\n  listen: nowhere\nmodel:\n  path: 5\n  treads: 2\n";
    assert_int_equal(load_text(text, &g, NULL), MG_EFORMAT);
    assert_int_equal(g.n, 8);
    assert_string_equal(g.line[0], "1:1: error: top level: missing required key 'domains'");
    assert_string_equal(g.line[3], "2:3: error: server: missing required key 'tls_cert'");
    assert_string_equal(g.line[5], "2:11: error: server.listen: expected host:port, such as "
                                   "127.0.0.1:8443 or [::1]:8443");
    assert_string_equal(g.line[7], "5:3: error: model: unknown key 'treads' (did you mean "
                                   "'threads'?)");
}

/* the example in policies/ loads without error in a tree with its files */
static void test_example(void **st)
{
    (void)st;
    FILE *f = fopen("policies/example.yaml", "r");
    assert_non_null(f);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    mkd("models");
    mkd("adapters");
    mkd("domains");
    mkd("domains/finance");
    mkd("domains/medical");
    mkd("domains/telecom");
    mkd("secrets");
    mkd("keys");
    touch("tls/clients-ca.crt", 0644);
    touch("models/Qwen3-30B-A3B-Q4_K_M.gguf", 0644);
    touch("adapters/finance-lora.gguf", 0644);
    touch("adapters/medical-lora.gguf", 0644);
    touch("secrets/audit-db.conninfo", 0600);
    fill("keys/audit-payload.key", 0600, 65);
    touch("keys/checkpoint-ed25519.pem", 0600);
    diags g;
    policy *p = NULL;
    assert_int_equal(load_text(text, &g, &p), 0);
    for (int i = 0; i < g.n; i++)
        fprintf(stderr, "example: %s\n", g.line[i]);
    assert_int_equal(g.n, 0);
    const policy_config *c = policy_get_config(p);
    assert_int_equal(c->n_tenants, 4);
    assert_int_equal(c->n_redaction_rules, 11);
    assert_int_equal(c->audit.durability, POLICY_DURABILITY_STRICT);
    assert_string_equal(c->audit.encryption_key_id, "payload-2026");
    assert_string_equal(c->audit.writer_id, "gw-01");
    assert_int_equal(c->model.kv_memory_bytes, (int64_t)24 << 30);
    assert_int_equal(c->server.max_body_bytes, 4 << 20);
    assert_int_equal(policy_find_tenant(p, "acme-securities")->audit_payload,
                     POLICY_PAYLOAD_ENCRYPT);
    assert_int_equal(policy_find_tenant(p, "city-hospital")->retention_days, 6 * 366);
    assert_string_equal(policy_find_adapter(p, "finance-lora")->version, "2026.05");
    assert_string_equal(policy_find_adapter(p, "medical-lora")->version, "0a1b2c3d4e5f");
    const policy_domain *fin = policy_find_domain(p, "finance");
    assert_ptr_equal(policy_domain_adapter(p, fin, "2026.05"),
                     policy_find_adapter(p, "finance-lora"));
    assert_true(c->content_labels.enabled);
    assert_string_equal(c->content_labels.provider_code, "91110000MA01ABCD2X");
    assert_false(c->content_labels.explicit_at_start);
    assert_null(c->router.ood_examples);
    policy_release(p);
}

/* ---- adapter versions ------------------------------------------------------------------- */

/* Three adapter digests: SHA_3 shares its first 8 digits with SHA_1. */
#define SHA_1 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_2 "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
#define SHA_3 "01234567ffffffff0123456789abcdef0123456789abcdef0123456789abcdef"

/* BASE with `adapters` (whole lines, from line 7) before the domains and
 * `extra` (whole lines) after the finance domain's pack (which moves to
 * line 13 when adapters is 4 lines). */
static char *with_adapters(const char *adapters, const char *extra)
{
    static char buf[8192];
    const char *d = strstr(BASE, "domains:\n"), *m = strstr(BASE, "  - name: medical");
    snprintf(buf, sizeof buf, "%.*s%s%.*s%s%s", (int)(d - BASE), BASE, adapters, (int)(m - d), d,
             extra, m);
    return buf;
}

static const char *const ADAPTERS =
    "adapters:\n"                                                                /* 7 */
    "  - {name: fin-a, path: model.gguf, sha256: " SHA_1 "}\n"                   /* 8 */
    "  - {name: fin-b, path: model.gguf, sha256: " SHA_2 ", version: 2026.05}\n" /* 9 */
    "  - {name: fin-c, path: model.gguf, sha256: " SHA_3 "}\n";                  /* 10 */

static void test_adapter_versions(void **st)
{
    (void)st;
    diags g;
    policy *p = NULL;
    assert_int_equal(load_text(with_adapters(ADAPTERS, "    adapter: fin-a\n"
                                                       "    versions: [fin-b, fin-c]\n"),
                               &g, &p),
                     0);
    assert_int_equal(g.n, 0);
    const policy_adapter *a = policy_find_adapter(p, "fin-a"), *b = policy_find_adapter(p, "fin-b"),
                         *c = policy_find_adapter(p, "fin-c");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_null(policy_find_adapter(p, "fin-d"));
    assert_null(policy_find_adapter(NULL, "fin-a"));
    assert_string_equal(a->version, "0123456789ab"); /* default: 12 digits of the digest */
    assert_string_equal(b->version, "2026.05");
    assert_string_equal(c->version, "01234567ffff");
    const policy_domain *fin = policy_find_domain(p, "finance"),
                        *med = policy_find_domain(p, "medical");
    assert_int_equal(fin->n_versions, 2);
    assert_string_equal(fin->versions[0], "fin-b");
    assert_string_equal(fin->versions[1], "fin-c");
    assert_int_equal(med->n_versions, 0);
    /* nothing pinned: the domain's adapter; a domain without one has none */
    assert_ptr_equal(policy_domain_adapter(p, fin, NULL), a);
    assert_null(policy_domain_adapter(p, med, NULL));
    assert_null(policy_domain_adapter(p, med, "2026.05"));
    /* by label */
    assert_ptr_equal(policy_domain_adapter(p, fin, "2026.05"), b);
    assert_ptr_equal(policy_domain_adapter(p, fin, "0123456789ab"), a);
    assert_ptr_equal(policy_domain_adapter(p, fin, "01234567ffff"), c);
    assert_null(policy_domain_adapter(p, fin, "2026.5"));
    assert_null(policy_domain_adapter(p, fin, ""));
    /* by digest prefix: 8 to 64 lower-case digits */
    assert_ptr_equal(policy_domain_adapter(p, fin, "fedcba98"), b);
    assert_ptr_equal(policy_domain_adapter(p, fin, SHA_2), b);
    assert_null(policy_domain_adapter(p, fin, "fedcba9"));  /* 7 digits: too short */
    assert_null(policy_domain_adapter(p, fin, "FEDCBA98")); /* upper case */
    assert_null(policy_domain_adapter(p, fin, SHA_2 "0"));  /* 65 digits */
    assert_null(policy_domain_adapter(p, fin, "fedcba99")); /* no such digest */
    assert_null(policy_domain_adapter(p, fin, "01234567")); /* fin-a and fin-c: ambiguous */
    assert_ptr_equal(policy_domain_adapter(p, fin, "012345678"), a);
    assert_ptr_equal(policy_domain_adapter(p, fin, "01234567f"), c);
    policy_release(p);

    /* only what the domain reaches: fin-b is no version of medical */
    assert_int_equal(load_text(with_adapters(ADAPTERS, "    adapter: fin-a\n"), &g, &p), 0);
    fin = policy_find_domain(p, "finance");
    assert_null(fin->versions);
    assert_int_equal(fin->n_versions, 0);
    assert_ptr_equal(policy_domain_adapter(p, fin, "0123456789ab"),
                     policy_find_adapter(p, "fin-a"));
    assert_null(policy_domain_adapter(p, fin, "2026.05"));
    assert_null(policy_domain_adapter(p, fin, "fedcba98"));
    policy_release(p);

    /* a label wins over another adapter's digest prefix */
    assert_int_equal(
        load_text(with_adapters("adapters:\n"
                                "  - {name: fin-a, path: model.gguf, sha256: " SHA_1 "}\n"
                                "  - {name: fin-b, path: model.gguf, sha256: " SHA_2 "}\n"
                                "  - {name: fin-c, path: model.gguf, sha256: " SHA_3
                                ", version: fedcba98}\n",
                                "    adapter: fin-a\n    versions: [fin-b, fin-c]\n"),
                  &g, &p),
        0);
    fin = policy_find_domain(p, "finance");
    assert_ptr_equal(policy_domain_adapter(p, fin, "fedcba98"), policy_find_adapter(p, "fin-c"));
    assert_ptr_equal(policy_domain_adapter(p, fin, "fedcba987"), policy_find_adapter(p, "fin-b"));
    policy_release(p);

    /* one label in two domains is fine: each domain names one adapter by it */
    char buf[8192];
    snprintf(buf, sizeof buf, "%s",
             with_adapters("adapters:\n"
                           "  - {name: fin-a, path: model.gguf, sha256: " SHA_1 ", version: v1}\n"
                           "  - {name: med-a, path: model.gguf, sha256: " SHA_2 ", version: v1}\n"
                           "\n",
                           "    adapter: fin-a\n"));
    char *med_pack = strstr(buf, "    pack: packs/medical\n");
    assert_non_null(med_pack);
    strcpy(med_pack, "    pack: packs/medical\n    adapter: med-a\n");
    strcat(buf, strstr(BASE, "audit:\n"));
    assert_int_equal(load_text(buf, &g, &p), 0);
    assert_int_equal(g.n, 0);
    assert_ptr_equal(policy_domain_adapter(p, policy_find_domain(p, "medical"), "v1"),
                     policy_find_adapter(p, "med-a"));
    assert_ptr_equal(policy_domain_adapter(p, policy_find_domain(p, "finance"), "v1"),
                     policy_find_adapter(p, "fin-a"));
    policy_release(p);
}

static void test_adapter_version_errors(void **st)
{
    (void)st;
    expect_one(with_adapters("adapters:\n"
                             "  - {name: fin-a, path: model.gguf, sha256: " SHA_1 "}\n"
                             "  - {name: fin-b, path: model.gguf, sha256: " SHA_2
                             ", version: 'v 2'}\n"
                             "  - {name: fin-c, path: model.gguf, sha256: " SHA_3 "}\n",
                             ""),
               "9:120: error: adapters[1].version: expected a label of 1 to 64 letters, digits, "
               "'.', '_' or '-'");
    /* a label may start with any of its characters, a name only with a letter or digit */
    expect_one(with_adapters("adapters:\n"
                             "  - {name: .fin, path: model.gguf, sha256: " SHA_1
                             ", version: .v2}\n",
                             ""),
               "8:12: error: adapters[0].name: expected a name of 1 to 64 letters, digits, '.', "
               "'_' or '-', starting with a letter or digit");
    expect_one(with_adapters(ADAPTERS, "    adapter: fin-a\n    versions: [fin-b, legal]\n"),
               "15:23: error: domains[0].versions[1]: unknown adapter 'legal' (defined: fin-a, "
               "fin-b, fin-c)");
    expect_one(with_adapters(ADAPTERS, "    adapter: fin-a\n    versions: [fin-b, fin-b]\n"),
               "15:23: warning: domains[0].versions[1]: adapter 'fin-b' is listed twice");
    expect_one(with_adapters(ADAPTERS, "    versions: [fin-b]\n"),
               "14:15: error: domains[0].versions: needs domains[0].adapter, the adapter that "
               "answers when the client pins no version");
    expect_one(with_adapters(ADAPTERS, "    adapter: fin-a\n    versions: fin-b\n"),
               "15:15: error: domains[0].versions: expected a list, got a plain scalar");
    /* two adapters of one domain under one label: two versions, or a version and the
     * domain's adapter */
    const char *clash = "adapters:\n"
                        "  - {name: fin-a, path: model.gguf, sha256: " SHA_1 "}\n"
                        "  - {name: fin-b, path: model.gguf, sha256: " SHA_2 ", version: v2}\n"
                        "  - {name: fin-c, path: model.gguf, sha256: " SHA_3 ", version: v2}\n";
    expect_one(with_adapters(clash, "    adapter: fin-a\n    versions: [fin-b, fin-c]\n"),
               "15:23: error: domains[0].versions[1]: adapter 'fin-c' has version 'v2', as has "
               "adapter 'fin-b' of this domain; give one of them another adapters[].version");
    expect_one(with_adapters(clash, "    adapter: fin-b\n    versions: [fin-c]\n"),
               "15:16: error: domains[0].versions[0]: adapter 'fin-c' has version 'v2', as has "
               "adapter 'fin-b' of this domain; give one of them another adapters[].version");
    /* the domain's own adapter listed among its versions is no clash */
    diags g;
    assert_int_equal(
        load_text(with_adapters(clash, "    adapter: fin-b\n    versions: [fin-b]\n"), &g, NULL),
        0);
    assert_int_equal(g.n, 0);
}

/* ---- content labels and the router -------------------------------------------------------- */

static void test_content_labels(void **st)
{
    (void)st;
    diags g;
    policy *p = NULL;
    char buf[8192];
    /* absent: off */
    assert_int_equal(load_text(BASE, &g, &p), 0);
    const policy_content_labels *cl = &policy_get_config(p)->content_labels;
    assert_false(cl->enabled);
    assert_null(cl->provider);
    assert_null(cl->explicit_text[0]);
    policy_release(p);
    /* the provider alone: the defaults */
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: 示例智能科技有限公司\n", BASE);
    assert_int_equal(load_text(buf, &g, &p), 0);
    assert_int_equal(g.n, 0);
    cl = &policy_get_config(p)->content_labels;
    assert_true(cl->enabled);
    assert_string_equal(cl->provider, "示例智能科技有限公司");
    assert_null(cl->provider_code);
    assert_false(cl->explicit_at_start);
    assert_string_equal(cl->explicit_text[0], "本内容由人工智能生成。");
    assert_string_equal(cl->explicit_text[1], "This content was generated by AI.");
    policy_release(p);
    /* everything given */
    snprintf(buf, sizeof buf,
             "%scontent_labels:\n"
             "  provider: Example AI Ltd.\n"
             "  provider_code: 91110000MA01ABCD2X\n"
             "  explicit: {position: start, zh: 以下内容由AI生成, en: 'AI-generated:'}\n",
             BASE);
    assert_int_equal(load_text(buf, &g, &p), 0);
    assert_int_equal(g.n, 0);
    cl = &policy_get_config(p)->content_labels;
    assert_string_equal(cl->provider_code, "91110000MA01ABCD2X");
    assert_true(cl->explicit_at_start);
    assert_string_equal(cl->explicit_text[0], "以下内容由AI生成");
    assert_string_equal(cl->explicit_text[1], "AI-generated:");
    policy_release(p);
    /* only one text overridden: the other keeps its default */
    snprintf(buf, sizeof buf,
             "%scontent_labels:\n  provider: X\n  explicit: {position: end, en: Made by AI.}\n",
             BASE);
    assert_int_equal(load_text(buf, &g, &p), 0);
    cl = &policy_get_config(p)->content_labels;
    assert_false(cl->explicit_at_start);
    assert_string_equal(cl->explicit_text[0], "本内容由人工智能生成。");
    assert_string_equal(cl->explicit_text[1], "Made by AI.");
    policy_release(p);
    /* 256 bytes of provider pass, 257 do not */
    char name[300];
    memset(name, 'a', 257);
    name[256] = 0;
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: %s\n", BASE, name);
    assert_int_equal(load_text(buf, &g, NULL), 0);
    name[256] = 'a';
    name[257] = 0;
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: %s\n", BASE, name);
    expect_one(buf, "22:13: error: content_labels.provider: expected text of 1 to 256 bytes "
                    "without control characters (no line breaks or tabs)");
}

static void test_content_labels_errors(void **st)
{
    (void)st;
    char buf[8192];
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider_code: ABC-1\n", BASE);
    expect_one(buf, "22:3: error: content_labels: missing required key 'provider'");
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: \"Example\\tAI\"\n", BASE);
    expect_one(buf, "22:13: error: content_labels.provider: expected text of 1 to 256 bytes "
                    "without control characters (no line breaks or tabs)");
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: \"Example\\u0085AI\"\n", BASE);
    expect_one(buf, "22:13: error: content_labels.provider: expected text of 1 to 256 bytes "
                    "without control characters (no line breaks or tabs)");
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: X\n  provider_code: ABC_123\n", BASE);
    expect_one(buf, "23:18: error: content_labels.provider_code: expected 1 to 64 letters, "
                    "digits or '-' (such as the unified social credit code)");
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: X\n  explicit: {position: middle}\n",
             BASE);
    expect_one(buf, "23:24: error: content_labels.explicit.position: expected one of: start, end");
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: X\n  explicit: {en: ''}\n", BASE);
    expect_one(buf, "23:18: error: content_labels.explicit.en: expected text of 1 to 512 bytes "
                    "without control characters (no line breaks or tabs)");
    snprintf(buf, sizeof buf,
             "%scontent_labels:\n  provider: X\n  explicit:\n    zh: |\n      两行\n      文字\n",
             BASE);
    expect_one(buf, "24:9: error: content_labels.explicit.zh: expected text of 1 to 512 bytes "
                    "without control characters (no line breaks or tabs)");
    snprintf(buf, sizeof buf, "%scontent_labels:\n  provider: X\n  explicit: {pos: start}\n", BASE);
    expect_one(buf, "23:14: error: content_labels.explicit: unknown key 'pos' (expected one of: "
                    "position, zh, en)");
    snprintf(buf, sizeof buf, "%scontent_labels: on\n", BASE);
    expect_one(buf, "21:17: error: content_labels: expected a mapping, got a plain scalar");
}

static void test_router(void **st)
{
    (void)st;
    diags g;
    policy *p = NULL;
    char buf[8192], want[1400], real[600];
    touch("ood.jsonl", 0644);
    assert_non_null(realpath(dir, real));
    assert_int_equal(load_text(BASE, &g, &p), 0);
    assert_null(policy_get_config(p)->router.ood_examples);
    assert_true(policy_get_config(p)->router.threshold == 0);
    policy_release(p);
    snprintf(buf, sizeof buf, "%srouter:\n  ood_examples: ood.jsonl\n  threshold: 0.35\n", BASE);
    assert_int_equal(load_text(buf, &g, &p), 0);
    assert_int_equal(g.n, 0);
    const policy_router *ro = &policy_get_config(p)->router;
    snprintf(want, sizeof want, "%s/ood.jsonl", real);
    assert_string_equal(ro->ood_examples, want);
    assert_true(ro->threshold == 0.35);
    policy_release(p);
    /* an empty section: the router's defaults */
    snprintf(buf, sizeof buf, "%srouter: {threshold: 5e-1}\n", BASE);
    assert_int_equal(load_text(buf, &g, &p), 0);
    assert_true(policy_get_config(p)->router.threshold == 0.5);
    assert_null(policy_get_config(p)->router.ood_examples);
    policy_release(p);
    static const struct {
        const char *value, *got;
    } bad[] = {{"0", "0"},       {"1", "1"},          {"1.5", "1.5"},
               {"-0.2", "-0.2"}, {"0.0", "0.0"},      {"'0.5'", "a quoted string"},
               {"nan", "text"},  {"0x0.8p0", "text"}, {"[0.5]", "a list"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "%srouter:\n  threshold: %s\n", BASE, bad[i].value);
        snprintf(want, sizeof want,
                 "22:14: error: router.threshold: expected a number between 0 and 1 (both "
                 "excluded), got %s",
                 bad[i].got);
        expect_one(buf, want);
    }
    snprintf(buf, sizeof buf, "%srouter:\n  ood_examples: ood-missing.jsonl\n", BASE);
    snprintf(want, sizeof want,
             "22:17: error: router.ood_examples: file 'ood-missing.jsonl' not found (resolved to "
             "'%s/ood-missing.jsonl')",
             real);
    expect_one(buf, want);
    snprintf(buf, sizeof buf, "%srouter:\n  ood_examples: packs\n", BASE);
    snprintf(want, sizeof want,
             "22:17: error: router.ood_examples: 'packs' is not a regular file (resolved to "
             "'%s/packs')",
             real);
    expect_one(buf, want);
    snprintf(buf, sizeof buf, "%srouter:\n  threshhold: 0.5\n", BASE);
    expect_one(buf, "22:3: error: router: unknown key 'threshhold' (did you mean 'threshold'?)");
}

/* ---- extra detectors from a domain pack -------------------------------------------------- */

/* Loads BASE plus `rules` (the lines under redaction.rules, or "" for none). */
static policy *load_rules(const char *rules)
{
    char buf[8192];
    diags g;
    policy *p = NULL;
    if (*rules)
        snprintf(buf, sizeof buf, "%sredaction:\n  rules:\n%s", BASE, rules);
    else
        snprintf(buf, sizeof buf, "%s", BASE);
    assert_int_equal(load_text(buf, &g, &p), 0);
    return p;
}

static policy_detectors *detectors(const char *const *names, int n)
{
    policy_detectors *d = NULL;
    char err[300];
    assert_int_equal(policy_detectors_create(&d, names, n, err, sizeof err), 0);
    assert_non_null(d);
    return d;
}

/* Redacts text in dir with r; returns a static copy of the result. */
static const char *red(policy_redaction *r, policy_direction dir_, const char *text, bool *blocked)
{
    static char out[4096];
    policy_redact_result res;
    char err[300];
    assert_int_equal(policy_redact(r, dir_, text, strlen(text), &res, err, sizeof err), 0);
    snprintf(out, sizeof out, "%s", res.text);
    if (blocked)
        *blocked = res.blocked;
    free(res.text);
    return out;
}

static void test_detectors_extra(void **st)
{
    (void)st;
    policy *p = load_rules("");
    policy_detectors *d = detectors((const char *const[]){"cn_mobile"}, 1);
    policy_redaction *r = NULL;
    /* without the extras nothing is redacted */
    assert_int_equal(policy_redaction_create(&r, p), 0);
    assert_string_equal(red(r, POLICY_INPUT, "请拨打13800138000", NULL), "请拨打13800138000");
    policy_redaction_free(r);
    /* with them: input and output, one placeholder for one number */
    assert_int_equal(policy_redaction_create_ex(&r, p, d), 0);
    bool blocked = true;
    assert_string_equal(red(r, POLICY_INPUT, "请拨打13800138000或13912345678", &blocked),
                        "请拨打[PHONE_1]或[PHONE_2]");
    assert_false(blocked);
    assert_string_equal(red(r, POLICY_OUTPUT, "好的，号码是+86 138-0013-8000。", NULL),
                        "好的，号码是[PHONE_1]。");
    policy_finding f[4];
    assert_int_equal(policy_redaction_findings(r, f, 4), 1);
    assert_string_equal(f[0].rule, "cn_mobile");
    assert_string_equal(f[0].label, "PHONE");
    assert_int_equal(f[0].input, 2);
    assert_int_equal(f[0].output, 1);
    policy_redaction_free(r);
    /* NULL extras: exactly the policy's rules */
    assert_int_equal(policy_redaction_create_ex(&r, p, NULL), 0);
    assert_string_equal(red(r, POLICY_OUTPUT, "13800138000", NULL), "13800138000");
    assert_int_equal(policy_redaction_findings(r, f, 4), 0);
    policy_redaction_free(r);
    policy_detectors_free(d);
    /* an empty set is a valid one */
    d = detectors(NULL, 0);
    assert_int_equal(policy_redaction_create_ex(&r, p, d), 0);
    assert_string_equal(red(r, POLICY_INPUT, "13800138000", NULL), "13800138000");
    policy_redaction_free(r);
    policy_detectors_free(d);
    policy_detectors_free(NULL);
    policy_release(p);
}

static void test_detectors_policy_wins(void **st)
{
    (void)st;
    /* the policy blocks phone numbers: an extra cn_mobile does not soften it */
    policy *p = load_rules("    - {detector: cn_mobile, action: block}\n"
                           "    - {detector: email, action: redact_output}\n"
                           "    - name: host\n"
                           "      pattern: 'HOST-[0-9]+(?:[.][0-9]+){3}'\n");
    policy_detectors *d =
        detectors((const char *const[]){"email", "cn_mobile", "cn_mobile", "ipv4"}, 4);
    policy_redaction *r = NULL;
    assert_int_equal(policy_redaction_create_ex(&r, p, d), 0);
    policy_redact_result res;
    const char *text = "call 13800138000 from 10.1.2.3";
    assert_int_equal(policy_redact(r, POLICY_INPUT, text, strlen(text), &res, NULL, 0), 0);
    assert_true(res.blocked);
    assert_string_equal(res.blocked_by, "cn_mobile");
    assert_string_equal(res.text, "call [PHONE_1] from [IPV4_1]");
    free(res.text);
    /* email is the policy's with redact_output: input keeps it, output does not */
    assert_string_equal(red(r, POLICY_INPUT, "mail a.b@example.com", NULL), "mail a.b@example.com");
    assert_string_equal(red(r, POLICY_OUTPUT, "mail a.b@example.com", NULL), "mail [EMAIL_1]");
    /* overlapping findings: the policy's custom rule wins over the extra */
    assert_string_equal(red(r, POLICY_INPUT, "at HOST-10.1.2.3", NULL), "at [HOST_1]");
    /* findings: the policy's rules first, each once, then the extra */
    policy_finding f[8];
    int n = policy_redaction_findings(r, f, 8);
    assert_int_equal(n, 4);
    assert_string_equal(f[0].rule, "cn_mobile");
    assert_int_equal(f[0].input, 1);
    assert_string_equal(f[1].rule, "email");
    assert_int_equal(f[1].input, 0);
    assert_int_equal(f[1].output, 1);
    assert_string_equal(f[2].rule, "host");
    assert_string_equal(f[3].rule, "ipv4");
    assert_string_equal(f[3].label, "IPV4");
    assert_int_equal(f[3].input, 1);
    policy_redaction_free(r);
    policy_detectors_free(d);
    policy_release(p);
}

/* Among extras the built-in priority holds, whatever order the pack names
 * them in: an 18-digit resident ID that also passes Luhn (checked in
 * Python) is an ID_CARD, not a BANK_CARD. */
static void test_detectors_priority(void **st)
{
    (void)st;
    policy *p = load_rules("");
    policy_detectors *card = detectors((const char *const[]){"bank_card"}, 1);
    policy_detectors *both = detectors((const char *const[]){"bank_card", "cn_resident_id"}, 2);
    policy_redaction *r = NULL;
    assert_int_equal(policy_redaction_create_ex(&r, p, card), 0);
    assert_string_equal(red(r, POLICY_INPUT, "证件440524198001010005", NULL), "证件[BANK_CARD_1]");
    policy_redaction_free(r);
    assert_int_equal(policy_redaction_create_ex(&r, p, both), 0);
    assert_string_equal(red(r, POLICY_INPUT, "证件440524198001010005", NULL), "证件[ID_CARD_1]");
    policy_finding f[4];
    assert_int_equal(policy_redaction_findings(r, f, 4), 1);
    assert_string_equal(f[0].rule, "cn_resident_id");
    policy_redaction_free(r);
    policy_detectors_free(card);
    policy_detectors_free(both);
    policy_release(p);
}

/* Streaming with extras gives what redacting the whole text gives, in
 * every chunk size. */
static void test_detectors_stream(void **st)
{
    (void)st;
    policy *p = load_rules("    - {detector: email}\n");
    policy_detectors *d = detectors((const char *const[]){"cn_mobile", "email", "bank_card"}, 3);
    char text[2048] = "";
    for (int i = 0; i < 12; i++)
        strcat(text, i % 3 == 0   ? "客户13800138000说，"
                     : i % 3 == 1 ? "mail li.lei@example.cn then card 4111 1111 1111 1111; "
                                  : "again +86 139-1234-5678 and 13800138000. ");
    policy_redaction *r = NULL;
    assert_int_equal(policy_redaction_create_ex(&r, p, d), 0);
    char whole[4096];
    snprintf(whole, sizeof whole, "%s", red(r, POLICY_OUTPUT, text, NULL));
    policy_redaction_free(r);
    assert_non_null(strstr(whole, "[PHONE_2]"));
    assert_non_null(strstr(whole, "[BANK_CARD_1]"));
    assert_non_null(strstr(whole, "[EMAIL_1]"));
    size_t len = strlen(text);
    for (size_t chunk = 1; chunk <= 300; chunk += chunk < 20 ? 1 : 37) {
        assert_int_equal(policy_redaction_create_ex(&r, p, d), 0);
        char got[4096] = "";
        size_t used = 0;
        for (size_t off = 0; off <= len; off += chunk) {
            size_t n = len - off < chunk ? len - off : chunk;
            bool final = off + chunk > len;
            policy_redact_result res;
            assert_int_equal(policy_redact_stream(r, text + off, n, final, &res, NULL, 0), 0);
            assert_true(used + res.len < sizeof got);
            memcpy(got + used, res.text, res.len);
            used += res.len;
            free(res.text);
            if (final)
                break;
        }
        got[used] = 0;
        assert_string_equal(got, whole);
        policy_finding f[4];
        assert_int_equal(policy_redaction_findings(r, f, 4), 3);
        assert_string_equal(f[0].rule, "email");
        assert_string_equal(f[1].rule, "bank_card");
        assert_string_equal(f[2].rule, "cn_mobile");
        assert_int_equal(f[2].output, 12);
        policy_redaction_free(r);
    }
    policy_detectors_free(d);
    policy_release(p);
}

static void test_detectors_unknown(void **st)
{
    (void)st;
    policy_detectors *d = (policy_detectors *)0x1;
    char err[400];
    assert_int_equal(policy_detectors_create(&d, (const char *const[]){"cn_mobile", "cn_passport"},
                                             2, err, sizeof err),
                     MG_EINVAL);
    assert_ptr_equal(d, (policy_detectors *)0x1); /* untouched */
    assert_string_equal(err, "policy: unknown detector 'cn_passport' (built-in: cn_resident_id, "
                             "imsi, imei, bank_card, cn_mobile, us_ssn, iban, email, ipv4)");
    assert_int_equal(policy_detectors_create(&d, (const char *const[]){"CN_MOBILE"}, 1, NULL, 0),
                     MG_EINVAL);
    assert_int_equal(policy_detectors_create(&d, NULL, 1, err, sizeof err), MG_EINVAL);
}

/* ---- keys ------------------------------------------------------------------------------- */

static void test_key_hash(void **st)
{
    (void)st;
    char h[POLICY_KEY_HASH_LEN + 1];
    assert_int_equal(policy_key_hash(KEY_A, strlen(KEY_A), h, sizeof h), 0);
    assert_string_equal(h, "sha256:" HASH_A);
    assert_int_equal(policy_key_hash("", 0, h, sizeof h), MG_EINVAL);
    char k1[POLICY_KEY_LEN + 1], k2[POLICY_KEY_LEN + 1];
    assert_int_equal(policy_key_generate(k1, sizeof k1, NULL, 0), 0);
    assert_int_equal(policy_key_generate(k2, sizeof k2, NULL, 0), 0);
    assert_int_equal(strlen(k1), POLICY_KEY_LEN);
    assert_memory_equal(k1, "mg_", 3);
    assert_string_not_equal(k1, k2);
    for (int i = 3; i < POLICY_KEY_LEN; i++)
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", k1[i]));

    diags g;
    policy *p = NULL;
    assert_int_equal(load_text(edit("    domains: [finance]",
                                    "    domains: [finance]\n  - id: beta\n"
                                    "    api_keys: [{id: kb, hash: sha256:" HASH_B "}]\n"
                                    "    domains: [medical]\n"),
                               &g, &p),
                     0);
    const policy_api_key *k = policy_find_key(p, KEY_B, strlen(KEY_B));
    assert_non_null(k);
    assert_string_equal(k->id, "kb");
    assert_string_equal(k->tenant->id, "beta");
    k = policy_find_key(p, KEY_A, strlen(KEY_A));
    assert_non_null(k);
    assert_string_equal(k->tenant->id, "acme");
    assert_null(policy_find_key(p, KEY_A, strlen(KEY_A) - 1));
    assert_null(policy_find_key(p, "", 0));
    policy_release(p);
}

/* ---- the store ----------------------------------------------------------------------------- */

static void test_reload(void **st)
{
    (void)st;
    char path[512], err[512];
    write_file("store.yaml", BASE);
    snprintf(path, sizeof path, "%s/store.yaml", dir);
    policy_store *s = NULL;
    assert_int_equal(policy_store_open(&s, path, NULL, err, sizeof err), 0);
    const policy *old = policy_store_acquire(s);
    assert_int_equal(policy_generation(old), 1);
    assert_true(policy_tenant_allows_domain(policy_find_tenant(old, "acme"), "finance"));

    /* a valid change: new requests see it, the held snapshot does not change */
    write_file("store.yaml", edit("    domains: [finance]", "    domains: [medical]\n"));
    assert_int_equal(policy_store_reload(s, err, sizeof err), 0);
    const policy *cur = policy_store_acquire(s);
    assert_int_equal(policy_generation(cur), 2);
    assert_true(policy_tenant_allows_domain(policy_find_tenant(cur, "acme"), "medical"));
    assert_true(policy_tenant_allows_domain(policy_find_tenant(old, "acme"), "finance"));
    policy_release(old);
    policy_release(cur);

    /* an invalid file: refused with the reason, the last good one stays */
    write_file("store.yaml", edit("    domains: [finance]", "    domains: [legal]\n"));
    assert_int_equal(policy_store_reload(s, err, sizeof err), MG_EFORMAT);
    char want[700];
    snprintf(want, sizeof want,
             "policy: %s:20:15: tenants[0].domains[0]: unknown domain 'legal' (defined: finance, "
             "medical)",
             path);
    assert_string_equal(err, want);
    cur = policy_store_acquire(s);
    assert_int_equal(policy_generation(cur), 2);
    assert_true(policy_tenant_allows_domain(policy_find_tenant(cur, "acme"), "medical"));
    policy_release(cur);
    /* a vanished file too */
    char gone[600];
    snprintf(gone, sizeof gone, "%s/store.yaml", dir);
    unlink(gone);
    assert_int_equal(policy_store_reload(s, err, sizeof err), MG_EIO);
    cur = policy_store_acquire(s);
    assert_int_equal(policy_generation(cur), 2);
    policy_release(cur);
    policy_store_close(s);
}

/* Readers acquire, use and release snapshots as fast as they can while
 * the main thread reloads between two valid files (and an invalid one):
 * every acquire yields a complete snapshot that authenticates the key and
 * agrees with itself; no request fails. */
typedef struct reader_arg {
    policy_store *s;
    atomic_int *stop;
    long requests, failures;
    uint64_t max_gen;
} reader_arg;

static void *reader(void *ud)
{
    reader_arg *a = ud;
    while (!atomic_load(a->stop)) {
        const policy *p = policy_store_acquire(a->s);
        const policy_api_key *k = policy_find_key(p, KEY_A, strlen(KEY_A));
        const policy_config *c = policy_get_config(p);
        bool ok = k && k->tenant == &c->tenants[0] && c->n_tenants == 1 &&
                  (policy_tenant_allows_domain(k->tenant, "finance") ||
                   policy_tenant_allows_domain(k->tenant, "medical"));
        if (policy_generation(p) > a->max_gen)
            a->max_gen = policy_generation(p);
        policy_release(p);
        a->requests++;
        a->failures += !ok;
    }
    return NULL;
}

static void test_reload_under_load(void **st)
{
    (void)st;
    char path[512], err[512];
    char *v1 = strdup(BASE),
         *v2 = strdup(edit("    domains: [finance]", "    domains: [medical]\n"));
    char *bad = strdup(edit("    domains: [finance]", "    domains: [nope]\n"));
    write_file("load.yaml", v1);
    snprintf(path, sizeof path, "%s/load.yaml", dir);
    policy_store *s = NULL;
    assert_int_equal(policy_store_open(&s, path, NULL, err, sizeof err), 0);
    atomic_int stop;
    atomic_init(&stop, 0);
    enum { N = 4 };
    pthread_t th[N];
    reader_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (reader_arg){s, &stop, 0, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
    }
    int good = 0;
    for (int r = 0; r < 60; r++) {
        const char *text = r % 3 == 2 ? bad : r % 2 ? v2 : v1;
        write_file("load.yaml.tmp", text);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s/load.yaml.tmp", dir);
        assert_int_equal(rename(tmp, path), 0); /* how operators replace files: atomically */
        int rc = policy_store_reload(s, err, sizeof err);
        assert_int_equal(rc, text == bad ? MG_EFORMAT : 0);
        good += rc == 0;
    }
    atomic_store(&stop, 1);
    long total = 0, failures = 0;
    uint64_t max_gen = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        total += args[i].requests;
        failures += args[i].failures;
        if (args[i].max_gen > max_gen)
            max_gen = args[i].max_gen;
    }
    const policy *p = policy_store_acquire(s);
    assert_int_equal(policy_generation(p), 1 + good);
    policy_release(p);
    policy_store_close(s);
    assert_true(total > 0);
    assert_int_equal(failures, 0);
    assert_true(max_gen <= (uint64_t)(1 + good));
    free(v1);
    free(v2);
    free(bad);
}

static void test_sighup_flag(void **st)
{
    (void)st;
    assert_int_equal(policy_sighup_install(), 0);
    assert_false(policy_sighup_take());
    raise(SIGHUP);
    assert_true(policy_sighup_take());
    assert_false(policy_sighup_take());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_loads),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_gateway_settings),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_contradictions),
        cmocka_unit_test(test_weak_settings),
        cmocka_unit_test(test_yaml_level),
        cmocka_unit_test(test_redaction_schema),
        cmocka_unit_test(test_all_errors_listed),
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_adapter_versions),
        cmocka_unit_test(test_adapter_version_errors),
        cmocka_unit_test(test_content_labels),
        cmocka_unit_test(test_content_labels_errors),
        cmocka_unit_test(test_router),
        cmocka_unit_test(test_detectors_extra),
        cmocka_unit_test(test_detectors_policy_wins),
        cmocka_unit_test(test_detectors_priority),
        cmocka_unit_test(test_detectors_stream),
        cmocka_unit_test(test_detectors_unknown),
        cmocka_unit_test(test_key_hash),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_reload_under_load),
        cmocka_unit_test(test_sighup_flag),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
