#!/bin/sh
# tests/domains/suite.sh — the shipped domain packs (domains/finance, medical,
# telecom) applied by the gateway: `moegate serve` over real TLS with a tiny
# fixture model and fixture LoRA adapters, a real PostgreSQL for the audit
# log, requests from curl, Python (tests/domains/check_packs.py) and the
# official openai npm package (tests/domains/openai_domains.mjs).
#
# What is checked: system prompts (per language, shared through the prefix
# cache), generation defaults and the token cap, the packs' redaction
# detectors, disclaimers, blocked topics answered with the pack's refusal,
# model "auto" (the route in the response, its header and the audit
# record), DOMAIN@VERSION adapter pinning, content labels (explicit text,
# X-AIGC-Label header, AIGC field with the request id), and a reload with a
# broken pack refused while the old packs keep serving.
#
# Run by tests/run.sh with BUILD, PYTHON, FIXTURES and QUICK set. Prints
# "domains-gateway: N passed, M failed".
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
FIX=${FIXTURES:-build/fixtures}
MG=$(cd "$BUILD" 2>/dev/null && pwd)/moegate
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/../audit/pg.sh"
. "$HERE/../gateway/env.sh"

T=$(mktemp -d /tmp/moegate-dom.XXXXXX)
SPID=
cleanup() {
    if [ -n "$SPID" ]; then
        kill "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
    fi
    pg_cleanup
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

MODEL="$FIX/qwen3moe-tiny-q8_0.gguf"
A1="$FIX/adapters/qwen3moe-tiny-gguf-r8-f32.gguf"
A2="$FIX/adapters/qwen3moe-tiny-gguf-r16-attn-f16.gguf"
[ -x "$MG" ] || { echo "domains-gateway: build $MG first"; exit 1; }
[ -f "$MODEL" ] && [ -f "$A1" ] && [ -f "$A2" ] || { echo "domains-gateway: run make fixtures first"; exit 1; }
pg_start || { echo "domains-gateway: cannot start PostgreSQL"; exit 1; }
gw_audit_db domtest || { echo "domains-gateway: cannot make the audit database"; exit 1; }
gw_tls "$T" || { echo "domains-gateway: cannot make the certificates"; exit 1; }

KEY=mg_bank_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
CKEY=mg_clinic_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
AKEY=mg_admin_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
LKEY=mg_limited_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
hash() { printf %s "$1" | "$MG" policy hash-key 2>/dev/null; }
S1=$(sha256sum "$A1" | cut -d' ' -f1)
S2=$(sha256sum "$A2" | cut -d' ' -f1)
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
# the packs are copied so the reload test can break one without touching the tree
cp -r "$ROOT/domains" "$T/domains"
mkdir -p "$T/spool"
printf '%s\n' "host=127.0.0.1 port=$PGPORT user=gw dbname=domtest" >"$T/conn"
chmod 600 "$T/conn"
PORT=$(pg_free_port)
BASE=$(basename "$MODEL" .gguf)
cat >"$T/policy.yaml" <<EOF
server:
  listen: 127.0.0.1:$PORT
  tls: on
  tls_cert: server.crt
  tls_key: server.key
  limits: {request_timeout_s: 120}
  public_endpoints: [ready]
model:
  path: $(abs "$MODEL")
  threads: 1
  context_length: 4096
  kv_memory: 96MiB
adapters:
  - {name: finance-lora, path: $(abs "$A1"), sha256: $S1}
  - {name: finance-lora-2, path: $(abs "$A2"), sha256: $S2, version: "2026-11"}
  - {name: medical-lora, path: $(abs "$A2"), sha256: $S2}
  - {name: telecom-lora, path: $(abs "$A1"), sha256: $S1}
domains:
  - {name: finance, pack: domains/finance, adapter: finance-lora, versions: [finance-lora-2]}
  - {name: medical, pack: domains/medical, adapter: medical-lora}
  - {name: telecom, pack: domains/telecom, adapter: telecom-lora}
router:
  ood_examples: domains/_router/ood_examples.txt
content_labels:
  provider: "示例证券 Example Securities"
  provider_code: "91310000MA1TEST01X"
tenants:
  - id: bank
    api_keys: [{id: desk, hash: "$(hash "$KEY")"}]
    domains: [finance, medical, telecom]
    audit_payload: clear
  - id: clinic
    api_keys: [{id: ward, hash: "$(hash "$CKEY")"}]
    domains: [medical]
    audit_payload: clear
  - id: limited
    api_keys: [{id: one, hash: "$(hash "$LKEY")"}]
    domains: [finance]
    rate_limit: {requests_per_minute: 2}
  - id: ops
    api_keys: [{id: root, hash: "$(hash "$AKEY")"}]
    roles: [admin]
    domains: [finance]
audit:
  connection_file: conn
  on_failure: spool
  spool_dir: spool
  durability: strict
  payload: hash
logging: {format: json, level: info, output: gw.log}
EOF
"$MG" policy check "$T/policy.yaml" >"$T/check.log" 2>&1 || { cat "$T/check.log"; exit 1; }

"$MG" serve --policy "$T/policy.yaml" >"$T/serve.log" 2>"$T/serve.err" &
SPID=$!
URL="https://127.0.0.1:$PORT"
gw_wait "$URL" "$T/ca.crt" "$SPID" || { echo "domains-gateway: server did not start"; cat "$T/serve.err" "$T/serve.log"; exit 1; }

# one request with curl, the real client an operator tries first
code=$(curl -s --cacert "$T/ca.crt" -o "$T/curl.json" -D "$T/curl.hdr" -w '%{http_code}' \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data-binary '{"model":"auto","messages":[{"role":"user","content":"What is the yield to maturity of a 5-year government bond?"}],"max_tokens":4}' \
    "$URL/v1/chat/completions")

"$PYTHON" "$HERE/check_packs.py" --url "$URL" --ca "$T/ca.crt" --key "$KEY" --clinic-key "$CKEY" \
    --admin-key "$AKEY" --limited-key "$LKEY" --base "$BASE" --packs "$T/domains" --policy "$T/policy.yaml" --pid "$SPID" \
    --db "$DB" --sha1 "$S1" --sha2 "$S2" --curl-code "$code" --curl-body "$T/curl.json" \
    --curl-headers "$T/curl.hdr"
rc=$?
# the packs' eval sets: the guardrail properties hold whatever the model
(umask 077 && printf '%s\n' "$KEY" >"$T/api-key")
if "$PYTHON" "$ROOT/domains/eval.py" --url "$URL" --ca "$T/ca.crt" --key-file "$T/api-key" --packs "$ROOT/domains" \
    --require guardrails --max-tokens 8 >"$T/eval.out" 2>&1; then
    echo "ok   domains/eval.py: every must_refuse and must_end_with_disclaimer property of the packs' eval sets holds"
else
    echo "FAIL domains/eval.py guardrail properties"
    cat "$T/eval.out"
    rc=1
fi
grep '^| ' "$T/eval.out"
# the official openai npm client sees what moegate adds
if command -v node >/dev/null 2>&1 && NODE_DIR=$(sh "$HERE/../gateway/setup_node.sh" 2>"$T/npm.log"); then
    NODE_DIR="$NODE_DIR" GW_URL="$URL" GW_KEY="$KEY" NODE_EXTRA_CA_CERTS="$T/ca.crt" \
        node "$HERE/openai_domains.mjs" >"$T/node.out" 2>&1 || rc=1
    cat "$T/node.out"
    grep -q '^ok ' "$T/node.out" || { echo "FAIL openai_domains.mjs ran"; rc=1; }
else
    echo "FAIL the openai npm package could not be installed ($(tail -n 2 "$T/npm.log" 2>/dev/null))"
    rc=1
fi
kill "$SPID" 2>/dev/null
wait "$SPID"
src=$?
SPID=
if [ $src -ne 0 ]; then
    echo "FAIL the server exited $src after SIGTERM"
    tail -20 "$T/serve.err"
    rc=1
fi
for want in "domain 'finance': pack 'finance' (3 blocked topics, 5 extra redaction detectors, a disclaimer), adapter finance-lora" \
    "domain 'telecom': pack 'telecom' (2 blocked topics, 7 extra redaction detectors), adapter telecom-lora" \
    "model auto: router trained on 3 packs and the out-of-domain examples, threshold 0.60" \
    "content labels on: explicit text at the end"; do
    if grep -qF "$want" "$T/gw.log"; then
        echo "ok   the log says what is in force: $want"
    else
        echo "FAIL the log lacks: $want"
        rc=1
    fi
done
if grep -q "AddressSanitizer\|runtime error:\|LeakSanitizer" "$T/serve.err" 2>/dev/null; then
    echo "FAIL the server's sanitizer report:"
    grep -A20 "AddressSanitizer\|runtime error:\|LeakSanitizer" "$T/serve.err" | head -60
    rc=1
fi
if grep -q "$KEY" "$T/gw.log" "$T/serve.err" "$T/serve.log" 2>/dev/null; then
    echo "FAIL an API key appears in the logs"
    rc=1
fi
exit $rc
