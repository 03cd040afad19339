/* moegate gateway — models list, metrics, admin endpoints, adapter loading.
 *
 * Admin actions change the deployment only within what the policy file
 * allows: POST /admin/adapters {"name": N} loads the adapter the policy in
 * force defines under N (its path and SHA-256 come from the policy, never
 * from the request, so an admin key cannot make the server read an
 * arbitrary file); DELETE /admin/adapters/N unloads it (sequences using it
 * finish with it); POST /admin/policy/reload re-reads the policy file (as
 * SIGHUP does) and loads adapters it newly lists. Every admin action is
 * audited like a completion.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "core/errors.h"
#include "gateway/gateway_internal.h"

/* ---- files and adapters ---------------------------------------------------------------- */

int gateway_file_sha256(const char *path, char hex[65], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mg_err_set(err, errlen, "gateway: cannot open '%s': %s", path, strerror(errno));
        return MG_EIO;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    int rc = 0;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        rc = MG_ENOMEM;
        goto done;
    }
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            mg_err_set(err, errlen, "gateway: error reading '%s': %s", path, strerror(errno));
            rc = MG_EIO;
            goto done;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    }
    unsigned char md[32];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
done:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return rc;
}

static bool registry_has(lora_registry *r, const char *name)
{
    model_lora *l = lora_registry_acquire(r, name);
    model_lora_release(l);
    return l != NULL;
}

/* Checks the file against the policy's digest, then loads it. */
static int load_one(lora_registry *r, const policy_adapter *a, char *err, size_t errlen)
{
    char hex[65];
    int rc = gateway_file_sha256(a->path, hex, err, errlen);
    if (rc)
        return rc;
    if (strcmp(hex, a->sha256_hex)) {
        mg_err_set(err, errlen,
                   "gateway: adapter '%s': the SHA-256 of '%s' is %s, the policy says %s; refusing "
                   "to load it",
                   a->name, a->path, hex, a->sha256_hex);
        return MG_EFORMAT;
    }
    return lora_registry_load(r, a->name, a->path, 1.0f, err, errlen);
}

int gateway_load_adapters(lora_registry *r, const policy *p, char *err, size_t errlen)
{
    const policy_config *c = policy_get_config(p);
    int first = 0;
    for (int i = 0; i < c->n_adapters; i++) {
        if (registry_has(r, c->adapters[i].name))
            continue;
        char e[512];
        int rc = load_one(r, &c->adapters[i], e, sizeof e);
        if (rc && !first) {
            first = rc;
            mg_err_set(err, errlen, "%s", e);
        }
    }
    return first;
}

/* ---- /v1/models ---------------------------------------------------------------------- */

static void model_obj(gateway *g, gw_buf *b, const char *id)
{
    gw_buf_puts(b, "{\"id\":");
    gw_buf_jsonz(b, id);
    gw_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"moegate\"}",
                  (long long)(g->started_us / 1000000));
}

void gw_models_json(gateway *g, const policy *p, const policy_tenant *t, bool with_auto,
                    const char *only, gw_buf *b)
{
    if (only) {
        char name[260];
        const char *at = strchr(only, '@');
        snprintf(name, sizeof name, "%.*s", (int)(at ? (size_t)(at - only) : strlen(only)), only);
        const policy_domain *d = policy_find_domain(p, name);
        if (!strcmp(only, g->model_id) || (with_auto && !strcmp(only, "auto")))
            model_obj(g, b, only);
        else if (d && policy_tenant_allows_domain(t, name) &&
                 (!at || policy_domain_adapter(p, d, at + 1)))
            model_obj(g, b, only);
        return;
    }
    gw_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    model_obj(g, b, g->model_id);
    if (with_auto) {
        gw_buf_put(b, ",", 1);
        model_obj(g, b, "auto");
    }
    for (int i = 0; i < t->n_domains; i++) {
        /* a repeated domain in the tenant's list is listed once */
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen = seen || !strcmp(t->domains[j], t->domains[i]);
        if (seen)
            continue;
        gw_buf_put(b, ",", 1);
        model_obj(g, b, t->domains[i]);
    }
    gw_buf_puts(b, "]}");
}

/* ---- admin ------------------------------------------------------------------------------ */

/* {"name": "..."}, nothing else. */
static const char *body_name(gw_req *r, json_t **root)
{
    json_error_t je;
    *root = r->body ? json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!*root || !json_is_object(*root)) {
        gw_req_error(r, 400, "invalid_request", NULL, "expected a JSON object {\"name\": ADAPTER}");
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(*root, k, v)
    {
        if (strcmp(k, "name")) {
            gw_req_error(r, 400, "invalid_request", "name", "%.60s: unknown field (only \"name\")",
                         k);
            return NULL;
        }
    }
    json_t *n = json_object_get(*root, "name");
    if (!json_is_string(n)) {
        gw_req_error(r, 400, "invalid_request", "name",
                     "name: expected the adapter's name as a string");
        return NULL;
    }
    return json_string_value(n);
}

static void adapter_load(gw_req *r)
{
    gateway *g = r->g;
    json_t *root = NULL;
    const char *name = body_name(r, &root);
    if (!name)
        goto done;
    snprintf(r->model_name, sizeof r->model_name, "%.200s", name);
    const policy_config *c = policy_get_config(r->pol);
    const policy_adapter *a = NULL;
    for (int i = 0; i < c->n_adapters; i++)
        if (!strcmp(c->adapters[i].name, name))
            a = &c->adapters[i];
    if (!a) {
        gw_req_error(r, 404, "adapter_not_found", "name", "the policy defines no adapter '%.64s'",
                     name);
        goto done;
    }
    r->adapter = a->name;
    r->adapter_sha256 = a->sha256_hex;
    if (!g->o.adapters) {
        gw_req_error(r, 503, "no_registry", NULL, "this server has no adapter registry");
        goto done;
    }
    if (registry_has(g->o.adapters, a->name)) {
        gw_req_error(r, 409, "adapter_loaded", "name", "the adapter '%s' is already loaded",
                     a->name);
        goto done;
    }
    char err[512];
    int rc = load_one(g->o.adapters, a, err, sizeof err);
    if (rc == MG_EBUSY)
        gw_req_error(r, 409, "adapter_loaded", "name", "the adapter '%s' is already loaded",
                     a->name);
    else if (rc)
        gw_req_error(r, rc == MG_ENOMEM ? 500 : 400, "adapter_load_failed", "name", "%s", err);
    else {
        gw_buf_puts(&r->resp, "{\"name\":");
        gw_buf_jsonz(&r->resp, a->name);
        gw_buf_puts(&r->resp, ",\"loaded\":true}");
        gw_log_event(g->log, POLICY_LOG_INFO, r->id, "adapter '%s' loaded", a->name);
    }
done:
    json_decref(root);
}

static void adapter_unload(gw_req *r)
{
    gateway *g = r->g;
    r->adapter = NULL;
    if (!g->o.adapters || lora_registry_unload(g->o.adapters, r->arg)) {
        gw_req_error(r, 404, "adapter_not_found", NULL, "no adapter '%.64s' is loaded", r->arg);
        return;
    }
    gw_buf_puts(&r->resp, "{\"name\":");
    gw_buf_jsonz(&r->resp, r->arg);
    gw_buf_puts(&r->resp, ",\"unloaded\":true}");
    gw_log_event(g->log, POLICY_LOG_INFO, r->id, "adapter '%.64s' unloaded", r->arg);
}

static void reload(gw_req *r)
{
    char err[1024];
    if (gw_reload(r->g, err, sizeof err)) {
        gw_req_error(r, 400, "policy_invalid", NULL, "the policy was not reloaded: %s", err);
        return;
    }
    const policy *p = policy_store_acquire(r->g->o.policies);
    gw_buf_printf(&r->resp, "{\"reloaded\":true,\"generation\":%llu}",
                  (unsigned long long)policy_generation(p));
    policy_release(p);
}

static void put_stats(gw_req *r)
{
    gateway *g = r->g;
    gw_buf *b = &r->resp;
    serve_stats s;
    serve_get_stats(g->o.serve, &s);
    gw_buf_puts(b, "{\"model\":");
    gw_buf_jsonz(b, g->model_id);
    gw_buf_printf(b, ",\"uptime_s\":%.1f", (gw_wall_us() - g->started_us) / 1e6);
    gw_buf_printf(
        b,
        ",\"engine\":{\"running\":%d,\"waiting\":%d,\"slots_total\":%d,\"requests_done\":%lld,"
        "\"prompt_tokens\":%lld,\"generated_tokens\":%lld,\"tokens_per_second\":%.2f,"
        "\"kv_blocks_total\":%d,\"kv_blocks_used\":%d,\"kv_blocks_cached\":%d,\"kv_bytes\":%zu,"
        "\"prefix_hit_tokens\":%lld}",
        s.running, s.waiting, s.slots_total, (long long)s.requests_done, (long long)s.prompt_tokens,
        (long long)s.generated_tokens, s.tokens_per_second, s.kv_blocks_total, s.kv_blocks_used,
        s.kv_blocks_cached, s.kv_bytes, (long long)s.prefix_hit_tokens);
    if (g->o.audit) {
        audit_stats a;
        audit_writer_stats(g->o.audit, &a);
        gw_buf_printf(b,
                      ",\"audit\":{\"connected\":%s,\"queue_depth\":%llu,\"spool_records\":%llu,"
                      "\"written\":%llu,"
                      "\"failed\":%llu,\"last_seq\":%lld}",
                      a.connected ? "true" : "false", (unsigned long long)a.queue_depth,
                      (unsigned long long)a.spool_records, (unsigned long long)a.written,
                      (unsigned long long)a.failed, (long long)a.last_seq);
    } else
        gw_buf_puts(b, ",\"audit\":null");
    gw_buf_puts(b, ",\"adapters\":[");
    if (g->o.adapters) {
        lora_registry_entry e[64];
        int n = lora_registry_list(g->o.adapters, e, 64);
        for (int i = 0; i < n && i < 64; i++) {
            gw_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
            gw_buf_jsonz(b, e[i].name);
            gw_buf_printf(b, ",\"bytes\":%zu,\"refs\":%d}", e[i].bytes, e[i].refs);
        }
    }
    const policy *p = policy_store_acquire(g->o.policies);
    gw_buf_printf(b, "],\"policy_generation\":%llu}", (unsigned long long)policy_generation(p));
    policy_release(p);
}

static void put_metrics(gw_req *r)
{
    gateway *g = r->g;
    serve_stats s;
    serve_get_stats(g->o.serve, &s);
    audit_stats a;
    if (g->o.audit)
        audit_writer_stats(g->o.audit, &a);
    const policy *p = policy_store_acquire(g->o.policies);
    gw_gauges gg = {.serve = &s,
                    .audit = g->o.audit ? &a : NULL,
                    .adapters = g->o.adapters ? lora_registry_list(g->o.adapters, NULL, 0) : 0,
                    .policy_generation = policy_generation(p),
                    .reloads_ok = atomic_load(&g->reloads_ok),
                    .reloads_failed = atomic_load(&g->reloads_failed)};
    policy_release(p);
    gw_metrics_render(g->met, &gg, &r->resp);
}

enum MHD_Result gw_admin(gw_req *r)
{
    switch (r->route) {
    case GW_R_METRICS: put_metrics(r); return gw_req_respond(r);
    case GW_R_STATS: put_stats(r); return gw_req_respond(r);
    default: break;
    }
    /* actions: the caller answers after the audit record */
    if (!gw_auth_role(r, POLICY_ROLE_ADMIN, "admin endpoints"))
        return MHD_YES;
    if (r->route == GW_R_ADAPTER_LOAD)
        adapter_load(r);
    else if (r->route == GW_R_ADAPTER_UNLOAD)
        adapter_unload(r);
    else if (r->route == GW_R_RELOAD)
        reload(r);
    return MHD_YES;
}
