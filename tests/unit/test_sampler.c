/* Sampler: greedy picks the argmax; a seed reproduces a run; the empirical
 * distribution matches softmax(logits / T) under top-k / top-p / min-p
 * truncation; penalties change logits as defined; bad parameters are
 * refused with the field named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "core/sampler.h"

enum { V = 8 };

static sampler *make(sampler_params p)
{
    sampler *s = NULL;
    char err[128];
    assert_int_equal(sampler_create(&s, V, &p, err, sizeof err), 0);
    return s;
}

static sampler_params plain(float temp)
{
    sampler_params p = sampler_defaults();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

static void test_greedy(void **st)
{
    (void)st;
    sampler *s = make(plain(0));
    float l[V] = {0.1f, 3.0f, -1.0f, 2.9f, NAN, 0, 0, 0};
    assert_int_equal(sampler_sample(s, l, NULL, 0), 1);
    float tie[V] = {1, 5, 5, 0, 0, 0, 0, 0};
    assert_int_equal(sampler_sample(s, tie, NULL, 0), 1); /* ties to lowest id */
    sampler_free(s);
}

/* draws N samples and compares frequencies with the expected distribution */
static void check_distribution(sampler_params p, const float *logits, const double *expect)
{
    sampler *s = make(p);
    int counts[V] = {0};
    const int N = 200000;
    for (int i = 0; i < N; i++) {
        float l[V];
        memcpy(l, logits, sizeof l);
        int32_t t = sampler_sample(s, l, NULL, 0);
        assert_true(t >= 0 && t < V);
        counts[t]++;
    }
    for (int i = 0; i < V; i++) {
        double f = (double)counts[i] / N;
        double sd = sqrt(expect[i] * (1 - expect[i]) / N) + 1e-9;
        if (fabs(f - expect[i]) > 5 * sd + 1e-4)
            fail_msg("token %d: frequency %.5f, expected %.5f", i, f, expect[i]);
    }
    sampler_free(s);
}

static void softmax(const float *l, double t, double *out, const int *keep)
{
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++)
        if (keep[i] && l[i] > mx)
            mx = l[i];
    for (int i = 0; i < V; i++) {
        out[i] = keep[i] ? exp((l[i] - mx) / t) : 0;
        sum += out[i];
    }
    for (int i = 0; i < V; i++)
        out[i] /= sum;
}

static const float L[V] = {2.0f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 1.5f, 0.2f};

static void test_temperature(void **st)
{
    (void)st;
    int all[V] = {1, 1, 1, 1, 1, 1, 1, 1};
    double e[V];
    softmax(L, 0.7, e, all);
    check_distribution(plain(0.7f), L, e);
}

static void test_top_k(void **st)
{
    (void)st;
    int keep[V] = {1, 1, 0, 0, 0, 0, 1, 0}; /* 3 largest: 2.0, 1.5, 1.0 */
    double e[V];
    softmax(L, 1.0, e, keep);
    sampler_params p = plain(1.0f);
    p.top_k = 3;
    check_distribution(p, L, e);
}

static void test_top_p(void **st)
{
    (void)st;
    int all[V] = {1, 1, 1, 1, 1, 1, 1, 1};
    double full[V];
    softmax(L, 1.0, full, all);
    /* sorted: 0 (2.0), 6 (1.5), 1 (1.0), 2 (0.5) ... keep the smallest prefix reaching 0.7 */
    int order[V] = {0, 6, 1, 2, 7, 3, 4, 5};
    int keep[V] = {0};
    double acc = 0;
    for (int i = 0; i < V; i++) {
        keep[order[i]] = 1;
        acc += full[order[i]];
        if (acc >= 0.7)
            break;
    }
    double e[V];
    softmax(L, 1.0, e, keep);
    sampler_params p = plain(1.0f);
    p.top_p = 0.7f;
    check_distribution(p, L, e);
}

static void test_min_p(void **st)
{
    (void)st;
    int all[V] = {1, 1, 1, 1, 1, 1, 1, 1};
    double full[V], e[V];
    softmax(L, 1.0, full, all);
    int keep[V];
    for (int i = 0; i < V; i++)
        keep[i] = full[i] >= 0.3 * full[0];
    softmax(L, 1.0, e, keep);
    sampler_params p = plain(1.0f);
    p.min_p = 0.3f;
    check_distribution(p, L, e);
}

static void test_seed_reproducible(void **st)
{
    (void)st;
    sampler_params p = plain(1.0f);
    p.seed = 1234;
    sampler *a = make(p), *b = make(p);
    p.seed = 99;
    sampler *c = make(p);
    int same = 0, diff = 0;
    for (int i = 0; i < 500; i++) {
        float l1[V], l2[V], l3[V];
        memcpy(l1, L, sizeof l1);
        memcpy(l2, L, sizeof l2);
        memcpy(l3, L, sizeof l3);
        int32_t x = sampler_sample(a, l1, NULL, 0), y = sampler_sample(b, l2, NULL, 0);
        int32_t z = sampler_sample(c, l3, NULL, 0);
        same += x == y;
        diff += x != z;
    }
    assert_int_equal(same, 500);
    assert_true(diff > 100);
    sampler_free(a);
    sampler_free(b);
    sampler_free(c);
}

static void test_penalties(void **st)
{
    (void)st;
    sampler_params p = plain(0);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 2;
    sampler *s = make(p);
    float l[V] = {4.0f, 3.0f, -1.0f, 0, 0, 0, 0, 0};
    int32_t hist[3] = {1, 0, 2}; /* window: last 2 = {0, 2} */
    assert_int_equal(sampler_sample(s, l, hist, 3), 1);
    assert_true(fabsf(l[0] - 2.0f) < 1e-6f);  /* positive: divided */
    assert_true(fabsf(l[2] + 2.0f) < 1e-6f);  /* negative: multiplied */
    assert_true(fabsf(l[1] - 3.0f) < 1e-6f);  /* outside the window */
    sampler_free(s);

    p = plain(0);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 1.0f;
    p.repeat_last_n = -1;
    s = make(p);
    float m[V] = {4.0f, 3.0f, 0, 0, 0, 0, 0, 0};
    int32_t h2[4] = {0, 0, 0, 1};
    assert_int_equal(sampler_sample(s, m, h2, 4), 1);
    assert_true(fabsf(m[0] - (4.0f - 3.0f - 0.5f)) < 1e-6f);
    assert_true(fabsf(m[1] - (3.0f - 1.0f - 0.5f)) < 1e-6f);
    sampler_free(s);
}

static void test_bad_params(void **st)
{
    (void)st;
    struct {
        sampler_params p;
        const char *field;
    } cases[8];
    for (int i = 0; i < 8; i++)
        cases[i].p = sampler_defaults();
    cases[0].p.temperature = -1, cases[0].field = "temperature";
    cases[1].p.top_p = 0, cases[1].field = "top_p";
    cases[2].p.min_p = 2, cases[2].field = "min_p";
    cases[3].p.repeat_penalty = 0, cases[3].field = "repeat_penalty";
    cases[4].p.presence_penalty = INFINITY, cases[4].field = "presence";
    cases[5].p.top_k = -3, cases[5].field = "top_k";
    /* regression: a huge penalty could push a logit to +inf after the scrub */
    cases[6].p.frequency_penalty = -3e38f, cases[6].field = "frequency";
    cases[7].p.repeat_penalty = 1e30f, cases[7].field = "repeat_penalty";
    for (int i = 0; i < 8; i++) {
        sampler *s = NULL;
        char err[128] = "";
        assert_int_not_equal(sampler_create(&s, V, &cases[i].p, err, sizeof err), 0);
        assert_null(s);
        assert_non_null(strstr(err, cases[i].field));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),     cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_top_k),      cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_min_p),      cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_penalties),  cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests_name("sampler", tests, NULL, NULL);
}
