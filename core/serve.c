/* serve.c — the scheduler (see serve.h).
 *
 * Ownership: a request belongs to the submitter until serve_submit returns
 * 0, then to the scheduler thread, which frees it after its last callback.
 * The waiting queue, the cancel flags, the running table's membership and
 * the counters are guarded by s->mu; everything else about a running
 * request (its history, sampler, stream state) is touched only by the
 * scheduler thread.
 *
 * One step, in order: admit waiting requests into free slots while the KV
 * pool can hold them (in arrival order; a cached prefix is shared, not
 * evaluated again); finish the cancelled and the late; gather one decode
 * token per generating sequence and prompt chunks within the step budget,
 * growing each sequence's block table; one model_forward; sample for every
 * sequence that got logits; stream text through its stop strings; finish
 * what is done, releasing its blocks (full ones stay cached).
 *
 * The KV pool (s->kvp) belongs to the scheduler thread; other threads see
 * it only through the counters copied into s->st under s->mu.
 */
#include "core/serve.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/kvblocks.h"
#include "core/stopstr.h"

/* Rows of logits beyond one per slot, for requests that want the logits of
 * every prompt position (their prompt chunks are limited to what fits). */
#define EXTRA_LOGIT_ROWS 64

typedef struct req {
    uint64_t id;
    int32_t *hist; /* prompt, then generated tokens; capacity n_prompt + max_tokens */
    int n_prompt, n_hist;
    int n_fill;  /* tokens to evaluate before decoding: the prompt, or after a
                  * preemption the whole history (recomputed, mostly from the
                  * prefix cache) */
    int max_len; /* n_prompt + max_tokens */
    int resv;    /* KV positions reserved now (grows by reserve_tokens up to max_len) */
    uint64_t admitted; /* admission order: the youngest is preempted first */
    int n_eval; /* tokens whose keys and values are in the cache */
    uint64_t ns; /* prefix-cache namespace: the adapter, or unique (logits_cb) */
    int n_gen;
    serve_params p;
    int32_t *stop_ids;
    sampler *smp;
    stop_matcher *stops;
    tokenizer_stream ts;
    serve_callback cb;
    void *ud;
    int slot;
    model_lora *lora_ref; /* retained at submit, released when the request is freed */
    bool cancel; /* guarded by mu */
    struct req *next;
} req;

struct serve {
    model *m;
    const tokenizer *tok;
    model_kv *kv;
    kvb_pool *kvp;
    serve_opts o;
    int64_t n_vocab;

    pthread_mutex_t mu; /* guards: waiting list, n_waiting, cancel flags, slot[] membership, st, stopping */
    pthread_cond_t cv;
    req *wait_head, *wait_tail;
    int n_waiting;
    req **slot; /* [n_slots] */
    uint64_t next_id;
    uint64_t n_admitted;
    bool stopping;
    serve_stats st;
    double busy_s;
    pthread_t thread;

    /* scheduler-thread scratch */
    int32_t *b_tok, *b_pos, *b_seq;
    uint8_t *b_want;
    req **b_req; /* request of each batch token */
    const model_lora **b_lora;
    float *logits; /* [n_slots + EXTRA_LOGIT_ROWS][n_vocab] */
    char *text;
    size_t text_cap;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void req_free(req *r)
{
    if (!r)
        return;
    model_lora_release(r->lora_ref);
    free(r->hist);
    free(r->stop_ids);
    sampler_free(r->smp);
    stop_matcher_free(r->stops);
    free(r);
}

/* ---- finishing ------------------------------------------------------------ */

/* The pool's counters into s->st; the caller holds s->mu. */
static void copy_kv_stats(serve *s)
{
    kvb_stats ks;
    kvb_get_stats(s->kvp, &ks);
    s->st.kv_blocks_used = ks.used_blocks;
    s->st.kv_blocks_cached = ks.cached_blocks;
    s->st.kv_blocks_free = ks.free_blocks;
    s->st.kv_blocks_reserved = ks.reserved_blocks;
    s->st.prefix_lookup_tokens = ks.lookup_tokens;
    s->st.prefix_hit_tokens = ks.hit_tokens;
    s->st.prefix_evictions = ks.evictions;
}

/* Last callback, then the request is gone. flush: send what the stream and
 * the stop matcher still hold (not after a stop string or a cancel). */
static void finish(serve *s, req *r, enum serve_finish why, bool flush, int32_t stop_token)
{
    size_t n = 0;
    if (flush && s->tok) {
        int k = tokenizer_stream_flush(&r->ts, s->text, s->text_cap);
        if (k > 0) {
            bool stopped;
            long w = stop_matcher_feed(r->stops, s->text, (size_t)k, s->text + s->text_cap / 2, s->text_cap / 2,
                                       &stopped);
            if (w > 0) {
                memmove(s->text, s->text + s->text_cap / 2, (size_t)w);
                n = (size_t)w;
            }
        }
    }
    if (flush) {
        long h = stop_matcher_flush(r->stops, s->text + n, s->text_cap - n);
        if (h > 0)
            n += (size_t)h;
    }
    /* gone from the tables before its last callback: whoever that callback
     * wakes sees the request finished (serve_cancel: not found; stats: done) */
    if (r->slot >= 0)
        kvb_seq_end(s->kvp, r->slot);
    pthread_mutex_lock(&s->mu);
    if (r->slot >= 0) {
        s->slot[r->slot] = NULL;
        s->st.running = 0;
        for (int i = 0; i < s->o.n_slots; i++)
            s->st.running += s->slot[i] != NULL;
        s->st.slots_used = s->st.running;
    }
    s->st.requests_done++;
    copy_kv_stats(s);
    pthread_mutex_unlock(&s->mu);
    r->cb(r->ud, s->text, n, stop_token, why);
    req_free(r);
}

static bool is_stop_token(const serve *s, const req *r, int32_t id)
{
    if (!r->p.ignore_eos && s->tok && tokenizer_is_eog(s->tok, id))
        return true;
    for (size_t i = 0; i < r->p.n_stop_ids; i++)
        if (r->stop_ids[i] == id)
            return true;
    return false;
}

/* ---- preemption ------------------------------------------------------------------ */

/* v gives its blocks back (full ones stay in the prefix cache, its
 * unfinished last block too) and returns to the head of the queue; it
 * resumes by re-evaluating its history, mostly found in the cache. Its
 * sampler, stop matcher and text stream are untouched, so its output goes
 * on exactly where it stopped. */
static void preempt(serve *s, req *v)
{
    kvb_seq_end(s->kvp, v->slot);
    pthread_mutex_lock(&s->mu);
    s->slot[v->slot] = NULL;
    v->slot = -1;
    v->n_eval = 0;
    v->next = s->wait_head;
    s->wait_head = v;
    if (!s->wait_tail)
        s->wait_tail = v;
    s->n_waiting++;
    s->st.waiting = s->n_waiting;
    s->st.preemptions++;
    s->st.running = 0;
    for (int i = 0; i < s->o.n_slots; i++)
        s->st.running += s->slot[i] != NULL;
    s->st.slots_used = s->st.running;
    copy_kv_stats(s);
    pthread_mutex_unlock(&s->mu);
}

/* Every generating sequence whose next position lies past its reservation
 * reserves another run of reserve_tokens (up to its max_len). When the pool
 * cannot promise it, the youngest running sequence is preempted, possibly
 * the one asking; the oldest always progresses (one sequence alone always
 * fits: submit checks that). */
static int grow_reservations(serve *s, char *err, size_t errlen)
{
    for (int i = 0; i < s->o.n_slots; i++) {
        req *r = s->slot[i];
        if (!r || r->n_eval < r->n_fill || r->n_hist <= r->resv)
            continue;
        int want = r->resv + s->o.reserve_tokens > r->max_len ? r->max_len : r->resv + s->o.reserve_tokens;
        while (s->slot[i] == r) {
            int rc = kvb_seq_grow(s->kvp, i, want);
            if (rc == 0) {
                r->resv = want;
                break;
            }
            if (rc != MG_EBUSY) {
                mg_err_set(err, errlen, "serve: growing the KV reservation of sequence %d: %s", i, mg_err_name(rc));
                return rc;
            }
            req *victim = NULL;
            for (int j = 0; j < s->o.n_slots; j++)
                if (s->slot[j] && !s->slot[j]->p.logits_cb && (!victim || s->slot[j]->admitted > victim->admitted))
                    victim = s->slot[j];
            if (!victim) {
                mg_err_set(err, errlen, "serve: the KV pool cannot grow sequence %d and nothing can be preempted", i);
                return MG_EBUSY;
            }
            preempt(s, victim);
        }
    }
    return 0;
}

/* ---- one step ------------------------------------------------------------------ */

static int step(serve *s, char *err, size_t errlen)
{
    /* admission and cancellation, under the lock */
    req *done_waiting = NULL;
    req *cancelled[64];
    int n_cancelled = 0;
    double t = now_s();
    pthread_mutex_lock(&s->mu);
    s->wait_tail = NULL;
    for (req **pp = &s->wait_head; *pp;) { /* cancelled or late while waiting */
        req *r = *pp;
        if (r->cancel || (r->p.deadline > 0 && t > r->p.deadline)) {
            *pp = r->next;
            s->n_waiting--;
            r->next = done_waiting;
            done_waiting = r;
        } else {
            s->wait_tail = r;
            pp = &r->next;
        }
    }
    for (int i = 0; i < s->o.n_slots && s->wait_head; i++) {
        if (s->slot[i])
            continue;
        req *r = s->wait_head;
        int32_t n_cached = 0;
        kvb_copy cp;
        /* reserve the prompt (or, after a preemption, the history) and a
         * first run of answer; a logits request reserves everything (it is
         * never preempted: its positions are reported once) */
        int resv = r->p.logits_cb || r->n_hist + s->o.reserve_tokens > r->max_len ? r->max_len
                                                                                  : r->n_hist + s->o.reserve_tokens;
        int rc = kvb_seq_start_copy(s->kvp, i, r->ns, r->hist, r->n_hist, resv, &n_cached, &cp);
        if (rc == MG_EBUSY)
            break; /* the pool cannot hold it yet: it waits, and so do those behind it */
        if (!rc && cp.rows > 0) /* the prompt's tail inside a cached block: its rows */
            rc = model_kv_copy_rows(s->kv, cp.dst, cp.src, cp.rows);
        s->wait_head = r->next;
        if (!s->wait_head)
            s->wait_tail = NULL;
        s->n_waiting--;
        if (rc) { /* cannot happen for a request submit accepted; end it cleanly */
            r->next = done_waiting;
            done_waiting = r;
            r->cancel = true;
            continue;
        }
        r->next = NULL;
        r->slot = i;
        r->n_eval = n_cached;
        r->n_fill = r->n_hist;
        r->resv = resv;
        r->admitted = ++s->n_admitted;
        s->slot[i] = r;
    }
    for (int i = 0; i < s->o.n_slots && n_cancelled < 64; i++) {
        req *r = s->slot[i];
        if (r && (r->cancel || (r->p.deadline > 0 && t > r->p.deadline)))
            cancelled[n_cancelled++] = r;
    }
    int running = 0;
    for (int i = 0; i < s->o.n_slots; i++)
        running += s->slot[i] != NULL;
    s->st.running = running - n_cancelled;
    s->st.waiting = s->n_waiting;
    s->st.slots_used = running;
    pthread_mutex_unlock(&s->mu);
    while (done_waiting) {
        req *r = done_waiting;
        done_waiting = r->next;
        r->slot = -1;
        finish(s, r, SERVE_CANCELLED, false, -1);
    }
    for (int k = 0; k < n_cancelled; k++)
        finish(s, cancelled[k], SERVE_CANCELLED, false, -1);

    int grc = grow_reservations(s, err, errlen);
    if (grc)
        return grc;

    /* gather: decode tokens first, then prompt chunks within the budget */
    int n = 0, budget = s->o.step_tokens, rows_free = s->o.n_slots + EXTRA_LOGIT_ROWS;
    bool any_lora = false;
    for (int i = 0; i < s->o.n_slots; i++) {
        req *r = s->slot[i];
        if (!r || r->n_eval < r->n_fill)
            continue;
        int p = r->n_hist - 1; /* the last sampled token, not yet evaluated */
        s->b_tok[n] = r->hist[p];
        s->b_pos[n] = p;
        s->b_seq[n] = i;
        s->b_want[n] = 1;
        s->b_lora[n] = r->lora_ref;
        s->b_req[n++] = r;
        rows_free--;
    }
    for (int i = 0; i < s->o.n_slots && budget > 0; i++) {
        req *r = s->slot[i];
        if (!r || r->n_eval >= r->n_fill)
            continue;
        int k = r->n_fill - r->n_eval;
        if (k > budget)
            k = budget;
        if (r->p.logits_cb && k > rows_free)
            k = rows_free; /* every row wants logits */
        if (k <= 0 || (!r->p.logits_cb && rows_free <= 0 && r->n_eval + k == r->n_fill))
            continue;
        for (int j = 0; j < k; j++) {
            int p = r->n_eval + j;
            s->b_tok[n] = r->hist[p];
            s->b_pos[n] = p;
            s->b_seq[n] = i;
            s->b_want[n] = p == r->n_fill - 1 || r->p.logits_cb;
            s->b_lora[n] = r->lora_ref;
            rows_free -= s->b_want[n];
            s->b_req[n++] = r;
        }
        budget -= k;
    }
    if (n == 0)
        return 0;
    /* grow the block tables (within each sequence's reservation) and hand
     * them to the model */
    for (int j = 0; j < n;) {
        int i = s->b_seq[j], k = 1;
        while (j + k < n && s->b_seq[j + k] == i)
            k++;
        int rc = kvb_seq_append(s->kvp, i, s->b_tok + j, k);
        int32_t nb = 0;
        const int32_t *tab = kvb_seq_table(s->kvp, i, &nb);
        if (!rc)
            rc = model_kv_bind(s->kv, i, tab, nb);
        if (rc) {
            mg_err_set(err, errlen, "serve: kv blocks of sequence %d: %s", i, mg_err_name(rc));
            return rc;
        }
        any_lora |= s->b_lora[j] != NULL;
        j += k;
    }
    model_batch b = {.n = n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .want_logits = s->b_want,
                     .lora = any_lora ? s->b_lora : NULL};
    double t0 = now_s();
    int rc = model_forward(s->m, s->kv, &b, s->logits, err, errlen);
    if (rc)
        return rc;
    /* every batch token is now in its slot */
    for (int j = 0; j < n; j++)
        s->b_req[j]->n_eval = s->b_pos[j] + 1 > s->b_req[j]->n_eval ? s->b_pos[j] + 1 : s->b_req[j]->n_eval;
    int row = 0, generated = 0, prompt_tokens = 0;
    for (int j = 0; j < n; j++) {
        req *r = s->b_req[j];
        if (s->b_pos[j] < r->n_fill)
            prompt_tokens++;
        if (!s->b_want[j])
            continue;
        float *lg = s->logits + (size_t)row++ * (size_t)s->n_vocab;
        if (r->p.logits_cb)
            r->p.logits_cb(r->ud, s->b_pos[j], lg, s->n_vocab);
        if (s->b_pos[j] < r->n_hist - 1)
            continue; /* a prompt position before the last: logits only */
        int32_t id = sampler_sample(r->smp, lg, r->hist, r->n_hist);
        if (is_stop_token(s, r, id)) {
            finish(s, r, SERVE_STOP, true, id);
            continue;
        }
        r->hist[r->n_hist++] = id;
        r->n_gen++;
        generated++;
        int k = s->tok ? tokenizer_stream_push(&r->ts, id, s->text, s->text_cap / 2) : 0;
        long w = 0;
        bool stopped = false;
        if (k > 0)
            w = stop_matcher_feed(r->stops, s->text, (size_t)k, s->text + s->text_cap / 2, s->text_cap / 2,
                                  &stopped);
        r->cb(r->ud, s->text + s->text_cap / 2, w > 0 ? (size_t)w : 0, id, SERVE_RUNNING);
        if (stopped)
            finish(s, r, SERVE_STOP, false, -1);
        else if (r->n_gen >= r->p.max_tokens || r->n_hist >= r->max_len)
            finish(s, r, SERVE_LENGTH, true, -1);
    }
    pthread_mutex_lock(&s->mu);
    copy_kv_stats(s);
    s->st.steps++;
    s->st.generated_tokens += generated;
    s->st.prompt_tokens += prompt_tokens;
    s->busy_s += now_s() - t0;
    s->st.tokens_per_second = s->busy_s > 0 ? (double)s->st.generated_tokens / s->busy_s : 0;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void *scheduler(void *arg)
{
    serve *s = arg;
    char err[512];
    model_pin_thread(s->m, true); /* this thread is the engine's first worker now */
    for (;;) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            bool busy = s->wait_head != NULL;
            for (int i = 0; i < s->o.n_slots && !busy; i++)
                busy = s->slot[i] != NULL;
            if (busy || s->stopping)
                break;
            pthread_cond_wait(&s->cv, &s->mu);
        }
        bool stopping = s->stopping;
        if (stopping) { /* cancel everything, then leave */
            for (req *r = s->wait_head; r; r = r->next)
                r->cancel = true;
            for (int i = 0; i < s->o.n_slots; i++)
                if (s->slot[i])
                    s->slot[i]->cancel = true;
        }
        pthread_mutex_unlock(&s->mu);
        if (step(s, err, sizeof err)) {
            /* a forward error: every running request ends with it */
            for (int i = 0; i < s->o.n_slots; i++)
                if (s->slot[i])
                    finish(s, s->slot[i], SERVE_ERROR, false, -1);
            /* blocks published this step may hold half-written keys and values */
            kvb_drop_cached(s->kvp);
        }
        if (stopping) {
            pthread_mutex_lock(&s->mu);
            bool empty = !s->wait_head;
            for (int i = 0; i < s->o.n_slots && empty; i++)
                empty = !s->slot[i];
            pthread_mutex_unlock(&s->mu);
            if (empty)
                break;
        }
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------------------ */

/* Everything serve_open allocates, and s itself. */
static void free_parts(serve *s)
{
    model_kv_free(s->kv);
    kvb_free(s->kvp);
    free(s->b_lora);
    free(s->slot);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_want);
    free(s->b_req);
    free(s->logits);
    free(s->text);
    free(s);
}

int serve_open(serve **out, model *m, const tokenizer *tok, const serve_opts *opts, char *err, size_t errlen)
{
    const model_info *I = model_get_info(m);
    serve_opts o = opts ? *opts : (serve_opts){0};
    if (o.n_slots <= 0)
        o.n_slots = 8;
    if (o.n_ctx <= 0)
        o.n_ctx = (int)(I->n_ctx_train < 4096 ? I->n_ctx_train : 4096);
    if (o.max_queue <= 0)
        o.max_queue = 256;
    if (o.step_tokens <= 0)
        o.step_tokens = 256;
    if (o.block_tokens <= 0)
        o.block_tokens = 64;
    if (o.reserve_tokens <= 0)
        o.reserve_tokens = 256;
    if (o.n_slots > 4096 || o.step_tokens > (1 << 16) || o.max_queue > (1 << 20) || o.block_tokens > 4096 ||
        o.reserve_tokens > (1 << 24) || o.n_ctx > I->n_ctx_train) {
        mg_err_set(err, errlen, "serve: n_slots %d / step_tokens %d / max_queue %d / block_tokens %d / "
                   "reserve_tokens %d / n_ctx %d out of range (n_ctx at most the model's %lld)", o.n_slots,
                   o.step_tokens, o.max_queue, o.block_tokens, o.reserve_tokens, o.n_ctx, (long long)I->n_ctx_train);
        return MG_ERANGE;
    }
    size_t block_bytes = model_kv_block_bytes(m, o.block_tokens);
    int64_t ctx_blocks = ((int64_t)o.n_ctx + o.block_tokens - 1) / o.block_tokens;
    if (o.kv_memory == 0) {
        size_t want = (size_t)o.n_slots * (size_t)ctx_blocks * block_bytes, cap = (size_t)4 << 30;
        o.kv_memory = want < cap ? want : cap;
        if (o.kv_memory < (size_t)ctx_blocks * block_bytes)
            o.kv_memory = (size_t)ctx_blocks * block_bytes;
    }
    int64_t n_blocks = (int64_t)(o.kv_memory / block_bytes);
    if (n_blocks < 1 || n_blocks > (1 << 26)) {
        mg_err_set(err, errlen, "serve: kv memory of %zu bytes holds %lld blocks of %d positions (%zu bytes "
                   "each); it must hold 1..2^26", o.kv_memory, (long long)n_blocks, o.block_tokens,
                   block_bytes);
        return MG_ERANGE;
    }
    serve *s = calloc(1, sizeof *s);
    if (!s) {
        mg_err_set(err, errlen, "serve: out of memory");
        return MG_ENOMEM;
    }
    s->m = m;
    s->tok = tok;
    s->o = o;
    s->n_vocab = I->n_vocab;
    int rc = model_kv_create_paged(&s->kv, m, o.n_slots, (int)n_blocks, o.block_tokens, o.n_ctx, err, errlen);
    if (!rc)
        rc = kvb_create(&s->kvp, (int32_t)n_blocks, o.block_tokens, o.n_slots, err, errlen);
    if (rc) {
        model_kv_free(s->kv);
        free(s);
        return rc;
    }
    size_t nb = (size_t)o.step_tokens + (size_t)o.n_slots;
    s->slot = calloc((size_t)o.n_slots, sizeof *s->slot);
    s->b_tok = malloc(nb * sizeof *s->b_tok);
    s->b_pos = malloc(nb * sizeof *s->b_pos);
    s->b_seq = malloc(nb * sizeof *s->b_seq);
    s->b_want = malloc(nb);
    s->b_req = malloc(nb * sizeof *s->b_req);
    s->b_lora = calloc(nb, sizeof *s->b_lora);
    s->logits = malloc(((size_t)o.n_slots + EXTRA_LOGIT_ROWS) * (size_t)s->n_vocab * sizeof *s->logits);
    s->text_cap = 2 * ((tok ? tokenizer_max_piece_bytes(tok) : 0) + 16 + STOP_MAX_BYTES);
    s->text = malloc(s->text_cap);
    if (!s->slot || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_want || !s->b_req || !s->b_lora || !s->logits || !s->text) {
        mg_err_set(err, errlen, "serve: out of memory");
        rc = MG_ENOMEM;
        goto fail;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->st.slots_total = o.n_slots;
    s->st.kv_blocks_total = s->st.kv_blocks_free = (int)n_blocks;
    s->st.block_tokens = o.block_tokens;
    s->st.kv_bytes = model_kv_bytes(s->kv);
    s->next_id = 1;
    if (pthread_create(&s->thread, NULL, scheduler, s)) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        mg_err_set(err, errlen, "serve: cannot start the scheduler thread");
        rc = MG_ENOMEM;
        goto fail;
    }
    /* the opening thread no longer runs the engine: it (and the threads it
     * starts, such as a server's) may use every CPU again */
    model_pin_thread(m, false);
    *out = s;
    return 0;
fail:
    free_parts(s);
    return rc;
}

int serve_submit(serve *s, const int32_t *prompt, size_t n, const serve_params *p, serve_callback cb, void *ud,
                 uint64_t *id, char *err, size_t errlen)
{
    if (!s || !prompt || n == 0 || !p || !cb || !id) {
        mg_err_set(err, errlen, "serve: a request needs a prompt, parameters and a callback");
        return MG_EINVAL;
    }
    if (!s->tok && p->n_stop) {
        mg_err_set(err, errlen, "serve: stop strings need a tokenizer to decode the output");
        return MG_EINVAL;
    }
    if (p->max_tokens <= 0) {
        mg_err_set(err, errlen, "serve: max_tokens must be positive (got %d)", p->max_tokens);
        return MG_EINVAL;
    }
    if (n + (size_t)p->max_tokens > (size_t)s->o.n_ctx) {
        mg_err_set(err, errlen, "serve: prompt (%zu tokens) + max_tokens %d exceeds the context of %d", n,
                   p->max_tokens, s->o.n_ctx);
        return MG_ERANGE;
    }
    int64_t need = ((int64_t)n + p->max_tokens + s->o.block_tokens - 1) / s->o.block_tokens;
    if (need > s->st.kv_blocks_total) { /* kv_blocks_total never changes after open */
        mg_err_set(err, errlen, "serve: prompt (%zu tokens) + max_tokens %d needs %lld KV blocks of %d positions; "
                   "the pool (kv memory) holds %d", n, p->max_tokens, (long long)need, s->o.block_tokens,
                   s->st.kv_blocks_total);
        return MG_ERANGE;
    }
    for (size_t i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= s->n_vocab) {
            mg_err_set(err, errlen, "serve: prompt token %zu (%d) is outside the vocabulary", i, (int)prompt[i]);
            return MG_EINVAL;
        }
    req *r = calloc(1, sizeof *r);
    if (!r) {
        mg_err_set(err, errlen, "serve: out of memory");
        return MG_ENOMEM;
    }
    int rc;
    r->hist = malloc((n + (size_t)p->max_tokens) * sizeof *r->hist);
    r->stop_ids = malloc((p->n_stop_ids ? p->n_stop_ids : 1) * sizeof *r->stop_ids);
    if (!r->hist || !r->stop_ids) {
        mg_err_set(err, errlen, "serve: out of memory");
        rc = MG_ENOMEM;
        goto fail;
    }
    if ((rc = sampler_create(&r->smp, s->n_vocab, &p->sampling, err, errlen)) ||
        (rc = stop_matcher_create(&r->stops, p->stop, p->n_stop, err, errlen)))
        goto fail;
    memcpy(r->hist, prompt, n * sizeof *prompt);
    if (p->n_stop_ids)
        memcpy(r->stop_ids, p->stop_ids, p->n_stop_ids * sizeof *r->stop_ids);
    r->n_prompt = r->n_hist = r->n_fill = (int)n;
    r->max_len = (int)n + p->max_tokens;
    r->p = *p;
    r->lora_ref = model_lora_retain(p->lora);
    r->p.lora = NULL; /* held as lora_ref */
    r->p.stop = NULL; /* copied into the matcher */
    r->p.stop_ids = NULL;
    r->cb = cb;
    r->ud = ud;
    r->slot = -1;
    if (s->tok)
        tokenizer_stream_init(&r->ts, s->tok, p->show_special);
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->n_waiting >= s->o.max_queue) {
        pthread_mutex_unlock(&s->mu);
        mg_err_set(err, errlen, "serve: %s", s->stopping ? "shutting down" : "the queue is full");
        rc = MG_EBUSY;
        goto fail;
    }
    r->id = s->next_id++;
    /* base: 0; an adapter: odd; no prefix cache: even and unique, never shared */
    r->ns = r->p.no_prefix_cache ? (1ull << 63) | (r->id << 1) : r->lora_ref ? r->lora_ref->id * 2 + 1 : 0;
    if (s->wait_tail)
        s->wait_tail->next = r;
    else
        s->wait_head = r;
    s->wait_tail = r;
    s->n_waiting++;
    s->st.waiting = s->n_waiting;
    *id = r->id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
fail:
    req_free(r);
    return rc;
}

int serve_cancel(serve *s, uint64_t id)
{
    int rc = MG_ENOTFOUND;
    pthread_mutex_lock(&s->mu);
    for (req *r = s->wait_head; r && rc; r = r->next)
        if (r->id == id) {
            r->cancel = true;
            rc = 0;
        }
    for (int i = 0; i < s->o.n_slots && rc; i++)
        if (s->slot[i] && s->slot[i]->id == id) {
            s->slot[i]->cancel = true;
            rc = 0;
        }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void serve_get_stats(serve *s, serve_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    pthread_mutex_unlock(&s->mu);
}

void serve_close(serve *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free_parts(s);
}
