/* moegate gateway — the domain packs and the router behind the policy in force.
 *
 * A gw_domains is built from one policy snapshot: the packs its domains
 * name (domains[].pack), each pack's extra redaction detectors, and the
 * `model: "auto"` router trained on the packs' examples and the policy's
 * router.ood_examples. It holds its own reference to that snapshot, and a
 * request takes both together (gw_domains_acquire), so a reload that
 * changes the domains can never pair a new policy with old packs.
 *
 * A reload builds the new gw_domains before it is put in force: packs that
 * fail validation leave the old policy and packs serving (the reload is
 * reported as failed, with the pack's FILE:LINE:COL message).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "gateway/gateway_internal.h"

void gw_domains_diag_to_log(void *ud, const policy_diag *d)
{
    gateway *g = ud;
    char line[768];
    policy_diag_format(d, line, sizeof line);
    gw_log_event(g->log, d->severity == POLICY_ERROR ? POLICY_LOG_ERROR : POLICY_LOG_WARN, NULL,
                 "%s", line);
}

static const policy_adapter *find_adapter(const policy_config *c, const char *name)
{
    for (int i = 0; i < c->n_adapters; i++)
        if (!strcmp(c->adapters[i].name, name))
            return &c->adapters[i];
    return NULL;
}

void gw_domains_release(gw_domains *d)
{
    if (!d || atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    for (int i = 0; i < d->n; i++)
        policy_detectors_free(d->dom[i].det);
    free(d->dom);
    free(d->of_pack);
    domain_router_free(d->router);
    domain_set_free(d->set);
    policy_release(d->pol);
    free(d);
}

int gw_domains_build(gw_domains **out, const policy *p, const domain_load_opts *lo, char *err,
                     size_t errlen)
{
    const policy_config *c = policy_get_config(p);
    gw_domains *d = calloc(1, sizeof *d);
    if (!d)
        return MG_ENOMEM;
    atomic_init(&d->refs, 1);
    d->pol = policy_retain(p);
    d->n = c->n_domains;
    d->dom = calloc((size_t)(d->n ? d->n : 1), sizeof *d->dom);
    const char **dirs = calloc((size_t)(d->n ? d->n : 1), sizeof *dirs);
    int *first = calloc((size_t)(d->n ? d->n : 1), sizeof *first);
    int rc = 0, n_dirs = 0;
    if (!d->dom || !dirs || !first) {
        rc = MG_ENOMEM;
        goto done;
    }
    /* one pack per distinct folder; two policy domains may share a pack */
    for (int i = 0; i < d->n; i++) {
        d->dom[i].pack_index = -1;
        const char *pk = c->domains[i].pack;
        if (!pk)
            continue;
        int j = 0;
        while (j < n_dirs && strcmp(dirs[j], pk))
            j++;
        if (j == n_dirs) {
            dirs[n_dirs] = pk;
            first[n_dirs++] = i;
        }
        d->dom[i].pack_index = j;
    }
    if (n_dirs) {
        if ((rc = domain_set_load_packs(&d->set, dirs, n_dirs, lo, err, errlen)))
            goto done;
        d->of_pack = malloc(sizeof *d->of_pack * (size_t)n_dirs);
        if (!d->of_pack) {
            rc = MG_ENOMEM;
            goto done;
        }
        for (int j = 0; j < n_dirs; j++)
            d->of_pack[j] = first[j];
        domain_router_opts ro = {.threshold = c->router.threshold};
        if ((rc =
                 domain_router_train(&d->router, d->set, c->router.ood_examples, &ro, err, errlen)))
            goto done;
    }
    for (int i = 0; i < d->n; i++) {
        gw_domain *x = &d->dom[i];
        const policy_domain *pd = &c->domains[i];
        if (!strcmp(pd->name, "auto")) {
            mg_err_set(err, errlen,
                       "domains: a domain may not be named 'auto' (the model name that routes "
                       "requests to a domain)");
            rc = MG_EINVAL;
            goto done;
        }
        x->pack = x->pack_index >= 0 ? domain_set_get(d->set, x->pack_index) : NULL;
        /* the adapter: the policy's, else the one the pack names (which the
         * policy must define, with its SHA-256) */
        /* the policy says which adapter answers (it pins the file's
         * digest); the pack's `adapter` only names the one it was made for */
        x->adapter = pd->adapter ? find_adapter(c, pd->adapter) : NULL;
        if (!pd->adapter && x->pack && x->pack->adapter && find_adapter(c, x->pack->adapter) &&
            lo && lo->on_diag) {
            /* defined but not used: most likely a forgotten domains[].adapter */
            char msg[512];
            snprintf(
                msg, sizeof msg,
                "domains: domain '%s' has no adapter, so the base model answers it, though its "
                "pack was made for adapter '%s', which the policy defines (set "
                "domains[].adapter: %s to use it)",
                pd->name, x->pack->adapter, x->pack->adapter);
            policy_diag w = {POLICY_WARNING, c->path, 0, 0, msg};
            lo->on_diag(lo->ud, &w);
        }
        if (x->pack && x->pack->n_redaction) {
            char derr[256];
            if ((rc = policy_detectors_create(&x->det, x->pack->redaction, x->pack->n_redaction,
                                              derr, sizeof derr))) {
                mg_err_set(err, errlen, "domains: pack '%s': %s", x->pack->name, derr);
                goto done;
            }
        }
    }
done:
    free(dirs);
    free(first);
    if (rc) {
        gw_domains_release(d);
        return rc;
    }
    *out = d;
    return 0;
}

void gw_domains_log(gateway *g, const gw_domains *d)
{
    const policy_config *c = policy_get_config(d->pol);
    for (int i = 0; i < d->n; i++) {
        const gw_domain *x = &d->dom[i];
        gw_log_event(g->log, POLICY_LOG_INFO, NULL,
                     "domain '%s': pack '%s' (%d blocked topics, %d extra redaction detectors%s), "
                     "adapter %s",
                     c->domains[i].name, x->pack ? x->pack->name : "-",
                     x->pack ? x->pack->n_topics : 0, x->pack ? x->pack->n_redaction : 0,
                     x->pack && x->pack->disclaimer[0] ? ", a disclaimer" : "",
                     x->adapter ? x->adapter->name : "none (base weights)");
    }
    if (d->router)
        gw_log_event(g->log, POLICY_LOG_INFO, NULL,
                     "model auto: router trained on %d packs%s, threshold %.2f",
                     domain_set_count(d->set),
                     c->router.ood_examples ? " and the out-of-domain examples"
                                            : " (no out-of-domain examples)",
                     c->router.threshold > 0 ? c->router.threshold : DOMAIN_ROUTER_THRESHOLD);
    if (c->content_labels.enabled)
        gw_log_event(g->log, POLICY_LOG_INFO, NULL,
                     "content labels on: explicit text at the %s, provider '%s'",
                     c->content_labels.explicit_at_start ? "start" : "end",
                     c->content_labels.provider);
}

int gateway_check_domains(const policy *p, const domain_load_opts *opts, char *err, size_t errlen)
{
    gw_domains *d = NULL;
    int rc = gw_domains_build(&d, p, opts, err, errlen);
    gw_domains_release(d);
    return rc;
}

gw_domains *gw_domains_acquire(gateway *g)
{
    pthread_mutex_lock(&g->dom_mu);
    gw_domains *d = g->dom;
    atomic_fetch_add(&d->refs, 1);
    pthread_mutex_unlock(&g->dom_mu);
    return d;
}

void gw_domains_swap(gateway *g, gw_domains *d)
{
    pthread_mutex_lock(&g->dom_mu);
    gw_domains *old = g->dom;
    g->dom = d;
    pthread_mutex_unlock(&g->dom_mu);
    gw_domains_release(old);
}

int gw_domains_index(const gw_domains *d, const char *name)
{
    const policy_config *c = policy_get_config(d->pol);
    for (int i = 0; i < c->n_domains; i++)
        if (!strcmp(c->domains[i].name, name))
            return i;
    return -1;
}

int gw_domains_route(const gw_domains *d, const policy_tenant *t, const char *text, size_t len,
                     gw_routed *out)
{
    memset(out, 0, sizeof *out);
    out->domain = -1;
    out->best = -1;
    if (!d->router)
        return 0;
    domain_route rt;
    int rc = domain_router_classify(d->router, text, len, &rt);
    if (rc)
        return rc;
    const policy_config *c = policy_get_config(d->pol);
    out->score = rt.score;
    out->best = rt.best >= 0 ? d->of_pack[rt.best] : -1;
    out->above = rt.domain >= 0;
    /* a pack shared by several policy domains routes to the first one the
     * tenant may use */
    if (rt.domain >= 0) {
        for (int i = 0; i < d->n; i++)
            if (d->dom[i].pack_index == rt.domain &&
                policy_tenant_allows_domain(t, c->domains[i].name)) {
                out->domain = i;
                break;
            }
        out->denied = out->domain < 0;
    }
    return 0;
}
