/* moegate — the serving engine: many requests, one model, continuous
 * batching.
 *
 * Requests enter a bounded queue; one scheduler thread owns the model and
 * runs steps. Each step forms one batch from the running sequences: one
 * decode token per generating sequence, plus chunks of prompts still being
 * evaluated, up to a per-step token budget (chunked prefill: a long document
 * never stalls the chats around it). One forward pass runs the whole batch,
 * so each expert is computed once per step for every token routed to it,
 * across sequences. Then every sequence that produced logits samples its
 * next token with its own parameters, and its text goes through its stop
 * strings to its callback.
 *
 * KV cache: a paged pool of kv_memory bytes in blocks of block_tokens
 * positions (core/kvblocks.h decides which block holds what). A request is
 * admitted when a sequence slot is free and the pool can promise its prompt
 * plus reserve_tokens of answer; otherwise it waits in the queue, in order.
 * A generating sequence reserves reserve_tokens more each time it reaches
 * its reservation; when the pool cannot promise them, the youngest running
 * sequence is preempted: its blocks return to the pool (full ones stay in
 * the prefix cache) and it goes back to the head of the queue, to resume
 * later by re-evaluating its history (mostly a prefix-cache hit) with its
 * sampler and stream state intact, so its output is the same. Memory is
 * never over-committed: a block is used only once promised. A request that
 * could never fit (prompt + max_tokens beyond the whole pool) is refused at
 * submit with the reason.
 *
 * Prefix cache: every full block of evaluated tokens is published under a
 * hash of all tokens up to its end and the adapter in use; a later prompt
 * with the same prefix (a domain's system prompt, a shared document) reuses
 * those blocks instead of evaluating them, reference counted; unreferenced
 * blocks stay cached until evicted, least recently used first.
 *
 * The scheduler thread sleeps on a condition variable when idle; it never
 * spins. Callbacks run on the scheduler thread and must not block.
 *
 * Thread safety: serve_submit, serve_cancel and serve_get_stats may be called
 * from any thread; serve_close from one.
 */
#ifndef MOEGATE_CORE_SERVE_H
#define MOEGATE_CORE_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"
#include "core/sampler.h"
#include "core/tokenizer.h"

typedef struct serve serve;

typedef struct serve_opts {
    int n_slots;      /* sequences running at once (default 8) */
    int n_ctx;        /* positions per sequence (default: min(4096, model's)) */
    int max_queue;    /* requests waiting; more are refused (default 256) */
    int step_tokens;  /* prompt tokens evaluated per step across sequences (default 256) */
    size_t kv_memory; /* bytes of the KV block pool (default: n_slots full contexts, at
                       * most 4 GiB, and at least one full context) */
    int block_tokens; /* positions per KV block (default 64) */
    int reserve_tokens; /* answer positions reserved at admission and at each growth
                         * (default 256) */
} serve_opts;

enum serve_finish {
    SERVE_RUNNING = 0,
    SERVE_STOP,      /* a stop string, a stop token or the end-of-turn token */
    SERVE_LENGTH,    /* max_tokens or the context is full */
    SERVE_CANCELLED, /* serve_cancel, or the deadline passed */
    SERVE_ERROR,
};

typedef struct serve_params {
    sampler_params sampling;
    int max_tokens;              /* > 0 */
    const char *const *stop;     /* stop strings (copied), n_stop of them */
    size_t n_stop;
    const int32_t *stop_ids;     /* extra stop token ids (copied) */
    size_t n_stop_ids;
    bool ignore_eos;             /* do not stop at the end-of-turn tokens */
    bool show_special;           /* the text of control tokens is streamed too */
    double deadline;             /* CLOCK_MONOTONIC seconds; 0: none */
    model_lora *lora;            /* adapter for this request (retained until it ends), or NULL;
                                  * must have passed model_lora_check for this model */
    /* Optional: called on the scheduler thread with the logits of every
     * position this request evaluates (prompt and generated), in order, before
     * the token callback of that step. Prompt positions found in the prefix
     * cache are not evaluated; no_prefix_cache makes every one evaluated. */
    void (*logits_cb)(void *ud, int32_t pos, const float *logits, int64_t n_vocab);
    bool no_prefix_cache;        /* neither reuse nor share cached prefixes */
} serve_params;

/* Called on the scheduler thread: with each piece of text to send (len may
 * be 0), the token that produced it, and the finish reason (SERVE_RUNNING
 * until the last call, which comes exactly once per accepted request). The
 * last call carries what the stop matcher still held, and as token the stop
 * token that ended the request (its text is not sent), else -1. After the
 * last call the request is gone; ud is not used again. */
typedef void (*serve_callback)(void *ud, const char *text, size_t len, int32_t token, enum serve_finish finish);

typedef struct serve_stats {
    int running, waiting;
    int slots_used, slots_total;
    int64_t requests_done;
    int64_t prompt_tokens, generated_tokens; /* evaluated prompt tokens, generated tokens */
    int64_t steps;
    double tokens_per_second; /* generated per second of forward work, since start */
    /* KV blocks */
    int kv_blocks_total, kv_blocks_used, kv_blocks_cached, kv_blocks_free, kv_blocks_reserved;
    int block_tokens;
    size_t kv_bytes;
    /* prefix cache: prompt tokens of admitted requests, and those found cached */
    int64_t prefix_lookup_tokens, prefix_hit_tokens, prefix_evictions;
    int64_t preemptions; /* sequences sent back to the queue to free KV blocks */
} serve_stats;

/* Starts the scheduler for model m (tok decodes its output and names the
 * end-of-turn tokens; NULL: no text, token ids only, no stop strings). Both
 * must outlive the serve object. */
int serve_open(serve **out, model *m, const tokenizer *tok, const serve_opts *opts, char *err, size_t errlen);

/* Queues a request for prompt[0..n). *id identifies it for serve_cancel.
 * MG_EBUSY: the queue is full (retry later); MG_ERANGE: it can never fit
 * (prompt + max_tokens beyond n_ctx or the whole KV pool); MG_EINVAL: bad
 * parameters (named in err).
 * On success cb will be called until its last call. */
int serve_submit(serve *s, const int32_t *prompt, size_t n, const serve_params *p, serve_callback cb, void *ud,
                 uint64_t *id, char *err, size_t errlen);

/* Cancels request id: it finishes with SERVE_CANCELLED within one step and
 * frees its slot. Returns MG_ENOTFOUND when it is already finished. */
int serve_cancel(serve *s, uint64_t id);

void serve_get_stats(serve *s, serve_stats *st);

/* Cancels everything still queued or running (their callbacks get
 * SERVE_CANCELLED), stops the thread, frees. Accepts NULL. */
void serve_close(serve *s);

#endif
