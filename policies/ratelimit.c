/* moegate policies — token-bucket rate limiting per tenant and per API key.
 *
 * Each tenant and each (tenant, key) pair owns an entry with two buckets:
 * requests and tokens. A bucket holds at most one minute of its rate and
 * refills continuously (rate / 60 per second); a request needs 1 request
 * and its token reservation (prompt + max completion) from every bucket
 * that has a rate, and is admitted only when all of them hold enough, so
 * no partial charge is ever left behind. When refused, the caller learns
 * how long until the emptiest bucket holds enough (Retry-After).
 *
 * Entries are found by id in a sharded hash table (a mutex per shard,
 * held only for the lookup) and live until the limiter is freed, so
 * buckets survive policy reloads: a reload changes the rates, which are
 * read from the snapshot at each call, and a bucket above its new
 * capacity is clipped. Each entry has its own mutex guarding both its
 * buckets; an admission locks the tenant's and the key's entries in
 * address order, so concurrent admissions never deadlock and never
 * over-admit. Memory grows with the number of distinct ids ever seen,
 * which the policy bounds.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "policies/policy_internal.h"

#define N_SHARDS 64
#define N_CHAINS 64 /* per shard */

typedef struct bucket {
    double level; /* units available; negative after a settle charged more than reserved */
    int64_t last_ns;
} bucket;

typedef struct entry {
    struct entry *next; /* chain in its shard */
    char *id;           /* "tenant" or "tenant\x1fkey" */
    pthread_mutex_t lock; /* guards req and tok */
    bucket req, tok;
} entry;

typedef struct shard {
    pthread_mutex_t lock; /* guards chains */
    entry *chains[N_CHAINS];
} shard;

struct policy_limiter {
    shard shards[N_SHARDS];
};

int64_t policy_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int policy_limiter_create(policy_limiter **out)
{
    policy_limiter *l = calloc(1, sizeof *l);
    if (!l)
        return MG_ENOMEM;
    for (int i = 0; i < N_SHARDS; i++)
        pthread_mutex_init(&l->shards[i].lock, NULL);
    *out = l;
    return 0;
}

void policy_limiter_free(policy_limiter *l)
{
    if (!l)
        return;
    for (int i = 0; i < N_SHARDS; i++) {
        for (int c = 0; c < N_CHAINS; c++) {
            entry *e = l->shards[i].chains[c];
            while (e) {
                entry *next = e->next;
                pthread_mutex_destroy(&e->lock);
                free(e->id);
                free(e);
                e = next;
            }
        }
        pthread_mutex_destroy(&l->shards[i].lock);
    }
    free(l);
}

static uint64_t hash_id(const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *q = a; *q; q++)
        h = (h ^ (unsigned char)*q) * 1099511628211ull;
    if (b) {
        h = (h ^ 0x1f) * 1099511628211ull;
        for (const char *q = b; *q; q++)
            h = (h ^ (unsigned char)*q) * 1099511628211ull;
    }
    return h;
}

/* The entry of tenant id a (and key id b, or NULL), created on first use. */
static entry *entry_get(policy_limiter *l, const char *a, const char *b)
{
    uint64_t h = hash_id(a, b);
    shard *sh = &l->shards[h % N_SHARDS];
    size_t chain = (size_t)(h / N_SHARDS) % N_CHAINS;
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    pthread_mutex_lock(&sh->lock);
    entry *e = sh->chains[chain];
    for (; e; e = e->next)
        if (!strncmp(e->id, a, la) &&
            (b ? e->id[la] == 0x1f && !strcmp(e->id + la + 1, b) : e->id[la] == 0))
            break;
    if (!e && (e = calloc(1, sizeof *e))) {
        e->id = malloc(la + lb + 2);
        if (!e->id) {
            free(e);
            e = NULL;
        } else {
            memcpy(e->id, a, la);
            if (b) {
                e->id[la] = 0x1f;
                memcpy(e->id + la + 1, b, lb + 1);
            } else {
                e->id[la] = 0;
            }
            pthread_mutex_init(&e->lock, NULL);
            e->req.level = e->tok.level = INFINITY; /* full at the first refill */
            e->next = sh->chains[chain];
            sh->chains[chain] = e;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return e;
}

/* Brings a bucket of `rate` per minute up to now (caller holds its lock).
 * A new bucket holds +infinity, so it starts full: the clip below. */
static void refill(bucket *b, int64_t rate, int64_t now_ns)
{
    double cap = (double)rate;
    if (now_ns > b->last_ns) {
        b->level += (double)(now_ns - b->last_ns) * (double)rate / 60e9;
        b->last_ns = now_ns;
    }
    if (b->level > cap)
        b->level = cap;
}

typedef struct need {
    bucket *b;
    int64_t rate;
    double amount;
    const char *name;
} need;

static void lock_pair(entry *a, entry *b)
{
    if (b && (uintptr_t)b < (uintptr_t)a) {
        pthread_mutex_lock(&b->lock);
        pthread_mutex_lock(&a->lock);
    } else {
        pthread_mutex_lock(&a->lock);
        if (b)
            pthread_mutex_lock(&b->lock);
    }
}

static void unlock_pair(entry *a, entry *b)
{
    if (b)
        pthread_mutex_unlock(&b->lock);
    pthread_mutex_unlock(&a->lock);
}

int policy_limiter_admit(policy_limiter *l, const policy_tenant *t, const policy_api_key *k,
                         int64_t tokens, int64_t now_ns, policy_admission *res)
{
    if (!l || !t || !t->id || !res || tokens < 0 || (k && !k->id))
        return MG_EINVAL;
    memset(res, 0, sizeof *res);
    if ((t->rate.tokens_per_minute && tokens > t->rate.tokens_per_minute) ||
        (k && k->rate.tokens_per_minute && tokens > k->rate.tokens_per_minute)) {
        res->limit = t->rate.tokens_per_minute && tokens > t->rate.tokens_per_minute
                         ? "tenant tokens"
                         : "key tokens";
        return MG_ERANGE;
    }
    entry *te = entry_get(l, t->id, NULL), *ke = k ? entry_get(l, t->id, k->id) : NULL;
    if (!te || (k && !ke))
        return MG_ENOMEM;
    need nd[4];
    int n = 0;
    if (t->rate.requests_per_minute)
        nd[n++] = (need){&te->req, t->rate.requests_per_minute, 1, "tenant requests"};
    if (t->rate.tokens_per_minute)
        nd[n++] = (need){&te->tok, t->rate.tokens_per_minute, (double)tokens, "tenant tokens"};
    if (ke && k->rate.requests_per_minute)
        nd[n++] = (need){&ke->req, k->rate.requests_per_minute, 1, "key requests"};
    if (ke && k->rate.tokens_per_minute)
        nd[n++] = (need){&ke->tok, k->rate.tokens_per_minute, (double)tokens, "key tokens"};

    lock_pair(te, ke);
    for (int i = 0; i < n; i++)
        refill(nd[i].b, nd[i].rate, now_ns);
    double wait = 0;
    const char *limit = NULL;
    for (int i = 0; i < n; i++)
        if (nd[i].b->level < nd[i].amount) {
            double w = (nd[i].amount - nd[i].b->level) * 60.0 / (double)nd[i].rate;
            if (!limit || w > wait) {
                wait = w;
                limit = nd[i].name;
            }
        }
    if (!limit)
        for (int i = 0; i < n; i++)
            nd[i].b->level -= nd[i].amount;
    unlock_pair(te, ke);
    res->admitted = limit == NULL;
    res->retry_after_s = wait;
    res->limit = limit;
    return 0;
}

void policy_limiter_settle(policy_limiter *l, const policy_tenant *t, const policy_api_key *k,
                           int64_t reserved, int64_t used, int64_t now_ns)
{
    if (!l || !t || !t->id || reserved == used || (k && !k->id))
        return;
    double delta = (double)(reserved - used);
    entry *te = t->rate.tokens_per_minute ? entry_get(l, t->id, NULL) : NULL;
    entry *ke = k && k->rate.tokens_per_minute ? entry_get(l, t->id, k->id) : NULL;
    entry *es[2] = {te, ke};
    int64_t rates[2] = {t->rate.tokens_per_minute, k ? k->rate.tokens_per_minute : 0};
    for (int i = 0; i < 2; i++) {
        if (!es[i])
            continue;
        pthread_mutex_lock(&es[i]->lock);
        refill(&es[i]->tok, rates[i], now_ns);
        es[i]->tok.level += delta;
        if (es[i]->tok.level > (double)rates[i])
            es[i]->tok.level = (double)rates[i];
        pthread_mutex_unlock(&es[i]->lock);
    }
}
