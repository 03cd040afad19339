/* moegate serve — the gateway: everything the policy file describes.
 *
 *   moegate serve --policy FILE [--http-threads N] [--model-id NAME] [--quiet]
 *
 * Loads the policy (refusing to start on any error), the model, its
 * tokenizer and the adapters the policy lists (each checked against its
 * SHA-256), opens the audit writer (PostgreSQL, with the local spool), starts
 * the engine and the HTTPS gateway, and serves until SIGINT or SIGTERM.
 * SIGHUP reloads the policy (as POST /admin/policy/reload does).
 *
 * Engine sizing comes from the policy: model.threads, model.context_length
 * (0: the model's own), model.kv_memory (0: the engine's default),
 * server.limits.max_queue.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "adapters/lora.h"
#include "audit/audit.h"
#include "cli/cli.h"
#include "core/errors.h"
#include "core/model.h"
#include "core/serve.h"
#include "core/tokenizer.h"
#include "gateway/gateway.h"
#include "policies/policy.h"

/* the gateway the signal handler stops (gateway_stop is async-signal-safe) */
static gateway *volatile serving;

static void on_stop_signal(int sig)
{
    (void)sig;
    if (serving)
        gateway_stop(serving);
}

static void print_diag(void *ud, const policy_diag *d)
{
    (void)ud;
    char line[1400];
    fprintf(stderr, "%s\n", policy_diag_format(d, line, sizeof line));
}

static int usage(FILE *f)
{
    fprintf(f, "usage: moegate serve --policy FILE [--http-threads N] [--model-id NAME] [--quiet]\n"
               "  --policy FILE       the deployment policy (see policies/README.md)\n"
               "  --http-threads N    HTTP threads (default: one per CPU)\n"
               "  --model-id NAME     the base model's name for clients (default: the GGUF file name)\n"
               "  --quiet             no per-request log lines\n");
    return f == stdout ? 0 : 2;
}

/* The connection string from audit.connection_file (first line) or
 * audit.connection_env; malloc'd; never printed. */
static char *conninfo(const policy_audit *a)
{
    if (a->connection_env) {
        const char *v = getenv(a->connection_env);
        if (!v || !*v) {
            fprintf(stderr, "moegate serve: audit.connection_env: variable %s is not set\n", a->connection_env);
            return NULL;
        }
        return strdup(v);
    }
    FILE *f = fopen(a->connection_file, "r");
    if (!f) {
        fprintf(stderr, "moegate serve: cannot read audit.connection_file '%s': %s\n", a->connection_file,
                strerror(errno));
        return NULL;
    }
    char buf[4096];
    char *line = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!line) {
        fprintf(stderr, "moegate serve: audit.connection_file '%s' is empty\n", a->connection_file);
        return NULL;
    }
    buf[strcspn(buf, "\r\n")] = 0;
    char *s = strdup(buf);
    OPENSSL_cleanse(buf, sizeof buf);
    return s;
}

static void default_writer_id(char *buf, size_t cap)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    snprintf(buf, cap, "gw-%.56s", host);
    for (char *p = buf; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-'))
            *p = '-';
}

int cmd_serve(int argc, char **argv)
{
    const char *policy_path = NULL, *model_id = NULL;
    int http_threads = 0;
    bool quiet = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--policy") && i + 1 < argc)
            policy_path = argv[++i];
        else if (!strncmp(a, "--policy=", 9))
            policy_path = a + 9;
        else if (!strcmp(a, "--model-id") && i + 1 < argc)
            model_id = argv[++i];
        else if (!strcmp(a, "--http-threads") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 64) {
                fprintf(stderr, "moegate serve: --http-threads: expected 1..64\n");
                return 2;
            }
            http_threads = (int)v;
        } else if (!strcmp(a, "--quiet"))
            quiet = true;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return usage(stdout);
        else {
            fprintf(stderr, "moegate serve: unknown option '%s'\n", a);
            return usage(stderr);
        }
    }
    if (!policy_path)
        return usage(stderr);

    char err[1024];
    int status = 1;
    policy_store *store = NULL;
    model *m = NULL;
    tokenizer *tok = NULL;
    serve *sv = NULL;
    lora_registry *reg = NULL;
    audit_writer *aw = NULL;
    gateway *g = NULL;
    char *conn = NULL;
    char spool_tmp[64] = "";
    policy_load_opts lo = {.on_diag = print_diag};
    if (policy_store_open(&store, policy_path, &lo, err, sizeof err)) {
        fprintf(stderr, "moegate serve: %s\n", err);
        return 1;
    }
    const policy *p = policy_store_acquire(store);
    const policy_config *c = policy_get_config(p);

    model_opts mo = {.n_threads = c->model.threads, .prefault = true};
    fprintf(stderr, "moegate serve: loading %s\n", c->model.path);
    if (model_open(&m, c->model.path, &mo, err, sizeof err) ||
        tokenizer_open_gguf(&tok, model_gguf(m), err, sizeof err)) {
        fprintf(stderr, "moegate serve: %s\n", err);
        goto done;
    }
    char model_sha[65];
    if (gateway_file_sha256(c->model.path, model_sha, err, sizeof err)) {
        fprintf(stderr, "moegate serve: %s\n", err);
        goto done;
    }
    const model_info *mi = model_get_info(m);
    int n_ctx = c->model.context_length > 0 ? c->model.context_length : (int)mi->n_ctx_train;
    serve_opts so = {.n_ctx = n_ctx, .max_queue = c->server.max_queue > 0 ? c->server.max_queue : 1,
                     .kv_memory = (size_t)c->model.kv_memory_bytes};
    if (serve_open(&sv, m, tok, &so, err, sizeof err)) {
        fprintf(stderr, "moegate serve: %s\n", err);
        goto done;
    }
    if (lora_registry_create(&reg, m, err, sizeof err) || gateway_load_adapters(reg, p, err, sizeof err)) {
        fprintf(stderr, "moegate serve: %s\n", err);
        goto done;
    }

    /* the audit writer */
    const policy_audit *pa = &c->audit;
    if (!(conn = conninfo(pa)))
        goto done;
    char writer[80];
    if (pa->writer_id)
        snprintf(writer, sizeof writer, "%s", pa->writer_id);
    else
        default_writer_id(writer, sizeof writer);
    const char *spool = pa->spool_dir;
    if (!spool) { /* on_failure: reject without a spool folder: a private one */
        snprintf(spool_tmp, sizeof spool_tmp, "/tmp/moegate-spool.XXXXXX");
        if (!mkdtemp(spool_tmp)) {
            fprintf(stderr, "moegate serve: cannot make a spool folder: %s\n", strerror(errno));
            goto done;
        }
        spool = spool_tmp;
    }
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/%s.ckpt", spool, writer);
    audit_opts ao = {.conninfo = conn,
                     .writer_id = writer,
                     .spool_dir = spool,
                     .durability = pa->durability == POLICY_DURABILITY_ASYNC ? AUDIT_DURABILITY_ASYNC
                                                                             : AUDIT_DURABILITY_STRICT,
                     .on_failure = pa->on_failure == POLICY_AUDIT_REJECT ? AUDIT_ON_FAILURE_REJECT
                                                                         : AUDIT_ON_FAILURE_CONTINUE,
                     .payload_key_file = pa->encryption_key_file,
                     .payload_key_id = pa->encryption_key_id,
                     .checkpoint_key_file = pa->checkpoint_key_file,
                     .checkpoint_file = pa->checkpoint_key_file ? ckpt : NULL};
    if (audit_writer_open(&aw, &ao, err, sizeof err)) {
        fprintf(stderr, "moegate serve: %s\n", err);
        goto done;
    }

    gateway_opts go = {.policies = store,
                       .model = m,
                       .tok = tok,
                       .serve = sv,
                       .adapters = reg,
                       .audit = aw,
                       .model_id = model_id,
                       .model_sha256 = model_sha,
                       .n_ctx = n_ctx,
                       .n_threads = http_threads,
                       .quiet = quiet};
    if (gateway_open(&g, &go, err, sizeof err)) {
        fprintf(stderr, "moegate serve: %s\n", err);
        goto done;
    }
    policy_release(p);
    p = NULL;
    signal(SIGPIPE, SIG_IGN);
    serving = g;
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    policy_sighup_install();
    fprintf(stderr, "moegate serve: ready on port %d\n", gateway_port(g));
    gateway_run(g);
    fprintf(stderr, "moegate serve: stopping\n");
    serving = NULL;
    status = 0;
done:
    gateway_close(g);
    serve_close(sv);
    if (aw && audit_writer_close(aw, err, sizeof err)) {
        fprintf(stderr, "moegate serve: %s\n", err);
        status = 1;
    }
    lora_registry_free(reg);
    tokenizer_free(tok);
    model_close(m);
    policy_release(p);
    policy_store_close(store);
    if (conn) {
        OPENSSL_cleanse(conn, strlen(conn));
        free(conn);
    }
    if (spool_tmp[0])
        rmdir(spool_tmp); /* only when empty: spooled records stay */
    return status;
}
