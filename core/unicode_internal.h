/* unicode_internal.h — the generated Unicode tables (core/unicode_data.c,
 * written by core/unicode_data.py). Only core/unicode.c reads them. */
#ifndef MOEGATE_CORE_UNICODE_INTERNAL_H
#define MOEGATE_CORE_UNICODE_INTERNAL_H

#include <stdint.h>

typedef struct {
    uint32_t first, last; /* inclusive */
    uint8_t ccc;          /* canonical combining class, never 0 here */
} unicode_ccc_range;

typedef struct {
    uint32_t cp;  /* code point with a canonical decomposition */
    uint16_t off; /* its full decomposition: unicode_decomp_data[off..off+len) */
    uint8_t len;
} unicode_decomp;

typedef struct {
    uint32_t first, second, composite; /* sorted by (first, second) */
} unicode_comp;

typedef struct {
    uint32_t first, last; /* inclusive */
} unicode_range;

extern const char unicode_data_version[];
extern const unicode_ccc_range unicode_ccc_ranges[];
extern const int unicode_ccc_count;
extern const unicode_decomp unicode_decomps[];
extern const int unicode_decomp_count;
extern const uint32_t unicode_decomp_data[];
extern const unicode_comp unicode_comps[];
extern const int unicode_comp_count;
extern const unicode_range unicode_nfc_unsafe[];
extern const int unicode_nfc_unsafe_count;

#endif
