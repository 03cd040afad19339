/* The serving scheduler against the plain engine: requests batched together
 * (fewer slots than requests, so some wait; a small step budget, so prompts
 * are evaluated in chunks beside other sequences' decode steps) must
 * generate exactly the tokens each one generates alone, greedy, with kernels
 * whose results do not depend on the batch (AVX2; the AVX-512 panels are
 * not batch-invariant). Also: stop strings, max_tokens, cancellation,
 * admission refusals, and close with work in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/model.h"
#include "core/serve.h"
#include "core/tokenizer.h"
#include "core/tensor.h"
#include "core/lora.h"
#include "adapters/lora.h"
#include <math.h>
#include <stdatomic.h>

static model *M;
static tokenizer *T;

static int setup(void **st)
{
    (void)st;
    const char *dir = getenv("MOEGATE_FIXTURES");
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/qwen3moe-tiny-f32.gguf", dir ? dir : "build/fixtures");
    model_opts o = {.n_threads = 2, .isa = getenv("SERVE_ISA") ? getenv("SERVE_ISA") : "avx2"};
    if (model_open(&M, path, &o, err, sizeof err))
        fail_msg("%s", err);
    if (tokenizer_open_gguf(&T, model_gguf(M), err, sizeof err))
        fail_msg("%s", err);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    tokenizer_free(T);
    model_close(M);
    return 0;
}

/* Greedy generation of one prompt alone, the way `moegate run` does it. */
static int alone(const int32_t *prompt, int n, int max_tokens, int32_t *out)
{
    const model_info *I = model_get_info(M);
    char err[256];
    model_kv *kv;
    assert_int_equal(model_kv_create(&kv, M, 1, n + max_tokens, err, sizeof err), 0);
    int32_t *hist = malloc(sizeof(int32_t) * (size_t)(n + max_tokens)), *pos = malloc(sizeof(int32_t) * (size_t)(n + max_tokens));
    int32_t *seq = calloc((size_t)(n + max_tokens), sizeof(int32_t));
    float *logits = malloc(sizeof(float) * (size_t)I->n_vocab);
    uint8_t *want = calloc((size_t)n, 1);
    memcpy(hist, prompt, sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n + max_tokens; i++)
        pos[i] = i;
    want[n - 1] = 1;
    model_batch b = {.n = n, .token = hist, .pos = pos, .seq = seq, .want_logits = want};
    assert_int_equal(model_forward(M, kv, &b, logits, err, sizeof err), 0);
    int g = 0;
    for (;;) {
        int32_t best = 0;
        for (int64_t v = 1; v < I->n_vocab; v++)
            if (logits[v] > logits[best])
                best = (int32_t)v;
        if (tokenizer_is_eog(T, best))
            break;
        out[g] = best;
        hist[n + g] = best;
        if (++g == max_tokens)
            break;
        model_batch d = {.n = 1, .token = &hist[n + g - 1], .pos = &pos[n + g - 1], .seq = seq};
        assert_int_equal(model_forward(M, kv, &d, logits, err, sizeof err), 0);
    }
    free(hist);
    free(pos);
    free(seq);
    free(logits);
    free(want);
    model_kv_free(kv);
    return g;
}

typedef struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t tokens[512];
    int n_tokens;
    char text[8192];
    size_t n_text;
    enum serve_finish finish;
    bool done;
    int calls_after_done;
    uint64_t cancel_id; /* cancel after the first token when set */
    serve *s;
} result;

static void on_token(void *ud, const char *text, size_t len, int32_t token, enum serve_finish f)
{
    result *r = ud;
    pthread_mutex_lock(&r->mu);
    if (r->done)
        r->calls_after_done++;
    if (token >= 0 && f == SERVE_RUNNING && r->n_tokens < 512)
        r->tokens[r->n_tokens++] = token;
    if (len && r->n_text + len < sizeof r->text) {
        memcpy(r->text + r->n_text, text, len);
        r->n_text += len;
    }
    if (f != SERVE_RUNNING) {
        r->finish = f;
        r->done = true;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    if (r->cancel_id && token >= 0 && r->n_tokens == 1)
        serve_cancel(r->s, r->cancel_id);
}

static void wait_done(result *r)
{
    pthread_mutex_lock(&r->mu);
    while (!r->done)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

static serve_params greedy(int max_tokens)
{
    serve_params p = {.sampling = sampler_defaults(), .max_tokens = max_tokens};
    p.sampling.temperature = 0;
    p.sampling.repeat_penalty = 1;
    return p;
}

static void test_batched_equals_alone(void **st)
{
    (void)st;
    const char *texts[6] = {"Hello there", "你好，世界！请介绍一下你自己。", "The bond's yield is 4.25%.",
                            "x", "A longer prompt that will be evaluated in several chunks of seven tokens "
                                 "while other sequences are already generating their answers.",
                            "def f(x):\n    return x * 2\n"};
    int max[6] = {12, 20, 7, 16, 9, 14};
    serve *s;
    char err[256];
    serve_opts o = {.n_slots = 3, .n_ctx = 256, .max_queue = 16, .step_tokens = 7};
    assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
    result *res = calloc(6, sizeof *res);
    tokenizer_ids ids[6] = {{0}};
    for (int i = 0; i < 6; i++) {
        pthread_mutex_init(&res[i].mu, NULL);
        pthread_cond_init(&res[i].cv, NULL);
        assert_int_equal(tokenizer_encode(T, texts[i], strlen(texts[i]), 0, &ids[i]), 0);
        serve_params p = greedy(max[i]);
        uint64_t id;
        assert_int_equal(serve_submit(s, ids[i].ids, ids[i].n, &p, on_token, &res[i], &id, err, sizeof err), 0);
    }
    for (int i = 0; i < 6; i++)
        wait_done(&res[i]);
    serve_stats stats;
    serve_get_stats(s, &stats);
    assert_int_equal(stats.requests_done, 6);
    assert_int_equal(stats.slots_total, 3);
    serve_close(s);
    /* only now run the model alone: one thread at a time may use it */
    for (int i = 0; i < 6; i++) {
        int32_t want[64];
        int n = alone(ids[i].ids, (int)ids[i].n, max[i], want);
        assert_int_equal(res[i].n_tokens, n);
        assert_memory_equal(res[i].tokens, want, sizeof(int32_t) * (size_t)n);
        assert_int_equal(res[i].finish, n == max[i] ? SERVE_LENGTH : SERVE_STOP);
        /* the text is the decoded tokens */
        char *dec;
        size_t dl;
        assert_int_equal(tokenizer_decode(T, res[i].tokens, (size_t)res[i].n_tokens, false, &dec, &dl), 0);
        assert_int_equal(res[i].n_text, dl);
        assert_memory_equal(res[i].text, dec, dl);
        free(dec);
        assert_int_equal(res[i].calls_after_done, 0);
        tokenizer_ids_free(&ids[i]);
    }
    free(res);
}

static void test_stop_string_and_cancel(void **st)
{
    (void)st;
    tokenizer_ids ids = {0};
    assert_int_equal(tokenizer_encode(T, "Tell me", 7, 0, &ids), 0);
    int32_t want[64];
    int n = alone(ids.ids, (int)ids.n, 24, want);
    char *full;
    size_t fl;
    assert_int_equal(tokenizer_decode(T, want, (size_t)n, false, &full, &fl), 0);
    assert_true(fl > 12);
    /* a stop string from the middle of the answer */
    char stop[8];
    memcpy(stop, full + fl / 2, 3);
    stop[3] = 0;
    const char *stops[1] = {stop};
    size_t cut = (size_t)(strstr(full, stop) - full);
    serve *s;
    char err[256];
    serve_opts o = {.n_slots = 2, .n_ctx = 128, .max_queue = 4, .step_tokens = 64};
    assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
    result r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    serve_params p = greedy(24);
    p.stop = stops;
    p.n_stop = 1;
    uint64_t id;
    assert_int_equal(serve_submit(s, ids.ids, ids.n, &p, on_token, &r, &id, err, sizeof err), 0);
    wait_done(&r);
    assert_int_equal(r.finish, SERVE_STOP);
    assert_int_equal(r.n_text, cut);
    assert_memory_equal(r.text, full, cut);
    /* cancellation: ends within a step, well before max_tokens */
    result c = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .s = s};
    serve_params lp = greedy(100);
    lp.ignore_eos = true;
    pthread_mutex_lock(&c.mu); /* cancel_id set before the first callback can read it */
    assert_int_equal(serve_submit(s, ids.ids, ids.n, &lp, on_token, &c, &c.cancel_id, err, sizeof err), 0);
    pthread_mutex_unlock(&c.mu);
    wait_done(&c);
    assert_int_equal(c.finish, SERVE_CANCELLED);
    assert_true(c.n_tokens < 10);
    assert_int_equal(serve_cancel(s, c.cancel_id), MG_ENOTFOUND);
    /* refusals */
    serve_params big = greedy(200);
    assert_int_equal(serve_submit(s, ids.ids, ids.n, &big, on_token, &c, &id, err, sizeof err), MG_ERANGE);
    assert_non_null(strstr(err, "exceeds the context"));
    serve *refused;
    serve_opts huge = {.reserve_tokens = 1 << 30};
    assert_int_equal(serve_open(&refused, M, T, &huge, err, sizeof err), MG_ERANGE);
    assert_non_null(strstr(err, "reserve_tokens"));
    serve_params zero = greedy(0);
    assert_int_equal(serve_submit(s, ids.ids, ids.n, &zero, on_token, &c, &id, err, sizeof err), MG_EINVAL);
    int32_t bad = 1 << 30;
    serve_params ok = greedy(4);
    assert_int_equal(serve_submit(s, &bad, 1, &ok, on_token, &c, &id, err, sizeof err), MG_EINVAL);
    serve_close(s);
    free(full);
    tokenizer_ids_free(&ids);
}

static void test_queue_and_close(void **st)
{
    (void)st;
    tokenizer_ids ids = {0};
    assert_int_equal(tokenizer_encode(T, "queue", 5, 0, &ids), 0);
    serve *s;
    char err[256];
    serve_opts o = {.n_slots = 1, .n_ctx = 256, .max_queue = 2, .step_tokens = 16};
    assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
    result r[8];
    int accepted = 0, busy = 0;
    for (int i = 0; i < 8; i++) {
        r[i] = (result){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        serve_params p = greedy(200);
        p.ignore_eos = true;
        uint64_t id;
        int rc = serve_submit(s, ids.ids, ids.n, &p, on_token, &r[i], &id, err, sizeof err);
        if (rc == 0)
            accepted++;
        else {
            assert_int_equal(rc, MG_EBUSY);
            busy++;
            r[i].done = true;
        }
    }
    assert_true(busy > 0);
    assert_true(accepted <= 3); /* one running, two waiting */
    serve_close(s); /* everything in flight ends, cancelled */
    for (int i = 0; i < 8; i++) {
        assert_true(r[i].done);
        if (r[i].finish)
            assert_true(r[i].finish == SERVE_CANCELLED || r[i].finish == SERVE_LENGTH);
    }
    tokenizer_ids_free(&ids);
}


/* ---- paged KV, prefix cache, stress -------------------------------------- */

typedef struct logit_rec {
    int32_t pos;     /* the position whose logits to keep */
    float *logits;   /* [n_vocab] */
    int seen_from;   /* first position reported, -1 until one is */
} logit_rec;

typedef struct lresult {
    result r;
    logit_rec l;
} lresult;

static void on_logits(void *ud, int32_t pos, const float *logits, int64_t n_vocab)
{
    lresult *lr = ud;
    if (lr->l.seen_from < 0)
        lr->l.seen_from = pos;
    if (pos == lr->l.pos)
        memcpy(lr->l.logits, logits, sizeof(float) * (size_t)n_vocab);
}

static void on_token_l(void *ud, const char *text, size_t len, int32_t token, enum serve_finish f)
{
    on_token(&((lresult *)ud)->r, text, len, token, f);
}

/* Deterministic text of about n words from a fixed list. */
static void words(char *buf, size_t cap, int n, unsigned *seed)
{
    static const char *w[] = {"market", "bond", "yield", "patient", "discharge", "network", "billing",
                              "风险", "合规", "的", "and", "the", "report", "2025", "4.25%", "plan"};
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n && len + 16 < cap; i++) {
        *seed = *seed * 1103515245u + 12345u;
        len += (size_t)snprintf(buf + len, cap - len, "%s ", w[(*seed >> 16) % 16]);
    }
}

static void lresult_init(lresult *lr, int32_t pos)
{
    memset(lr, 0, sizeof *lr);
    pthread_mutex_init(&lr->r.mu, NULL);
    pthread_cond_init(&lr->r.cv, NULL);
    lr->l.pos = pos;
    lr->l.seen_from = -1;
    lr->l.logits = malloc(sizeof(float) * (size_t)model_get_info(M)->n_vocab);
}

static void test_prefix_cache(void **st)
{
    (void)st;
    const int64_t nv = model_get_info(M)->n_vocab;
    char sys[4096];
    unsigned seed = 7;
    words(sys, sizeof sys, 90, &seed); /* a shared "system prompt" of several blocks */
    tokenizer_ids a = {0}, c = {0};
    char txt[8192];
    snprintf(txt, sizeof txt, "%sQuestion one: what is the yield?", sys);
    assert_int_equal(tokenizer_encode(T, txt, strlen(txt), 0, &a), 0);
    snprintf(txt, sizeof txt, "%sQuestion two: 患者的出院小结", sys);
    assert_int_equal(tokenizer_encode(T, txt, strlen(txt), 0, &c), 0);
    assert_true(a.n > 64);
    serve *s;
    char err[256];
    serve_opts o = {.n_slots = 2, .n_ctx = 512, .step_tokens = 48, .block_tokens = 16};
    assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
    /* cold */
    lresult cold, hot, other;
    lresult_init(&cold, (int32_t)a.n - 1);
    lresult_init(&hot, (int32_t)a.n - 1);
    lresult_init(&other, (int32_t)c.n - 1);
    serve_params p = greedy(20); /* 20 > one block: the prompt's last block gets full and cached */
    p.logits_cb = on_logits;
    uint64_t id;
    assert_int_equal(serve_submit(s, a.ids, a.n, &p, on_token_l, &cold, &id, err, sizeof err), 0);
    wait_done(&cold.r);
    assert_int_equal(cold.l.seen_from, 0);
    serve_stats st0, st1, st2;
    serve_get_stats(s, &st0);
    assert_int_equal(st0.prefix_hit_tokens, 0);
    assert_int_equal(st0.kv_blocks_used, 0); /* done: its full blocks are cached, unreferenced */
    assert_true(st0.kv_blocks_cached >= (int)(a.n / 16));
    /* the same prompt again: everything but its last token comes from the
     * cache (whole blocks shared, the rows of the last partial block copied) */
    assert_int_equal(serve_submit(s, a.ids, a.n, &p, on_token_l, &hot, &id, err, sizeof err), 0);
    wait_done(&hot.r);
    serve_get_stats(s, &st1);
    int64_t hit = st1.prefix_hit_tokens - st0.prefix_hit_tokens;
    assert_int_equal(hit, (int64_t)a.n - 1);
    assert_int_equal(hot.l.seen_from, (int)hit); /* cached positions were not evaluated */
    /* the same logits, bit for bit, and the same tokens */
    assert_memory_equal(hot.l.logits, cold.l.logits, sizeof(float) * (size_t)nv);
    assert_int_equal(hot.r.n_tokens, cold.r.n_tokens);
    assert_memory_equal(hot.r.tokens, cold.r.tokens, sizeof(int32_t) * (size_t)cold.r.n_tokens);
    /* a different question after the same system prompt shares its blocks */
    assert_int_equal(serve_submit(s, c.ids, c.n, &p, on_token_l, &other, &id, err, sizeof err), 0);
    wait_done(&other.r);
    serve_get_stats(s, &st2);
    size_t common = 0;
    while (common < a.n && common < c.n && a.ids[common] == c.ids[common])
        common++;
    /* whole blocks, then the rows of the block where they part */
    assert_int_equal(st2.prefix_hit_tokens - st1.prefix_hit_tokens, (int64_t)common);
    /* no prefix cache: everything evaluated */
    lresult full;
    lresult_init(&full, (int32_t)c.n - 1);
    serve_params q = p;
    q.no_prefix_cache = true;
    assert_int_equal(serve_submit(s, c.ids, c.n, &q, on_token_l, &full, &id, err, sizeof err), 0);
    wait_done(&full.r);
    assert_int_equal(full.l.seen_from, 0);
    assert_memory_equal(full.l.logits, other.l.logits, sizeof(float) * (size_t)nv);
    serve_close(s);
    int32_t want[32];
    int n = alone(c.ids, (int)c.n, 20, want);
    assert_int_equal(other.r.n_tokens, n);
    assert_memory_equal(other.r.tokens, want, sizeof(int32_t) * (size_t)n);
    free(cold.l.logits);
    free(hot.l.logits);
    free(other.l.logits);
    free(full.l.logits);
    tokenizer_ids_free(&a);
    tokenizer_ids_free(&c);
}

/* A pool smaller than the work: requests wait for blocks, in order, and
 * every block comes back. One that could never fit is refused. */
static void test_kv_memory_admission(void **st)
{
    (void)st;
    serve *s;
    char err[256];
    size_t bb = model_kv_block_bytes(M, 16);
    serve_opts o = {.n_slots = 6, .n_ctx = 256, .step_tokens = 32, .block_tokens = 16, .kv_memory = 12 * bb};
    assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
    serve_stats stt;
    serve_get_stats(s, &stt);
    assert_int_equal(stt.kv_blocks_total, 12);
    assert_int_equal(stt.kv_bytes, 12 * bb);
    tokenizer_ids ids = {0};
    assert_int_equal(tokenizer_encode(T, "memory", 6, 0, &ids), 0);
    /* 1 + 70 tokens: 5 blocks each, so at most two run at once */
    result r[5];
    int32_t first[64];
    int n_first = 0;
    for (int i = 0; i < 5; i++) {
        r[i] = (result){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        serve_params p = greedy(70);
        p.ignore_eos = true;
        p.no_prefix_cache = true;
        uint64_t id;
        assert_int_equal(serve_submit(s, ids.ids, ids.n, &p, on_token, &r[i], &id, err, sizeof err), 0);
    }
    for (int i = 0; i < 5; i++) {
        wait_done(&r[i]);
        assert_int_equal(r[i].finish, SERVE_LENGTH);
        assert_int_equal(r[i].n_tokens, 70);
        if (i == 0) {
            n_first = r[i].n_tokens < 64 ? r[i].n_tokens : 64;
            memcpy(first, r[i].tokens, sizeof(int32_t) * (size_t)n_first);
        }
        assert_memory_equal(r[i].tokens, first, sizeof(int32_t) * (size_t)n_first);
    }
    serve_get_stats(s, &stt);
    assert_int_equal(stt.kv_blocks_used, 0);
    assert_int_equal(stt.kv_blocks_reserved, 0);
    assert_int_equal(stt.kv_blocks_free + stt.kv_blocks_cached, 12);
    /* 1 + 200 tokens need 13 blocks: never */
    serve_params big = greedy(200);
    uint64_t id;
    assert_int_equal(serve_submit(s, ids.ids, ids.n, &big, on_token, &r[0], &id, err, sizeof err), MG_ERANGE);
    assert_non_null(strstr(err, "KV blocks"));
    serve_close(s);
    tokenizer_ids_free(&ids);
}

/* Seeded sampling: the same tokens together as one at a time. */
static void test_seeded_batched_equals_alone(void **st)
{
    (void)st;
    enum { N = 6 };
    tokenizer_ids ids[N];
    unsigned seed = 11;
    char txt[1024];
    for (int i = 0; i < N; i++) {
        memset(&ids[i], 0, sizeof ids[i]);
        words(txt, sizeof txt, 3 + 9 * i, &seed);
        assert_int_equal(tokenizer_encode(T, txt, strlen(txt), 0, &ids[i]), 0);
    }
    result together[N], single[N];
    for (int pass = 0; pass < 2; pass++) {
        result *res = pass ? single : together;
        serve *s;
        char err[256];
        serve_opts o = {.n_slots = pass ? 1 : 4, .n_ctx = 256, .step_tokens = 20, .block_tokens = 8};
        assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
        for (int i = 0; i < N; i++) {
            res[i] = (result){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
            serve_params p = {.sampling = sampler_defaults(), .max_tokens = 24, .ignore_eos = true};
            p.sampling.temperature = 0.9f;
            p.sampling.top_p = 0.9f;
            p.sampling.seed = 1000 + (uint64_t)i;
            p.sampling.presence_penalty = 0.3f * (float)(i % 3);
            p.sampling.frequency_penalty = 0.2f * (float)(i % 2);
            uint64_t id;
            assert_int_equal(serve_submit(s, ids[i].ids, ids[i].n, &p, on_token, &res[i], &id, err, sizeof err),
                             0);
            if (pass)
                wait_done(&res[i]);
        }
        for (int i = 0; i < N; i++)
            wait_done(&res[i]);
        serve_close(s);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(together[i].n_tokens, 24);
        assert_int_equal(single[i].n_tokens, 24);
        assert_memory_equal(together[i].tokens, single[i].tokens, sizeof(int32_t) * 24);
        tokenizer_ids_free(&ids[i]);
    }
}

/* 64 requests with random lengths, parameters, stop strings, deadlines and
 * cancellations, through a pool too small for all: each ends exactly once,
 * and afterwards every block is back. Run under ASan: nothing leaks. */
typedef struct stress_req {
    result r;
    int cancel_after; /* cancel from the callback after this many tokens; 0: never */
    uint64_t id;
} stress_req;

static void on_token_stress(void *ud, const char *text, size_t len, int32_t token, enum serve_finish f)
{
    stress_req *q = ud;
    on_token(&q->r, text, len, token, f);
    if (q->cancel_after && token >= 0 && q->r.n_tokens == q->cancel_after)
        serve_cancel(q->r.s, q->id);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_stress(void **st)
{
    (void)st;
    enum { N = 64 };
    serve *s;
    char err[256];
    size_t bb = model_kv_block_bytes(M, 16);
    serve_opts o = {.n_slots = 6, .n_ctx = 384, .max_queue = N, .step_tokens = 40, .block_tokens = 16,
                    .kv_memory = 40 * bb, .reserve_tokens = 16}; /* small runs: preemptions happen too */
    assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
    stress_req *q = calloc(N, sizeof *q);
    unsigned seed = 1234;
    char sys[2048];
    words(sys, sizeof sys, 40, &seed);
    int n_cancel_direct = 0;
    uint64_t direct[N];
    for (int i = 0; i < N; i++) {
        char txt[8192];
        seed = seed * 1103515245u + 12345u;
        int nw = 1 + (int)((seed >> 16) % 120);
        words(txt, sizeof txt, nw, &seed);
        if (i % 3 == 0) { /* a third share a system prompt */
            char both[8192];
            snprintf(both, sizeof both, "%s%.4000s", sys, txt);
            snprintf(txt, sizeof txt, "%s", both);
        }
        tokenizer_ids ids = {0};
        assert_int_equal(tokenizer_encode(T, txt, strlen(txt), 0, &ids), 0);
        if (ids.n > 300)
            ids.n = 300;
        q[i].r = (result){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .s = s};
        serve_params p = {.sampling = sampler_defaults(), .max_tokens = 1 + (int)((seed >> 8) % 60)};
        p.sampling.temperature = (float)((seed >> 4) % 4) * 0.4f;
        p.sampling.top_k = (int)((seed >> 6) % 50);
        p.sampling.min_p = (float)((seed >> 9) % 3) * 0.05f;
        p.sampling.seed = seed;
        p.sampling.repeat_penalty = 1.0f + (float)((seed >> 12) % 3) * 0.1f;
        p.ignore_eos = (seed >> 3) & 1;
        const char *stops[2] = {"e", "。"};
        if ((seed >> 14) & 1) {
            p.stop = stops;
            p.n_stop = 2;
        }
        if (i % 11 == 5)
            p.deadline = mono() + 0.05;
        if (i % 7 == 3)
            q[i].cancel_after = 1 + (int)((seed >> 20) % 5);
        pthread_mutex_lock(&q[i].r.mu);
        int rc = serve_submit(s, ids.ids, ids.n, &p, on_token_stress, &q[i], &q[i].id, err, sizeof err);
        if (rc == MG_ERANGE) { /* prompt + max_tokens beyond the pool or context: refused, never run */
            q[i].r.done = true;
            q[i].r.finish = SERVE_ERROR;
        } else {
            assert_int_equal(rc, 0);
        }
        pthread_mutex_unlock(&q[i].r.mu);
        if (rc == 0 && i % 9 == 4)
            direct[n_cancel_direct++] = q[i].id;
        tokenizer_ids_free(&ids);
    }
    for (int k = 0; k < n_cancel_direct; k++)
        serve_cancel(s, direct[k]); /* from this thread, wherever it is */
    int finished[6] = {0};
    for (int i = 0; i < N; i++) {
        wait_done(&q[i].r);
        assert_int_equal(q[i].r.calls_after_done, 0);
        assert_true(q[i].r.finish >= SERVE_STOP && q[i].r.finish <= SERVE_ERROR);
        finished[q[i].r.finish]++;
    }
    serve_stats stt;
    serve_get_stats(s, &stt);
    assert_int_equal(stt.running, 0);
    assert_int_equal(stt.waiting, 0);
    assert_int_equal(stt.kv_blocks_used, 0);
    assert_int_equal(stt.kv_blocks_reserved, 0);
    assert_int_equal(stt.kv_blocks_free + stt.kv_blocks_cached, stt.kv_blocks_total);
    assert_true(stt.prefix_hit_tokens > 0);
    fprintf(stderr, "stress: stop %d length %d cancelled %d error/refused %d, prefix hit %lld of %lld, %lld preemptions\n", finished[SERVE_STOP], finished[SERVE_LENGTH], finished[SERVE_CANCELLED], finished[SERVE_ERROR], (long long)stt.prefix_hit_tokens, (long long)stt.prefix_lookup_tokens, (long long)stt.preemptions);
    assert_true(finished[SERVE_CANCELLED] > 0);
    assert_true(finished[SERVE_LENGTH] > 0);
    assert_true(finished[SERVE_STOP] > 0);
    serve_close(s);
    free(q);
}

/* ---- adapters ------------------------------------------------------------------ */

typedef struct synth_lora {
    model_lora l;
    void **bufs;
    int n_bufs;
} synth_lora;

static void synth_destroy(model_lora *l)
{
    synth_lora *s = (synth_lora *)l;
    for (int i = 0; i < s->n_bufs; i++)
        free(s->bufs[i]);
    free(s->bufs);
    free(s);
}

static float frand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return ((float)((*seed >> 8) & 0xffff) / 65535.0f - 0.5f) * 2.0f;
}

static void *synth_buf(synth_lora *s, size_t bytes)
{
    s->bufs = realloc(s->bufs, sizeof(void *) * (size_t)(s->n_bufs + 1));
    s->bufs[s->n_bufs] = calloc(1, bytes);
    return s->bufs[s->n_bufs++];
}

/* A random rank-r adapter on every target this model has (experts too when
 * asked), values in the given type, large enough to change the output. */
static model_lora *synth_lora_make(unsigned seed, int r, uint32_t type, bool experts)
{
    const model_info *I = model_get_info(M);
    synth_lora *s = calloc(1, sizeof *s);
    s->l.n_layer = I->n_layer;
    s->l.layer = synth_buf(s, sizeof(lora_layer) * (size_t)I->n_layer);
    s->l.id = 1000 + seed;
    atomic_init(&s->l.refs, 1);
    s->l.destroy = synth_destroy;
    for (int64_t il = 0; il < I->n_layer; il++)
        for (int t = 0; t < LORA_N_TARGET; t++) {
            int64_t n_out, n_in, ne;
            if (model_lora_shape(M, il, (enum lora_target)t, &n_out, &n_in, &ne))
                continue;
            if (t >= LORA_EXP_GATE && !experts)
                continue;
            lora_pair *p = synth_buf(s, sizeof(lora_pair) * (size_t)ne);
            for (int64_t e = 0; e < ne; e++) {
                if (ne > 1 && e % 3 == 2)
                    continue; /* some experts left alone: r = 0 */
                size_t es = type == TENSOR_F32 ? 4 : 2, na = (size_t)r * (size_t)n_in, nb = (size_t)r * (size_t)n_out;
                char *a = synth_buf(s, na * es), *bt = synth_buf(s, nb * es);
                for (size_t i = 0; i < na + nb; i++) {
                    float v = frand(&seed) * (i < na ? 1.0f / sqrtf((float)n_in) : 0.6f);
                    char *dst = i < na ? a + i * es : bt + (i - na) * es;
                    if (type == TENSOR_F32)
                        memcpy(dst, &v, 4);
                    else {
                        uint16_t h = type == TENSOR_F16 ? tensor_f32_to_f16(v) : tensor_f32_to_bf16(v);
                        memcpy(dst, &h, 2);
                    }
                }
                p[e] = (lora_pair){.r = r, .type = type, .scale = 16.0f / (float)r, .a = a, .bt = bt};
            }
            s->l.layer[il].t[t] = p;
        }
    char err[256];
    if (model_lora_check(M, &s->l, err, sizeof err))
        fail_msg("%s", err);
    return &s->l;
}

/* 8 sequences over 4 adapters and the base in one batch: each gets the
 * tokens it gets alone; the adapters do change the output; a sequence's
 * adapter is released only when it ends. */
static void test_adapters_batched_equals_alone(void **st)
{
    (void)st;
    enum { N = 8 };
    model_lora *ad[4] = {synth_lora_make(1, 4, TENSOR_F32, true), synth_lora_make(2, 8, TENSOR_F16, true),
                         synth_lora_make(3, 16, TENSOR_BF16, false), synth_lora_make(4, 2, TENSOR_F32, true)};
    model_lora *use[N] = {ad[0], ad[1], NULL, ad[2], ad[3], ad[0], NULL, ad[1]};
    tokenizer_ids ids[N];
    unsigned seed = 99;
    char txt[1024];
    for (int i = 0; i < N; i++) {
        memset(&ids[i], 0, sizeof ids[i]);
        words(txt, sizeof txt, 2 + 5 * (i % 4), &seed);
        assert_int_equal(tokenizer_encode(T, txt, strlen(txt), 0, &ids[i]), 0);
    }
    /* the same prompt for sequences 0, 2 and 4: base and adapters must differ */
    tokenizer_ids_free(&ids[2]);
    tokenizer_ids_free(&ids[4]);
    assert_int_equal(tokenizer_encode(T, (const char *)"bond yield market", 17, 0, &ids[2]), 0);
    assert_int_equal(tokenizer_encode(T, (const char *)"bond yield market", 17, 0, &ids[4]), 0);
    tokenizer_ids_free(&ids[0]);
    assert_int_equal(tokenizer_encode(T, (const char *)"bond yield market", 17, 0, &ids[0]), 0);
    result together[N], single[N];
    for (int pass = 0; pass < 2; pass++) {
        result *res = pass ? single : together;
        serve *s;
        char err[256];
        serve_opts o = {.n_slots = pass ? 1 : N, .n_ctx = 128, .step_tokens = 24, .block_tokens = 8};
        assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
        for (int i = 0; i < N; i++) {
            res[i] = (result){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
            serve_params p = greedy(16);
            p.ignore_eos = true;
            p.lora = use[i];
            uint64_t id;
            assert_int_equal(serve_submit(s, ids[i].ids, ids[i].n, &p, on_token, &res[i], &id, err, sizeof err), 0);
            if (pass)
                wait_done(&res[i]);
        }
        if (!pass) /* the registry lets go while the sequences still run */
            for (int k = 0; k < 4; k++)
                assert_true(atomic_load(&ad[k]->refs) >= 2);
        for (int i = 0; i < N; i++)
            wait_done(&res[i]);
        serve_close(s);
    }
    for (int k = 0; k < 4; k++)
        assert_int_equal(atomic_load(&ad[k]->refs), 1); /* every sequence released its reference */
    for (int i = 0; i < N; i++) {
        assert_int_equal(together[i].n_tokens, 16);
        assert_memory_equal(together[i].tokens, single[i].tokens, sizeof(int32_t) * 16);
    }
    /* same prompt, different adapters: different answers */
    assert_memory_not_equal(together[0].tokens, together[2].tokens, sizeof(int32_t) * 16);
    assert_memory_not_equal(together[4].tokens, together[2].tokens, sizeof(int32_t) * 16);
    assert_memory_not_equal(together[0].tokens, together[4].tokens, sizeof(int32_t) * 16);
    for (int k = 0; k < 4; k++)
        model_lora_release(ad[k]);
    for (int i = 0; i < N; i++)
        tokenizer_ids_free(&ids[i]);
}

/* A registry adapter unloaded while sequences use it: they finish with it
 * (their tokens equal a run with it still loaded), and it is freed after the
 * last one; under ASan any use after free would show. */
static void test_registry_unload_in_use(void **st)
{
    (void)st;
    const char *dir = getenv("MOEGATE_FIXTURES");
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/adapters/qwen3moe-tiny-peft-r8-f32", dir ? dir : "build/fixtures");
    lora_registry *reg;
    assert_int_equal(lora_registry_create(&reg, M, err, sizeof err), 0);
    if (lora_registry_load(reg, "fin", path, 1.0f, err, sizeof err))
        fail_msg("%s", err);
    tokenizer_ids ids = {0};
    assert_int_equal(tokenizer_encode(T, "risk report", 11, 0, &ids), 0);
    result ref = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    result r[4];
    serve *s;
    serve_opts o = {.n_slots = 4, .n_ctx = 128, .step_tokens = 16};
    assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
    uint64_t id;
    /* reference: one sequence with the adapter loaded throughout */
    model_lora *l = lora_registry_acquire(reg, "fin");
    assert_non_null(l);
    serve_params p = greedy(40);
    p.ignore_eos = true;
    p.lora = l;
    assert_int_equal(serve_submit(s, ids.ids, ids.n, &p, on_token, &ref, &id, err, sizeof err), 0);
    wait_done(&ref);
    /* four more, then unload at once and drop our own reference */
    for (int i = 0; i < 4; i++) {
        r[i] = (result){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        assert_int_equal(serve_submit(s, ids.ids, ids.n, &p, on_token, &r[i], &id, err, sizeof err), 0);
    }
    assert_int_equal(lora_registry_unload(reg, "fin"), 0);
    model_lora_release(l);
    assert_null(lora_registry_acquire(reg, "fin"));
    lora_registry_entry e[4];
    assert_int_equal(lora_registry_list(reg, e, 4), 0);
    for (int i = 0; i < 4; i++) {
        wait_done(&r[i]);
        assert_int_equal(r[i].n_tokens, 40);
        assert_memory_equal(r[i].tokens, ref.tokens, sizeof(int32_t) * 40);
    }
    serve_close(s);
    lora_registry_free(reg);
    tokenizer_ids_free(&ids);
}

/* More demand than KV memory: sequences reserve their answer in runs of 16
 * positions; when the pool cannot promise the next run, the youngest is
 * preempted and later resumes by re-evaluating its history. Every answer
 * is still exactly what it is alone, and every block comes back. */
static void test_preemption(void **st)
{
    (void)st;
    enum { N = 4, GEN = 100 };
    serve *s;
    char err[256];
    serve_opts o = {.n_slots = N, .n_ctx = 256, .step_tokens = 32, .block_tokens = 16, .reserve_tokens = 16,
                    .kv_memory = 12 * model_kv_block_bytes(M, 16)};
    assert_int_equal(serve_open(&s, M, T, &o, err, sizeof err), 0);
    tokenizer_ids ids[N];
    unsigned seed = 5;
    char txt[512];
    result r[N];
    for (int i = 0; i < N; i++) {
        memset(&ids[i], 0, sizeof ids[i]);
        words(txt, sizeof txt, 3 + 2 * i, &seed);
        assert_int_equal(tokenizer_encode(T, txt, strlen(txt), 0, &ids[i]), 0);
        r[i] = (result){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        serve_params p = greedy(GEN);
        p.ignore_eos = true;
        uint64_t id;
        assert_int_equal(serve_submit(s, ids[i].ids, ids[i].n, &p, on_token, &r[i], &id, err, sizeof err), 0);
    }
    for (int i = 0; i < N; i++)
        wait_done(&r[i]);
    serve_stats stt;
    serve_get_stats(s, &stt);
    fprintf(stderr, "preemption: %lld preemptions, prefix hits %lld of %lld tokens\n", (long long)stt.preemptions,
            (long long)stt.prefix_hit_tokens, (long long)stt.prefix_lookup_tokens);
    assert_true(stt.preemptions > 0);
    assert_int_equal(stt.kv_blocks_used, 0);
    assert_int_equal(stt.kv_blocks_reserved, 0);
    serve_close(s);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].finish, SERVE_LENGTH);
        assert_int_equal(r[i].n_tokens, GEN);
        int32_t want[GEN];
        int n = alone(ids[i].ids, (int)ids[i].n, GEN, want);
        assert_true(n <= GEN);
        /* alone() stops at an end-of-turn token; the served one ignores it */
        assert_memory_equal(r[i].tokens, want, sizeof(int32_t) * (size_t)n);
        tokenizer_ids_free(&ids[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_equals_alone),
        cmocka_unit_test(test_stop_string_and_cancel),
        cmocka_unit_test(test_queue_and_close),
        cmocka_unit_test(test_prefix_cache),
        cmocka_unit_test(test_kv_memory_admission),
        cmocka_unit_test(test_seeded_batched_equals_alone),
        cmocka_unit_test(test_stress),
        cmocka_unit_test(test_adapters_batched_equals_alone),
        cmocka_unit_test(test_registry_unload_in_use),
        cmocka_unit_test(test_preemption),
    };
    return cmocka_run_group_tests_name("serve", tests, setup, teardown);
}
