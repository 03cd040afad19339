/* Forward pass properties that the float64 reference cannot see:
 *  - a batch mixing tokens of several sequences gives each token the logits
 *    it gets when its sequence runs alone;
 *  - evaluating a prompt in one batch or token by token gives the same logits;
 *  - the result does not depend on the number of threads;
 *  - bad batches are refused with the field named.
 * Uses the generated fixtures ($MOEGATE_FIXTURES, default build/fixtures). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/model.h"

static char path_buf[4096];

static const char *fixture(const char *name)
{
    const char *dir = getenv("MOEGATE_FIXTURES");
    snprintf(path_buf, sizeof path_buf, "%s/%s", dir ? dir : "build/fixtures", name);
    return path_buf;
}

static model *open_model(const char *name, int threads)
{
    model *m = NULL;
    char err[512] = "";
    model_opts o = {.n_threads = threads, .n_batch = 16};
    int rc = model_open(&m, fixture(name), &o, err, sizeof err);
    if (rc)
        fail_msg("model_open(%s): %s", name, err);
    return m;
}

/* max |a-b| / max |b| over n values */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / (mb > 0 ? mb : 1);
}

/* Runs tokens[0..n) of one sequence in slot `seq` as one batch; all logits. */
static float *run_alone(model *m, const int32_t *tokens, int n, int seq)
{
    const model_info *I = model_get_info(m);
    model_kv *kv;
    char err[256];
    assert_int_equal(model_kv_create(&kv, m, 3, 64, err, sizeof err), 0);
    int32_t pos[64], sq[64];
    for (int i = 0; i < n; i++)
        pos[i] = i, sq[i] = seq;
    float *out = malloc(sizeof(float) * (size_t)n * (size_t)I->n_vocab);
    model_batch b = {n, tokens, pos, sq, NULL};
    assert_int_equal(model_forward(m, kv, &b, out, err, sizeof err), 0);
    model_kv_free(kv);
    return out;
}

static const int32_t A[12] = {1, 415, 2936, 9060, 285, 10575, 754, 272, 17898, 3914, 28723, 13};
static const int32_t B[7] = {1, 22557, 28725, 1526, 28808, 315, 837};

static void check_mixed_batch(const char *name)
{
    model *m = open_model(name, 0);
    const model_info *I = model_get_info(m);
    size_t nv = (size_t)I->n_vocab;
    float *la = run_alone(m, A, 12, 0), *lb = run_alone(m, B, 7, 2);

    /* interleave: A in slot 0, B in slot 2, in one batch crossing the
     * internal chunk size (16) */
    model_kv *kv;
    char err[256];
    assert_int_equal(model_kv_create(&kv, m, 3, 64, err, sizeof err), 0);
    int32_t tok[19], pos[19], seq[19];
    int ia = 0, ib = 0, n = 0;
    while (ia < 12 || ib < 7) {
        if (ia < 12)
            tok[n] = A[ia], pos[n] = ia, seq[n] = 0, ia++, n++;
        if (ib < 7 && (n % 3 == 0 || ia == 12))
            tok[n] = B[ib], pos[n] = ib, seq[n] = 2, ib++, n++;
    }
    assert_int_equal(n, 19);
    float *lm = malloc(sizeof(float) * 19 * nv);
    model_batch b = {19, tok, pos, seq, NULL};
    assert_int_equal(model_forward(m, kv, &b, lm, err, sizeof err), 0);
    for (int i = 0; i < 19; i++) {
        const float *want = seq[i] == 0 ? la + (size_t)pos[i] * nv : lb + (size_t)pos[i] * nv;
        double d = rel_diff(lm + (size_t)i * nv, want, nv);
        if (d > 1e-5)
            fail_msg("%s: batch row %d (seq %d pos %d) differs from the lone run: %.3g", name, i,
                     seq[i], pos[i], d);
    }

    /* token by token, continuing A in slot 1 */
    for (int i = 0; i < 12; i++) {
        int32_t p = i, s = 1;
        model_batch g = {1, &A[i], &p, &s, NULL};
        assert_int_equal(model_forward(m, kv, &g, lm, err, sizeof err), 0);
        double d = rel_diff(lm, la + (size_t)i * nv, nv);
        if (d > 1e-5)
            fail_msg("%s: incremental position %d differs from the batch: %.3g", name, i, d);
    }
    /* want_logits selects rows, in batch order */
    uint8_t want[12] = {0};
    want[3] = want[11] = 1;
    int32_t pos12[12], seq12[12];
    for (int i = 0; i < 12; i++)
        pos12[i] = i, seq12[i] = 0;
    model_batch w = {12, A, pos12, seq12, want};
    assert_int_equal(model_forward(m, kv, &w, lm, err, sizeof err), 0);
    assert_true(rel_diff(lm, la + 3 * nv, nv) <= 1e-5);
    assert_true(rel_diff(lm + nv, la + 11 * nv, nv) <= 1e-5);
    free(lm);
    free(la);
    free(lb);
    model_kv_free(kv);
    model_close(m);
}

static void test_mixed_batch_f32(void **st)
{
    (void)st;
    check_mixed_batch("mixtral-tiny-f32.gguf");
}

static void test_mixed_batch_q4k(void **st)
{
    (void)st;
    check_mixed_batch("qwen3moe-tiny-q4_K.gguf");
}

static void test_mixed_batch_qwen2(void **st)
{
    (void)st;
    check_mixed_batch("qwen2moe-tiny-q8_0.gguf");
}

static void test_threads_equal(void **st)
{
    (void)st;
    model *m1 = open_model("qwen3moe-tiny-q8_0.gguf", 1);
    model *m2 = open_model("qwen3moe-tiny-q8_0.gguf", 2);
    size_t nv = (size_t)model_get_info(m1)->n_vocab;
    float *a = run_alone(m1, A, 12, 0), *b = run_alone(m2, A, 12, 0);
    assert_memory_equal(a, b, sizeof(float) * 12 * nv); /* bit for bit */
    free(a);
    free(b);
    model_close(m1);
    model_close(m2);
}

static void test_bad_batches(void **st)
{
    (void)st;
    model *m = open_model("mixtral-tiny-q8_0.gguf", 1);
    model_kv *kv;
    char err[256];
    assert_int_equal(model_kv_create(&kv, m, 2, 8, err, sizeof err), 0);
    float *lg = malloc(sizeof(float) * (size_t)model_get_info(m)->n_vocab);
    int32_t tok = 1, pos = 0, seq = 0;
    model_batch b = {1, &tok, &pos, &seq, NULL};
    tok = 32000;
    assert_int_equal(model_forward(m, kv, &b, lg, err, sizeof err), MG_ERANGE);
    assert_non_null(strstr(err, "outside the vocabulary"));
    tok = -1;
    assert_int_equal(model_forward(m, kv, &b, lg, err, sizeof err), MG_ERANGE);
    tok = 1, pos = 8;
    assert_int_equal(model_forward(m, kv, &b, lg, err, sizeof err), MG_ERANGE);
    assert_non_null(strstr(err, "position 8"));
    pos = 0, seq = 2;
    assert_int_equal(model_forward(m, kv, &b, lg, err, sizeof err), MG_ERANGE);
    assert_non_null(strstr(err, "sequence 2"));
    /* kv cache larger than the model's context */
    model_kv *big = NULL;
    assert_int_equal(model_kv_create(&big, m, 1, 1 << 20, err, sizeof err), MG_ERANGE);
    assert_null(big);
    free(lg);
    model_kv_free(kv);
    model_close(m);
}

static void test_open_errors(void **st)
{
    (void)st;
    model *m = NULL;
    char err[512] = "";
    assert_int_equal(model_open(&m, "/nonexistent/model.gguf", NULL, err, sizeof err), MG_EIO);
    assert_null(m);
    assert_non_null(strstr(err, "/nonexistent/model.gguf"));
    model_opts o = {.isa = "mmx"};
    assert_int_equal(model_open(&m, fixture("mixtral-tiny-q8_0.gguf"), &o, err, sizeof err),
                     MG_EINVAL);
    assert_non_null(strstr(err, "mmx"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_batch_f32), cmocka_unit_test(test_mixed_batch_q4k),
        cmocka_unit_test(test_mixed_batch_qwen2), cmocka_unit_test(test_threads_equal),
        cmocka_unit_test(test_bad_batches),     cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
