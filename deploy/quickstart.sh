#!/bin/sh
# deploy/quickstart.sh — the whole platform on one machine, non-interactively:
#
#   deps -> build -> model -> adapters -> certificates -> PostgreSQL ->
#   migrate -> API key -> policy -> gateway over TLS -> one request per
#   domain and one "auto" -> the audit rows -> moegate audit verify
#
#   make quickstart                    # the demo model and demo adapters
#   make quickstart MODEL=path.gguf    # your own model (see "adapters" below)
#   make quickstart-stop               # stops the gateway and PostgreSQL (keeps the data)
#   make quickstart-clean              # stops them and removes the quickstart's folder
#
# Everything it makes lives under QUICKSTART_DIR (default var/quickstart):
# the policy, the TLS CA and server certificate, keys (mode 0600), the
# PostgreSQL cluster, the audit spool and checkpoint file, logs and pid files.
# Run it again at any time: what exists is reused (certificates, key, database,
# audit records), a gateway still running from an earlier run is restarted
# with the new policy, PostgreSQL is started if it is not running.
#
# Environment:
#   MODEL                 a GGUF model to serve instead of the demo model
#   QUICKSTART_DIR        where everything goes (default var/quickstart in the checkout)
#   QUICKSTART_PORT       the gateway's HTTPS port on 127.0.0.1 (default 8443)
#   QUICKSTART_PG_PORT    PostgreSQL's port on 127.0.0.1 (default: a free port
#                         chosen when the cluster is created, then kept)
#   QUICKSTART_SKIP_DEPS=1, QUICKSTART_SKIP_BUILD=1   skip those steps (CI,
#                         where tests/run.sh has done both)
#   QUICKSTART_MAX_TOKENS answer length of the demo requests (default 32)
#   BUILD, PYTHON, FIXTURES   as for make (build, /usr/bin/python3, build/fixtures)
#
# Exit status 0 when every step succeeded; otherwise non-zero, after a line
# naming the step that failed. Logs: QUICKSTART_DIR/log/.
set -eu

HERE_PWD=$(pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
FIXTURES=${FIXTURES:-build/fixtures}
MODEL=${MODEL:-}
PORT=${QUICKSTART_PORT:-8443}
MAX_TOKENS=${QUICKSTART_MAX_TOKENS:-32}
QS=${QUICKSTART_DIR:-$ROOT/var/quickstart}
case "$QS" in /*) ;; *) QS="$HERE_PWD/$QS" ;; esac
case "$MODEL" in /* | '') ;; *) MODEL="$HERE_PWD/$MODEL" ;; esac
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MG="$BUILD/moegate"
DEMO=qwen3moe-tiny-q4_K

STEP=""
FAILED=""
step() {
    STEP=$1
    printf '\n==> %s\n' "$1"
}
fail() { # message: the current step failed
    echo "quickstart: FAILED at step '$STEP': $*" >&2
    echo "  logs in $QS/log/; make quickstart-stop stops what was started" >&2
    STEP=""
    exit 1
}
on_exit() {
    rc=$?
    if [ "$rc" -ne 0 ] && [ -n "$STEP" ]; then
        echo "quickstart: FAILED at step '$STEP' (exit $rc)" >&2
        echo "  logs in $QS/log/; make quickstart-stop stops what was started" >&2
    fi
}
trap on_exit EXIT

case "$PORT" in '' | *[!0-9]*) fail "QUICKSTART_PORT must be a port number, got '$PORT'" ;; esac
mkdir -p "$QS"
chmod 755 "$QS" # searchable, so that the postgres user reaches pg/; what is inside has its own modes
echo "made by deploy/quickstart.sh; make quickstart-clean removes this folder" >"$QS/.moegate-quickstart"
# a checkout's var/ ignores itself, so nothing made here shows in git status
case "$QS" in "$ROOT"/var/*) [ -f "$ROOT/var/.gitignore" ] || echo '*' >"$ROOT/var/.gitignore" ;; esac
mkdir -p "$QS/log" "$QS/run" "$QS/tls" "$QS/keys" "$QS/db" "$QS/spool" "$QS/adapters" "$QS/requests"
chmod 700 "$QS/keys" "$QS/db"
umask 077 # every file made below is the owner's only unless chmod'ed

# ---------------------------------------------------------------------------
step "dependencies"
if [ "${QUICKSTART_SKIP_DEPS:-}" = 1 ]; then
    echo "skipped (QUICKSTART_SKIP_DEPS=1)"
else
    sh deploy/install-deps.sh || fail "deploy/install-deps.sh failed"
    echo "the Debian packages are installed"
fi
for c in openssl curl; do
    command -v "$c" >/dev/null 2>&1 || fail "the $c command is missing"
done
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "${PG_BIN:-/nonexistent}/initdb" ] || fail "no PostgreSQL server binaries under /usr/lib/postgresql (make deps)"

# ---------------------------------------------------------------------------
step "build"
if [ "${QUICKSTART_SKIP_BUILD:-}" = 1 ]; then
    echo "skipped (QUICKSTART_SKIP_BUILD=1)"
else
    ${MAKE:-make} --no-print-directory BUILD="$BUILD" all >"$QS/log/build.log" 2>&1 ||
        { tail -n 30 "$QS/log/build.log" >&2; fail "make all failed (log: $QS/log/build.log)"; }
fi
[ -x "$MG" ] || fail "$MG was not built"
"$MG" version

# ---------------------------------------------------------------------------
step "model"
if [ -z "$MODEL" ]; then
    # Random weights with the real Qwen3 tokenizer and chat template: every
    # step is the real one, the text is gibberish.
    sh tests/fixtures/fetch_tokenizers.sh >/dev/null || fail "cannot fetch the tokenizers (tests/fixtures/fetch_tokenizers.sh)"
    "$PYTHON" tests/fixtures/gen_models.py --out "$FIXTURES" --only "$DEMO" >"$QS/log/model.log" 2>&1 ||
        { cat "$QS/log/model.log" >&2; fail "gen_models.py failed"; }
    MODEL_PATH="$FIXTURES/$DEMO.gguf"
    echo "the demo model: $MODEL_PATH (random weights, real Qwen3 tokenizer and chat template)"
else
    MODEL_PATH=$MODEL
    [ -f "$MODEL_PATH" ] || fail "MODEL=$MODEL: no such file"
    echo "your model: $MODEL_PATH"
fi
MODEL_PATH="$(cd "$(dirname "$MODEL_PATH")" && pwd)/$(basename "$MODEL_PATH")"
"$MG" model inspect "$MODEL_PATH" >"$QS/log/model-inspect.log" 2>&1 ||
    { cat "$QS/log/model-inspect.log" >&2; fail "moegate model inspect refused $MODEL_PATH"; }
sed -n '1,6p' "$QS/log/model-inspect.log"

# ---------------------------------------------------------------------------
step "adapters"
# One GGUF LoRA per domain from the fixture generator, shaped from the
# model's own header. For the demo model they are random and strong (every
# attention projection and every routed expert), so each domain visibly
# answers differently. For your own model they are untrained (B = 0, as PEFT
# initialises a LoRA): they load, are pinned by SHA-256 and recorded in the
# audit, and change nothing; point the policy at your trained adapters.
if [ -z "$MODEL" ]; then
    ADAPTER_OPTS="--experts --rel 1"
else
    ADAPTER_OPTS="--rel 0"
fi
# shellcheck disable=SC2086
"$PYTHON" tests/fixtures/gen_adapters.py --demo --model "$MODEL_PATH" --out "$QS/adapters" $ADAPTER_OPTS \
    --domains finance,medical,telecom >"$QS/log/adapters.log" 2>&1 ||
    { cat "$QS/log/adapters.log" >&2; fail "gen_adapters.py --demo failed"; }
cat "$QS/log/adapters.log"
adapter_sha() { sha256sum "$QS/adapters/$1-lora.gguf" | cut -d' ' -f1; }
SHA_finance=$(adapter_sha finance)
SHA_medical=$(adapter_sha medical)
SHA_telecom=$(adapter_sha telecom)
echo "finance-lora  sha256 $SHA_finance"
echo "medical-lora  sha256 $SHA_medical"
echo "telecom-lora  sha256 $SHA_telecom"

# ---------------------------------------------------------------------------
step "certificates"
# A local CA and a server certificate for localhost and 127.0.0.1 (P-256
# keys, mode 0600). Kept across runs while the server certificate has more
# than a day left and was signed by this CA.
T="$QS/tls"
if [ -f "$T/server.pem" ] && [ -f "$T/server.key" ] && [ -f "$QS/ca.pem" ] &&
    openssl x509 -checkend 86400 -noout -in "$T/server.pem" >/dev/null 2>&1 &&
    openssl verify -CAfile "$QS/ca.pem" "$T/server.pem" >/dev/null 2>&1; then
    echo "reusing the CA and server certificate in $T"
else
    {
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/ca.key" &&
            openssl req -x509 -new -key "$T/ca.key" -sha256 -days 3650 -subj "/CN=moegate quickstart CA" \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
                -out "$QS/ca.pem" &&
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/server.key" &&
            openssl req -new -key "$T/server.key" -subj "/CN=localhost" -out "$T/server.csr" &&
            printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
                "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$T/server.ext" &&
            openssl x509 -req -in "$T/server.csr" -CA "$QS/ca.pem" -CAkey "$T/ca.key" \
                -CAcreateserial -CAserial "$T/ca.srl" \
                -days 365 -sha256 -extfile "$T/server.ext" -out "$T/server.pem"
    } >"$QS/log/openssl.log" 2>&1 || { cat "$QS/log/openssl.log" >&2; fail "openssl failed"; }
    chmod 600 "$T/ca.key" "$T/server.key"
    chmod 644 "$QS/ca.pem" "$T/server.pem"
    echo "made a CA ($QS/ca.pem) and a server certificate for localhost, 127.0.0.1 ($T/server.pem)"
fi
openssl x509 -noout -subject -ext subjectAltName -in "$T/server.pem" 2>/dev/null | sed 's/^/  /'

# The Ed25519 key that signs the audit chain's checkpoints.
if [ ! -f "$QS/keys/checkpoint.pem" ]; then
    openssl genpkey -algorithm ed25519 -out "$QS/keys/checkpoint.pem" >>"$QS/log/openssl.log" 2>&1 ||
        fail "openssl genpkey ed25519 failed"
fi
openssl pkey -in "$QS/keys/checkpoint.pem" -pubout -out "$QS/keys/checkpoint.pub.pem" 2>>"$QS/log/openssl.log" ||
    fail "openssl pkey -pubout failed"
chmod 600 "$QS/keys/checkpoint.pem"
chmod 644 "$QS/keys/checkpoint.pub.pem"
echo "audit checkpoint signing key: $QS/keys/checkpoint.pem (public: checkpoint.pub.pem)"

# ---------------------------------------------------------------------------
step "PostgreSQL"
# A cluster of its own under QUICKSTART_DIR/pg, on 127.0.0.1 only (no Unix
# socket), password (SCRAM) authentication for every role. The passwords are
# random and sit in QUICKSTART_DIR/db/pgpass (0600); the connection strings
# in db/*.conn name that file and hold no secret themselves. As root the
# server runs as the `postgres` user (initdb refuses root).
PGD="$QS/pg"
pg_as() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
rand_hex() { openssl rand -hex 24; }
mkdir -p "$PGD"
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || fail "as root, PostgreSQL runs as the 'postgres' user, which does not exist (make deps)"
    chown postgres "$PGD"
    chmod 700 "$PGD"
    runuser -u postgres -- test -w "$PGD" ||
        fail "the postgres user cannot reach $PGD: every folder above it must be searchable by others (chmod o+x), or set QUICKSTART_DIR"
fi
echo "$PG_BIN" >"$QS/run/pg_bin"
if [ ! -f "$PGD/data/PG_VERSION" ]; then
    rm -rf "$PGD/data"
    PG_PORT=${QUICKSTART_PG_PORT:-$(free_port)}
    echo "$PG_PORT" >"$QS/run/pg_port"
    printf '127.0.0.1:%s:*:postgres:%s\n' "$PG_PORT" "$(rand_hex)" >"$QS/db/pgpass"
    # initdb reads the superuser's password from a file its owner can read
    pw="$PGD/initdb.pw"
    cut -d: -f5 "$QS/db/pgpass" >"$pw"
    [ "$(id -u)" = 0 ] && chown postgres "$pw"
    pg_as "$PG_BIN/initdb" -D "$PGD/data" -U postgres --pwfile="$pw" --auth=scram-sha-256 -E UTF8 \
        --locale=C.UTF-8 >"$QS/log/initdb.log" 2>&1 || { rm -f "$pw"; cat "$QS/log/initdb.log" >&2; fail "initdb failed"; }
    rm -f "$pw"
    cat >>"$PGD/data/postgresql.conf" <<EOF

# moegate quickstart
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
EOF
    echo "created a cluster in $PGD/data (port $PG_PORT)"
else
    PG_PORT=$(cat "$QS/run/pg_port")
    echo "reusing the cluster in $PGD/data (port $PG_PORT)"
fi
if pg_as "$PG_BIN/pg_ctl" -D "$PGD/data" status >/dev/null 2>&1; then
    echo "PostgreSQL is already running"
else
    pg_as "$PG_BIN/pg_ctl" -D "$PGD/data" -l "$PGD/postgresql.log" -w -t 60 start >/dev/null ||
        { tail -n 20 "$PGD/postgresql.log" >&2; fail "PostgreSQL did not start (log: $PGD/postgresql.log)"; }
    echo "PostgreSQL started on 127.0.0.1:$PG_PORT (log: $PGD/postgresql.log)"
fi
conn() { # user [database]
    echo "host=127.0.0.1 port=$PG_PORT dbname=${2:-moegate} user=$1 passfile=$QS/db/pgpass connect_timeout=10"
}
psql_admin() { # database sql...
    db=$1
    shift
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$(conn postgres "$db")" "$@"
}
# the database, a login for the gateway (INSERT, SELECT) and one for reading
# and verifying the audit log (SELECT)
if [ "$(psql_admin postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'moegate'")" != 1 ]; then
    psql_admin postgres -c "CREATE DATABASE moegate" || fail "CREATE DATABASE failed"
fi
for u in moegate_gw moegate_reader; do
    if ! grep -q ":$u:" "$QS/db/pgpass"; then
        p=$(rand_hex)
        printf '127.0.0.1:%s:*:%s:%s\n' "$PG_PORT" "$u" "$p" >>"$QS/db/pgpass"
        if [ "$(psql_admin postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$u'")" = 1 ]; then
            verb=ALTER
        else
            verb=CREATE
        fi
        # on stdin: a password on the command line would show in ps
        printf "%s ROLE %s LOGIN PASSWORD '%s';\n" "$verb" "$u" "$p" | psql_admin postgres >/dev/null ||
            fail "$verb ROLE $u failed"
        p=""
    fi
done
chmod 600 "$QS/db/pgpass"
conn postgres >"$QS/db/admin.conn"
conn moegate_gw >"$QS/db/gateway.conn"
conn moegate_reader >"$QS/db/reader.conn"
chmod 600 "$QS/db/admin.conn" "$QS/db/gateway.conn" "$QS/db/reader.conn"
echo "database moegate; roles moegate_gw (the gateway) and moegate_reader (audit reads); connection files in $QS/db/"

# ---------------------------------------------------------------------------
step "migrate"
"$MG" db migrate --db-file "$QS/db/admin.conn" >"$QS/log/migrate.log" 2>&1 ||
    { cat "$QS/log/migrate.log" >&2; fail "moegate db migrate failed"; }
cat "$QS/log/migrate.log"
psql_admin moegate -c "SET client_min_messages TO warning; GRANT moegate_gateway TO moegate_gw; GRANT moegate_auditor TO moegate_reader" \
    >/dev/null || fail "GRANT failed"
echo "granted moegate_gateway to moegate_gw, moegate_auditor to moegate_reader"

# ---------------------------------------------------------------------------
step "API key"
# A random key for tenant demo; only its hash goes into the policy. The key
# itself stays in QUICKSTART_DIR/api-key (0600) and is never printed whole.
if [ -s "$QS/api-key" ]; then
    KEY_HASH=$("$MG" policy hash-key <"$QS/api-key" 2>/dev/null) || fail "moegate policy hash-key failed"
    echo "reusing the key in $QS/api-key"
else
    out=$("$MG" policy hash-key --generate </dev/null 2>/dev/null) || fail "moegate policy hash-key --generate failed"
    printf '%s\n' "$out" | sed -n 's/^key: *//p' | tr -d '\n' >"$QS/api-key.tmp"
    KEY_HASH=$(printf '%s\n' "$out" | sed -n 's/^hash: *//p')
    out=""
    [ -s "$QS/api-key.tmp" ] || fail "no key in the output of moegate policy hash-key --generate"
    mv "$QS/api-key.tmp" "$QS/api-key"
    echo "made a key for tenant demo: $QS/api-key"
fi
chmod 600 "$QS/api-key"
case "$KEY_HASH" in sha256:*) ;; *) fail "moegate policy hash-key gave no hash" ;; esac
KEY_SHOWN="$(cut -c1-7 "$QS/api-key")..."
echo "key $KEY_SHOWN  hash $KEY_HASH"

# ---------------------------------------------------------------------------
step "policy"
POLICY="$QS/policy.yaml"
write_policy() { # with_new_sections (1: router and content_labels)
    {
        cat <<EOF
# The quickstart's policy (written by deploy/quickstart.sh; schema:
# policies/README.md). Relative paths are relative to this file's folder.
server:
  listen: 127.0.0.1:$PORT
  tls: on
  tls_cert: tls/server.pem
  tls_key: tls/server.key
  public_endpoints: [ready]
model:
  path: $MODEL_PATH
  context_length: 4096
adapters:
  - {name: finance-lora, path: adapters/finance-lora.gguf, sha256: $SHA_finance}
  - {name: medical-lora, path: adapters/medical-lora.gguf, sha256: $SHA_medical}
  - {name: telecom-lora, path: adapters/telecom-lora.gguf, sha256: $SHA_telecom}
domains:
  - {name: finance, pack: $ROOT/domains/finance, adapter: finance-lora}
  - {name: medical, pack: $ROOT/domains/medical, adapter: medical-lora}
  - {name: telecom, pack: $ROOT/domains/telecom, adapter: telecom-lora}
EOF
        if [ "$1" = 1 ]; then
            cat <<EOF
router: {ood_examples: $ROOT/domains/_router/ood_examples.txt}
content_labels: {provider: "moegate quickstart"}
EOF
        fi
        cat <<EOF
tenants:
  - id: demo
    api_keys:
      - {id: quickstart, hash: "$KEY_HASH"}
    domains: [finance, medical, telecom]
audit:
  # the embedded PostgreSQL; an operator's own database is this one line
  # (a file holding its libpq connection string)
  connection_file: db/gateway.conn
  on_failure: spool
  spool_dir: spool
  durability: strict
  payload: hash
  checkpoint_key: keys/checkpoint.pem
  writer_id: quickstart
logging: {format: json, level: info, output: log/gateway.log}
EOF
    } >"$POLICY.tmp"
    mv "$POLICY.tmp" "$POLICY"
    chmod 644 "$POLICY"
}
write_policy 1
if ! "$MG" policy check "$POLICY" >"$QS/log/policy-check.log" 2>&1; then
    if grep -q "unknown key '\(router\|content_labels\)'" "$QS/log/policy-check.log"; then
        # a moegate from before the router and content_labels sections
        echo "note: this moegate does not know the policy's router/content_labels sections yet; written without them"
        write_policy 0
        "$MG" policy check "$POLICY" >"$QS/log/policy-check.log" 2>&1 ||
            { cat "$QS/log/policy-check.log" >&2; fail "moegate policy check refused $POLICY"; }
    else
        cat "$QS/log/policy-check.log" >&2
        fail "moegate policy check refused $POLICY"
    fi
fi
cat "$QS/log/policy-check.log"
echo "policy: $POLICY"

# ---------------------------------------------------------------------------
step "gateway"
if [ -f "$QS/run/gateway.pid" ]; then
    echo "a gateway from an earlier run may be running: stopping it first"
    QUICKSTART_DIR="$QS" sh "$ROOT/deploy/quickstart-stop.sh" --gateway-only || fail "cannot stop the earlier gateway"
fi
# (SO_REUSEADDR as the server's own bind: the last run's closed connections do not count)
if ! "$PYTHON" -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",int(sys.argv[1])))' "$PORT" 2>/dev/null; then
    fail "port $PORT on 127.0.0.1 is in use: stop what uses it, or set QUICKSTART_PORT"
fi
URL="https://127.0.0.1:$PORT"
: >"$QS/log/serve.log"
# its own session: the gateway outlives this script and the terminal's ^C
setsid "$MG" serve --policy "$POLICY" </dev/null >>"$QS/log/serve.log" 2>&1 &
GW_PID=$!
echo "$GW_PID" >"$QS/run/gateway.pid"
CURL="curl -sS --cacert $QS/ca.pem --max-time 120"
# loading a large model takes a while: QUICKSTART_START_TIMEOUT seconds (default 300)
up=0
i=0
while [ $i -lt $((2 * ${QUICKSTART_START_TIMEOUT:-300})) ]; do
    if $CURL -o /dev/null --max-time 2 "$URL/health" 2>/dev/null; then
        up=1
        break
    fi
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.5
    i=$((i + 1))
done
if [ $up != 1 ]; then
    tail -n 20 "$QS/log/serve.log" >&2
    kill -0 "$GW_PID" 2>/dev/null && QUICKSTART_DIR="$QS" sh "$ROOT/deploy/quickstart-stop.sh" --gateway-only
    fail "the gateway did not answer on $URL/health (log: $QS/log/serve.log)"
fi
echo "moegate serve (pid $GW_PID) is up on $URL (TLS; log: $QS/log/gateway.log)"
$CURL "$URL/health" && echo
ready=$($CURL -o /dev/null -w '%{http_code}' "$URL/ready" 2>/dev/null) || ready=000
echo "GET /ready: $ready"
[ "$ready" = 200 ] || fail "GET /ready answered $ready, not 200"

# ---------------------------------------------------------------------------
step "requests"
if [ -z "$MODEL" ]; then
    echo "(the demo model has random weights: its answers are gibberish; the path"
    echo " they take — TLS, key, policy, domain pack, adapter, engine, audit — is the real one)"
fi
: >"$QS/requests/ids"
ask() { # name model question
    name=$1
    body=$("$PYTHON" -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "messages": [{"role": "user", "content": sys.argv[2]}], "max_tokens": int(sys.argv[3]), "seed": 7}))' \
        "$2" "$3" "$MAX_TOKENS")
    code=$($CURL -o "$QS/requests/$name.json" -D "$QS/requests/$name.headers" -w '%{http_code}' \
        -H "Authorization: Bearer $(cat "$QS/api-key")" -H 'Content-Type: application/json' \
        --data-binary "$body" "$URL/v1/chat/completions" 2>"$QS/requests/$name.err") || code=000
    rid=$(tr -d '\r' <"$QS/requests/$name.headers" 2>/dev/null | awk -F': ' 'tolower($1)=="x-request-id"{print $2}')
    route_hdr=$(tr -d '\r' <"$QS/requests/$name.headers" 2>/dev/null | awk -F': ' 'tolower($1)=="x-moegate-route"{print $2}')
    echo "$name $code ${rid:-none}" >>"$QS/requests/ids"
    printf '\n[%s] model "%s": %s\n' "$name" "$2" "$3"
    "$PYTHON" - "$QS/requests/$name.json" "$code" "$rid" "$route_hdr" <<'EOF'
import json, sys
path, code, rid, route_hdr = sys.argv[1:5]
try:
    d = json.load(open(path, encoding="utf-8"))
except Exception:
    d = {}
print("  HTTP %s, request id %s" % (code, rid or "-"))
if code == "200" and isinstance(d, dict) and d.get("choices"):
    text = (d["choices"][0].get("message") or {}).get("content") or ""
    text = " ".join(text.split())
    print("  answered by model: %s" % d.get("model"))
    # the start, and the end where a pack's disclaimer goes
    print("  answer: %s" % (text if len(text) <= 320 else text[:150] + " ... " + text[-150:]))
    u = d.get("usage") or {}
    print("  tokens: %s prompt, %s completion, finish %s" % (
        u.get("prompt_tokens"), u.get("completion_tokens"), d["choices"][0].get("finish_reason")))
elif isinstance(d, dict) and isinstance(d.get("error"), dict):
    print("  error: %s (%s)" % (d["error"].get("message"), d["error"].get("code")))
else:
    print("  (no JSON answer; see the .err file next to it)")
if isinstance(d, dict) and d.get("route") is not None:
    print("  route: %s" % json.dumps(d["route"], ensure_ascii=False))
if route_hdr:
    print("  x-moegate-route: %s" % route_hdr)
EOF
    [ "$code" = 200 ] || FAILED="$FAILED request:$name"
}
ask finance finance "What does a bond's yield to maturity measure?"
ask medical medical "Summarise this discharge note: patient admitted with community-acquired pneumonia, treated with antibiotics, stable."
ask telecom telecom "My mobile data stopped working after I changed my plan yesterday. What should I check?"
ask auto auto "Why do bond yields rise when interest rates go up, and what does that mean for a bond fund's price?"
# the router's choice for "auto": the JSON's route, else the header
AUTO_DOMAIN=$("$PYTHON" -c 'import json,sys
try: d = json.load(open(sys.argv[1]))
except Exception: d = {}
r = d.get("route") if isinstance(d, dict) else None
print(r.get("domain") or "" if isinstance(r, dict) else "")' "$QS/requests/auto.json")
[ -n "$AUTO_DOMAIN" ] || AUTO_DOMAIN=$(tr -d '\r' <"$QS/requests/auto.headers" | awk -F': ' 'tolower($1)=="x-moegate-route"{print $2}' | sed 's/[;, ].*//')
echo "$AUTO_DOMAIN" >"$QS/requests/auto.domain"
if [ -n "$AUTO_DOMAIN" ]; then
    printf '\nmodel "auto" was routed to: %s\n' "$AUTO_DOMAIN"
fi
label=$(tr -d '\r' <"$QS/requests/finance.headers" | awk 'tolower($0) ~ /^x-aigc-label:/' | head -n 1)
[ -n "$label" ] && echo "each answer is labelled as AI-generated (policy content_labels), e.g. $label"

# ---------------------------------------------------------------------------
step "audit rows"
# This run's requests, read as moegate_reader (SELECT only). In strict
# durability a response ends only after its record is committed.
ids=$(awk '$3 != "none" {printf "%s'\''%s'\''", (n++ ? "," : ""), $3}' "$QS/requests/ids")
if [ -n "$ids" ]; then
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -P footer=off -d "$(cat "$QS/db/reader.conn")" -c "
SELECT request_id, tenant, domain, adapter_name, left(adapter_sha256, 12) AS adapter_sha256,
       status, prompt_tokens AS prompt, completion_tokens AS completion,
       round(latency_us / 1000.0, 1) AS latency_ms
  FROM audit_events WHERE request_id IN ($ids) ORDER BY received_at, seq" ||
        FAILED="$FAILED audit-rows"
    n=$("$PG_BIN/psql" -X -q -tA -d "$(cat "$QS/db/reader.conn")" -c "SELECT count(*) FROM audit_events") || n='?'
    echo "audit_events holds $n records in all (every run of the quickstart adds to the same chain)"
else
    echo "no request got a request id" >&2
    FAILED="$FAILED audit-rows"
fi

# ---------------------------------------------------------------------------
step "audit verify"
CKPT="$QS/spool/quickstart.ckpt"
set -- --db-file "$QS/db/reader.conn" --pubkey "$QS/keys/checkpoint.pub.pem"
[ -s "$CKPT" ] && set -- "$@" --checkpoints "$CKPT"
echo "moegate audit verify $*"
if "$MG" audit verify "$@" >"$QS/log/verify.log" 2>&1; then
    cat "$QS/log/verify.log"
    echo "the chain verifies"
else
    cat "$QS/log/verify.log"
    FAILED="$FAILED audit-verify"
fi

# ---------------------------------------------------------------------------
STEP=""
cat <<EOF

==> done
The gateway is running: $URL (pid $GW_PID), PostgreSQL on 127.0.0.1:$PG_PORT.
  stop both:       make quickstart-stop      (data kept; make quickstart starts again)
  remove all:      make quickstart-clean
  API key:         $QS/api-key ($KEY_SHOWN, tenant demo)
  CA certificate:  $QS/ca.pem
  policy:          $QS/policy.yaml
  logs:            $QS/log/ (gateway.log: JSON lines), PostgreSQL: $PGD/postgresql.log
  audit reader:    psql "\$(cat $QS/db/reader.conn)"
Try it:
  curl --cacert $QS/ca.pem -H "Authorization: Bearer \$(cat $QS/api-key)" \\
       -H 'Content-Type: application/json' $URL/v1/chat/completions \\
       -d '{"model": "auto", "messages": [{"role": "user", "content": "My phone bill doubled this month, why?"}], "max_tokens": 32}'
EOF
if [ -n "$FAILED" ]; then
    echo "quickstart: FAILED:$FAILED" >&2
    exit 1
fi
