/* serve.c — the scheduler (see serve.h).
 *
 * Ownership: a request belongs to the submitter until serve_submit returns
 * 0, then to the scheduler thread, which frees it after its last callback.
 * The waiting queue, the cancel flags, the running table's membership and
 * the counters are guarded by s->mu; everything else about a running
 * request (its history, sampler, stream state) is touched only by the
 * scheduler thread.
 *
 * One step, in order: admit waiting requests into free slots; finish the
 * cancelled and the late; gather one decode token per generating sequence
 * and prompt chunks within the step budget; one model_forward; sample for
 * every sequence that got logits; stream text through its stop strings;
 * finish what is done and free its slot.
 */
#include "core/serve.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/stopstr.h"

typedef struct req {
    uint64_t id;
    int32_t *hist; /* prompt, then generated tokens; capacity n_prompt + max_tokens */
    int n_prompt, n_hist;
    int n_eval; /* tokens whose keys and values are in the slot */
    int n_gen;
    serve_params p;
    int32_t *stop_ids;
    sampler *smp;
    stop_matcher *stops;
    tokenizer_stream ts;
    serve_callback cb;
    void *ud;
    int slot;
    bool cancel; /* guarded by mu */
    struct req *next;
} req;

struct serve {
    model *m;
    const tokenizer *tok;
    model_kv *kv;
    serve_opts o;
    int64_t n_vocab;

    pthread_mutex_t mu; /* guards: waiting list, n_waiting, cancel flags, slot[] membership, st, stopping */
    pthread_cond_t cv;
    req *wait_head, *wait_tail;
    int n_waiting;
    req **slot; /* [n_slots] */
    uint64_t next_id;
    bool stopping;
    serve_stats st;
    double busy_s;
    pthread_t thread;

    /* scheduler-thread scratch */
    int32_t *b_tok, *b_pos, *b_seq;
    uint8_t *b_want;
    req **b_req; /* request of each batch token */
    float *logits; /* [n_slots][n_vocab] */
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
    free(r->hist);
    free(r->stop_ids);
    sampler_free(r->smp);
    stop_matcher_free(r->stops);
    free(r);
}

/* ---- finishing ------------------------------------------------------------ */

/* Last callback, then the request is gone. flush: send what the stream and
 * the stop matcher still hold (not after a stop string or a cancel). */
static void finish(serve *s, req *r, enum serve_finish why, bool flush)
{
    size_t n = 0;
    if (flush) {
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
        long h = stop_matcher_flush(r->stops, s->text + n, s->text_cap - n);
        if (h > 0)
            n += (size_t)h;
    }
    /* gone from the tables before its last callback: whoever that callback
     * wakes sees the request finished (serve_cancel: not found; stats: done) */
    pthread_mutex_lock(&s->mu);
    if (r->slot >= 0)
        s->slot[r->slot] = NULL;
    s->st.requests_done++;
    pthread_mutex_unlock(&s->mu);
    r->cb(r->ud, s->text, n, -1, why);
    req_free(r);
}

static bool is_stop_token(const serve *s, const req *r, int32_t id)
{
    if (!r->p.ignore_eos && tokenizer_is_eog(s->tok, id))
        return true;
    for (size_t i = 0; i < r->p.n_stop_ids; i++)
        if (r->stop_ids[i] == id)
            return true;
    return false;
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
        s->wait_head = r->next;
        if (!s->wait_head)
            s->wait_tail = NULL;
        s->n_waiting--;
        r->next = NULL;
        r->slot = i;
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
        finish(s, r, SERVE_CANCELLED, false);
    }
    for (int k = 0; k < n_cancelled; k++)
        finish(s, cancelled[k], SERVE_CANCELLED, false);

    /* gather: decode tokens first, then prompt chunks within the budget */
    int n = 0, budget = s->o.step_tokens;
    for (int i = 0; i < s->o.n_slots; i++) {
        req *r = s->slot[i];
        if (!r || r->n_eval < r->n_prompt)
            continue;
        int p = r->n_hist - 1; /* the last sampled token, not yet evaluated */
        s->b_tok[n] = r->hist[p];
        s->b_pos[n] = p;
        s->b_seq[n] = i;
        s->b_want[n] = 1;
        s->b_req[n++] = r;
    }
    for (int i = 0; i < s->o.n_slots && budget > 0; i++) {
        req *r = s->slot[i];
        if (!r || r->n_eval >= r->n_prompt)
            continue;
        int k = r->n_prompt - r->n_eval;
        if (k > budget)
            k = budget;
        for (int j = 0; j < k; j++) {
            int p = r->n_eval + j;
            s->b_tok[n] = r->hist[p];
            s->b_pos[n] = p;
            s->b_seq[n] = i;
            s->b_want[n] = p == r->n_prompt - 1;
            s->b_req[n++] = r;
        }
        budget -= k;
    }
    if (n == 0)
        return 0;
    model_batch b = {n, s->b_tok, s->b_pos, s->b_seq, s->b_want};
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
        if (s->b_pos[j] < r->n_prompt)
            prompt_tokens++;
        if (!s->b_want[j])
            continue;
        float *lg = s->logits + (size_t)row++ * (size_t)s->n_vocab;
        int32_t id = sampler_sample(r->smp, lg, r->hist, r->n_hist);
        if (is_stop_token(s, r, id)) {
            finish(s, r, SERVE_STOP, true);
            continue;
        }
        r->hist[r->n_hist++] = id;
        r->n_gen++;
        generated++;
        int k = tokenizer_stream_push(&r->ts, id, s->text, s->text_cap / 2);
        long w = 0;
        bool stopped = false;
        if (k > 0)
            w = stop_matcher_feed(r->stops, s->text, (size_t)k, s->text + s->text_cap / 2, s->text_cap / 2,
                                  &stopped);
        r->cb(r->ud, s->text + s->text_cap / 2, w > 0 ? (size_t)w : 0, id, SERVE_RUNNING);
        if (stopped)
            finish(s, r, SERVE_STOP, false);
        else if (r->n_gen >= r->p.max_tokens || r->n_hist >= s->o.n_ctx)
            finish(s, r, SERVE_LENGTH, true);
    }
    pthread_mutex_lock(&s->mu);
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
                    finish(s, s->slot[i], SERVE_ERROR, false);
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
    if (o.n_slots > 4096 || o.step_tokens > (1 << 16) || o.max_queue > (1 << 20)) {
        mg_err_set(err, errlen, "serve: n_slots %d / step_tokens %d / max_queue %d out of range", o.n_slots,
                   o.step_tokens, o.max_queue);
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
    int rc = model_kv_create(&s->kv, m, o.n_slots, o.n_ctx, err, errlen);
    if (rc) {
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
    s->logits = malloc((size_t)o.n_slots * (size_t)s->n_vocab * sizeof *s->logits);
    s->text_cap = 2 * (tokenizer_max_piece_bytes(tok) + 16 + STOP_MAX_BYTES);
    s->text = malloc(s->text_cap);
    if (!s->slot || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_want || !s->b_req || !s->logits || !s->text) {
        mg_err_set(err, errlen, "serve: out of memory");
        rc = MG_ENOMEM;
        goto fail;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->st.slots_total = o.n_slots;
    s->next_id = 1;
    if (pthread_create(&s->thread, NULL, scheduler, s)) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        mg_err_set(err, errlen, "serve: cannot start the scheduler thread");
        rc = MG_ENOMEM;
        goto fail;
    }
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
    if (p->max_tokens <= 0) {
        mg_err_set(err, errlen, "serve: max_tokens must be positive (got %d)", p->max_tokens);
        return MG_EINVAL;
    }
    if (n + (size_t)p->max_tokens > (size_t)s->o.n_ctx) {
        mg_err_set(err, errlen, "serve: prompt (%zu tokens) + max_tokens %d exceeds the context of %d", n,
                   p->max_tokens, s->o.n_ctx);
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
    r->n_prompt = r->n_hist = (int)n;
    r->p = *p;
    r->p.stop = NULL; /* copied into the matcher */
    r->p.stop_ids = NULL;
    r->cb = cb;
    r->ud = ud;
    r->slot = -1;
    tokenizer_stream_init(&r->ts, s->tok, false);
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->n_waiting >= s->o.max_queue) {
        pthread_mutex_unlock(&s->mu);
        mg_err_set(err, errlen, "serve: %s", s->stopping ? "shutting down" : "the queue is full");
        rc = MG_EBUSY;
        goto fail;
    }
    r->id = s->next_id++;
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
