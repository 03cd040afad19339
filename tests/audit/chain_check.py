#!/usr/bin/env python3
"""Independent check of the audit hash chain, written from the format in
audit/audit_internal.h (not from the C code): reads every row of
audit_events through psql and recomputes

    hash = SHA-256(prev_hash || u32 len || chain_id || i64 seq || encoding)

where encoding is u8 version 1 then each field big-endian (text/bytes:
u32 length or 0xFFFFFFFF for NULL, then bytes; i64; i32; u8 mode).
Prints "chain ok: N records" or the first mismatch; exit 1 on mismatch.

    chain_check.py PSQL PORT DBNAME
"""
import hashlib
import struct
import subprocess
import sys

FIELDS = [  # (column, type) in encoding order
    ("request_id", "text"), ("received_at", "time"), ("finished_at", "time"),
    ("tenant", "text"), ("key_id", "text"), ("client_addr", "text"),
    ("client_subject", "text"), ("endpoint", "text"), ("domain", "text"),
    ("adapter_name", "text"), ("adapter_sha256", "text"), ("model_sha256", "text"),
    ("sampling", "text"), ("prompt_tokens", "i64"), ("completion_tokens", "i64"),
    ("status", "i32"), ("error", "text"), ("latency_us", "i64"), ("redaction", "text"),
    ("payload_mode", "mode"), ("payload_key_id", "text"), ("prompt", "bytes"),
    ("completion", "bytes"),
]
MODES = {"none": 0, "clear": 1, "sha256": 2, "aes-256-gcm": 3}


def column_sql(name, kind):
    if kind == "text":
        return f"encode(convert_to({name}, 'UTF8'), 'hex')"
    if kind == "bytes":
        return f"encode({name}, 'hex')"
    if kind == "time":
        return f"(extract(epoch FROM {name}) * 1000000)::bigint"
    return name


def main():
    psql, port, db = sys.argv[1:4]
    cols = ["chain_id", "seq"] + [column_sql(n, k) for n, k in FIELDS] + [
        "encode(prev_hash, 'hex')", "encode(hash, 'hex')"]
    sql = (f"COPY (SELECT {', '.join(cols)} FROM audit_events ORDER BY chain_id, seq) "
           "TO STDOUT WITH (FORMAT csv, NULL '\\N')")
    out = subprocess.run([psql, "-X", "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                          "-d", db, "-c", sql], check=True, capture_output=True, text=True).stdout
    last = {}
    n = 0
    for line in out.splitlines():
        v = line.split(",")
        chain, seq = v[0], int(v[1])
        enc = bytearray([1])
        for (name, kind), val in zip(FIELDS, v[2:]):
            if kind in ("text", "bytes"):
                if val == "\\N":
                    enc += struct.pack(">I", 0xFFFFFFFF)
                else:
                    b = bytes.fromhex(val)
                    enc += struct.pack(">I", len(b)) + b
            elif kind in ("i64", "time"):
                enc += struct.pack(">q", int(val))
            elif kind == "i32":
                enc += struct.pack(">i", int(val))
            else:
                enc += bytes([MODES[val]])
        prev, stored = bytes.fromhex(v[-2]), bytes.fromhex(v[-1])
        c = chain.encode()
        h = hashlib.sha256(prev + struct.pack(">I", len(c)) + c + struct.pack(">q", seq)
                           + bytes(enc)).digest()
        if h != stored:
            print(f"chain {chain} seq {seq}: recomputed hash differs")
            return 1
        if chain in last and (last[chain][0] + 1 != seq or last[chain][1] != prev):
            print(f"chain {chain} seq {seq}: does not link to seq {last[chain][0]}")
            return 1
        if chain not in last and seq == 1 and prev != bytes(32):
            print(f"chain {chain}: first record's prev_hash is not zero")
            return 1
        last[chain] = (seq, stored)
        n += 1
    print(f"chain ok: {n} records in {len(last)} chains")
    return 0


if __name__ == "__main__":
    sys.exit(main())
