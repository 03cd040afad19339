#!/bin/sh
# bench/gateway.sh BUILD — the gateway benchmark (bench/README.md, "Gateway").
#
# Starts a PostgreSQL for the audit log (tests/audit/pg.sh), makes a CA and a
# server certificate, and runs `moegate serve` on the tiny qwen3moe fixture
# (build/fixtures; `make fixtures`) with the audit in async durability (the
# gateway path enqueues the record; strict durability adds a commit per
# response, measured in its own row), request logs on, to a file. Load comes
# from wrk (Debian package `wrk`, installed here when missing) on the same
# 2 cores (1 wrk thread unless a row says -t2), keep-alive, 16 connections:
#
#   1. GET /v1/models with an API key (no model work): TLS, then plain HTTP
#   2. POST /v1/chat/completions, one user message, greedy, max_tokens 1:
#      TLS and plain HTTP, 16 connections and 1
#   3. the same generation submitted to the engine directly
#      (build/bench/bench_gateway), 16 clients and 1: what the gateway adds
#      is the difference
#
# Prints a markdown table. BENCH_GW_SECONDS sets each run's length (default 10).
set -eu
BUILD=${1:-build}
PYTHON=${PYTHON:-python3}
SECS=${BENCH_GW_SECONDS:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MG=$(cd "$BUILD" && pwd)/moegate
DIRECT=$(cd "$BUILD" && pwd)/bench/bench_gateway
MODEL=$ROOT/build/fixtures/qwen3moe-tiny-q8_0.gguf
. "$ROOT/tests/audit/pg.sh"
. "$ROOT/tests/gateway/env.sh"
[ -x "$MG" ] && [ -x "$DIRECT" ] || { echo "gateway bench: build $MG and $DIRECT first (make bench)"; exit 1; }
[ -f "$MODEL" ] || { echo "gateway bench: $MODEL missing (make fixtures)"; exit 1; }
if ! command -v wrk >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi

T=$(mktemp -d /tmp/moegate-bench-gw.XXXXXX)
SPID=
stop_server() {
    if [ -n "$SPID" ]; then
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
        SPID=
    fi
}
trap 'stop_server; pg_cleanup; rm -rf "$T"' EXIT INT TERM

pg_start >/dev/null
gw_audit_db gwbench
printf '%s\n' "$DB" >"$T/conn"
chmod 600 "$T/conn"
gw_tls "$T" ec
mkdir -p "$T/spool"
sh "$ROOT/tests/domains/mkpack.sh" "$T/pack" # a minimal pack: the rows measure the gateway, not a pack
KEY=mg_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
HASH=$(printf %s "$KEY" | "$MG" policy hash-key 2>/dev/null)
BASE=$(basename "$MODEL" .gguf)

policy() { # tls(on|off) durability port
    cat >"$T/policy.yaml" <<EOF
server:
  listen: 127.0.0.1:$3
  tls: $1
  tls_cert: server.crt
  tls_key: server.key
  limits: {max_connections: 256, max_connections_per_client: 64, max_queue: 256}
model:
  path: $MODEL
domains:
  - {name: general, pack: pack}
tenants:
  - id: bench
    api_keys:
      - {id: k, hash: "$HASH"}
    domains: [general]
audit:
  connection_file: conn
  on_failure: spool
  spool_dir: spool
  durability: $2
  payload: hash
logging: {format: json, level: info, output: gw.log}
EOF
}

start() { # tls durability
    PORT=$(pg_free_port)
    policy "$1" "$2" "$PORT"
    "$MG" serve --policy "$T/policy.yaml" >"$T/serve.out" 2>&1 &
    SPID=$!
    SCHEME=https
    [ "$1" = off ] && SCHEME=http
    URL="$SCHEME://127.0.0.1:$PORT"
    gw_wait "$URL" "$T/ca.crt" "$SPID" && return 0
    echo "gateway bench: server did not start"
    cat "$T/serve.out"
    exit 1
}

cat >"$T/chat.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"$BASE","messages":[{"role":"user","content":"Say hello."}],"max_tokens":1,"temperature":0}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
EOF

# run_wrk NAME CONNECTIONS ARGS... -> "req/s p50_ms p99_ms" in $T/NAME
# (WRK_THREADS: wrk threads, default 1: one core for the load, one for the server)
run_wrk() {
    name=$1
    c=$2
    shift 2
    th=${WRK_THREADS:-1}
    # warm-up (TLS sessions, prefix cache), then the measured run
    wrk -t$th -c"$c" -d2s "$@" >/dev/null 2>&1 || true
    wrk -t$th -c"$c" -d"${SECS}s" --latency "$@" >"$T/$name.wrk" 2>&1
    "$PYTHON" - "$T/$name.wrk" >"$T/$name" <<'PYEOF'
import re, sys
t = open(sys.argv[1]).read()
def ms(tag):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\s*$" % tag, t, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
err = re.search(r"Socket errors: (.*)", t)
note = ""
if bad: note += " non-2xx=" + bad.group(1)
if err: note += " socket errors: " + err.group(1).strip()
print("%.0f %.2f %.2f%s" % (rps, ms("50"), ms("99"), note))
PYEOF
}

AUTH="Authorization: Bearer $KEY"
start on async
run_wrk models_tls 16 -H "$AUTH" "$URL/v1/models"
WRK_THREADS=2 run_wrk models_tls_t2 16 -H "$AUTH" "$URL/v1/models"
run_wrk chat_tls 16 -s "$T/chat.lua" "$URL/v1/chat/completions"
run_wrk chat_tls_1 1 -s "$T/chat.lua" "$URL/v1/chat/completions"
stop_server
start on strict
run_wrk chat_tls_strict 16 -s "$T/chat.lua" "$URL/v1/chat/completions"
stop_server
start off async
run_wrk models_http 16 -H "$AUTH" "$URL/v1/models"
WRK_THREADS=2 run_wrk models_http_t2 16 -H "$AUTH" "$URL/v1/models"
run_wrk chat_http 16 -s "$T/chat.lua" "$URL/v1/chat/completions"
run_wrk chat_http_1 1 -s "$T/chat.lua" "$URL/v1/chat/completions"
stop_server
"$DIRECT" -m "$MODEL" --conc 16 --seconds "$SECS" >"$T/direct16.out"
"$DIRECT" -m "$MODEL" --conc 1 --seconds "$SECS" >"$T/direct1.out"
# "direct conc=16: 306.8 req/s, p50 52.320 ms, p99 76.556 ms (...)" -> "307 52.32 76.56"
for f in direct16 direct1; do
    sed -E 's/^direct conc=[0-9]+: ([0-9.]+) req\/s, p50 ([0-9.]+) ms, p99 ([0-9.]+) ms.*/\1 \2 \3/' "$T/$f.out" \
        | awk '{printf "%.0f %.2f %.2f\n", $1, $2, $3}' >"$T/$f"
done

row() { # label file [direct-file]
    set -- "$1" $(cat "$T/$2") "${3:-}"
    label=$1 rps=$2 p50=$3 p99=$4
    shift 4
    extra=""
    while [ $# -gt 1 ]; do extra="$extra $1"; shift; done
    add=""
    if [ -n "${1:-}" ]; then
        d99=$(awk '{print $3}' "$T/$1")
        d50=$(awk '{print $2}' "$T/$1")
        add=$(awk -v a="$p50" -v b="$d50" -v c="$p99" -v d="$d99" 'BEGIN{printf "+%.2f / +%.2f", a-b, c-d}')
    fi
    printf "| %s | %s | %s | %s | %s |%s\n" "$label" "$rps" "$p50" "$p99" "${add:-}" "$extra"
}
echo
echo "wrk $(wrk --version 2>&1 | head -n 1 | awk '{print $2}') (1 thread unless marked), $(nproc) CPUs shared by wrk and the server; ${SECS}s per row, keep-alive; request logs on"
echo
echo "| path | req/s | p50 ms | p99 ms | added p50 / p99 ms |"
echo "|---|---|---|---|---|"
row "GET /v1/models + key, TLS, 16 conn" models_tls
row "GET /v1/models + key, TLS, 16 conn, wrk -t2" models_tls_t2
row "GET /v1/models + key, plain HTTP, 16 conn" models_http
row "GET /v1/models + key, plain HTTP, 16 conn, wrk -t2" models_http_t2
row "chat 1 token, TLS, 16 conn (audit async)" chat_tls direct16
row "chat 1 token, TLS, 16 conn (audit strict)" chat_tls_strict direct16
row "chat 1 token, plain HTTP, 16 conn" chat_http direct16
row "chat 1 token, engine directly, 16 clients" direct16
row "chat 1 token, TLS, 1 conn" chat_tls_1 direct1
row "chat 1 token, plain HTTP, 1 conn" chat_http_1 direct1
row "chat 1 token, engine directly, 1 client" direct1
