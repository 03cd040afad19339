/* moegate — token sampler (see sampler.h for the order of operations).
 *
 * The random generator is xoshiro256** seeded through splitmix64 (Blackman
 * & Vigna), private to each sampler. Scratch for candidate sorting is
 * allocated once at create for the whole vocabulary.
 */
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"

typedef struct cand {
    int32_t id;
    float v;
} cand;

struct sampler {
    sampler_params p;
    int64_t n_vocab;
    uint64_t rng[4];
    cand *c;        /* [n_vocab] candidates */
    int32_t *count; /* [n_vocab] occurrences in the penalty window */
};

sampler_params sampler_defaults(void)
{
    sampler_params p = {0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0.0f, 0.0f, 0};
    return p;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* uniform double in [0, 1) with 53 random bits */
static double next_unit(uint64_t s[4])
{
    return (double)(next_u64(s) >> 11) * 0x1.0p-53;
}

int sampler_create(sampler **out, int64_t n_vocab, const sampler_params *p, char *err,
                   size_t errlen)
{
    const char *bad = NULL;
    if (n_vocab <= 0)
        bad = "n_vocab";
    else if (!(p->temperature >= 0 && p->temperature <= 100))
        bad = "temperature (must be in [0, 100])";
    else if (!(p->top_p > 0 && p->top_p <= 1))
        bad = "top_p (must be in (0, 1])";
    else if (!(p->min_p >= 0 && p->min_p <= 1))
        bad = "min_p (must be in [0, 1])";
    else if (!(p->repeat_penalty > 0 && isfinite(p->repeat_penalty)))
        bad = "repeat_penalty (must be > 0)";
    else if (!(fabsf(p->presence_penalty) <= 100) || !(fabsf(p->frequency_penalty) <= 100))
        bad = "presence/frequency penalty (must be in [-100, 100])";
    else if (p->repeat_penalty > 100)
        bad = "repeat_penalty (must be <= 100)";
    else if (p->top_k < 0)
        bad = "top_k (must be >= 0)";
    else if (p->repeat_last_n < -1)
        bad = "repeat_last_n (must be >= -1)";
    if (bad) {
        mg_err_set(err, errlen, "sampler: bad %s", bad);
        return MG_EINVAL;
    }
    sampler *s = calloc(1, sizeof *s);
    if (!s)
        goto nomem;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = malloc(sizeof(cand) * (size_t)n_vocab);
    s->count = calloc((size_t)n_vocab, sizeof(int32_t));
    if (!s->c || !s->count)
        goto nomem;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return MG_OK;
nomem:
    sampler_free(s);
    mg_err_set(err, errlen, "sampler: out of memory");
    return MG_ENOMEM;
}

void sampler_free(sampler *s)
{
    if (!s)
        return;
    free(s->c);
    free(s->count);
    free(s);
}

static void apply_penalties(sampler *s, float *logits, const int32_t *hist, int n_hist)
{
    const sampler_params *p = &s->p;
    bool rep = p->repeat_penalty != 1.0f, pres = p->presence_penalty != 0.0f,
         freq = p->frequency_penalty != 0.0f;
    if (!(rep || pres || freq) || p->repeat_last_n == 0 || n_hist <= 0)
        return;
    int start = p->repeat_last_n < 0 || p->repeat_last_n >= n_hist ? 0 : n_hist - p->repeat_last_n;
    for (int i = start; i < n_hist; i++)
        if (hist[i] >= 0 && hist[i] < s->n_vocab)
            s->count[hist[i]]++;
    for (int i = start; i < n_hist; i++) {
        int32_t id = hist[i];
        if (id < 0 || id >= s->n_vocab || s->count[id] == 0)
            continue;
        float *l = &logits[id];
        if (rep)
            *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        *l -= (float)s->count[id] * p->frequency_penalty + p->presence_penalty;
        s->count[id] = 0; /* once per distinct id; also resets for next call */
    }
}

static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, int n_history)
{
    const sampler_params *p = &s->p;
    apply_penalties(s, logits, history, n_history);
    /* after the penalties, which could push a huge logit past the float
     * range: nothing non-finite reaches the softmax */
    for (int64_t i = 0; i < s->n_vocab; i++)
        if (!isfinite(logits[i]))
            logits[i] = -INFINITY;
    int32_t best = 0;
    for (int64_t i = 1; i < s->n_vocab; i++)
        if (logits[i] > logits[best])
            best = (int32_t)i;
    if (p->temperature <= 0 || logits[best] == -INFINITY)
        return best;

    if ((p->top_k <= 0 || p->top_k >= s->n_vocab) && p->top_p >= 1.0f && p->min_p <= 0) {
        /* nothing truncates the distribution (OpenAI's defaults): sample
         * the full softmax in id order, no sorting */
        double sum = 0, mx = logits[best];
        for (int64_t i = 0; i < s->n_vocab; i++) {
            double e = logits[i] == -INFINITY ? 0 : exp(((double)logits[i] - mx) / p->temperature);
            logits[i] = (float)e;
            sum += e;
        }
        double r = next_unit(s->rng) * sum, acc = 0;
        for (int64_t i = 0; i < s->n_vocab; i++) {
            acc += logits[i];
            if (r < acc && logits[i] > 0)
                return (int32_t)i;
        }
        return best;
    }
    /* candidates: logits within 40 temperatures of the best (the others
     * have probability below e^-40 relative to it, far under float
     * resolution), then top-k via a bounded min-heap, then sorted. */
    double floor_v = (double)logits[best] - 40.0 * p->temperature;
    int64_t n = 0, k = p->top_k > 0 ? p->top_k : s->n_vocab;
    for (int64_t i = 0; i < s->n_vocab; i++) {
        if (logits[i] < floor_v)
            continue;
        cand c = {(int32_t)i, logits[i]};
        if (n < k) {
            /* sift up into the min-heap (worst at the root) */
            int64_t j = n++;
            while (j > 0 && cmp_cand(&s->c[(j - 1) / 2], &c) < 0) {
                s->c[j] = s->c[(j - 1) / 2];
                j = (j - 1) / 2;
            }
            s->c[j] = c;
        } else if (cmp_cand(&c, &s->c[0]) < 0) {
            /* better than the worst kept: replace the root, sift down */
            int64_t j = 0;
            for (;;) {
                int64_t l = 2 * j + 1, r = l + 1, w = j;
                const cand *wc = &c;
                if (l < n && cmp_cand(&s->c[l], wc) > 0)
                    w = l, wc = &s->c[l];
                if (r < n && cmp_cand(&s->c[r], wc) > 0)
                    w = r;
                if (w == j)
                    break;
                s->c[j] = s->c[w];
                j = w;
            }
            s->c[j] = c;
        }
    }
    qsort(s->c, (size_t)n, sizeof(cand), cmp_cand);
    /* softmax with temperature (in double) */
    double mx = s->c[0].v, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = exp(((double)s->c[i].v - mx) / p->temperature);
        s->c[i].v = (float)e;
        sum += e;
    }
    /* top-p: smallest prefix whose mass reaches top_p */
    if (p->top_p < 1.0f) {
        double acc = 0;
        for (int64_t i = 0; i < n; i++) {
            acc += s->c[i].v / sum;
            if (acc >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    /* min-p: drop candidates below min_p * p_max */
    if (p->min_p > 0) {
        float thr = p->min_p * s->c[0].v;
        int64_t keep = 1;
        while (keep < n && s->c[keep].v >= thr)
            keep++;
        n = keep;
    }
    sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += s->c[i].v;
    double r = next_unit(s->rng) * sum, acc = 0;
    for (int64_t i = 0; i < n; i++) {
        acc += s->c[i].v;
        if (r < acc)
            return s->c[i].id;
    }
    return s->c[n - 1].id;
}
