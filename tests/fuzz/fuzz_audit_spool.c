/* moegate — libFuzzer target for the audit spool and record decoding.
 *
 * The input is a spool file image. audit_spool_scan must accept it (then
 * every byte before good_len is whole frames, the rest a torn tail) or
 * refuse it with MG_EFORMAT and an "audit: " message. Each accepted
 * frame's payload goes through audit_rec_decode; a record that decodes must
 * re-encode to exactly the same bytes (the canonical form verify rebuilds
 * from database rows) and hash without error. The whole input is also
 * decoded as one bare record and parsed as one checkpoint line. Any
 * inconsistency traps, which libFuzzer reports as a crash.
 *
 *   make fuzz && build/fuzz/fuzz_audit_spool -max_total_time=60 tests/fuzz/corpus/fuzz_audit_spool
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void check_record(const uint8_t *p, size_t n)
{
    audit_rec r;
    char err[256] = "";
    int rc = audit_rec_decode(&r, p, n, err, sizeof err);
    if (rc) {
        if (rc != MG_EFORMAT || strncmp(err, "audit: ", 7))
            __builtin_trap();
        return;
    }
    audit_buf b = {0};
    audit_rec_encode(&r, &b);
    if (b.oom) {
        audit_buf_free(&b);
        return;
    }
    if (b.len != n || memcmp(b.p, p, n))
        __builtin_trap();
    uint8_t prev[AUDIT_HASH_LEN] = {0}, h[AUDIT_HASH_LEN];
    if (audit_chain_hash(h, prev, "fuzz", 1, b.p, b.len))
        __builtin_trap();
    audit_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees overreads */
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    size_t good = 0;
    uint64_t n = 0;
    char err[256] = "";
    int rc = audit_spool_scan(copy, size, &good, &n, err, sizeof err);
    if (rc == 0) {
        if (good > size || (good && good < AUDIT_SPOOL_HEADER_LEN))
            __builtin_trap();
        size_t pos = good ? AUDIT_SPOOL_HEADER_LEN : 0;
        uint64_t seen = 0;
        while (pos < good) {
            if (good - pos < 16)
                __builtin_trap();
            uint32_t len = rd32(copy + pos + 4);
            if (len > good - pos - 16)
                __builtin_trap();
            check_record(copy + pos + 8, len);
            pos += 16 + (size_t)len;
            seen++;
        }
        if (pos != good || seen != n)
            __builtin_trap();
    } else if (rc != MG_EFORMAT || strncmp(err, "audit: ", 7)) {
        __builtin_trap();
    }
    check_record(copy, size);
    char *line = malloc(size + 1);
    if (line) {
        memcpy(line, data, size);
        line[size] = 0;
        audit_ckpt c;
        if (audit_ckpt_parse(&c, line, err, sizeof err) == 0)
            (void)audit_ckpt_verify(&c);
        free(line);
    }
    free(copy);
    return 0;
}
