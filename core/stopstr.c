/* stopstr.c — stop strings across token boundaries (see stopstr.h).
 *
 * Invariant: held[0..n_held) is the longest suffix of everything fed so far
 * that is a proper prefix of some stop string; everything before it has been
 * released and contains no stop string. So a stop string that completes
 * within new text starts either inside the held part or inside the new text,
 * and searching held + new finds it; the earliest occurrence wins.
 */
#include "core/stopstr.h"

#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

struct stop_matcher {
    char stop[STOP_MAX_STRINGS][STOP_MAX_BYTES];
    size_t len[STOP_MAX_STRINGS];
    size_t n;
    char held[STOP_MAX_BYTES];
    size_t n_held;
    bool done;
};

int stop_matcher_create(stop_matcher **out, const char *const *stops, size_t n_stops, char *err, size_t errlen)
{
    if (n_stops > STOP_MAX_STRINGS) {
        mg_err_set(err, errlen, "stop: %zu stop strings (at most %d)", n_stops, STOP_MAX_STRINGS);
        return MG_EINVAL;
    }
    for (size_t i = 0; i < n_stops; i++) {
        size_t l = stops[i] ? strlen(stops[i]) : 0;
        if (l == 0 || l > STOP_MAX_BYTES) {
            mg_err_set(err, errlen, "stop: stop string %zu is %s (1 to %d bytes)", i, l ? "too long" : "empty",
                       STOP_MAX_BYTES);
            return MG_EINVAL;
        }
    }
    stop_matcher *m = calloc(1, sizeof *m);
    if (!m) {
        mg_err_set(err, errlen, "stop: out of memory");
        return MG_ENOMEM;
    }
    for (size_t i = 0; i < n_stops; i++) {
        m->len[i] = strlen(stops[i]);
        memcpy(m->stop[i], stops[i], m->len[i]);
    }
    m->n = n_stops;
    *out = m;
    return 0;
}

void stop_matcher_free(stop_matcher *m)
{
    free(m);
}

long stop_matcher_feed(stop_matcher *m, const char *text, size_t n, char *out, size_t cap, bool *stopped)
{
    *stopped = m->done;
    if (m->done)
        return 0;
    size_t total = m->n_held + n;
    if (cap < total)
        return -1;
    /* out doubles as the search buffer: held + new */
    memmove(out + m->n_held, text, n);
    memcpy(out, m->held, m->n_held);
    size_t first = total;
    for (size_t i = 0; i < m->n; i++) {
        const char *p = memmem(out, total, m->stop[i], m->len[i]);
        if (p && (size_t)(p - out) < first)
            first = (size_t)(p - out);
    }
    if (first < total) {
        m->done = true;
        m->n_held = 0;
        *stopped = true;
        return (long)first;
    }
    /* hold the longest suffix that is a proper prefix of a stop string */
    size_t keep = 0;
    for (size_t i = 0; i < m->n; i++) {
        size_t k = m->len[i] - 1 < total ? m->len[i] - 1 : total;
        for (; k > keep; k--)
            if (!memcmp(out + total - k, m->stop[i], k))
                break;
        if (k > keep)
            keep = k;
    }
    memcpy(m->held, out + total - keep, keep);
    m->n_held = keep;
    return (long)(total - keep);
}

long stop_matcher_flush(stop_matcher *m, char *out, size_t cap)
{
    if (m->done || cap < m->n_held)
        return m->done ? 0 : -1;
    memcpy(out, m->held, m->n_held);
    long n = (long)m->n_held;
    m->n_held = 0;
    return n;
}
