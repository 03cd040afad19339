#!/bin/sh
# tests/quickstart/suite.sh — `make quickstart` end to end, non-interactively,
# as a new user runs it: deploy/quickstart.sh in a folder of its own
# (QUICKSTART_DIR under /tmp, a free QUICKSTART_PORT, PostgreSQL on a port it
# picks), so it collides neither with a developer's running quickstart nor
# with the other suites. Checks:
#   every step succeeded (exit 0, each step's banner, no FAILED line)
#   each domain's request was answered 200 over TLS (certificate verified
#   against the quickstart's CA, for 127.0.0.1 and localhost; plain HTTP
#   refused) with `model` naming the domain; model "auto" went to finance
#   the audit table holds exactly those requests' records, with tenant,
#   domain, adapter name and the adapter file's SHA-256; audit verify exits 0
#   the API key is in a 0600 file and never in the output or the logs
#   a second run while everything runs restarts the gateway and works again,
#   with the first gateway's closing checkpoint now verified
#   quickstart-stop leaves no gateway and no PostgreSQL; a second stop is
#   harmless; quickstart-clean removes the folder
#   MODEL=path.gguf (Mixtral's shape and its template without a system role) works with untrained adapters
# Run by tests/run.sh with BUILD, PYTHON, FIXTURES and QUICK set; skipped in
# the sanitizer run (QUICK=--quick). Prints "quickstart: N passed, M failed".
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
FIX=${FIXTURES:-build/fixtures}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 1
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
case "$FIX" in /*) ;; *) FIX="$ROOT/$FIX" ;; esac
MG="$BUILD/moegate"

if [ "${QUICK:-}" = "--quick" ]; then
    echo "quickstart: skipped in the quick (sanitizer) run"
    exit 0
fi
[ -x "$MG" ] || { echo "quickstart: build $MG first"; exit 1; }

QS=$(mktemp -d /tmp/moegate-qs.XXXXXX)
chmod 755 "$QS" # the postgres user must reach pg/ inside it when we are root
OUT="$QS.out"
cleanup() {
    QUICKSTART_DIR="$QS" sh "$ROOT/deploy/quickstart-stop.sh" >/dev/null 2>&1
    rm -rf "$QS" "$OUT"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { # name, command...
    name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export QUICKSTART_DIR="$QS" QUICKSTART_PORT="$PORT" QUICKSTART_SKIP_DEPS=1 QUICKSTART_SKIP_BUILD=1
export BUILD PYTHON FIXTURES="$FIX" QUICKSTART_MAX_TOKENS=8
unset MODEL

run_quickstart() { # label
    start=$(date +%s)
    sh deploy/quickstart.sh >"$OUT" 2>&1
    rc=$?
    echo "     ($1: $(($(date +%s) - start)) s, exit $rc)"
    if [ $rc -ne 0 ]; then
        echo "---- quickstart output"
        cat "$OUT"
        echo "---- serve.log"
        tail -n 20 "$QS/log/serve.log" 2>/dev/null
        echo "----"
    fi
    return $rc
}
steps_ok() {
    for s in dependencies build model adapters certificates PostgreSQL migrate "API key" policy gateway \
        requests "audit rows" "audit verify" "done"; do
        grep -qx "==> $s" "$OUT" || { echo "     step banner '$s' missing"; return 1; }
    done
    ! grep -q "FAILED" "$OUT"
}
field() { # request name, python expression over d (the JSON body)
    "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$QS/requests/$1.json" 2>/dev/null
}
header() { # request name, header
    tr -d '\r' <"$QS/requests/$1.headers" 2>/dev/null | awk -F': ' -v h="$2" 'tolower($1)==h{print $2}'
}
RD() { # SQL as the quickstart's audit reader: unaligned values
    "$(cat "$QS/run/pg_bin")/psql" -X -q -tA -v ON_ERROR_STOP=1 -d "$(cat "$QS/db/reader.conn")" -c "$1"
}
sha() { sha256sum "$QS/adapters/$1-lora.gguf" | cut -d' ' -f1; }
# gone: no such process, or a zombie nobody reaped (it runs nothing; where
# PID 1 does not reap, a stopped server's pid stays a zombie)
gone() { ! kill -0 "$1" 2>/dev/null || [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]; }

# ---- the first run --------------------------------------------------------
check "make quickstart's script exits 0" run_quickstart "first run"
check "every step ran and none failed" steps_ok
URL="https://127.0.0.1:$PORT"
for d in finance medical telecom; do
    code=$(awk -v n="$d" '$1==n{print $2}' "$QS/requests/ids")
    check "$d: HTTP 200 over TLS, model \"$d\", an answer" \
        test "$code $(field "$d" 'd["model"], d["object"], len(d["choices"][0]["message"]["content"]) > 0')" = \
        "200 $d chat.completion True"
done
check "auto: HTTP 200, routed to finance (route object, model, x-moegate-route header)" \
    test "$(awk '$1=="auto"{print $2}' "$QS/requests/ids") $(field auto 'd["route"]["domain"], d["model"]') $(header auto x-moegate-route | cut -d';' -f1)" = \
    "200 finance finance finance"
check "the certificate verifies for 127.0.0.1 and localhost against the quickstart's CA" \
    sh -c "curl -sf --cacert '$QS/ca.pem' -o /dev/null '$URL/health' &&
           curl -sf --cacert '$QS/ca.pem' -o /dev/null 'https://localhost:$PORT/health'"
check "without the CA the certificate is refused; plain HTTP gets no answer" \
    sh -c "! curl -s -o /dev/null --max-time 5 '$URL/health' && ! curl -sf -o /dev/null --max-time 5 'http://127.0.0.1:$PORT/health'"

ids=$(awk '{printf "%s'\''%s'\''", (NR > 1 ? "," : ""), $3}' "$QS/requests/ids")
check "the audit table holds exactly the 4 requests" test "$(RD "SELECT count(*) FROM audit_events") $(RD "SELECT count(*) FROM audit_events WHERE request_id IN ($ids)")" = "4 4"
for d in finance medical telecom auto; do
    want=$d
    [ $d = auto ] && want=finance
    rid=$(awk -v n="$d" '$1==n{print $3}' "$QS/requests/ids")
    check "audit record of $d: tenant demo, domain $want, adapter $want-lora with its file's SHA-256, status 200, tokens" \
        test "$(RD "SELECT tenant, key_id, domain, adapter_name, adapter_sha256, status, prompt_tokens > 0, completion_tokens > 0, payload_mode FROM audit_events WHERE request_id = '$rid'")" = \
        "demo|quickstart|$want|$want-lora|$(sha "$want")|200|t|t|sha256"
done
check "the model's SHA-256 is in every record" \
    test "$(RD "SELECT DISTINCT model_sha256 FROM audit_events")" = "$(sha256sum "$FIX/qwen3moe-tiny-q4_K.gguf" | cut -d' ' -f1)"
verify() { "$MG" audit verify --db-file "$QS/db/reader.conn" --pubkey "$QS/keys/checkpoint.pub.pem" >"$QS.verify" 2>&1; }
check "moegate audit verify exits 0 (as the quickstart's auditor role)" verify
sed 's/^/     /' "$QS.verify"
rm -f "$QS.verify"
check "the quickstart showed the audit rows and verify's result" \
    sh -c "grep -q '| demo   | finance | finance-lora |' '$OUT' && grep -q 'verified 4 records in 1 chains' '$OUT'"

KEY=$(cat "$QS/api-key")
check "the API key sits in a 0600 file, is a real key for tenant demo" \
    test "$(stat -c %a "$QS/api-key") $(printf %s "$KEY" | "$MG" policy hash-key 2>/dev/null | cut -c1-7)" = "600 sha256:"
check "the key never shows in the output, the logs or the policy" \
    sh -c "! grep -rqF -- '$KEY' '$OUT' '$QS/log' '$QS/policy.yaml' '$QS/requests'"
check "private keys and connection files are 0600; the policy passes policy check" \
    sh -c "[ \"\$(stat -c %a '$QS/tls/server.key' '$QS/tls/ca.key' '$QS/keys/checkpoint.pem' '$QS/db/pgpass' '$QS/db/gateway.conn' | sort -u)\" = 600 ] &&
           '$MG' policy check '$QS/policy.yaml' >/dev/null 2>&1"
check "PostgreSQL listens on loopback only" \
    grep -q "^listen_addresses = '127.0.0.1'" "$QS/pg/data/postgresql.conf"

# ---- a second run while everything runs -------------------------------------
GW1=$(cat "$QS/run/gateway.pid")
check "a second run while running exits 0" run_quickstart "second run"
restarted() {
    [ "$(cat "$QS/run/gateway.pid")" != "$GW1" ] && gone "$GW1" && grep -q 'reusing the cluster' "$OUT" &&
        grep -q 'reusing the key' "$OUT" && [ "$(cat "$QS/api-key")" = "$KEY" ]
}
check "it restarted the gateway (new pid, the old one gone) and reused the cluster and key" restarted
check "8 records now, one chain; verify checks the first gateway's closing checkpoint" \
    sh -c "[ '$(RD "SELECT count(*) FROM audit_events")' = 8 ] &&
           grep -q 'verified 8 records in 1 chains against [1-9][0-9]* checkpoints: 0 problems' '$OUT'"

# ---- stop ------------------------------------------------------------------------
GW2=$(cat "$QS/run/gateway.pid")
PGPID=$(head -n 1 "$QS/pg/data/postmaster.pid" 2>/dev/null)
check "quickstart-stop exits 0" sh -c "sh deploy/quickstart-stop.sh >'$OUT' 2>&1"
sed 's/^/     /' "$OUT"
gw_gone() { gone "$GW2" && [ ! -e "$QS/run/gateway.pid" ]; }
pg_gone() { [ -n "$PGPID" ] && gone "$PGPID" && ! pgrep -f -- "$QS/" >/dev/null; }
check "no gateway left (pid $GW2), no pid file" gw_gone
check "no PostgreSQL left (postmaster $PGPID), no process of the quickstart's folder" pg_gone
check "the closing checkpoint is in the checkpoint file" test -s "$QS/spool/quickstart.ckpt"
check "a second quickstart-stop is harmless" sh -c "sh deploy/quickstart-stop.sh >/dev/null 2>&1"
check "quickstart-clean removes the folder" sh -c "sh deploy/quickstart-stop.sh --clean >/dev/null 2>&1 && [ ! -e '$QS' ]"

# ---- MODEL=path.gguf: another family, untrained adapters shaped from its header ----
OWN="$FIX/mixtral-tiny-q8_0.gguf" # no system role: the packs' prompts open the first user turn
if [ -f "$OWN" ]; then
    QS=$(mktemp -d /tmp/moegate-qs.XXXXXX)
    chmod 755 "$QS"
    export QUICKSTART_DIR="$QS"
    own_run() { MODEL="$OWN" sh deploy/quickstart.sh >"$OUT" 2>&1 || { cat "$OUT"; return 1; }; }
    check "make quickstart MODEL=$(basename "$OWN") exits 0" own_run
    codes=$(awk '{printf "%s%s", (NR > 1 ? " " : ""), $2}' "$QS/requests/ids" 2>/dev/null)
    check "its four requests are answered 200, auto routed to finance" \
        test "$codes $(field auto 'd["route"]["domain"]')" = "200 200 200 200 finance"
    check "its records name the model's SHA-256 and the untrained adapters' (B = 0)" \
        test "$(RD "SELECT DISTINCT model_sha256 FROM audit_events") $(RD "SELECT string_agg(DISTINCT adapter_sha256, ' ' ORDER BY adapter_sha256) FROM audit_events") $(grep -c 'untrained: B = 0' "$OUT")" = \
        "$(sha256sum "$OWN" | cut -d' ' -f1) $(for d in finance medical telecom; do sha $d; done | sort | tr '\n' ' ' | sed 's/ $//') 3"
    # (a function: a `sh -c` naming the folder would find itself with pgrep)
    cleaned() { sh deploy/quickstart-stop.sh --clean >/dev/null 2>&1 && [ ! -e "$QS" ] && ! pgrep -f -- "$QS/" >/dev/null; }
    check "quickstart-clean stops it and removes the folder" cleaned
fi

echo "quickstart: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
