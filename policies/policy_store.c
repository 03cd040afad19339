/* moegate policies — the snapshot in force, API key hashing and lookups.
 *
 * The store holds one reference to the current snapshot behind a mutex
 * that guards only the pointer: acquire takes the mutex, adds a reference
 * and lets go, so the critical section is a pointer load and an atomic
 * increment. A reload validates the new file completely without the lock,
 * then swaps the pointer under it and drops the store's reference to the
 * old snapshot, which is freed when the last request holding it releases
 * it. A request therefore sees one policy from start to end, and no
 * request ever waits for a reload's file I/O. Reloads themselves are
 * serialised by a second mutex so generations count up without gaps.
 *
 * API keys are stored as "sha256:" + hex of SHA-256(key). Keys are 256-bit
 * random tokens (policy_key_generate), so a slow KDF would add latency to
 * every request without adding strength; see policies/README.md. Lookup
 * hashes the presented key once and compares it with every stored hash
 * using CRYPTO_memcmp, always over all keys.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/errors.h"
#include "policies/policy_internal.h"

struct policy_store {
    char *path;
    policy_load_opts opts;
    pthread_mutex_t lock;        /* guards cur (the pointer only) */
    policy *cur;                 /* the snapshot in force; the store holds one reference */
    pthread_mutex_t reload_lock; /* serialises reloads */
};

/* ---- keys ------------------------------------------------------------------------ */

static int sha256(const void *data, size_t len, uint8_t md[32])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : MG_ENOMEM;
}

int policy_key_hash(const char *key, size_t len, char *buf, size_t buflen)
{
    uint8_t md[32];
    if (!key || len == 0 || !buf || buflen < POLICY_KEY_HASH_LEN + 1)
        return MG_EINVAL;
    if (sha256(key, len, md))
        return MG_ENOMEM;
    memcpy(buf, "sha256:", 7);
    for (int i = 0; i < 32; i++)
        snprintf(buf + 7 + 2 * i, 3, "%02x", md[i]);
    OPENSSL_cleanse(md, sizeof md);
    return 0;
}

int policy_key_generate(char *buf, size_t buflen, char *err, size_t errlen)
{
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t raw[33] = {0};
    if (!buf || buflen < POLICY_KEY_LEN + 1) {
        mg_err_set(err, errlen, "policy: key buffer too small");
        return MG_EINVAL;
    }
    if (RAND_bytes(raw, 32) != 1) {
        mg_err_set(err, errlen, "policy: the OpenSSL random generator failed");
        return MG_EIO;
    }
    /* 256 bits as 43 base64url characters: 6 bits each, the last one 4 bits */
    memcpy(buf, "mg_", 3);
    for (int i = 0; i < 43; i++) {
        int bit = 6 * i, byte = bit / 8, sh = bit % 8;
        unsigned v = (unsigned)raw[byte] << 8 | raw[byte + 1];
        buf[3 + i] = b64url[(v >> (10 - sh)) & 63];
    }
    buf[POLICY_KEY_LEN] = 0;
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

const policy_api_key *policy_find_key(const policy *p, const char *key, size_t len)
{
    uint8_t md[32];
    if (!p || !key || len == 0 || sha256(key, len, md))
        return NULL;
    const policy_api_key *found = NULL;
    for (int i = 0; i < p->n_keys; i++) {
        /* no early exit: every key costs the same whether or not one matched */
        int diff = CRYPTO_memcmp(md, p->keys[i]->hash, 32);
        if (diff == 0)
            found = p->keys[i];
    }
    OPENSSL_cleanse(md, sizeof md);
    return found;
}

const policy_tenant *policy_find_subject(const policy *p, const char *subject)
{
    if (!p || !subject)
        return NULL;
    for (int i = 0; i < p->cfg.n_tenants; i++) {
        const policy_tenant *t = &p->cfg.tenants[i];
        for (int k = 0; k < t->n_mtls_subjects; k++)
            if (!strcmp(t->mtls_subjects[k], subject))
                return t;
    }
    return NULL;
}

const policy_tenant *policy_find_tenant(const policy *p, const char *id)
{
    for (int i = 0; p && id && i < p->cfg.n_tenants; i++)
        if (p->cfg.tenants[i].id && !strcmp(p->cfg.tenants[i].id, id))
            return &p->cfg.tenants[i];
    return NULL;
}

bool policy_tenant_allows_domain(const policy_tenant *t, const char *domain)
{
    for (int i = 0; t && domain && i < t->n_domains; i++)
        if (!strcmp(t->domains[i], domain))
            return true;
    return false;
}

const policy_domain *policy_find_domain(const policy *p, const char *name)
{
    for (int i = 0; p && name && i < p->cfg.n_domains; i++)
        if (p->cfg.domains[i].name && !strcmp(p->cfg.domains[i].name, name))
            return &p->cfg.domains[i];
    return NULL;
}

const policy_adapter *policy_find_adapter(const policy *p, const char *name)
{
    for (int i = 0; p && name && i < p->cfg.n_adapters; i++)
        if (p->cfg.adapters[i].name && !strcmp(p->cfg.adapters[i].name, name))
            return &p->cfg.adapters[i];
    return NULL;
}

/* 8..64 lower-case hex digits: what may be a prefix of an adapter's digest. */
static bool digest_prefix(const char *s)
{
    size_t n = strlen(s);
    if (n < 8 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* A domain reaches its adapter and its versions (policy_load checked that
 * each names an adapter). Label matches are looked for first, over all of
 * them, so a label that happens to be hex never loses to another adapter's
 * digest; then digest prefixes, where two different digests under one
 * prefix are ambiguous. The lists are a handful of entries: linear scans. */
const policy_adapter *policy_domain_adapter(const policy *p, const policy_domain *d,
                                            const char *version)
{
    if (!p || !d || !d->adapter)
        return NULL;
    if (!version)
        return policy_find_adapter(p, d->adapter);
    int n = d->n_versions + 1;
    for (int i = 0; i < n; i++) {
        const policy_adapter *a = policy_find_adapter(p, i ? d->versions[i - 1] : d->adapter);
        if (a && a->version && !strcmp(a->version, version))
            return a;
    }
    if (!digest_prefix(version))
        return NULL;
    size_t len = strlen(version);
    const policy_adapter *hit = NULL;
    for (int i = 0; i < n; i++) {
        const policy_adapter *a = policy_find_adapter(p, i ? d->versions[i - 1] : d->adapter);
        if (!a || !a->sha256_hex || strncmp(a->sha256_hex, version, len))
            continue;
        if (hit && strcmp(hit->sha256_hex, a->sha256_hex))
            return NULL; /* ambiguous */
        if (!hit)
            hit = a;
    }
    return hit;
}

/* ---- the store ---------------------------------------------------------------------- */

int policy_store_open(policy_store **out, const char *path, const policy_load_opts *opts, char *err,
                      size_t errlen)
{
    if (!out || !path) {
        mg_err_set(err, errlen, "policy: no file given");
        return MG_EINVAL;
    }
    policy_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        mg_err_set(err, errlen, "policy: out of memory");
        return MG_ENOMEM;
    }
    if (opts)
        s->opts = *opts;
    int rc = policy_load(&s->cur, path, opts, err, errlen);
    if (rc) {
        free(s->path);
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->reload_lock, NULL);
    *out = s;
    return 0;
}

void policy_store_close(policy_store *s)
{
    if (!s)
        return;
    policy_release(s->cur);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->reload_lock);
    free(s->path);
    free(s);
}

const policy *policy_store_acquire(policy_store *s)
{
    pthread_mutex_lock(&s->lock);
    const policy *p = policy_retain(s->cur);
    pthread_mutex_unlock(&s->lock);
    return p;
}

int policy_store_reload(policy_store *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->reload_lock);
    policy *next = NULL;
    int rc = policy_load(&next, s->path, &s->opts, err, errlen);
    if (rc == 0) {
        pthread_mutex_lock(&s->lock);
        policy *old = s->cur;
        next->generation = old->generation + 1;
        s->cur = next;
        pthread_mutex_unlock(&s->lock);
        policy_release(old);
    }
    pthread_mutex_unlock(&s->reload_lock);
    return rc;
}

/* ---- SIGHUP ------------------------------------------------------------------------------ */

/* The one mutable global: a signal flag (lock-free atomics are
 * async-signal-safe). */
static atomic_int sighup_flag;

static void on_sighup(int sig)
{
    (void)sig;
    atomic_store(&sighup_flag, 1);
}

int policy_sighup_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sighup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    return sigaction(SIGHUP, &sa, NULL) == 0 ? 0 : MG_EIO;
}

bool policy_sighup_take(void)
{
    return atomic_exchange(&sighup_flag, 0) != 0;
}
