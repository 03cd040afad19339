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

#include "core/errors.h"
#include "core/model.h"
#include "core/serve.h"
#include "core/tokenizer.h"

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
    model_batch b = {n, hist, pos, seq, want};
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
        model_batch d = {1, &hist[n + g - 1], &pos[n + g - 1], seq, NULL};
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
    if (token >= 0 && r->n_tokens < 512)
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_equals_alone),
        cmocka_unit_test(test_stop_string_and_cancel),
        cmocka_unit_test(test_queue_and_close),
    };
    return cmocka_run_group_tests_name("serve", tests, setup, teardown);
}
