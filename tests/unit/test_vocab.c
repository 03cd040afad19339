/* Token id -> bytes for the two vocabulary kinds, on the real vocabularies
 * of the fixtures: GPT-2 byte-level pieces ("Ġ" is a space, "Ċ" a newline,
 * every byte reachable), SentencePiece pieces ("▁" is a space, <0xNN> byte
 * tokens), control tokens hidden unless asked for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/gguf.h"
#include "core/vocab.h"

static gguf *open_fixture(const char *name)
{
    const char *dir = getenv("MOEGATE_FIXTURES");
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "build/fixtures", name);
    gguf *g = NULL;
    if (gguf_open(&g, path, err, sizeof err))
        fail_msg("%s", err);
    return g;
}

/* id of the token whose stored piece is exactly `piece`, or -1 */
static int32_t find_piece(const gguf *g, const char *piece)
{
    enum gguf_type et;
    uint64_t n;
    const void *raw;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &raw), 0);
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        assert_int_equal(gguf_arr_str(g, "tokenizer.ggml.tokens", i, &s), 0);
        if (s.len == strlen(piece) && !memcmp(s.ptr, piece, s.len))
            return (int32_t)i;
    }
    return -1;
}

static void expect_decode(const vocab *v, int32_t id, bool ctl, const char *want, size_t wlen)
{
    char buf[64];
    assert_true(id >= 0);
    int n = vocab_decode(v, id, ctl, buf, sizeof buf);
    assert_int_equal(n, (int)wlen);
    assert_memory_equal(buf, want, wlen);
}

static void test_gpt2(void **st)
{
    (void)st;
    gguf *g = open_fixture("qwen3moe-tiny-q8_0.gguf");
    vocab *v;
    char err[256];
    assert_int_equal(vocab_open(&v, g, err, sizeof err), 0);
    expect_decode(v, find_piece(g, "\xc4\xa0the"), false, " the", 4); /* Ġthe */
    expect_decode(v, find_piece(g, "\xc4\x8a"), false, "\n", 1);      /* Ċ */
    expect_decode(v, find_piece(g, "hello"), false, "hello", 5);
    /* every single byte has a token, and decodes to exactly that byte */
    int found = 0;
    for (int b = 0; b < 256; b++) {
        /* GPT-2 byte-to-unicode: printable bytes map to themselves */
        bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        if (!self)
            continue;
        char piece[3];
        int len;
        if (b < 128) {
            piece[0] = (char)b, len = 1;
        } else {
            piece[0] = (char)(0xc0 | (b >> 6)), piece[1] = (char)(0x80 | (b & 0x3f)), len = 2;
        }
        piece[len] = 0;
        int32_t id = find_piece(g, piece);
        if (id < 0)
            continue;
        unsigned char want = (unsigned char)b;
        expect_decode(v, id, false, (const char *)&want, 1);
        found++;
    }
    assert_true(found >= 180);
    int32_t end = find_piece(g, "<|im_end|>");
    assert_true(vocab_is_control(v, end));
    expect_decode(v, end, false, "", 0);
    expect_decode(v, end, true, "<|im_end|>", 10);
    char buf[8];
    assert_int_equal(vocab_decode(v, (int32_t)vocab_size(v), false, buf, sizeof buf), -1);
    assert_int_equal(vocab_decode(v, -1, false, buf, sizeof buf), -1);
    vocab_free(v);
    gguf_close(g);
}

static void test_sentencepiece(void **st)
{
    (void)st;
    gguf *g = open_fixture("mixtral-tiny-q8_0.gguf");
    vocab *v;
    char err[256];
    assert_int_equal(vocab_open(&v, g, err, sizeof err), 0);
    expect_decode(v, find_piece(g, "\xe2\x96\x81the"), false, " the", 4); /* ▁the */
    expect_decode(v, find_piece(g, "<0x0A>"), false, "\n", 1);
    expect_decode(v, find_piece(g, "<0xE4>"), false, "\xe4", 1);
    int32_t eos = find_piece(g, "</s>");
    expect_decode(v, eos, false, "", 0);
    vocab_free(v);
    gguf_close(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2),
        cmocka_unit_test(test_sentencepiece),
    };
    return cmocka_run_group_tests_name("vocab", tests, NULL, NULL);
}
