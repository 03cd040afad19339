/* moegate — the paged KV cache's bookkeeping: fixed-size blocks, per-sequence
 * block tables, and a prefix cache that lets requests share the blocks of an
 * identical token prefix (a domain's system prompt, a shared document).
 *
 * This module decides which block holds which tokens; the model stores keys
 * and values at block * block_tokens + offset. It never touches the data.
 *
 * Blocks: each is free, owned (referenced by one or more sequences), or
 * cached (no reference, but still holding a full block of a known prefix,
 * or the unfinished last block of an ended sequence, reusable until
 * evicted, least recently used first; the unfinished ones only through
 * kvb_seq_start_copy, which copies their rows). A full block is
 * published in the prefix cache under a hash of (namespace, every token up to
 * its end); the namespace separates prefixes whose KV differs for the same
 * tokens (another adapter, another model). Lookups compare the tokens too, so
 * a hash collision can never share wrong KV.
 *
 * Memory is never over-committed: kvb_reserve says up front whether a
 * sequence of n tokens fits, counting free and evictable blocks, and a
 * sequence only grows into blocks it reserved.
 *
 * Thread safety: none; one scheduler thread owns a pool.
 */
#ifndef MOEGATE_CORE_KVBLOCKS_H
#define MOEGATE_CORE_KVBLOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kvb_pool kvb_pool;

typedef struct kvb_stats {
    int32_t n_blocks, block_tokens;
    int32_t free_blocks;   /* never used or evicted */
    int32_t cached_blocks; /* unreferenced, holding a reusable prefix */
    int32_t used_blocks;   /* referenced by at least one sequence */
    int32_t reserved_blocks; /* promised to sequences, not yet filled */
    int64_t lookups, hit_tokens, lookup_tokens; /* prefix cache: tokens asked / found */
    int64_t evictions;
} kvb_stats;

/* A pool of n_blocks blocks of block_tokens tokens each, for up to n_seq
 * sequences at once. */
int kvb_create(kvb_pool **out, int32_t n_blocks, int32_t block_tokens, int32_t n_seq, char *err, size_t errlen);
void kvb_free(kvb_pool *p); /* accepts NULL */

/* Starts sequence seq (0..n_seq-1, not active) for a prompt of n tokens
 * that will grow to at most max_tokens: shares the longest cached prefix of
 * whole blocks (at most n - 1 tokens, so the last prompt token is always
 * evaluated) and reserves the blocks the rest needs. *n_cached receives the
 * number of prompt tokens whose KV is already there. MG_EBUSY when the pool
 * cannot hold it now (nothing is changed), MG_ERANGE when it never could. */
int kvb_seq_start(kvb_pool *p, int32_t seq, uint64_t ns, const int32_t *tokens, int32_t n, int32_t max_tokens,
                  int32_t *n_cached);

/* kvb_seq_start, and when the prompt's tail (short of a whole block, but
 * for its last token) shares its first tokens with the start of a cached
 * full block, a fresh block for seq that must begin with a copy of that
 * block's first rows (as many as the longest match):
 * copy->rows > 0 says so (rows of block src into block dst, positions
 * 0..rows-1), and *n_cached counts them. The caller copies the keys and
 * values before anything else touches the pool. copy may be NULL (no
 * partial sharing). */
typedef struct kvb_copy {
    int32_t src, dst, rows;
} kvb_copy;
int kvb_seq_start_copy(kvb_pool *p, int32_t seq, uint64_t ns, const int32_t *tokens, int32_t n, int32_t max_tokens,
                       int32_t *n_cached, kvb_copy *copy);

/* Appends n tokens to seq's table (within its reservation) and publishes
 * every block they fill in the prefix cache. Fails with MG_ERANGE beyond
 * max_tokens. */
int kvb_seq_append(kvb_pool *p, int32_t seq, const int32_t *tokens, int32_t n);

/* Raises seq's limit to max_tokens, reserving the blocks that takes.
 * MG_EBUSY when the pool cannot promise them now (nothing changes),
 * MG_EINVAL for an idle seq or a lower limit. */
int kvb_seq_grow(kvb_pool *p, int32_t seq, int32_t max_tokens);

/* The block holding position pos of seq, or -1. */
int32_t kvb_seq_block(const kvb_pool *p, int32_t seq, int32_t pos);
int32_t kvb_seq_len(const kvb_pool *p, int32_t seq);
/* seq's block table: *n blocks, for positions [i*block_tokens, ...). Valid
 * until the next kvb call that changes seq. NULL and 0 for an idle seq. */
const int32_t *kvb_seq_table(const kvb_pool *p, int32_t seq, int32_t *n);

/* Forgets every cached (unreferenced) block: they become free and no later
 * lookup finds them. For when their contents can no longer be trusted (a
 * forward pass that failed midway). */
void kvb_drop_cached(kvb_pool *p);

/* Ends seq: its blocks are released (full ones stay cached for later
 * prompts), its unused reservation returns to the pool. */
void kvb_seq_end(kvb_pool *p, int32_t seq);

/* Blocks a new sequence of n tokens would need beyond what is free now;
 * for admission decisions without starting anything. */
bool kvb_can_fit(const kvb_pool *p, int32_t max_tokens);

void kvb_get_stats(const kvb_pool *p, kvb_stats *s);

#endif
