/* kvblocks.c — block tables and the prefix cache (see kvblocks.h).
 *
 * A published block is keyed by (namespace, parent block, parent's
 * generation, its own tokens): the parent link makes the key stand for the
 * whole prefix without storing it, and the generation (bumped each time a
 * block is reused) makes a child of an evicted parent unreachable, so a
 * recycled parent can never lend its old children to a new prefix.
 *
 * Invariants:
 *   - a block is in exactly one of: the free stack (ref 0, unpublished), the
 *     LRU list (ref 0, published), or referenced (ref > 0);
 *   - reserved <= free + cached: every promise can be kept by taking a free
 *     block or evicting the least recently used cached one;
 *   - only full blocks are published, and a full block is never written
 *     again, so sharing needs no copy-on-write;
 *   - a published block is in its parent's child list while the parent
 *     keeps the generation it had when the child was published. A prompt
 *     that ends inside a block whose full version is cached (the same prompt
 *     again, or one that continues a cached answer) copies the rows it
 *     shares into a fresh block of its own (kvb_seq_start's copy).
 */
#include "core/kvblocks.h"

#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

typedef struct block {
    int32_t ref;
    int32_t n_tok;
    uint32_t gen;                /* bumped on every reuse */
    int32_t parent;              /* previous block of the prefix, -1 for the first */
    uint32_t parent_gen;
    uint64_t ns;
    uint64_t hash;
    bool published;              /* in the prefix cache (hashed if full, else only a child) */
    bool hashed;                 /* in a bucket chain: full blocks only */
    int32_t lru_prev, lru_next;  /* cached list, when published and ref == 0 */
    int32_t hnext;               /* bucket chain, when published */
    int32_t child_head;          /* published children of this generation */
    int32_t sib_next;            /* next child of the same parent */
    bool linked;                 /* in its parent's child list */
} block;

typedef struct seq {
    bool active;
    uint64_t ns;
    int32_t len, max_tokens;
    int32_t n_blocks;
    int32_t *blocks; /* [ceil(max_tokens / block_tokens)] */
    int32_t reserved; /* blocks promised and not yet taken */
} seq;

struct kvb_pool {
    int32_t n_blocks, bt, n_seq;
    block *b;
    int32_t *tokens; /* [n_blocks][bt] each block's tokens */
    int32_t *free_stack;
    int32_t n_free;
    int32_t lru_head, lru_tail, n_cached; /* oldest at head */
    int32_t *bucket;
    uint32_t bucket_mask;
    int32_t reserved;
    seq *s;
    kvb_stats st;
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 29);
}

static uint64_t block_key(uint64_t ns, int32_t parent, uint32_t parent_gen, const int32_t *tok, int32_t n)
{
    uint64_t h = mix(ns, (uint64_t)(uint32_t)parent << 32 | parent_gen);
    for (int32_t i = 0; i < n; i++)
        h = mix(h, (uint32_t)tok[i]);
    return h;
}

int kvb_create(kvb_pool **out, int32_t n_blocks, int32_t block_tokens, int32_t n_seq, char *err, size_t errlen)
{
    if (n_blocks < 1 || n_blocks > (1 << 26) || block_tokens < 1 || block_tokens > 4096 || n_seq < 1 ||
        n_seq > (1 << 20) || (int64_t)n_blocks * block_tokens > INT32_MAX) {
        mg_err_set(err, errlen, "kvblocks: %d blocks of %d tokens for %d sequences is out of range", (int)n_blocks,
                   (int)block_tokens, (int)n_seq);
        return MG_ERANGE;
    }
    kvb_pool *p = calloc(1, sizeof *p);
    if (!p)
        goto oom;
    p->n_blocks = n_blocks;
    p->bt = block_tokens;
    p->n_seq = n_seq;
    uint32_t nb = 1;
    while (nb < (uint32_t)n_blocks)
        nb <<= 1;
    p->bucket_mask = nb - 1;
    p->b = calloc((size_t)n_blocks, sizeof *p->b);
    p->tokens = malloc((size_t)n_blocks * (size_t)block_tokens * sizeof *p->tokens);
    p->free_stack = malloc((size_t)n_blocks * sizeof *p->free_stack);
    p->bucket = malloc((size_t)nb * sizeof *p->bucket);
    p->s = calloc((size_t)n_seq, sizeof *p->s);
    if (!p->b || !p->tokens || !p->free_stack || !p->bucket || !p->s)
        goto oom;
    for (uint32_t i = 0; i < nb; i++)
        p->bucket[i] = -1;
    for (int32_t i = 0; i < n_blocks; i++) {
        p->free_stack[i] = n_blocks - 1 - i; /* block 0 on top */
        p->b[i].child_head = -1;
    }
    p->n_free = n_blocks;
    p->lru_head = p->lru_tail = -1;
    p->st.n_blocks = n_blocks;
    p->st.block_tokens = block_tokens;
    *out = p;
    return 0;
oom:
    kvb_free(p);
    mg_err_set(err, errlen, "kvblocks: out of memory");
    return MG_ENOMEM;
}

void kvb_free(kvb_pool *p)
{
    if (!p)
        return;
    for (int32_t i = 0; p->s && i < p->n_seq; i++)
        free(p->s[i].blocks);
    free(p->s);
    free(p->b);
    free(p->tokens);
    free(p->free_stack);
    free(p->bucket);
    free(p);
}

/* ---- LRU of cached blocks ------------------------------------------------ */

static void lru_remove(kvb_pool *p, int32_t i)
{
    block *b = &p->b[i];
    if (b->lru_prev >= 0)
        p->b[b->lru_prev].lru_next = b->lru_next;
    else
        p->lru_head = b->lru_next;
    if (b->lru_next >= 0)
        p->b[b->lru_next].lru_prev = b->lru_prev;
    else
        p->lru_tail = b->lru_prev;
    p->n_cached--;
}

static void lru_push(kvb_pool *p, int32_t i)
{
    block *b = &p->b[i];
    b->lru_prev = p->lru_tail;
    b->lru_next = -1;
    if (p->lru_tail >= 0)
        p->b[p->lru_tail].lru_next = i;
    else
        p->lru_head = i;
    p->lru_tail = i;
    p->n_cached++;
}

/* ---- the prefix index ------------------------------------------------------ */

static void unlink_child(kvb_pool *p, int32_t i)
{
    block *b = &p->b[i];
    if (b->linked && b->parent >= 0 && p->b[b->parent].gen == b->parent_gen) {
        int32_t *link = &p->b[b->parent].child_head;
        while (*link >= 0 && *link != i)
            link = &p->b[*link].sib_next;
        if (*link == i)
            *link = b->sib_next;
    }
    b->linked = false;
}

static void unpublish(kvb_pool *p, int32_t i)
{
    block *b = &p->b[i];
    unlink_child(p, i);
    if (b->hashed) {
        int32_t *link = &p->bucket[b->hash & p->bucket_mask];
        while (*link != i)
            link = &p->b[*link].hnext;
        *link = b->hnext;
        b->hashed = false;
    }
    b->published = false;
}

static int32_t find(const kvb_pool *p, uint64_t ns, int32_t parent, const int32_t *tok)
{
    uint32_t pgen = parent >= 0 ? p->b[parent].gen : 0;
    uint64_t h = block_key(ns, parent, pgen, tok, p->bt);
    for (int32_t i = p->bucket[h & p->bucket_mask]; i >= 0; i = p->b[i].hnext) {
        const block *b = &p->b[i];
        if (b->hash == h && b->hashed && b->ns == ns && b->parent == parent && b->parent_gen == pgen &&
            !memcmp(p->tokens + (size_t)i * (size_t)p->bt, tok, (size_t)p->bt * sizeof *tok))
            return i;
    }
    return -1;
}

static void publish(kvb_pool *p, int32_t i)
{
    block *b = &p->b[i];
    const int32_t *tok = p->tokens + (size_t)i * (size_t)p->bt;
    if (find(p, b->ns, b->parent, tok) >= 0)
        return; /* an identical block is already shared: this one stays private */
    b->hash = block_key(b->ns, b->parent, b->parent_gen, tok, p->bt);
    b->hnext = p->bucket[b->hash & p->bucket_mask];
    p->bucket[b->hash & p->bucket_mask] = i;
    b->hashed = true;
    b->published = true;
    if (b->parent >= 0 && p->b[b->parent].gen == b->parent_gen) {
        b->sib_next = p->b[b->parent].child_head;
        p->b[b->parent].child_head = i;
        b->linked = true;
    }
}

/* ---- sequences ---------------------------------------------------------------- */

static int32_t blocks_for(const kvb_pool *p, int32_t tokens)
{
    return (int32_t)(((int64_t)tokens + p->bt - 1) / p->bt);
}

bool kvb_can_fit(const kvb_pool *p, int32_t max_tokens)
{
    return max_tokens > 0 && blocks_for(p, max_tokens) <= p->n_free + p->n_cached - p->reserved;
}

static int32_t take_block(kvb_pool *p);

/* The published child of parent that starts with the most of tok[0..k)
 * (at least one token), or -1; *len receives how many. */
static int32_t find_partial(const kvb_pool *p, uint64_t ns, int32_t parent, const int32_t *tok, int32_t k,
                            int32_t *len)
{
    int32_t best = -1;
    *len = 0;
    for (int32_t c = p->b[parent].child_head; c >= 0 && *len < k; c = p->b[c].sib_next) {
        const block *b = &p->b[c];
        if (!b->published || b->ns != ns || b->parent_gen != p->b[parent].gen)
            continue;
        const int32_t *ct = p->tokens + (size_t)c * (size_t)p->bt;
        int32_t l = 0, lim = k < b->n_tok ? k : b->n_tok; /* a partial block holds n_tok */
        while (l < lim && ct[l] == tok[l])
            l++;
        if (l > *len) {
            *len = l;
            best = c;
        }
    }
    return best;
}

int kvb_seq_start(kvb_pool *p, int32_t sid, uint64_t ns, const int32_t *tokens, int32_t n, int32_t max_tokens,
                  int32_t *n_cached)
{
    return kvb_seq_start_copy(p, sid, ns, tokens, n, max_tokens, n_cached, NULL);
}

int kvb_seq_start_copy(kvb_pool *p, int32_t sid, uint64_t ns, const int32_t *tokens, int32_t n, int32_t max_tokens,
                       int32_t *n_cached, kvb_copy *copy)
{
    *n_cached = 0;
    if (copy)
        copy->rows = 0;
    if (sid < 0 || sid >= p->n_seq || p->s[sid].active || n < 1 || max_tokens < n || !tokens)
        return MG_EINVAL;
    int32_t need = blocks_for(p, max_tokens);
    if (need > p->n_blocks)
        return MG_ERANGE;
    seq *s = &p->s[sid];
    int32_t *blocks = realloc(s->blocks, (size_t)need * sizeof *blocks);
    if (!blocks)
        return MG_ENOMEM;
    s->blocks = blocks;
    /* longest cached prefix of whole blocks, leaving the last token to evaluate */
    int32_t matched = 0, revived = 0, parent = -1;
    while ((int64_t)(matched + 1) * p->bt <= n - 1) {
        int32_t i = find(p, ns, parent, tokens + (size_t)matched * (size_t)p->bt);
        if (i < 0)
            break;
        blocks[matched++] = i;
        revived += p->b[i].ref == 0; /* leaves the evictable set */
        parent = i;
    }
    /* the rest of the prompt but its last token, inside a cached full block */
    int32_t part = -1, rem = n - 1 - matched * p->bt;
    if (copy && matched > 0 && rem > 0)
        part = find_partial(p, ns, blocks[matched - 1], tokens + (size_t)matched * (size_t)p->bt,
                            rem < p->bt ? rem : p->bt - 1, &rem);
    int32_t fresh = need - matched;
    if (fresh > p->n_free + p->n_cached - revived - (part >= 0 && p->b[part].ref == 0) - p->reserved) {
        part = -1; /* try again without the copy's source held */
        if (fresh > p->n_free + p->n_cached - revived - p->reserved)
            return MG_EBUSY;
    }
    for (int32_t k = 0; k < matched; k++) {
        block *b = &p->b[blocks[k]];
        if (b->ref++ == 0)
            lru_remove(p, blocks[k]);
    }
    s->active = true;
    s->ns = ns;
    s->len = matched * p->bt;
    s->max_tokens = max_tokens;
    s->n_blocks = matched;
    s->reserved = fresh;
    p->reserved += fresh;
    if (part >= 0) {
        /* hold the source while the fresh block is taken (it may be the
         * least recently used), then copy its first rem tokens */
        block *src = &p->b[part];
        if (src->ref++ == 0)
            lru_remove(p, part);
        int32_t i = take_block(p);
        block *b = &p->b[i];
        b->ref = 1;
        b->n_tok = rem;
        b->ns = ns;
        b->parent = blocks[matched - 1];
        b->parent_gen = p->b[b->parent].gen;
        b->published = false;
        b->linked = false;
        memcpy(p->tokens + (size_t)i * (size_t)p->bt, p->tokens + (size_t)part * (size_t)p->bt,
               (size_t)rem * sizeof *p->tokens);
        s->blocks[s->n_blocks++] = i;
        s->reserved--;
        p->reserved--;
        s->len += rem;
        if (--src->ref == 0)
            lru_push(p, part);
        copy->src = part;
        copy->dst = i;
        copy->rows = rem;
    }
    p->st.lookups++; /* admitted prompts only: the hit rate is over work done */
    p->st.lookup_tokens += n;
    p->st.hit_tokens += s->len;
    *n_cached = s->len;
    return 0;
}

/* A block for a sequence's next tokens, from its reservation. */
static int32_t take_block(kvb_pool *p)
{
    int32_t i;
    if (p->n_free > 0) {
        i = p->free_stack[--p->n_free];
    } else {
        i = p->lru_head; /* exists: reserved <= free + cached */
        lru_remove(p, i);
        unpublish(p, i);
        p->st.evictions++;
    }
    p->b[i].gen++; /* its old children become unreachable */
    p->b[i].child_head = -1;
    return i;
}

int kvb_seq_append(kvb_pool *p, int32_t sid, const int32_t *tokens, int32_t n)
{
    if (sid < 0 || sid >= p->n_seq || !p->s[sid].active || n < 0 || (n && !tokens))
        return MG_EINVAL;
    seq *s = &p->s[sid];
    if (n > s->max_tokens - s->len)
        return MG_ERANGE;
    for (int32_t k = 0; k < n; k++) {
        int32_t off = s->len % p->bt;
        if (off == 0) {
            int32_t i = take_block(p);
            block *b = &p->b[i];
            int32_t parent = s->n_blocks ? s->blocks[s->n_blocks - 1] : -1;
            b->ref = 1;
            b->n_tok = 0;
            b->ns = s->ns;
            b->parent = parent;
            b->parent_gen = parent >= 0 ? p->b[parent].gen : 0;
            b->published = false;
            s->blocks[s->n_blocks++] = i;
            s->reserved--;
            p->reserved--;
        }
        int32_t i = s->blocks[s->n_blocks - 1];
        p->tokens[(size_t)i * (size_t)p->bt + (size_t)off] = tokens[k];
        s->len++;
        if (++p->b[i].n_tok == p->bt)
            publish(p, i);
    }
    return 0;
}

int kvb_seq_grow(kvb_pool *p, int32_t sid, int32_t max_tokens)
{
    if (sid < 0 || sid >= p->n_seq || !p->s[sid].active || max_tokens < p->s[sid].max_tokens)
        return MG_EINVAL;
    seq *s = &p->s[sid];
    int32_t need = blocks_for(p, max_tokens), have = blocks_for(p, s->max_tokens), extra = need - have;
    if (need > p->n_blocks)
        return MG_ERANGE;
    if (extra > p->n_free + p->n_cached - p->reserved)
        return MG_EBUSY;
    if (extra > 0) {
        int32_t *blocks = realloc(s->blocks, (size_t)need * sizeof *blocks);
        if (!blocks)
            return MG_ENOMEM;
        s->blocks = blocks;
    }
    s->reserved += extra;
    p->reserved += extra;
    s->max_tokens = max_tokens;
    return 0;
}

int32_t kvb_seq_block(const kvb_pool *p, int32_t sid, int32_t pos)
{
    if (sid < 0 || sid >= p->n_seq || !p->s[sid].active || pos < 0 || pos >= p->s[sid].len)
        return -1;
    return p->s[sid].blocks[pos / p->bt];
}

int32_t kvb_seq_len(const kvb_pool *p, int32_t sid)
{
    return sid >= 0 && sid < p->n_seq && p->s[sid].active ? p->s[sid].len : 0;
}

const int32_t *kvb_seq_table(const kvb_pool *p, int32_t sid, int32_t *n)
{
    if (sid < 0 || sid >= p->n_seq || !p->s[sid].active) {
        *n = 0;
        return NULL;
    }
    *n = p->s[sid].n_blocks;
    return p->s[sid].blocks;
}

void kvb_drop_cached(kvb_pool *p)
{
    while (p->lru_head >= 0) {
        int32_t i = p->lru_head;
        lru_remove(p, i);
        unpublish(p, i);
        p->b[i].gen++; /* children keyed on the old generation become unreachable */
        p->b[i].child_head = -1;
        p->free_stack[p->n_free++] = i;
    }
}

void kvb_seq_end(kvb_pool *p, int32_t sid)
{
    if (sid < 0 || sid >= p->n_seq || !p->s[sid].active)
        return;
    seq *s = &p->s[sid];
    for (int32_t k = s->n_blocks; k-- > 0;) { /* last first: parents outlive children in the LRU */
        int32_t i = s->blocks[k];
        block *b = &p->b[i];
        if (--b->ref > 0)
            continue;
        if (!b->published && k == s->n_blocks - 1 && b->n_tok > 0 && b->n_tok < p->bt && b->parent >= 0 &&
            p->b[b->parent].gen == b->parent_gen && p->b[b->parent].published) {
            /* the unfinished last block: cached too, for a later prompt that
             * shares its first rows (copied, never shared: it stays as is) */
            b->published = true;
            b->sib_next = p->b[b->parent].child_head;
            p->b[b->parent].child_head = i;
            b->linked = true;
        }
        if (b->published)
            lru_push(p, i);
        else
            p->free_stack[p->n_free++] = i;
    }
    p->reserved -= s->reserved;
    s->active = false;
    s->n_blocks = s->len = s->reserved = 0;
}

void kvb_get_stats(const kvb_pool *p, kvb_stats *st)
{
    *st = p->st;
    st->free_blocks = p->n_free;
    st->cached_blocks = p->n_cached;
    st->used_blocks = p->n_blocks - p->n_free - p->n_cached;
    st->reserved_blocks = p->reserved;
}
