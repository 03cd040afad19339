/* Rate limiting: buckets start full with one minute of their rate, refill
 * continuously, refuse with the time until enough has refilled, charge
 * all buckets or none, settle unused tokens back; many threads together
 * never get more than the buckets allow; state carries over a reload (new
 * rates, same buckets). Time is passed in, so the tests are exact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/errors.h"
#include "policies/policy.h"

#define SEC 1000000000LL

static policy_tenant tenant(const char *id, int64_t rpm, int64_t tpm)
{
    policy_tenant t;
    memset(&t, 0, sizeof t);
    t.id = id;
    t.rate.requests_per_minute = rpm;
    t.rate.tokens_per_minute = tpm;
    return t;
}

static void test_requests_bucket(void **st)
{
    (void)st;
    policy_limiter *l;
    assert_int_equal(policy_limiter_create(&l), 0);
    policy_tenant t = tenant("acme", 60, 0); /* one per second, burst 60 */
    policy_admission a;
    int64_t now = 1000 * SEC;
    for (int i = 0; i < 60; i++) {
        assert_int_equal(policy_limiter_admit(l, &t, NULL, 100, now, &a), 0);
        assert_true(a.admitted);
    }
    assert_int_equal(policy_limiter_admit(l, &t, NULL, 100, now, &a), 0);
    assert_false(a.admitted);
    assert_string_equal(a.limit, "tenant requests");
    assert_true(fabs(a.retry_after_s - 1.0) < 1e-9);
    /* half a second later: still 0.5 short */
    assert_int_equal(policy_limiter_admit(l, &t, NULL, 100, now + SEC / 2, &a), 0);
    assert_false(a.admitted);
    assert_true(fabs(a.retry_after_s - 0.5) < 1e-9);
    /* after the advertised wait it is admitted */
    assert_int_equal(policy_limiter_admit(l, &t, NULL, 100, now + SEC, &a), 0);
    assert_true(a.admitted);
    /* a minute of quiet refills to the cap, not beyond */
    int n = 0;
    for (;;) {
        assert_int_equal(policy_limiter_admit(l, &t, NULL, 1, now + 1000 * SEC, &a), 0);
        if (!a.admitted)
            break;
        n++;
    }
    assert_int_equal(n, 60);
    /* another tenant has its own buckets */
    policy_tenant u = tenant("beta", 60, 0);
    assert_int_equal(policy_limiter_admit(l, &u, NULL, 1, now + 1000 * SEC, &a), 0);
    assert_true(a.admitted);
    policy_limiter_free(l);
}

static void test_tokens_and_keys(void **st)
{
    (void)st;
    policy_limiter *l;
    assert_int_equal(policy_limiter_create(&l), 0);
    policy_tenant t = tenant("acme", 0, 6000); /* 100 tokens/s */
    policy_api_key k = {.id = "k1", .tenant = &t};
    k.rate.tokens_per_minute = 3000;
    k.rate.requests_per_minute = 2;
    policy_admission a;
    int64_t now = 5 * SEC;
    /* more than a minute's worth can never pass */
    assert_int_equal(policy_limiter_admit(l, &t, &k, 3001, now, &a), MG_ERANGE);
    assert_string_equal(a.limit, "key tokens");
    assert_int_equal(policy_limiter_admit(l, &t, NULL, 6001, now, &a), MG_ERANGE);
    assert_string_equal(a.limit, "tenant tokens");
    /* key: 3000 tokens */
    assert_int_equal(policy_limiter_admit(l, &t, &k, 2000, now, &a), 0);
    assert_true(a.admitted);
    assert_int_equal(policy_limiter_admit(l, &t, &k, 2000, now, &a), 0);
    assert_false(a.admitted);
    assert_string_equal(a.limit, "key tokens");
    assert_true(fabs(a.retry_after_s - 1000 * 60.0 / 3000) < 1e-9); /* 1000 short at 50/s */
    /* the refusal charged nothing: the tenant still has 4000 for another path */
    assert_int_equal(policy_limiter_admit(l, &t, NULL, 4000, now, &a), 0);
    assert_true(a.admitted);
    assert_int_equal(policy_limiter_admit(l, &t, NULL, 1, now, &a), 0);
    assert_false(a.admitted);
    /* settle: the first request used 200 of its 2000; 1800 come back to both */
    policy_limiter_settle(l, &t, &k, 2000, 200, now);
    assert_int_equal(policy_limiter_admit(l, &t, &k, 1800, now, &a), 0);
    assert_true(a.admitted);
    /* the key's request bucket (2/min) is now empty */
    assert_int_equal(policy_limiter_admit(l, &t, &k, 1, now + 60 * SEC, &a), 0);
    assert_true(a.admitted);
    assert_int_equal(policy_limiter_admit(l, &t, &k, 1, now + 60 * SEC, &a), 0);
    assert_true(a.admitted);
    assert_int_equal(policy_limiter_admit(l, &t, &k, 1, now + 60 * SEC, &a), 0);
    assert_false(a.admitted);
    assert_string_equal(a.limit, "key requests");
    assert_true(fabs(a.retry_after_s - 30.0) < 1e-9);
    /* bad arguments */
    assert_int_equal(policy_limiter_admit(l, &t, &k, -1, now, &a), MG_EINVAL);
    policy_limiter_free(l);
}

/* Threads race for one bucket with no time passing: exactly its capacity
 * is admitted, whatever the interleaving. */
typedef struct race {
    policy_limiter *l;
    const policy_tenant *t;
    const policy_api_key *k;
    int64_t now;
    atomic_long *admitted_requests;
    atomic_long *admitted_tokens;
} race;

static void *racer(void *ud)
{
    race *r = ud;
    for (int i = 0; i < 5000; i++) {
        policy_admission a;
        int64_t tokens = 1 + i % 7;
        if (policy_limiter_admit(r->l, r->t, r->k, tokens, r->now, &a) == 0 && a.admitted) {
            atomic_fetch_add(r->admitted_requests, 1);
            atomic_fetch_add(r->admitted_tokens, tokens);
        }
    }
    return NULL;
}

static void test_concurrent_no_over_admission(void **st)
{
    (void)st;
    policy_limiter *l;
    assert_int_equal(policy_limiter_create(&l), 0);
    policy_tenant t = tenant("acme", 1000, 0);
    policy_api_key k = {.id = "k", .tenant = &t};
    k.rate.tokens_per_minute = 2500;
    atomic_long req, tok;
    atomic_init(&req, 0);
    atomic_init(&tok, 0);
    enum { N = 8 };
    pthread_t th[N];
    race r = {l, &t, &k, 42 * SEC, &req, &tok};
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&th[i], NULL, racer, &r), 0);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    assert_true(atomic_load(&req) <= 1000);
    assert_true(atomic_load(&tok) <= 2500);
    /* and the buckets were really used up, not refused early: less than
     * one more smallest request could have fit */
    assert_true(atomic_load(&req) == 1000 || atomic_load(&tok) > 2500 - 7);

    /* tenant-only race: exactly the capacity */
    policy_tenant u = tenant("solo", 777, 0);
    atomic_store(&req, 0);
    race r2 = {l, &u, NULL, 42 * SEC, &req, &tok};
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&th[i], NULL, racer, &r2), 0);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&req), 777);
    policy_limiter_free(l);
}

/* A reload builds new tenant structs; the buckets are found by id and keep
 * their contents, clipped to a lower new capacity. */
static void test_survives_reload(void **st)
{
    (void)st;
    policy_limiter *l;
    assert_int_equal(policy_limiter_create(&l), 0);
    policy_tenant before = tenant("acme", 100, 0);
    policy_admission a;
    int64_t now = 7 * SEC;
    for (int i = 0; i < 90; i++)
        assert_int_equal(policy_limiter_admit(l, &before, NULL, 1, now, &a), 0);
    policy_tenant after = tenant("acme", 100, 0); /* same id, new snapshot */
    int n = 0;
    while (policy_limiter_admit(l, &after, NULL, 1, now, &a) == 0 && a.admitted)
        n++;
    assert_int_equal(n, 10);
    /* a lower rate after the reload: the bucket is clipped to it and
     * refills at the new rate */
    policy_tenant lower = tenant("acme", 6, 0);
    assert_int_equal(policy_limiter_admit(l, &lower, NULL, 1, now + 10 * SEC, &a), 0);
    assert_true(a.admitted); /* 10 s at 0.1/s = 1 */
    assert_int_equal(policy_limiter_admit(l, &lower, NULL, 1, now + 10 * SEC, &a), 0);
    assert_false(a.admitted);
    assert_true(fabs(a.retry_after_s - 10.0) < 1e-9);
    policy_limiter_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_bucket),
        cmocka_unit_test(test_tokens_and_keys),
        cmocka_unit_test(test_concurrent_no_over_admission),
        cmocka_unit_test(test_survives_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
