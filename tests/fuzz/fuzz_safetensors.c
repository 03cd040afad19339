/* moegate — libFuzzer target for the safetensors reader (adapters/).
 *
 * Each input is opened as a safetensors file from memory. The reader must
 * answer 0, MG_EFORMAT or MG_EUNSUPPORTED, never crash, leak or read out of
 * bounds; a refusal comes with a message starting "safetensors: ". An input
 * that opens must satisfy the documented invariants: tensors in ascending
 * offset order tiling the data exactly, each one's bytes inside the input
 * and equal to its shape times its dtype size, every name found again by
 * safetensors_find; every data byte is read once (ASan sees overreads).
 *
 *   make fuzz && build/fuzz/fuzz_safetensors -max_total_time=60 tests/fuzz/corpus/fuzz_safetensors
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/safetensors.h"
#include "core/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *copy = malloc(size ? size : 1); /* exactly sized: ASan sees overreads */
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    safetensors *st = NULL;
    char err[512] = "";
    int rc = safetensors_open_memory(&st, copy, size, "fuzz", err, sizeof err);
    if (rc) {
        if (st || (rc != MG_EFORMAT && rc != MG_EUNSUPPORTED) || strncmp(err, "safetensors: fuzz: ", 19))
            __builtin_trap();
        free(copy);
        return 0;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | copy[i];
    const unsigned char *base = copy + 8 + hlen;
    uint64_t at = 0;
    unsigned sum = 0;
    for (int64_t i = 0; i < safetensors_count(st); i++) {
        const safetensors_tensor *t = safetensors_at(st, i);
        uint64_t count = 1;
        for (int d = 0; d < t->n_dims; d++)
            count *= (uint64_t)t->shape[d];
        if (t->begin != at || t->end < t->begin || t->nbytes != t->end - t->begin ||
            count * safetensors_type_size(t->type) != t->nbytes || (const unsigned char *)t->data != base + t->begin ||
            safetensors_find(st, t->name) != t)
            __builtin_trap();
        for (size_t k = 0; k < t->nbytes; k++)
            sum += ((const unsigned char *)t->data)[k];
        at = t->end;
    }
    if (8 + hlen + at != size || safetensors_at(st, safetensors_count(st)))
        __builtin_trap();
    safetensors_metadata(st, "format");
    safetensors_close(st);
    free(copy);
    return (int)(sum & 0);
}
