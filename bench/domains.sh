#!/bin/sh
# bench/domains.sh BUILD — domain packs through the gateway (bench/README.md,
# "Domains"): `moegate serve` over TLS on the bench model
# (bench-qwen3moe-q4_K, Qwen3-30B-A3B's layer shape; build/benchmodels, made
# by tests/fixtures/gen_models.py --bench) with the shipped packs, demo
# adapters (gen_adapters.py --demo, attention only) and the audit in
# PostgreSQL (strict). bench/domains_ttft.py measures time to first token
# (streamed, max_tokens 1) for each domain and language: the first request,
# which evaluates the pack's system prompt, and then new questions, which
# find it in the prefix cache; `model: "auto"` against naming the domain;
# the base model with no system prompt. BENCH_REPS questions per row
# (default 5, medians).
set -eu
BUILD=${1:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MG=$(cd "$BUILD" && pwd)/moegate
MODELS=$ROOT/build/benchmodels
. "$ROOT/tests/audit/pg.sh"
. "$ROOT/tests/gateway/env.sh"
sh tests/fixtures/fetch_tokenizers.sh >/dev/null
"$PYTHON" tests/fixtures/gen_models.py --bench --out "$MODELS" >&2
MODEL=$MODELS/bench-qwen3moe-q4_K.gguf
T=$(mktemp -d /tmp/moegate-bench-dom.XXXXXX)
SPID=
trap 'if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi; pg_cleanup; rm -rf "$T"' EXIT INT TERM

pg_start >/dev/null
gw_audit_db dombench
printf '%s\n' "$DB" >"$T/conn"
chmod 600 "$T/conn"
gw_tls "$T" ec
mkdir -p "$T/spool" "$T/adapters"
"$PYTHON" tests/fixtures/gen_adapters.py --demo --model "$MODEL" --out "$T/adapters" >/dev/null
KEY=mg_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && printf '%s\n' "$KEY" >"$T/key")
HASH=$(printf %s "$KEY" | "$MG" policy hash-key 2>/dev/null)
PORT=$(pg_free_port)
{
    printf 'server:\n  listen: 127.0.0.1:%s\n  tls_cert: server.crt\n  tls_key: server.key\n' "$PORT"
    printf 'model:\n  path: %s\n  context_length: 4096\n  kv_memory: 1GiB\n' "$MODEL"
    printf 'adapters:\n'
    for d in finance medical telecom; do
        printf '  - {name: %s-lora, path: adapters/%s-lora.gguf, sha256: %s}\n' "$d" "$d" \
            "$(sha256sum "$T/adapters/$d-lora.gguf" | cut -d' ' -f1)"
    done
    printf 'domains:\n'
    for d in finance medical telecom; do
        printf '  - {name: %s, pack: %s/domains/%s, adapter: %s-lora}\n' "$d" "$ROOT" "$d" "$d"
    done
    printf 'router: {ood_examples: %s/domains/_router/ood_examples.txt}\n' "$ROOT"
    printf 'content_labels: {provider: bench}\n'
    printf 'tenants:\n  - id: bench\n    api_keys: [{id: k, hash: "%s"}]\n    domains: [finance, medical, telecom]\n' "$HASH"
    printf 'audit: {connection_file: conn, on_failure: spool, spool_dir: spool, durability: strict, payload: hash}\n'
    printf 'logging: {format: json, level: warn, output: gw.log}\n'
} >"$T/policy.yaml"
"$MG" serve --policy "$T/policy.yaml" >"$T/serve.out" 2>&1 &
SPID=$!
gw_wait "https://127.0.0.1:$PORT" "$T/ca.crt" "$SPID" || { cat "$T/serve.out"; exit 1; }
"$PYTHON" "$HERE/domains_ttft.py" --url "https://127.0.0.1:$PORT" --ca "$T/ca.crt" --key-file "$T/key" \
    --base "$(basename "$MODEL" .gguf)" --reps "${BENCH_REPS:-5}"
