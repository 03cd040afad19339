#!/bin/sh
# tests/gateway/suite.sh — the gateway against real clients over real TLS on
# loopback: `moegate serve --policy` with a tiny fixture model and a LoRA
# adapter, a real PostgreSQL for the audit log (tests/audit/pg.sh), a CA,
# server and client certificates made here with the openssl command.
#
#   curl            every endpoint, statuses and OpenAI error shapes,
#                   x-request-id found in the audit table, metrics, admin,
#                   reload (endpoint and SIGHUP), rate limits, redaction,
#                   deadline
#   gw_client.py    the bad-input suite, keep-alive, disconnects, TLS
#                   versions and suites, mTLS (Python's ssl, openssl s_client)
#   openai npm      tests/gateway/openai_client.mjs
#
# Run by tests/run.sh with BUILD, PYTHON, FIXTURES and QUICK set. Under
# QUICK=--quick (the ASan build) the connection storm is 200 instead of
# 1,000 and the server's sanitizer report must be empty. Everything started
# here is stopped and removed on exit. Prints "gateway: N passed, M failed".
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
QUICK=${QUICK:-}
FIX=${FIXTURES:-build/fixtures}
MG=$(cd "$BUILD" 2>/dev/null && pwd)/moegate
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../audit/pg.sh"
. "$HERE/env.sh"

T=$(mktemp -d /tmp/moegate-gw.XXXXXX)
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

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { # name, command...
    name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

MODEL="$FIX/qwen3moe-tiny-q8_0.gguf"
ADAPTER="$FIX/adapters/qwen3moe-tiny-gguf-r8-f32.gguf"
[ -x "$MG" ] || { echo "gateway: build $MG first"; exit 1; }
[ -f "$MODEL" ] && [ -f "$ADAPTER" ] || { echo "gateway: run make fixtures first"; exit 1; }
command -v openssl >/dev/null && command -v curl >/dev/null || { echo "gateway: needs openssl and curl"; exit 1; }
pg_start || { echo "gateway: cannot start PostgreSQL"; exit 1; }
gw_audit_db gwtest || { echo "gateway: cannot make the audit database"; exit 1; }
q() { psql_q gwtest "$1"; }

# ---- certificates: a CA, the server, a mapped and an unmapped client, a rogue CA's client ----
cd "$T" || exit 1
mkcert() { # name subject CA [ext]
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null &&
        openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -out "$1.crt" -days 2 \
            ${4:+-extfile "$4"} 2>/dev/null
}
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=moegate test CA" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.crt -days 2 -subj "/CN=rogue CA" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" >san.ext
mkcert server "/CN=localhost" ca san.ext
mkcert client "/C=CN/O=Acme Securities/OU=Trading/CN=trading-gw-01" ca
mkcert unmapped "/CN=somebody-else" ca
mkcert rogueclient "/C=CN/O=Acme Securities/OU=Trading/CN=trading-gw-01" rogue
chmod 600 server.key
SUBJECT=$(openssl x509 -noout -subject -nameopt RFC2253 -in client.crt | sed 's/^subject=//')
cd - >/dev/null || exit 1

# ---- keys (hashed with the CLI, as an operator does) and the policy ----------------------------
KEY=mg_user_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
AKEY=mg_admin_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
HKEY=mg_hosp_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
LKEY=mg_limited_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
NKEY=mg_new_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
hash() { printf %s "$1" | "$MG" policy hash-key 2>/dev/null; }
UH=$(hash "$KEY")
AH=$(hash "$AKEY")
HH=$(hash "$HKEY")
LH=$(hash "$LKEY")
NH=$(hash "$NKEY")
ASHA=$(sha256sum "$ADAPTER" | cut -d' ' -f1)
mkdir -p "$T/spool"
sh "$HERE/../domains/mkpack.sh" "$T/packs/finance" "$T/packs/medical"
printf '%s\n' "host=127.0.0.1 port=$PGPORT user=gw dbname=gwtest" >"$T/conn"
chmod 600 "$T/conn"
PORT=$(pg_free_port)
BASE=$(basename "$MODEL" .gguf)
IDLE=2
write_policy() { # timeout extra_tenant_yaml
    cat >"$T/policy.yaml" <<EOF
server:
  listen: 127.0.0.1:$PORT
  tls: on
  tls_cert: server.crt
  tls_key: server.key
  tls_client_ca: ca.crt
  limits: {max_body_bytes: 1MiB, request_timeout_s: $1, idle_timeout_s: $IDLE, max_connections: 256,
           max_connections_per_client: 128}
  public_endpoints: [ready]
model:
  path: $(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
  threads: 1
  context_length: 2048
  kv_memory: 64MiB
adapters:
  - {name: fin-lora, path: $(cd "$(dirname "$ADAPTER")" && pwd)/$(basename "$ADAPTER"), sha256: $ASHA}
domains:
  - {name: finance, pack: packs/finance, adapter: fin-lora}
  - {name: medical, pack: packs/medical}
tenants:
  - id: acme
    api_keys:
      - {id: desk, hash: "$UH"}
    mtls_subjects: ["$SUBJECT"]
    domains: [finance]
    max_tokens: 2000
  - id: hospital
    api_keys:
      - {id: records, hash: "$HH"}
    domains: [medical]
    audit_payload: clear
  - id: limited
    api_keys:
      - {id: lim, hash: "$LH"}
    domains: [finance]
    rate_limit: {requests_per_minute: 2}
  - id: ops
    api_keys:
      - {id: oncall, hash: "$AH"}
    roles: [admin]
    domains: [finance, medical]
$2
redaction:
  rules:
    - {detector: bank_card, action: block}
    - {detector: cn_mobile, action: redact}
audit:
  connection_file: conn
  on_failure: spool
  spool_dir: spool
  durability: strict
  payload: hash
logging: {format: json, level: info, output: gw.log}
EOF
}
write_policy 60 ""
"$MG" policy check "$T/policy.yaml" >"$T/check.log" 2>&1 || { cat "$T/check.log"; exit 1; }

"$MG" serve --policy "$T/policy.yaml" >"$T/serve.log" 2>"$T/serve.err" &
SPID=$!
URL="https://127.0.0.1:$PORT"
C="curl -s --cacert $T/ca.crt --max-time 120"
gw_wait "$URL" "$T/ca.crt" "$SPID" || { echo "gateway: server did not start"; cat "$T/serve.err" "$T/serve.log"; exit 1; }
LOG="$T/gw.log"

# curl helpers: status, then the body in $T/body and headers in $T/hdr
post() { # path key json
    $C -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X POST -H "Authorization: Bearer $2" \
        -H 'Content-Type: application/json' --data-binary "$3" "$URL$1" 2>/dev/null
}
get() { # path [key]
    if [ -n "${2:-}" ]; then
        $C -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "Authorization: Bearer $2" "$URL$1" 2>/dev/null
    else
        $C -o "$T/body" -D "$T/hdr" -w '%{http_code}' "$URL$1" 2>/dev/null
    fi
}
jq_() { "$PYTHON" -c "import json,sys; d=json.load(open('$T/body')); print($1)" 2>/dev/null; }
rid() { tr -d '\r' <"$T/hdr" | awk -F': ' 'tolower($1)=="x-request-id"{print $2}'; }
is_error() { # status code_or_empty
    "$PYTHON" - "$T/body" "$1" "$2" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))["error"]
assert set(e) == {"message", "type", "param", "code"}, e
want = {"400": "invalid_request_error", "401": "authentication_error", "403": "permission_error",
        "404": "invalid_request_error", "413": "invalid_request_error", "429": "rate_limit_error",
        "500": "server_error", "503": "server_error", "504": "server_error"}[sys.argv[2]]
assert e["type"] == want, e
assert not sys.argv[3] or e["code"] == sys.argv[3], e
EOF
}
CHAT='{"model":"finance","messages":[{"role":"user","content":"zebra-marker-7731 hello"}],"max_tokens":6}'

# ---- endpoints ------------------------------------------------------------------------------
check "GET /health is public" test "$(get /health)" = 200
check "GET /ready is public here (public_endpoints: [ready])" sh -c "[ \"\$($C -o /dev/null -w '%{http_code}' $URL/ready)\" = 200 ]"
st=$(get /v1/models); check "GET /v1/models without a key is 401" test "$st" = 401
is_error 401 missing_api_key && ok "401 is OpenAI's error object" || bad "401 is OpenAI's error object"
st=$(get /v1/models "$KEY")
check "GET /v1/models lists the base model, auto and the tenant's domains only" \
    test "$st $(jq_ '",".join(m["id"] for m in d["data"])')" = "200 $BASE,auto,finance"
check "GET /v1/models/finance" test "$(get /v1/models/finance "$KEY")" = 200
st=$(get /v1/models/medical "$KEY")
check "GET /v1/models/medical (not allowed) is 404" sh -c "[ $st = 404 ]"

st=$(post /v1/chat/completions "$KEY" "$CHAT")
R1=$(rid)
check "POST /v1/chat/completions 200 with OpenAI's shape" \
    test "$st $(jq_ 'd["object"], d["model"], d["choices"][0]["message"]["role"], d["choices"][0]["finish_reason"] in ("stop","length"), d["usage"]["total_tokens"] == d["usage"]["prompt_tokens"] + d["usage"]["completion_tokens"], sorted(d) == ["choices","created","id","model","object","usage"]')" = "200 chat.completion finance assistant True True True"
check "x-request-id is returned and is the response id" test "${R1:-none} $(jq_ 'd["id"]')" = "$R1 chatcmpl-$R1"
check "the request id is in the audit table with tenant, domain, adapter, status, tokens" \
    test "$(q "SELECT tenant, key_id, domain, adapter_name, endpoint, status, prompt_tokens > 0, completion_tokens > 0 FROM audit_events WHERE request_id = '$R1'")" = "acme|desk|finance|fin-lora|chat.completions|200|t|t"
check "the audit record holds the prompt's SHA-256, not the text (payload: hash)" \
    test "$(q "SELECT octet_length(prompt), payload_mode FROM audit_events WHERE request_id = '$R1'" | cut -d'|' -f1)" = 32
check "the audit record carries the model's and adapter's SHA-256" \
    test "$(q "SELECT adapter_sha256 = '$ASHA', model_sha256 = '$(sha256sum "$MODEL" | cut -d' ' -f1)' FROM audit_events WHERE request_id = '$R1'")" = "t|t"

st=$(post /v1/completions "$KEY" '{"model":"'"$BASE"'","prompt":"Once upon a time","max_tokens":4}')
check "POST /v1/completions on the base model" test "$st $(jq_ 'd["object"], d["usage"]["completion_tokens"] <= 4')" = "200 text_completion True"

$C -N -o "$T/sse" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data-binary '{"model":"finance","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}' \
    "$URL/v1/chat/completions" 2>/dev/null
check "streamed chat ends with data: [DONE]" sh -c "tail -c 40 '$T/sse' | grep -q 'data: \[DONE\]' && [ \$(grep -c '^data: {' '$T/sse') -ge 3 ]"

# errors with their statuses
st=$(post /v1/chat/completions "$KEY" '{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}')
check "unknown model is 404 model_not_found" sh -c "[ $st = 404 ] && $(is_error 404 model_not_found && echo true || echo false)"
st=$(post /v1/chat/completions "$KEY" '{"model":"medical","messages":[{"role":"user","content":"x"}]}')
check "a domain the tenant may not use is 403" sh -c "[ $st = 403 ] && $(is_error 403 model_not_allowed && echo true || echo false)"
st=$(post /v1/chat/completions "$KEY" '{"model":"finance","messages":[{"role":"user","content":"x"}],"top_k":3}')
check "unknown field is 400 naming it" test "$st $(jq_ 'd["error"]["param"]')" = "400 top_k"
st=$(post /v1/chat/completions "$HKEY" '{"model":"medical","messages":[{"role":"user","content":"x"}],"max_tokens":4000}')
check "max_tokens beyond the context is 400 context_length_exceeded" sh -c "[ $st = 400 ] && $(is_error 400 context_length_exceeded && echo true || echo false)"
st=$(post /v1/chat/completions "$AKEY" "$CHAT")
check "an admin-only tenant cannot generate: 403" test "$st" = 403
head -c 2000000 /dev/zero | tr '\0' 'a' >"$T/big"
st=$($C -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' --data-binary @"$T/big" "$URL/v1/chat/completions" 2>/dev/null)
check "a body over max_body_bytes is 413" test "$st" = 413

# rate limit: 2 requests per minute
post /v1/chat/completions "$LKEY" "$CHAT" >/dev/null
post /v1/chat/completions "$LKEY" "$CHAT" >/dev/null
st=$(post /v1/chat/completions "$LKEY" "$CHAT")
RA=$(tr -d '\r' <"$T/hdr" | awk -F': ' 'tolower($1)=="retry-after"{print $2}')
check "the third request in a minute is 429 with Retry-After" sh -c "[ $st = 429 ] && [ '${RA:-0}' -ge 1 ] && $(is_error 429 rate_limit_exceeded && echo true || echo false)"

# redaction: a card number blocks; a phone number reaches the model (and the audit) as a placeholder
st=$(post /v1/chat/completions "$KEY" '{"model":"finance","messages":[{"role":"user","content":"card 4111 1111 1111 1111"}],"max_tokens":2}')
check "a blocking redaction rule refuses the request (400 blocked_by_policy)" sh -c "[ $st = 400 ] && $(is_error 400 blocked_by_policy && echo true || echo false)"
st=$(post /v1/chat/completions "$HKEY" '{"model":"medical","messages":[{"role":"user","content":"call me at 13800138000"}],"max_tokens":2}')
R2=$(rid)
check "redacted input reaches the model and the audit as a placeholder (payload: clear for this tenant)" \
    test "$st|$(q "SELECT position('[PHONE_1]' in convert_from(prompt, 'UTF8')) > 0, position('13800138000' in convert_from(prompt, 'UTF8')) FROM audit_events WHERE request_id = '$R2'")" = "200|t|0"
RS=$(q "SELECT redaction::text FROM audit_events WHERE request_id = '$R2'")
check "the redaction summary names the rule and counts, never the value" \
    sh -c "echo '$RS' | grep -q cn_mobile && ! echo '$RS' | grep -q 13800"

# ---- metrics and admin -----------------------------------------------------------------------
st=$(get /metrics "$KEY")
check "/metrics needs the admin role: 403 for a user" test "$st" = 403
st=$(get /metrics "$AKEY")
check "/metrics in Prometheus text format with requests, tokens, histograms, KV and audit" \
    sh -c "[ $st = 200 ] && grep -q '^moegate_requests_total{endpoint=\"chat.completions\",tenant=\"acme\",domain=\"finance\",status=\"200\"}' '$T/body' && grep -q '^moegate_tokens_total{tenant=\"acme\",domain=\"finance\",direction=\"out\"}' '$T/body' && grep -q '^moegate_time_to_first_token_seconds_bucket' '$T/body' && grep -q '^moegate_request_duration_seconds_count' '$T/body' && grep -q '^moegate_kv_blocks_total' '$T/body' && grep -q '^moegate_queue_depth' '$T/body' && grep -q '^moegate_audit_spool_bytes' '$T/body' && grep -q '^moegate_audit_queue_depth' '$T/body'"
st=$(get /admin/stats "$AKEY")
check "GET /admin/stats" test "$st $(jq_ 'd["adapters"][0]["name"], d["audit"]["connected"]')" = "200 fin-lora True"
st=$(get /admin/stats "$KEY")
check "GET /admin/stats as a user is 403" test "$st" = 403
st=$($C -o "$T/body" -w '%{http_code}' -X DELETE -H "Authorization: Bearer $AKEY" "$URL/admin/adapters/fin-lora" 2>/dev/null)
check "DELETE /admin/adapters/fin-lora unloads it" test "$st" = 200
st=$(post /v1/chat/completions "$KEY" "$CHAT")
check "its domain is then 503 adapter_not_loaded" sh -c "[ $st = 503 ] && $(is_error 503 adapter_not_loaded && echo true || echo false)"
st=$(post /admin/adapters "$AKEY" '{"name":"fin-lora"}')
check "POST /admin/adapters loads it again (path and digest from the policy)" test "$st" = 200
st=$(post /admin/adapters "$AKEY" '{"name":"fin-lora"}')
check "loading it twice is 409" test "$st" = 409
st=$(post /admin/adapters "$AKEY" '{"name":"x","path":"/etc/passwd"}')
check "an adapter path from the request is refused (400)" test "$st" = 400
st=$(post /admin/adapters "$KEY" '{"name":"fin-lora"}')
check "admin endpoints refuse a user key: 403" test "$st" = 403
st=$(post /v1/chat/completions "$KEY" "$CHAT")
check "the domain serves again" test "$st" = 200
check "admin actions are audited" test "$(q "SELECT count(*) FROM audit_events WHERE endpoint LIKE 'admin.%' AND tenant = 'ops'")" -ge 3

# ---- reload: endpoint and SIGHUP -----------------------------------------------------------
st=$(get /v1/models "$NKEY")
check "a key not in the policy is 401" test "$st" = 401
write_policy 60 "  - id: newcomer
    api_keys:
      - {id: k1, hash: \"$NH\"}
    domains: [medical]"
st=$(post /admin/policy/reload "$AKEY" '{}')
check "POST /admin/policy/reload applies a new tenant" test "$st $(get /v1/models "$NKEY")" = "200 200"
cp "$T/policy.yaml" "$T/policy.good"
printf 'server: [broken\n' >"$T/policy.yaml"
st=$(post /admin/policy/reload "$AKEY" '{}')
check "a broken policy is refused and the old one stays in force" \
    test "$st $(grep -c 'policy.yaml:' "$T/body") $(get /v1/models "$NKEY")" = "400 1 200"
write_policy 1 ""
kill -HUP "$SPID"
gone=0
for i in $(seq 1 50); do
    [ "$(get /v1/models "$NKEY")" = 401 ] && { gone=1; break; }
    sleep 0.1
done
check "SIGHUP reloads the policy (the new tenant is gone again)" test $gone = 1
st=$(post /v1/chat/completions "$KEY" '{"model":"finance","messages":[{"role":"user","content":"go on"}],"max_tokens":1900,"temperature":1.5}')
check "a request past its deadline (request_timeout_s: 1) is 504" sh -c "[ $st = 504 ] && $(is_error 504 request_timeout && echo true || echo false)"
write_policy 60 ""
kill -HUP "$SPID"
sleep 0.5

# ---- raw clients: bad input, keep-alive, disconnects, TLS, mTLS ---------------------------------
NCONN=1000
[ "$QUICK" = "--quick" ] && NCONN=200
"$PYTHON" "$HERE/gw_client.py" --port "$PORT" --ca "$T/ca.crt" --key "$KEY" --admin-key "$AKEY" \
    --other-key "$HKEY" --model finance --client-cert "$T/client.crt" --client-key "$T/client.key" \
    --rogue-cert "$T/rogueclient.crt" --rogue-key "$T/rogueclient.key" --unmapped-cert "$T/unmapped.crt" \
    --unmapped-key "$T/unmapped.key" --log "$LOG" --idle-timeout $IDLE --connections $NCONN >"$T/py.out" 2>&1
cat "$T/py.out"
pass=$((pass + $(grep -c '^ok ' "$T/py.out")))
fail=$((fail + $(grep -c '^FAIL' "$T/py.out")))
grep -q '^ok \|^FAIL' "$T/py.out" || bad "gw_client.py ran"

# ---- the openai npm package ------------------------------------------------------------------
if command -v node >/dev/null 2>&1 && NODE_DIR=$(sh "$HERE/setup_node.sh" 2>"$T/npm.log"); then
    NODE_DIR="$NODE_DIR" GW_URL="$URL" GW_KEY="$KEY" GW_MODEL=finance GW_BASE_MODEL="$BASE" \
        NODE_EXTRA_CA_CERTS="$T/ca.crt" node "$HERE/openai_client.mjs" >"$T/node.out" 2>&1
    cat "$T/node.out"
    pass=$((pass + $(grep -c '^ok ' "$T/node.out")))
    fail=$((fail + $(grep -c '^FAIL' "$T/node.out")))
    grep -q '^ok \|^FAIL' "$T/node.out" || bad "openai_client.mjs ran"
else
    bad "the openai npm package could not be installed ($(tail -n 2 "$T/npm.log" 2>/dev/null))"
fi

# ---- logs: JSON lines, no prompts, completions or keys ----------------------------------------------
check "every request log line is JSON with time, level, request id and status" "$PYTHON" -c "
import json, sys
n = 0
for ln in open('$LOG'):
    d = json.loads(ln)
    assert 'time' in d and 'level' in d and 'msg' in d, d
    if d['msg'] == 'request':
        assert d['request_id'].startswith('req_') and 'status' in d and 'latency_ms' in d, d
        n += 1
assert n > 50, n
"
check "logs hold no prompt, no key and no phone number" \
    sh -c "! grep -q -e zebra-marker -e '$KEY' -e '$AKEY' -e 13800138000 -e disconnect-marker '$LOG' '$T/serve.err'"

# ---- shutdown: clean exit, nothing leaked (ASan/LSan report empty under the sanitizer build) ----
kill "$SPID"
wait "$SPID"
rc=$?
SPID=
check "SIGTERM stops the server cleanly (exit 0)" test $rc = 0
check "no sanitizer report" sh -c "! grep -q -e 'ERROR: AddressSanitizer' -e 'ERROR: LeakSanitizer' -e 'runtime error' '$T/serve.err'"
[ -s "$T/serve.err" ] && grep -e 'ERROR: ' -e 'runtime error' -A 30 "$T/serve.err" | head -n 60
check "every audited request is in PostgreSQL after shutdown (nothing left in the spool)" \
    test "$(q "SELECT count(*) > 20 FROM audit_events")" = t

echo "gateway: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
