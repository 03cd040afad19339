/* moegate — token sampler: greedy, temperature, top-k, top-p, min-p and
 * repetition/presence/frequency penalties, with a seeded generator so that a
 * run with the same seed and inputs gives the same tokens.
 *
 * Order of operations (each step only when enabled):
 *   1. penalties over the last repeat_last_n tokens of the history:
 *      repetition (CTRL paper: divide positive logits, multiply negative
 *      ones), then presence and frequency (OpenAI's definition);
 *   2. temperature <= 0: argmax (ties to the lowest id), done;
 *   3. top-k, softmax of logits / temperature, top-p (smallest set whose
 *      mass reaches p), min-p (drop p_i < min_p * p_max), renormalise, draw.
 *
 * Thread safety: a sampler holds its own state; one thread at a time.
 */
#ifndef MOEGATE_CORE_SAMPLER_H
#define MOEGATE_CORE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct sampler_params {
    float temperature;       /* <= 0: greedy */
    int top_k;               /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off */
    int repeat_last_n;       /* window for penalties; 0: off; -1: whole history */
    float presence_penalty;  /* 0: off */
    float frequency_penalty; /* 0: off */
    uint64_t seed;
} sampler_params;

/* Defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat 1.0
 * over 64 tokens, no presence/frequency penalty, seed 0. */
sampler_params sampler_defaults(void);

typedef struct sampler sampler;

/* Validates p (names the bad field: temperature in [0, 100], top_p in
 * (0, 1], min_p in [0, 1], presence/frequency penalties in [-100, 100],
 * repeat_penalty in (0, 100]). */
int sampler_create(sampler **out, int64_t n_vocab, const sampler_params *p, char *err,
                   size_t errlen);
void sampler_free(sampler *s); /* accepts NULL */

/* Picks the next token from logits[n_vocab] (modified in place) given the
 * tokens so far. Never fails: non-finite logits are treated as -inf, and if
 * nothing is left the argmax is returned. */
int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, int n_history);

#endif
