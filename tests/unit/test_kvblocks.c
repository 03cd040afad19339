/* Paged KV bookkeeping: block tables, prefix sharing, admission, eviction.
 * The random test keeps a shadow copy of every sequence's tokens and checks,
 * after every operation, that each position maps to a block that holds that
 * very token — i.e. sharing never hands a sequence another prefix's KV — and
 * that the block accounting adds up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/kvblocks.c"

static kvb_pool *pool(int32_t nb, int32_t bt, int32_t ns)
{
    kvb_pool *p;
    char err[128];
    assert_int_equal(kvb_create(&p, nb, bt, ns, err, sizeof err), 0);
    return p;
}

static void check_accounting(const kvb_pool *p)
{
    kvb_stats s;
    kvb_get_stats(p, &s);
    assert_int_equal(s.free_blocks + s.cached_blocks + s.used_blocks, s.n_blocks);
    assert_true(s.reserved_blocks >= 0);
    assert_true(s.reserved_blocks <= s.free_blocks + s.cached_blocks);
}

static void test_table_and_reuse(void **st)
{
    (void)st;
    kvb_pool *p = pool(8, 4, 4);
    int32_t a[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, cached;
    assert_int_equal(kvb_seq_start(p, 0, 7, a, 10, 16, &cached), 0);
    assert_int_equal(cached, 0);
    assert_int_equal(kvb_seq_append(p, 0, a, 10), 0);
    assert_int_equal(kvb_seq_len(p, 0), 10);
    int32_t b0 = kvb_seq_block(p, 0, 0), b1 = kvb_seq_block(p, 0, 4), b2 = kvb_seq_block(p, 0, 8);
    assert_true(b0 >= 0 && b1 >= 0 && b2 >= 0 && b0 != b1 && b1 != b2 && b0 != b2);
    assert_int_equal(kvb_seq_block(p, 0, 3), b0);
    assert_int_equal(kvb_seq_block(p, 0, 10), -1);
    check_accounting(p);
    /* a second request with the same first 9 tokens shares the two full blocks */
    int32_t b[12] = {1, 2, 3, 4, 5, 6, 7, 8, 99, 98, 97, 96};
    assert_int_equal(kvb_seq_start(p, 1, 7, b, 12, 12, &cached), 0);
    assert_int_equal(cached, 8);
    assert_int_equal(kvb_seq_block(p, 1, 0), b0);
    assert_int_equal(kvb_seq_block(p, 1, 7), b1);
    assert_int_equal(kvb_seq_append(p, 1, b + 8, 4), 0);
    assert_true(kvb_seq_block(p, 1, 8) != b2);
    /* another namespace (adapter) never shares */
    assert_int_equal(kvb_seq_start(p, 2, 8, b, 12, 12, &cached), 0);
    assert_int_equal(cached, 0);
    check_accounting(p);
    kvb_seq_end(p, 0);
    kvb_seq_end(p, 1);
    kvb_seq_end(p, 2);
    check_accounting(p);
    /* a prompt that is exactly cached still evaluates its last token */
    assert_int_equal(kvb_seq_start(p, 3, 7, a, 8, 8, &cached), 0);
    assert_int_equal(cached, 4);
    kvb_seq_end(p, 3);
    kvb_stats s;
    kvb_get_stats(p, &s);
    assert_int_equal(s.hit_tokens, 12);
    assert_int_equal(s.lookups, 4);
    kvb_free(p);
}

static void test_admission(void **st)
{
    (void)st;
    kvb_pool *p = pool(4, 4, 2);
    int32_t t[16] = {0}, cached;
    assert_int_equal(kvb_seq_start(p, 0, 0, t, 4, 17, &cached), MG_ERANGE); /* 5 blocks > 4 */
    assert_int_equal(kvb_seq_start(p, 0, 0, t, 4, 12, &cached), 0);         /* reserves 3 */
    assert_false(kvb_can_fit(p, 8));
    assert_true(kvb_can_fit(p, 4));
    kvb_stats before, after;
    kvb_get_stats(p, &before);
    assert_int_equal(kvb_seq_start(p, 1, 0, t, 2, 8, &cached), MG_EBUSY);
    kvb_get_stats(p, &after);
    assert_memory_equal(&before, &after, sizeof before); /* refused: nothing changed */
    assert_int_equal(kvb_seq_append(p, 0, t, 12), 0);
    assert_int_equal(kvb_seq_append(p, 0, t, 1), MG_ERANGE); /* beyond its max_tokens */
    assert_int_equal(kvb_seq_start(p, 0, 0, t, 1, 1, &cached), MG_EINVAL); /* already active */
    kvb_seq_end(p, 0);
    check_accounting(p);
    kvb_free(p);
}

static void test_eviction_lru(void **st)
{
    (void)st;
    kvb_pool *p = pool(4, 2, 2);
    int32_t x[5] = {1, 2, 3, 4, 0}, y[5] = {5, 6, 7, 8, 0}, cached;
    assert_int_equal(kvb_seq_start(p, 0, 0, x, 5, 4, &cached), MG_EINVAL); /* max < n */
    assert_int_equal(kvb_seq_start(p, 0, 0, x, 4, 4, &cached), 0);
    assert_int_equal(kvb_seq_append(p, 0, x, 4), 0);
    kvb_seq_end(p, 0); /* x's two blocks cached */
    assert_int_equal(kvb_seq_start(p, 0, 0, y, 4, 4, &cached), 0);
    assert_int_equal(kvb_seq_append(p, 0, y, 4), 0);
    kvb_seq_end(p, 0); /* y's too: pool all cached */
    kvb_stats s;
    kvb_get_stats(p, &s);
    assert_int_equal(s.cached_blocks, 4);
    /* a new prompt needing 2 blocks evicts x's (the older) */
    int32_t z[4] = {9, 9, 9, 9};
    assert_int_equal(kvb_seq_start(p, 0, 0, z, 4, 4, &cached), 0);
    assert_int_equal(kvb_seq_append(p, 0, z, 4), 0);
    kvb_seq_end(p, 0);
    kvb_get_stats(p, &s);
    assert_int_equal(s.evictions, 2);
    int32_t yq[5] = {5, 6, 7, 8, 1}, xq[5] = {1, 2, 3, 4, 1};
    assert_int_equal(kvb_seq_start(p, 0, 0, yq, 5, 5, &cached), 0);
    assert_int_equal(cached, 4); /* y survived */
    kvb_seq_end(p, 0);
    assert_int_equal(kvb_seq_start(p, 1, 0, xq, 5, 5, &cached), 0);
    assert_int_equal(cached, 0); /* x was evicted */
    kvb_seq_end(p, 1);
    check_accounting(p);
    kvb_free(p);
}

/* ---- random operations against a shadow model -------------------------------------- */

enum { NS = 6, NB = 40, BT = 4 };

static void check_tokens(const kvb_pool *p, int32_t sid, const int32_t *shadow, int32_t len)
{
    assert_int_equal(kvb_seq_len(p, sid), len);
    for (int32_t pos = 0; pos < len; pos++) {
        int32_t b = kvb_seq_block(p, sid, pos);
        assert_true(b >= 0 && b < p->n_blocks);
        assert_int_equal(p->tokens[(size_t)b * BT + (size_t)(pos % BT)], shadow[pos]);
    }
}

static void test_random(void **st)
{
    (void)st;
    kvb_pool *p = pool(NB, BT, NS);
    int32_t shadow[NS][64], len[NS] = {0}, maxt[NS] = {0};
    bool active[NS] = {false};
    /* what the model would have written: data[block][offset] = the token
     * whose keys and values sit there (written on append, copied on a
     * partial-block copy); every sequence must read its own tokens back */
    static int32_t data[NB][BT];
    memset(data, 0xff, sizeof data);
    uint64_t rng = 42;
    int started = 0, hits = 0, copies = 0;
    for (int step = 0; step < 20000; step++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int sid = (int)((rng >> 33) % NS);
        int op = (int)((rng >> 40) % 4);
        if (!active[sid]) {
            /* prompts from a few shared prefixes, so that hits happen */
            int32_t n = 1 + (int32_t)((rng >> 20) % 20), m = n + (int32_t)((rng >> 12) % 20);
            int prefix = (int)((rng >> 50) % 3);
            for (int32_t i = 0; i < n; i++)
                shadow[sid][i] = i < 10 ? prefix * 100 + i : (int32_t)((rng >> (i % 40)) & 7);
            int32_t cached;
            kvb_copy cp = {0};
            int rc = (rng >> 45) & 1 ? kvb_seq_start_copy(p, sid, (uint64_t)(prefix == 2), shadow[sid], n, m,
                                                          &cached, &cp)
                                     : kvb_seq_start(p, sid, (uint64_t)(prefix == 2), shadow[sid], n, m, &cached);
            assert_true(rc == 0 || rc == MG_EBUSY);
            if (rc == 0 && cp.rows > 0) {
                assert_true(cp.src != cp.dst && cp.rows < BT);
                assert_int_equal(kvb_seq_block(p, sid, cached - 1), cp.dst);
                memcpy(data[cp.dst], data[cp.src], sizeof(int32_t) * (size_t)cp.rows);
                copies++;
            }
            if (rc == 0) {
                active[sid] = true;
                maxt[sid] = m;
                len[sid] = cached;
                started++;
                hits += cached > 0;
                check_tokens(p, sid, shadow[sid], cached);
                assert_int_equal(kvb_seq_append(p, sid, shadow[sid] + cached, n - cached), 0);
                for (int32_t i = cached; i < n; i++)
                    data[kvb_seq_block(p, sid, i)][i % BT] = shadow[sid][i];
                len[sid] = n;
            }
        } else if (op == 0) {
            kvb_seq_end(p, sid);
            active[sid] = false;
        } else if (len[sid] < maxt[sid]) {
            int32_t tok = (int32_t)((rng >> 24) & 15);
            shadow[sid][len[sid]] = tok;
            assert_int_equal(kvb_seq_append(p, sid, &tok, 1), 0);
            data[kvb_seq_block(p, sid, len[sid])][len[sid] % BT] = tok;
            len[sid]++;
        }
        for (int s = 0; s < NS; s++)
            if (active[s]) {
                check_tokens(p, s, shadow[s], len[s]);
                for (int32_t i = 0; i < len[s]; i++)
                    assert_int_equal(data[kvb_seq_block(p, s, i)][i % BT], shadow[s][i]);
            }
        check_accounting(p);
    }
    assert_true(started > 1000);
    assert_true(hits > 100);
    assert_true(copies > 20);
    kvb_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_and_reuse),
        cmocka_unit_test(test_admission),
        cmocka_unit_test(test_eviction_lru),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests_name("kvblocks", tests, NULL, NULL);
}
