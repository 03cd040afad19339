/* moegate — UTF-8 and Unicode normalisation, for the tokenizer and anyone
 * who handles text from outside.
 *
 * Invalid UTF-8 is never rejected silently nor passed through: decoding
 * follows the WHATWG Encoding Standard's UTF-8 decoder, which replaces each
 * maximal invalid subpart with U+FFFD. That is what browsers and Node.js do
 * with bytes that are not UTF-8, so a tokenizer built on it agrees with the
 * JS reference tokenizers on any byte string.
 *
 * NFC follows UAX #15 with the tables in core/unicode_data.c (generated from
 * the Unicode Character Database by core/unicode_data.py).
 *
 * Thread safety: all functions are pure.
 */
#ifndef MOEGATE_CORE_UNICODE_H
#define MOEGATE_CORE_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UNICODE_REPLACEMENT 0xFFFDu

/* Decodes the code point at s[0..n) (n >= 1) into *cp and returns the bytes
 * it used (1..4). An invalid or truncated sequence gives U+FFFD and consumes
 * its maximal subpart (at least one byte). */
size_t unicode_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);

/* Writes cp (<= 0x10FFFF, not a surrogate) as UTF-8; returns 1..4. */
int unicode_utf8_encode(uint32_t cp, char out[4]);

/* True when s[0..n) is valid UTF-8 (no surrogates, no overlongs). */
bool unicode_utf8_valid(const char *s, size_t n);

/* Length of the longest prefix of s[0..n) that does not end inside an
 * incomplete but so far valid UTF-8 sequence: what a streaming decoder may
 * emit now, holding back the rest until more bytes arrive. */
size_t unicode_utf8_complete_prefix(const char *s, size_t n);

/* Canonical combining class of cp (0 for starters). */
int unicode_ccc(uint32_t cp);

/* True when NFC is sure to leave valid UTF-8 text s[0..n) unchanged. */
bool unicode_nfc_quick(const char *s, size_t n);

/* NFC of s[0..n), which may be invalid UTF-8 (repaired as above first).
 * *out is malloc'd (free it) and NUL-terminated; *outlen excludes the NUL.
 * Returns 0 or MG_ENOMEM. */
int unicode_nfc(const char *s, size_t n, char **out, size_t *outlen);

/* The Unicode version of the tables, e.g. "14.0.0". */
const char *unicode_version(void);

#endif
