/* Stop strings across token boundaries. Generation halts after the first
 * piece of text that completes a stop string; what was sent must then be
 * exactly the text before the earliest-starting stop string complete at that
 * point, whatever the chunking; without a stop string, released + flushed
 * text is the whole text. Checked on random texts, stops and chunkings
 * against a direct search. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/stopstr.h"

static void test_straddle(void **st)
{
    (void)st;
    const char *stops[] = {"</answer>", "\n\nUser:"};
    stop_matcher *m;
    char err[128], out[512];
    bool stopped;
    assert_int_equal(stop_matcher_create(&m, stops, 2, err, sizeof err), 0);
    assert_int_equal(stop_matcher_feed(m, "hello </ans", 11, out, sizeof out, &stopped), 6);
    assert_false(stopped);
    assert_memory_equal(out, "hello ", 6);
    assert_int_equal(stop_matcher_feed(m, "wer> tail", 9, out, sizeof out, &stopped), 0);
    assert_true(stopped);
    assert_int_equal(stop_matcher_feed(m, "more", 4, out, sizeof out, &stopped), 0);
    assert_true(stopped);
    stop_matcher_free(m);
    /* a held prefix that turns out not to be a stop string is released */
    assert_int_equal(stop_matcher_create(&m, stops, 2, err, sizeof err), 0);
    assert_int_equal(stop_matcher_feed(m, "a\n\nUs", 5, out, sizeof out, &stopped), 1);
    assert_int_equal(stop_matcher_feed(m, "e", 1, out, sizeof out, &stopped), 0); /* still "\n\nUser:"'s start */
    assert_int_equal(stop_matcher_feed(m, "x", 1, out, sizeof out, &stopped), 6);
    assert_memory_equal(out, "\n\nUsex", 6);
    assert_int_equal(stop_matcher_flush(m, out, sizeof out), 0);
    stop_matcher_free(m);
}

static void test_refusals(void **st)
{
    (void)st;
    stop_matcher *m;
    char err[128], big[STOP_MAX_BYTES + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    const char *empty[] = {"ok", ""}, *toolong[] = {big};
    assert_int_equal(stop_matcher_create(&m, empty, 2, err, sizeof err), MG_EINVAL);
    assert_non_null(strstr(err, "stop string 1 is empty"));
    assert_int_equal(stop_matcher_create(&m, toolong, 1, err, sizeof err), MG_EINVAL);
    const char *many[STOP_MAX_STRINGS + 1];
    for (int i = 0; i <= STOP_MAX_STRINGS; i++)
        many[i] = "x";
    assert_int_equal(stop_matcher_create(&m, many, STOP_MAX_STRINGS + 1, err, sizeof err), MG_EINVAL);
    /* no stop strings: everything passes straight through */
    assert_int_equal(stop_matcher_create(&m, NULL, 0, err, sizeof err), 0);
    char out[64];
    bool stopped;
    assert_int_equal(stop_matcher_feed(m, "abc", 3, out, sizeof out, &stopped), 3);
    assert_int_equal(stop_matcher_feed(m, "abc", 3, out, 2, &stopped), -1); /* cap too small */
    stop_matcher_free(m);
}

static void test_random(void **st)
{
    (void)st;
    uint64_t r = 7;
#define RND() (r = r * 6364136223846793005ull + 1442695040888963407ull, (unsigned)(r >> 33))
    for (int iter = 0; iter < 20000; iter++) {
        char text[200], stopbuf[4][8];
        const char *stops[4];
        size_t n = RND() % 150;
        for (size_t i = 0; i < n; i++)
            text[i] = "abc\n"[RND() % 4];
        size_t ns = RND() % 4;
        for (size_t s = 0; s < ns; s++) {
            size_t l = 1 + RND() % 6;
            for (size_t i = 0; i < l; i++)
                stopbuf[s][i] = "abc\n"[RND() % 4];
            stopbuf[s][l] = 0;
            stops[s] = stopbuf[s];
        }
        /* chunk sizes first, so the reference knows where pieces end */
        size_t cuts[200], nc = 0;
        for (size_t pos = 0; pos < n;) {
            size_t k = 1 + RND() % 9;
            if (k > n - pos)
                k = n - pos;
            cuts[nc++] = k;
            pos += k;
        }
        /* expected: at the first piece end e where some stop lies wholly in
         * text[0..e), the earliest start of such a stop */
        size_t first = n;
        size_t e = 0;
        for (size_t c = 0; c < nc && first == n; c++) {
            e += cuts[c];
            for (size_t st_i = 0; st_i < ns; st_i++) {
                size_t l = strlen(stops[st_i]);
                for (size_t i = 0; i + l <= e && i < first; i++)
                    if (!memcmp(text + i, stops[st_i], l)) {
                        first = i;
                        break;
                    }
            }
        }
        stop_matcher *m;
        assert_int_equal(stop_matcher_create(&m, stops, ns, NULL, 0), 0);
        char got[512], out[512];
        size_t g = 0;
        bool stopped = false;
        for (size_t c = 0, pos = 0; c < nc; pos += cuts[c++]) {
            long w = stop_matcher_feed(m, text + pos, cuts[c], out, sizeof out, &stopped);
            assert_true(w >= 0);
            memcpy(got + g, out, (size_t)w);
            g += (size_t)w;
        }
        if (!stopped) {
            long w = stop_matcher_flush(m, out, sizeof out);
            memcpy(got + g, out, (size_t)w);
            g += (size_t)w;
        }
        assert_int_equal(stopped, first < n);
        assert_int_equal(g, first);
        assert_memory_equal(got, text, g);
        stop_matcher_free(m);
    }
#undef RND
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_straddle),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests_name("stopstr", tests, NULL, NULL);
}
