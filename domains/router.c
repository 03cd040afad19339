/* moegate domains — the `model: "auto"` router.
 *
 * Multinomial naive Bayes over hashed features, one class per domain pack
 * plus one for out-of-domain requests (the base model answers those):
 *
 *   features  the text is NFC-normalised, lower-cased (ASCII and fullwidth
 *             ASCII), digits folded to '0', everything that is not a letter,
 *             digit or CJK character becomes one space; then every character
 *             1-, 2- and 3-gram of code points (with a space at each end),
 *             plus each Latin word whole, is hashed (FNV-1a, seeded by the
 *             n-gram order) into ROUTER_BUCKETS buckets. A feature counts
 *             once per prompt (Bernoulli-style counts suit short prompts).
 *   training  per class, counts + alpha (Laplace) over the buckets, as log
 *             probabilities; uniform class prior, so an unbalanced example
 *             set does not tilt the router.
 *   score     the classes' log-likelihoods are divided by sqrt(number of
 *             features) (length-normalised, so a long prompt is not
 *             over-confident) and turned into probabilities with a softmax;
 *             the most probable class is `best` and its probability the
 *             score. A domain wins only when its score reaches the threshold.
 *
 * Everything is integer hashing and float sums in a fixed order: the same
 * packs give the same model and answers everywhere. Memory: classes x
 * ROUTER_BUCKETS floats (4 classes: 2 MiB). The model is read-only after
 * training; classify allocates its scratch (the NFC copy, code points and
 * features: about 5 bytes per input byte, capped) per call.
 */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/unicode.h"
#include "domains/domain.h"

#define ROUTER_BUCKETS     (1u << 17)
#define ROUTER_ALPHA       0.01  /* Laplace smoothing; small: a prompt has few features */
#define ROUTER_MAX_TEXT    16384 /* code points looked at per prompt */
#define ROUTER_MAX_CLASSES 257   /* the loader's 256 packs + out-of-domain */

struct domain_router {
    int n_classes; /* packs + 1; the last is out-of-domain */
    double threshold;
    float *logp; /* [n_classes][ROUTER_BUCKETS] */
};

/* ---- features ------------------------------------------------------------------ */

static uint32_t fold(uint32_t cp)
{
    if (cp >= 0xFF01 && cp <= 0xFF5E) /* fullwidth ASCII */
        cp -= 0xFEE0;
    if (cp < 128) {
        if (cp >= 'A' && cp <= 'Z')
            return cp + 32;
        if (cp >= '0' && cp <= '9')
            return '0';
        if ((cp >= 'a' && cp <= 'z'))
            return cp;
        return ' ';
    }
    if ((cp >= 0xC0 && cp <= 0xDE && cp != 0xD7)) /* Latin-1 capitals */
        return cp + 32;
    if ((cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFF00 && cp <= 0xFFEF) ||
        (cp >= 0x2000 && cp <= 0x206F) || cp == 0xFFFD || cp == 0xA0)
        return ' '; /* CJK and general punctuation, replacement character */
    return cp;
}

static uint32_t fnv(uint32_t h, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        h ^= (v >> (8 * i)) & 0xFF;
        h *= 16777619u;
    }
    return h;
}

/* Writes the text's feature buckets into feats (deduplicated later by the
 * caller where needed); returns how many. cps is scratch of
 * ROUTER_MAX_TEXT + 2 code points; feats holds 4 * (ROUTER_MAX_TEXT + 2). */
static int features(const char *text, size_t len, uint32_t *cps, uint32_t *feats)
{
    char *nfc = NULL;
    size_t nlen = 0;
    const char *s = text;
    if (unicode_nfc(text, len, &nfc, &nlen) == 0) {
        s = nfc;
        len = nlen;
    }
    int n = 0;
    cps[n++] = ' ';
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < len && n < ROUTER_MAX_TEXT + 1;) {
        uint32_t cp;
        i += unicode_utf8_decode(u + i, len - i, &cp);
        cp = fold(cp);
        if (cp == ' ' && cps[n - 1] == ' ')
            continue;
        cps[n++] = cp;
    }
    free(nfc);
    if (cps[n - 1] != ' ')
        cps[n++] = ' ';
    int nf = 0;
    for (int i = 0; i < n; i++) {
        uint32_t h = 2166136261u;
        for (int k = 0; k < 3 && i + k < n; k++) {
            h = fnv(h, cps[i + k]);
            if (k == 0 && cps[i] == ' ')
                continue; /* a lone space says nothing */
            feats[nf++] = fnv(h, 0x9E3779B9u + (uint32_t)k) % ROUTER_BUCKETS;
        }
    }
    /* whole Latin words */
    for (int i = 0; i < n;) {
        if (cps[i] < 'a' || cps[i] > 'z') {
            i++;
            continue;
        }
        uint32_t h = 0x811C9DC5u ^ 0x5bd1e995u;
        int j = i;
        while (j < n && cps[j] >= 'a' && cps[j] <= 'z')
            h = fnv(h, cps[j++]);
        if (j - i >= 2)
            feats[nf++] = fnv(h, 0xABCDu) % ROUTER_BUCKETS;
        i = j;
    }
    return nf;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorted, distinct buckets of text; returns the count. */
static int distinct_features(const char *text, size_t len, uint32_t *cps, uint32_t *feats)
{
    int nf = features(text, len, cps, feats);
    qsort(feats, (size_t)nf, sizeof *feats, u32_cmp);
    int m = 0;
    for (int i = 0; i < nf; i++)
        if (m == 0 || feats[m - 1] != feats[i])
            feats[m++] = feats[i];
    return m;
}

/* ---- training ------------------------------------------------------------------ */

typedef struct scratch {
    uint32_t *cps, *feats;
} scratch;

static int scratch_init(scratch *sc)
{
    sc->cps = malloc(sizeof *sc->cps * (ROUTER_MAX_TEXT + 2));
    sc->feats = malloc(sizeof *sc->feats * 4 * (ROUTER_MAX_TEXT + 2));
    return sc->cps && sc->feats ? 0 : MG_ENOMEM;
}

static void scratch_free(scratch *sc)
{
    free(sc->cps);
    free(sc->feats);
}

static void count(float *row, scratch *sc, const char *text, size_t len)
{
    int m = distinct_features(text, len, sc->cps, sc->feats);
    for (int i = 0; i < m; i++)
        row[sc->feats[i]] += 1.0f;
}

int domain_router_train(domain_router **out, const domain_set *s, const char *ood_path,
                        const domain_router_opts *opts, char *err, size_t errlen)
{
    if (!out || !s || domain_set_count(s) == 0) {
        mg_err_set(err, errlen, "router: no domain packs to train on");
        return MG_EINVAL;
    }
    int np = domain_set_count(s);
    if (np > ROUTER_MAX_CLASSES - 1) {
        mg_err_set(err, errlen, "router: more than %d domain packs", ROUTER_MAX_CLASSES - 1);
        return MG_EINVAL;
    }
    domain_router *r = calloc(1, sizeof *r);
    scratch sc = {0};
    if (!r)
        return MG_ENOMEM;
    r->n_classes = np + 1;
    r->threshold = opts && opts->threshold > 0 ? opts->threshold : DOMAIN_ROUTER_THRESHOLD;
    r->logp = calloc((size_t)r->n_classes * ROUTER_BUCKETS, sizeof *r->logp);
    if (!r->logp || scratch_init(&sc) != 0)
        goto oom;
    for (int c = 0; c < np; c++) {
        const domain_pack *p = domain_set_get(s, c);
        for (int i = 0; i < p->n_examples; i++)
            count(r->logp + (size_t)c * ROUTER_BUCKETS, &sc, p->examples[i],
                  strlen(p->examples[i]));
    }
    if (ood_path) {
        FILE *f = fopen(ood_path, "rb");
        if (!f) {
            mg_err_set(err, errlen, "router: cannot read %s", ood_path);
            scratch_free(&sc);
            domain_router_free(r);
            return MG_EIO;
        }
        char line[8192];
        while (fgets(line, sizeof line, f)) {
            size_t l = strlen(line);
            while (l && isspace((unsigned char)line[l - 1]))
                line[--l] = 0;
            size_t b = 0;
            while (b < l && isspace((unsigned char)line[b]))
                b++;
            if (b == l || line[b] == '#')
                continue;
            count(r->logp + (size_t)np * ROUTER_BUCKETS, &sc, line + b, l - b);
        }
        fclose(f);
    }
    for (int c = 0; c < r->n_classes; c++) {
        float *row = r->logp + (size_t)c * ROUTER_BUCKETS;
        double total = 0;
        for (uint32_t h = 0; h < ROUTER_BUCKETS; h++)
            total += row[h];
        double denom = log(total + ROUTER_ALPHA * (double)ROUTER_BUCKETS);
        for (uint32_t h = 0; h < ROUTER_BUCKETS; h++)
            row[h] = (float)(log((double)row[h] + ROUTER_ALPHA) - denom);
    }
    scratch_free(&sc);
    *out = r;
    return 0;
oom:
    scratch_free(&sc);
    domain_router_free(r);
    mg_err_set(err, errlen, "router: out of memory");
    return MG_ENOMEM;
}

void domain_router_free(domain_router *r)
{
    if (!r)
        return;
    free(r->logp);
    free(r);
}

/* ---- classification ------------------------------------------------------------- */

int domain_router_classify(const domain_router *r, const char *text, size_t len, domain_route *out)
{
    if (!r || !out || (!text && len))
        return MG_EINVAL;
    scratch sc;
    if (scratch_init(&sc) != 0) {
        scratch_free(&sc);
        return MG_ENOMEM;
    }
    int m = distinct_features(text ? text : "", len, sc.cps, sc.feats);
    double ll[ROUTER_MAX_CLASSES];
    int nc = r->n_classes;
    double best = -INFINITY;
    int bi = nc - 1;
    for (int c = 0; c < nc; c++) {
        const float *row = r->logp + (size_t)c * ROUTER_BUCKETS;
        double sum = 0;
        for (int i = 0; i < m; i++)
            sum += row[sc.feats[i]];
        ll[c] = m ? sum / sqrt((double)m) : 0;
        if (ll[c] > best) {
            best = ll[c];
            bi = c;
        }
    }
    double z = 0;
    for (int c = 0; c < nc; c++)
        z += exp(ll[c] - best);
    scratch_free(&sc);
    out->score = m ? 1.0 / z : 0.0;
    out->best = bi == nc - 1 ? -1 : bi;
    out->domain = out->best >= 0 && out->score >= r->threshold ? out->best : -1;
    return 0;
}
