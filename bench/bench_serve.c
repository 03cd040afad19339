/* bench_serve — the serving engine under concurrent load.
 *
 *   bench_serve -m MODEL.gguf [--conc 1,4,8,16] [--prompt 16] [--gen 32]
 *               [--sys 1000] [--question 8] [--reps 3] [--threads N] [--json]
 *
 * 1. Aggregate generation rate at each concurrency c: c requests with
 *    distinct random prompts of --prompt tokens, greedy, --gen tokens each
 *    (end-of-turn ignored), submitted together to one scheduler with c
 *    slots. Rate = tokens generated after every request has its first token
 *    / time from then to the last one's end (the prompt steps excluded), so
 *    it measures decode steps of c sequences. Median over --reps.
 * 2. Time to first token of a --sys-token shared system prompt plus a short
 *    question (--question tokens): cold (nothing cached); then a second
 *    request with the same system prompt and another question (a
 *    prefix-cache hit: only the question is evaluated, the rows it shares
 *    with a cached block being copied); then the first request again
 *    (everything but its last token cached). A fresh system prompt each
 *    rep. Against the decode step time of c = 1 and the engine's own
 *    prefill rate for a prompt of the same length (one model_forward call,
 *    median of --reps, measured first with the model alone).
 *
 * Random prompts use ordinary token ids (not control tokens).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/model.h"
#include "core/serve.h"
#include "core/tokenizer.h"
#define BENCH_PROG "bench_serve"
#include "bench/bench_util.h"

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(void)
{
    return bench_rnd(&rng_state);
}

static int32_t *normal_ids; /* ordinary tokens of the vocabulary */
static int64_t n_normal;

static void random_prompt(int32_t *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = normal_ids[rnd() % (uint64_t)n_normal];
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 256)
            die("bad --conc list");
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int conc[16] = {1, 4, 8, 16}, n_conc = 4, plen = 16, gen = 32, sys_len = 1000, reps = 3, threads = 0, qlen = 8;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v)
            path = argv[++i];
        else if (!strcmp(a, "--conc") && v)
            n_conc = parse_list(argv[++i], conc, 16);
        else if (!strcmp(a, "--prompt") && v)
            plen = atoi(argv[++i]);
        else if (!strcmp(a, "--gen") && v)
            gen = atoi(argv[++i]);
        else if (!strcmp(a, "--sys") && v)
            sys_len = atoi(argv[++i]);
        else if (!strcmp(a, "--question") && v)
            qlen = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && v)
            reps = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--json"))
            json = true;
        else
            die("usage: bench_serve -m MODEL.gguf [--conc 1,4,8,16] [--prompt N] [--gen N] [--sys N] "
                "[--reps N] [--threads N] [--json]");
    }
    if (!path || plen < 1 || gen < 2 || sys_len < 1 || reps < 1 || reps > 50 || qlen < 1)
        die("need -m MODEL, --prompt >= 1, --gen >= 2, --sys >= 1, --reps 1..50");
    char err[512];
    model *m;
    model_opts mo = {.n_threads = threads, .prefault = true};
    if (model_open(&m, path, &mo, err, sizeof err))
        die(err);
    tokenizer *tok;
    if (tokenizer_open_gguf(&tok, model_gguf(m), err, sizeof err))
        die(err);
    const model_info *I = model_get_info(m);
    normal_ids = malloc(sizeof(int32_t) * (size_t)I->n_vocab);
    for (int64_t v = 0; v < I->n_vocab; v++)
        if (tokenizer_token_type(tok, (int32_t)v) == TOKENIZER_TYPE_NORMAL)
            normal_ids[n_normal++] = (int32_t)v;
    if (n_normal < 100)
        die("the vocabulary has too few ordinary tokens");

    /* the engine's own prefill of a prompt as long as section 2's, in one
     * model_forward call (as `moegate bench --pp N` does) */
    double pp[50];
    int total = sys_len + qlen;
    {
        int PP = total;
        model_kv *kv;
        if (model_kv_create(&kv, m, 1, PP, err, sizeof err))
            die(err);
        int32_t *tk = malloc(sizeof(int32_t) * (size_t)PP), *pos = malloc(sizeof(int32_t) * (size_t)PP);
        int32_t *seq = calloc((size_t)PP, sizeof(int32_t));
        uint8_t *want = calloc((size_t)PP, 1);
        want[PP - 1] = 1;
        float *lg = malloc(sizeof(float) * (size_t)I->n_vocab);
        random_prompt(tk, PP);
        for (int i = 0; i < PP; i++)
            pos[i] = i;
        for (int r = 0; r <= reps; r++) {
            model_batch b = {.n = PP, .token = tk, .pos = pos, .seq = seq, .want_logits = want};
            double t0 = bench_now();
            if (model_forward(m, kv, &b, lg, err, sizeof err))
                die(err);
            if (r > 0)
                pp[r - 1] = PP / (bench_now() - t0);
        }
        free(lg);
        free(tk);
        free(pos);
        free(seq);
        free(want);
        model_kv_free(kv);
    }
    double engine_pp = bench_median(pp, reps);

    /* 1. aggregate generation rate by concurrency */
    double agg[16], step_ms1 = 0;
    for (int k = 0; k < n_conc; k++) {
        int c = conc[k];
        serve *s;
        serve_opts so = {.n_slots = c, .n_ctx = plen + gen + 8, .step_tokens = 256 > c * plen ? 256 : c * plen};
        if (serve_open(&s, m, tok, &so, err, sizeof err))
            die(err);
        double rate[50];
        int32_t **prompts = malloc(sizeof *prompts * (size_t)c);
        int *lens = malloc(sizeof *lens * (size_t)c);
        bench_track *tr = malloc(sizeof *tr * (size_t)c);
        for (int i = 0; i < c; i++) {
            prompts[i] = malloc(sizeof(int32_t) * (size_t)plen);
            lens[i] = plen;
        }
        for (int r = 0; r <= reps; r++) { /* the first is a warm-up */
            for (int i = 0; i < c; i++)
                random_prompt(prompts[i], plen);
            bench_generate(s, prompts, lens, c, gen, NULL, tr);
            double t_first = 0, t_end = 0;
            long toks = 0;
            for (int i = 0; i < c; i++) {
                t_first = tr[i].t_first > t_first ? tr[i].t_first : t_first;
                t_end = tr[i].t_end > t_end ? tr[i].t_end : t_end;
            }
            for (int i = 0; i < c; i++) /* tokens after t_first: all but each one's first */
                toks += tr[i].n_tokens - 1;
            if (r > 0)
                rate[r - 1] = (double)toks / (t_end - t_first);
        }
        agg[k] = bench_median(rate, reps);
        if (c == 1)
            step_ms1 = 1000.0 / agg[k];
        for (int i = 0; i < c; i++)
            free(prompts[i]);
        free(prompts);
        free(lens);
        free(tr);
        serve_close(s);
        fprintf(stderr, "bench_serve: %d concurrent: %.2f tok/s\n", c, agg[k]);
    }

    /* 2. time to first token with a shared system prompt */
    double cold[50], hot[50], again[50];
    {
        serve *s;
        serve_opts so = {.n_slots = 2, .n_ctx = total + 8, .step_tokens = 256};
        if (serve_open(&s, m, tok, &so, err, sizeof err))
            die(err);
        int32_t *a = malloc(sizeof(int32_t) * (size_t)total), *b = malloc(sizeof(int32_t) * (size_t)total);
        for (int r = 0; r <= reps; r++) {
            random_prompt(a, total); /* a fresh system prompt: nothing cached */
            memcpy(b, a, sizeof(int32_t) * (size_t)sys_len);
            random_prompt(b + sys_len, qlen);
            int32_t *pa[1] = {a}, *pb[1] = {b};
            int la[1] = {total};
            bench_track tr[1];
            double t0 = bench_now();
            bench_generate(s, pa, la, 1, 2, NULL, tr);
            double c_s = tr[0].t_first - t0;
            t0 = bench_now();
            bench_generate(s, pb, la, 1, 2, NULL, tr);
            double h_s = tr[0].t_first - t0;
            t0 = bench_now();
            bench_generate(s, pa, la, 1, 2, NULL, tr);
            double a_s = tr[0].t_first - t0;
            if (r > 0) {
                cold[r - 1] = c_s * 1000;
                hot[r - 1] = h_s * 1000;
                again[r - 1] = a_s * 1000;
            }
        }
        serve_stats st;
        serve_get_stats(s, &st);
        fprintf(stderr, "bench_serve: prefix cache: %lld of %lld prompt tokens hit\n",
                (long long)st.prefix_hit_tokens, (long long)st.prefix_lookup_tokens);
        free(a);
        free(b);
        serve_close(s);
    }
    double cold_ms = bench_median(cold, reps), hot_ms = bench_median(hot, reps), again_ms = bench_median(again, reps);
    double cold_pp = total / (cold_ms / 1000);

    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    if (json) {
        printf("{\"model\":\"%s\",\"threads\":%d,\"prompt\":%d,\"gen\":%d,\"engine_pp_tok_s\":%.2f,\"conc\":[", name,
               model_n_threads(m), plen, gen, engine_pp);
        for (int k = 0; k < n_conc; k++)
            printf("%s{\"c\":%d,\"tok_s\":%.3f}", k ? "," : "", conc[k], agg[k]);
        printf("],\"sys\":%d,\"ttft_cold_ms\":%.2f,\"ttft_hit_ms\":%.2f,\"ttft_again_ms\":%.2f,\"step_ms\":%.2f}\n",
               total, cold_ms, hot_ms, again_ms, step_ms1);
    } else {
        printf("model %s, %d threads, kernels %s; prompts of %d tokens, %d generated each, median of %d\n\n", name,
               model_n_threads(m), model_isa_name(m), plen, gen, reps);
        printf("| concurrent sequences | aggregate tok/s | per sequence tok/s | x single |\n|---:|---:|---:|---:|\n");
        double base = agg[0];
        for (int k = 0; k < n_conc; k++)
            printf("| %d | %.2f | %.2f | %.2fx |\n", conc[k], agg[k], agg[k] / conc[k], agg[k] / base);
        printf("\n| prompt: %d-token system prompt + %d-token question | time to first token ms | prompt tok/s |\n"
               "|---|---:|---:|\n", sys_len, qlen);
        printf("| cold | %.1f | %.1f |\n", cold_ms, cold_pp);
        printf("| prefix-cache hit, another question | %.1f | |\n", hot_ms);
        printf("| prefix-cache hit, the same prompt again | %.1f | |\n", again_ms);
        printf("\ncold / hit = %.1fx (%.2f decode steps of one sequence, %.1f ms each); cold / same prompt = %.1fx "
               "(%.2f decode steps); cold prompt rate = %.0f%% of the engine's prefill (%.1f tok/s, the same %d "
               "tokens in one forward)\n",
               cold_ms / hot_ms, hot_ms / step_ms1, step_ms1, cold_ms / again_ms, again_ms / step_ms1,
               100 * cold_pp / engine_pp, engine_pp, total);
    }
    free(normal_ids);
    tokenizer_free(tok);
    model_close(m);
    return 0;
}
