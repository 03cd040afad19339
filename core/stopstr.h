/* moegate — stop strings, matched on decoded text across token boundaries.
 *
 * A generation ends when its text contains one of the request's stop
 * strings; the stop string itself and everything after it are never sent.
 * Text arrives in pieces (one token's text at a time) and a stop string may
 * straddle them, so the matcher holds back the end of the text that could
 * still grow into a stop string, and releases everything before it.
 * Feed it the output of a tokenizer_stream (whole UTF-8 characters): what it
 * releases is then whole characters too. Generation halts at the first feed
 * that completes a stop string; the text is cut before the earliest-starting
 * stop string complete at that point (several may complete in one token).
 *
 * Thread safety: one matcher per sequence, used by one thread.
 */
#ifndef MOEGATE_CORE_STOPSTR_H
#define MOEGATE_CORE_STOPSTR_H

#include <stdbool.h>
#include <stddef.h>

typedef struct stop_matcher stop_matcher;

enum { STOP_MAX_STRINGS = 16, STOP_MAX_BYTES = 256 };

/* Up to STOP_MAX_STRINGS non-empty strings of at most STOP_MAX_BYTES bytes
 * each (OpenAI allows 4); copied. MG_EINVAL with a message naming the
 * offending string's index otherwise. */
int stop_matcher_create(stop_matcher **out, const char *const *stops, size_t n_stops, char *err, size_t errlen);
void stop_matcher_free(stop_matcher *m); /* accepts NULL */

/* Feeds text[0..n). Writes what may be sent now to out (cap must be at least
 * n + STOP_MAX_BYTES) and returns its length; *stopped is set when a stop
 * string was found: out then ends just before it, and the generation is
 * over (later feeds return 0). Returns -1 when cap is too small. */
long stop_matcher_feed(stop_matcher *m, const char *text, size_t n, char *out, size_t cap, bool *stopped);

/* End of generation without a stop string: releases what was held back. */
long stop_matcher_flush(stop_matcher *m, char *out, size_t cap);

#endif
