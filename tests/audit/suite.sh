#!/bin/sh
# tests/audit/suite.sh — the audit log against a real PostgreSQL that this
# script starts (initdb + pg_ctl in a temporary folder, random port) and
# always removes. Run by tests/run.sh with BUILD, PYTHON and QUICK set.
#
# Each case gets its own database (migrated by `moegate db migrate`) and
# its own spool folder; the gateway role is a login role `gw` granted
# moegate_gateway, as an operator would set it up. Fault cases stop the
# real server (pg_ctl stop -m fast) and kill -9 the real writer process.
# QUICK=--quick (the ASan build) skips the 10-second outage and the
# kill -9 load case. Prints "audit: N passed, M failed".
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
QUICK=${QUICK:-}
MG=$BUILD/moegate
LOAD=$BUILD/tests/tool_audit_load
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/pg.sh"

T=$(mktemp -d /tmp/moegate-audit.XXXXXX)
LOADPID=
cleanup() {
    [ -n "$LOADPID" ] && kill -9 "$LOADPID" 2>/dev/null
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

[ -x "$MG" ] && [ -x "$LOAD" ] || { echo "audit: build $MG and $LOAD first"; exit 1; }
pg_start || { echo "audit: cannot start PostgreSQL"; exit 1; }
command -v openssl >/dev/null || { echo "audit: openssl command needed for keys"; exit 1; }
openssl genpkey -algorithm ed25519 -out "$T/ckpt.pem" 2>/dev/null
head -c 32 /dev/urandom >"$T/payload.key"
head -c 32 /dev/urandom >"$T/other.key"
psql_q postgres "CREATE ROLE gw LOGIN" >/dev/null

# newdb NAME: a migrated database; sets DB (superuser) and GW (gateway role)
newdb() {
    psql_q postgres "CREATE DATABASE \"$1\"" >/dev/null || return 1
    DB="host=127.0.0.1 port=$PGPORT user=postgres dbname=$1"
    GW="host=127.0.0.1 port=$PGPORT user=gw dbname=$1"
    export DB GW
    "$MG" db migrate --db-env DB >"$T/migrate.$1.log" 2>&1 || { cat "$T/migrate.$1.log"; return 1; }
    psql_q "$1" "SET client_min_messages TO warning; GRANT moegate_gateway TO gw" >/dev/null
}

q() { psql_q "$DBNAME" "$1"; }

# ---- migrations -------------------------------------------------------------------
DBNAME=mig
newdb mig
check "migrate applies 001 and records it" \
    test "$(q "SELECT count(*) FROM schema_migrations WHERE version = 1")" = 1
"$MG" db migrate --db-env DB >"$T/m2.log" 2>&1
check "migrate again is a no-op" grep -q "up to date" "$T/m2.log"
cp -r "$HERE/../../migrations" "$T/migs"
echo "-- changed" >>"$T/migs/001_audit_schema.sql"
"$MG" db migrate --db-env DB --dir "$T/migs" >"$T/m3.log" 2>&1
check "migrate refuses a changed applied migration" grep -q 'changed after it was applied' "$T/m3.log"
"$MG" db migrate --db "host=127.0.0.1 port=1 user=x password=sekret-pw-42 connect_timeout=2" \
    >"$T/m4.log" 2>&1
check "a failed connection names no password" sh -c "! grep -q sekret '$T/m4.log' && grep -q 'connection failed' '$T/m4.log'"
"$MG" db migrate --db "host=127.0.0.1 passwordsekret-pw-43" >"$T/m5.log" 2>&1
check "a malformed connection string is not echoed" sh -c "! grep -q sekret '$T/m5.log' && grep -q malformed '$T/m5.log'"
printf 'host=127.0.0.1 port=%s user=postgres dbname=mig\n' "$PGPORT" >"$T/conn.txt"
check "--db-file works" sh -c "'$MG' db migrate --db-file '$T/conn.txt' | grep -q 'up to date'"

# ---- records land with a correct chain --------------------------------------------
DBNAME=chain
newdb chain
timeout 120 "$LOAD" --db-env GW --spool "$T" --writer chainw --n 500 --threads 4 --ckpt-key "$T/ckpt.pem" \
    --ckpt-file "$T/chain.ckpt" --ckpt-every 100 >"$T/chain.out" 2>&1
check "500 strict requests complete" test "$(grep -c '^completed' "$T/chain.out")" = 500
check "500 records, 500 request ids, seq 1..500" \
    test "$(q "SELECT count(*), count(DISTINCT request_id), min(seq), max(seq) FROM audit_events")" = "500|500|1|500"
check "rows sit in the month partition, not the default" \
    test "$(q "SELECT count(*) FROM audit_events_default")" = 0
check "independent chain recomputation (python)" \
    "$PYTHON" "$HERE/chain_check.py" "$PG_BIN/psql" "$PGPORT" chain
check "checkpoints in the database and the file" \
    sh -c "[ \$(wc -l <'$T/chain.ckpt') -ge 5 ] && [ '$(q "SELECT count(*) >= 5 FROM audit_checkpoints")' = t ]"
"$MG" audit verify --db-env DB --checkpoints "$T/chain.ckpt" >"$T/v1.log" 2>&1
check "verify passes" sh -c "grep -q '500 records in 1 chains' '$T/v1.log' && grep -q ': 0 problems' '$T/v1.log'"
openssl pkey -in "$T/ckpt.pem" -pubout -out "$T/ckpt.pub" 2>/dev/null
"$MG" audit verify --db-env DB --pubkey "$T/ckpt.pub" >"$T/v1b.log" 2>&1
check "verify --pubkey checks the database's signed checkpoints" \
    sh -c "grep -Eq 'against ([5-9]|[1-9][0-9]+) checkpoints: 0 problems' '$T/v1b.log'"
openssl genpkey -algorithm ed25519 -out "$T/other.pem" 2>/dev/null
"$MG" audit verify --db-env DB --pubkey "$T/other.pem" >"$T/v1c.log" 2>&1
check "checkpoints signed by another key are not trusted" \
    sh -c "grep -q 'against 0 checkpoints' '$T/v1c.log' && grep -q 'not used: no trusted key' '$T/v1c.log'"

# ---- append-only ---------------------------------------------------------------------
GWSQL() { "$PG_BIN/psql" -X -q -tA -h 127.0.0.1 -p "$PGPORT" -U gw -d chain -c "$1" 2>&1; }
check "gateway role: UPDATE refused" sh -c "'$PG_BIN/psql' -X -q -h 127.0.0.1 -p $PGPORT -U gw -d chain -c \"UPDATE audit_events SET status = 500 WHERE seq = 1\" 2>&1 | grep -q 'permission denied'"
check "gateway role: DELETE refused" sh -c "'$PG_BIN/psql' -X -q -h 127.0.0.1 -p $PGPORT -U gw -d chain -c \"DELETE FROM audit_events\" 2>&1 | grep -q 'permission denied'"
check "gateway role: TRUNCATE refused" sh -c "'$PG_BIN/psql' -X -q -h 127.0.0.1 -p $PGPORT -U gw -d chain -c \"TRUNCATE audit_events\" 2>&1 | grep -q 'permission denied'"
check "gateway role: INSERT and SELECT allowed" test "$(GWSQL "SELECT count(*) FROM audit_events")" = 500
check "owner UPDATE refused by trigger" sh -c "'$PG_BIN/psql' -X -q -h 127.0.0.1 -p $PGPORT -U postgres -d chain -c \"UPDATE audit_events SET status = 1\" 2>&1 | grep -q 'append-only'"
check "owner TRUNCATE refused by trigger" sh -c "'$PG_BIN/psql' -X -q -h 127.0.0.1 -p $PGPORT -U postgres -d chain -c \"TRUNCATE audit_events\" 2>&1 | grep -q 'append-only'"
check "owner DELETE of checkpoints refused" sh -c "'$PG_BIN/psql' -X -q -h 127.0.0.1 -p $PGPORT -U postgres -d chain -c \"DELETE FROM audit_checkpoints\" 2>&1 | grep -q 'append-only'"

# ---- tampering by a superuser (triggers disabled) ---------------------------------------
q "SET session_replication_role = replica; UPDATE audit_events SET tenant = 'someone-else' WHERE seq = 123" >/dev/null
"$MG" audit verify --db-env DB --checkpoints "$T/chain.ckpt" >"$T/v2.log" 2>&1
rc=$?
check "verify finds a superuser's UPDATE of one field" \
    sh -c "[ $rc = 1 ] && grep -q 'seq 123 .*altered record' '$T/v2.log' && [ \$(grep -c '^problem' '$T/v2.log') = 1 ]"
DBNAME=trunc
newdb trunc
timeout 120 "$LOAD" --db-env GW --spool "$T" --writer truncw --n 200 --threads 2 --ckpt-key "$T/ckpt.pem" \
    --ckpt-file "$T/trunc.ckpt" --ckpt-every 1000 >/dev/null 2>&1
q "SET session_replication_role = replica; DELETE FROM audit_events WHERE seq > 195; DELETE FROM audit_checkpoints" >/dev/null
"$MG" audit verify --db-env DB --checkpoints "$T/trunc.ckpt" >"$T/v3.log" 2>&1
rc=$?
check "verify finds a superuser's DELETE of the newest records (signed checkpoint file)" \
    sh -c "[ $rc = 1 ] && grep -q 'records missing.*names seq 200 but the chain ends at seq 195' '$T/v3.log'"
sed 's/ truncw 200 / truncw 201 /' "$T/trunc.ckpt" >"$T/forged.ckpt"
"$MG" audit verify --db-env DB --checkpoints "$T/forged.ckpt" >"$T/v4.log" 2>&1
check "a forged checkpoint line fails its signature" grep -q 'signature does not verify' "$T/v4.log"
"$MG" audit verify --db-env DB --from 2100-01-01 >"$T/v6.log" 2>&1
check "verify --from in the future sees nothing" grep -q '^verified 0 records' "$T/v6.log"
"$MG" audit verify --db-env DB --from 2000-01-01T00:00:00Z --to @4102444800 >"$T/v7.log" 2>&1
check "verify --from --to covers a range" grep -q '^verified 195 records' "$T/v7.log"
q "SET session_replication_role = replica; DELETE FROM audit_events WHERE seq <= 3" >/dev/null
"$MG" audit verify --db-env DB >"$T/v8.log" 2>&1
check "verify finds the oldest records deleted" grep -q 'records missing at the start, the chain begins at seq 4' "$T/v8.log"
q "INSERT INTO audit_events SELECT chain_id, seq + 1000, request_id, received_at + interval '1 second', finished_at, tenant, key_id, client_addr, client_subject, endpoint, domain, adapter_name, adapter_sha256, model_sha256, sampling, prompt_tokens, completion_tokens, status, error, latency_us, redaction, payload_mode, payload_key_id, prompt, completion, prev_hash, hash FROM audit_events WHERE seq = 10" >/dev/null
"$MG" audit verify --db-env DB >"$T/v10.log" 2>&1
check "verify finds a request id stored twice" grep -q 'request id req-.* is stored 2 times' "$T/v10.log"
check "verify exits 2 on a bad --from" sh -c "'$MG' audit verify --db-env DB --from yesterday >/dev/null 2>&1; [ \$? = 2 ]"
q "SET session_replication_role = replica; UPDATE audit_events SET seq = CASE seq WHEN 50 THEN 51 ELSE 50 END WHERE seq IN (50, 51)" >/dev/null
"$MG" audit verify --db-env DB >"$T/v5.log" 2>&1
check "verify reports swapped records" grep -q 'reordered record\|broken link' "$T/v5.log"

# ---- payload protection ------------------------------------------------------------
DBNAME=crypt
newdb crypt
timeout 120 "$LOAD" --db-env GW --spool "$T" --writer cryptw --n 20 --threads 2 --mode aes --key "$T/payload.key" \
    --payload-bytes 300 --prefix enc >/dev/null 2>&1
"$MG" audit export --db-env DB --format jsonl --key "$T/payload.key" --key-id k1 >"$T/e1.jsonl" 2>"$T/e1.err"
check "aes-256-gcm payload round-trips with the key" \
    sh -c "[ \$(grep -c '\"prompt\":\"prompt of enc-' '$T/e1.jsonl') = 20 ] && [ \$(grep -c '\"completion\":\"the answer\"' '$T/e1.jsonl') = 20 ]"
"$MG" audit export --db-env DB --format jsonl >"$T/e2.jsonl" 2>/dev/null
check "without the key the payload is unreadable" \
    sh -c "! grep -q 'prompt of enc' '$T/e2.jsonl' && [ \$(grep -c '\"prompt\":null,\"prompt_hex\":\"' '$T/e2.jsonl') = 20 ]"
"$PG_BIN/pg_dump" -h 127.0.0.1 -p "$PGPORT" -U postgres crypt >"$T/crypt.sql"
check "no clear text anywhere in a dump of the database" sh -c "! grep -q 'prompt of enc' '$T/crypt.sql' && ! grep -q 'the answer' '$T/crypt.sql'"
"$MG" audit export --db-env DB --format jsonl --key "$T/other.key" --key-id k1 >"$T/e3.jsonl" 2>/dev/null
check "a wrong key fails authentication, reveals nothing" \
    sh -c "! grep -q 'prompt of enc' '$T/e3.jsonl' && grep -q 'authentication failed' '$T/e3.jsonl'"
timeout 120 "$LOAD" --db-env GW --spool "$T" --writer shaw --n 5 --threads 1 --mode sha256 --payload-bytes 40 \
    --prefix sha >/dev/null 2>&1
want=$(printf '%s' "$("$PYTHON" -c "
n=len('prompt of sha-0-0: '); s='prompt of sha-0-0: '+''.join(chr(97+i%26) for i in range(n,40)); print(s,end='')")" | sha256sum | cut -c1-64)
check "sha256 mode stores the digest only" \
    test "$(q "SELECT encode(prompt, 'hex') FROM audit_events WHERE request_id = 'sha-0-0'")" = "$want"
"$MG" audit export --db-env DB --format csv --tenant acme >"$T/e.csv" 2>/dev/null
check "csv export: header and 25 rows" test "$(wc -l <"$T/e.csv")" = 26
check "aes asked without a key is refused at submit" \
    sh -c "timeout 60 '$LOAD' --db-env GW --spool '$T' --writer nokey --n 1 --threads 1 --mode aes 2>&1 | grep -q 'no payload key'"

# ---- spool: unreachable database, torn tail, corruption -------------------------------
DBNAME=spool
newdb spool
export DOWN="host=127.0.0.1 port=1 user=gw dbname=spool"
mkdir -p "$T/sp"
timeout 120 "$LOAD" --db-env DOWN --spool "$T/sp" --writer spw --n 30 --threads 3 --close-ms 300 >"$T/sp1.out" 2>&1
check "database unreachable: strict requests complete from the spool" \
    test "$(grep -c '^completed' "$T/sp1.out")" = 30
printf 'MGSR\000\000\001\000partial' >>"$T/sp/spw.spool" # a torn last write
cp "$T/sp/spw.spool" "$T/spw.copy"
timeout 120 "$LOAD" --db-env GW --spool "$T/sp" --writer spw --n 0 >"$T/sp2.out" 2>&1
check "torn tail dropped, spool replayed exactly once" \
    test "$(q "SELECT count(*), count(DISTINCT request_id) FROM audit_events")" = "30|30"
check "spool emptied after replay" test "$(wc -c <"$T/sp/spw.spool")" = 16
cp "$T/spw.copy" "$T/sp/spw.spool"
timeout 120 "$LOAD" --db-env GW --spool "$T/sp" --writer spw --n 0 >"$T/sp3.out" 2>&1
check "a replayed spool again inserts nothing twice" \
    test "$(q "SELECT count(*), count(DISTINCT request_id), max(seq) FROM audit_events")" = "30|30|30"
cp "$T/spw.copy" "$T/sp/spw.spool"
"$PYTHON" -c "
import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[200]^=0x55; open(p,'wb').write(b)" "$T/sp/spw.spool"
timeout 120 "$LOAD" --db-env GW --spool "$T/sp" --writer spw --n 0 >"$T/sp4.out" 2>&1
check "a corrupt spool (not a torn tail) is refused, file kept" \
    sh -c "grep -q 'corrupt record at offset' '$T/sp4.out' && [ \$(wc -c <'$T/sp/spw.spool') -gt 16 ]"
rm -f "$T/sp/spw.spool"
timeout 120 "$LOAD" --db-env DOWN --spool "$T/sp" --writer probe --spool-max 1 --close-ms 200 --probe-unwritable \
    >"$T/probe.out" 2>&1
check "database down and spool full: not writable (503), not durable" \
    sh -c "grep -q 'writable 0 wait EBUSY' '$T/probe.out' && grep -q 'close .*1 records' '$T/probe.out'"
# a server that accepts TCP connections and never answers (a dropped
# network, not a refused port): strict requests must not wait for it
"$PYTHON" -c "
import socket, sys, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)
print(s.getsockname()[1], flush=True); time.sleep(60)" >"$T/silent.port" &
SILENTPID=$!
sleep 0.5
export SILENT="host=127.0.0.1 port=$(cat "$T/silent.port") user=gw dbname=spool connect_timeout=2"
timeout 60 "$LOAD" --db-env SILENT --spool "$T/sp" --writer silent --n 40 --threads 2 --sleep-ms 20 \
    --close-ms 300 >"$T/silent.out" 2>&1
kill "$SILENTPID" 2>/dev/null
ms=$(sed -n 's/^requests done in \([0-9]*\) ms$/\1/p' "$T/silent.out")
check "a silent server delays no request: 40 strict requests in ${ms:-?} ms (connect timeout 2 s)" \
    sh -c "[ \$(grep -c '^completed' '$T/silent.out') = 40 ] && [ -n '$ms' ] && [ '${ms:-99999}' -lt 1500 ]"
rm -f "$T/sp/probe.spool"
timeout 120 "$LOAD" --db-env DOWN --spool "$T/sp" --writer probe2 --close-ms 200 --probe-unwritable >"$T/probe2.out" 2>&1
check "database down, spool working: writable" grep -q 'writable 1 wait OK' "$T/probe2.out"

# ---- retention -----------------------------------------------------------------------
DBNAME=ret
newdb ret
timeout 120 "$LOAD" --db-env GW --spool "$T" --writer oldw --n 40 --threads 2 --received-days-ago 400 --prefix old \
    >/dev/null 2>&1
timeout 120 "$LOAD" --db-env GW --spool "$T" --writer neww --n 10 --threads 1 --prefix new >/dev/null 2>&1
mkdir -p "$T/exp"
"$MG" audit retention --db-env DB --export-dir "$T/exp" --default-days 365 --tenant acme=cn-netlog \
    >"$T/ret.log" 2>&1
part=$(ls "$T/exp" 2>/dev/null | head -n 1)
check "expired month exported (40 records) and detached, never dropped" \
    sh -c "[ -n '$part' ] && [ \$(wc -l <'$T/exp/$part') = 40 ] && [ '$(q "SELECT count(*) FROM audit_events")' = 10 ] && [ '$(q "SELECT records FROM audit_retention_log")' = 40 ]"
check "the detached table keeps its rows" \
    test "$(q "SELECT count(*) FROM ${part%.jsonl}" 2>/dev/null)" = 40
"$MG" audit verify --db-env DB >"$T/v9.log" 2>&1
check "verify after retention: remaining chain intact" grep -q '^verified 10 records in 1 chains.*: 0 problems' "$T/v9.log"
"$MG" audit retention --db-env DB --export-dir "$T/exp" --default-days 365 --tenant acme=securities \
    --dry-run >"$T/ret2.log" 2>&1
check "current month kept" grep -q "^audit_events_$(date -u +%Y%m): kept" "$T/ret2.log"

# ---- faults under load -----------------------------------------------------------------
if [ "$QUICK" != "--quick" ]; then
    # PostgreSQL stopped for 10 s during 200 requests, then restarted
    DBNAME=outage
    newdb outage
    timeout 120 "$LOAD" --db-env GW --spool "$T" --writer outw --n 200 --threads 2 --sleep-ms 170 --prefix out \
        --close-ms 30000 >"$T/out.out" 2>&1 &
    LOADPID=$!
    sleep 2
    pg_down
    sleep 10
    pg_up
    wait "$LOADPID"
    lrc=$?
    LOADPID=
    check "outage: all 200 requests completed" \
        sh -c "[ $lrc = 0 ] && [ \$(grep -c '^completed' '$T/out.out') = 200 ]"
    check "outage: the spool was used and replayed while serving" \
        sh -c "grep -q 'spooled=[1-9]' '$T/out.out' && grep -q 'replayed=[1-9]' '$T/out.out'"
    check "outage: every request present exactly once" \
        test "$(q "SELECT count(*), count(DISTINCT request_id) FROM audit_events")" = "200|200"
    check "outage: chain intact" "$PYTHON" "$HERE/chain_check.py" "$PG_BIN/psql" "$PGPORT" outage

    # a spool too small for the outage: requests wait (unwritable: 503 for
    # new ones) and all land once the database is back
    DBNAME=spoolfull
    newdb spoolfull
    pg_down
    timeout 120 "$LOAD" --db-env GW --spool "$T" --writer fullw --n 100 --threads 4 --spool-max 8000 --prefix full \
        --close-ms 30000 >"$T/full.out" 2>&1 &
    LOADPID=$!
    sleep 3
    pg_up
    wait "$LOADPID"
    lrc=$?
    LOADPID=
    check "spool full during an outage: every request lands once the database is back" \
        sh -c "[ $lrc = 0 ] && [ \$(grep -c '^completed' '$T/full.out') = 100 ] && [ '$(q "SELECT count(*), count(DISTINCT request_id) FROM audit_events")' = '100|100' ]"

    # kill -9 of the serving process under load (strict), once while writing
    # to PostgreSQL and once while spooling; a new writer on the same spool
    # must land every request whose response was completed
    DBNAME=crash
    newdb crash
    round=0
    for phase in pg spool; do
        round=$((round + 1))
        "$LOAD" --db-env GW --spool "$T" --writer crashw --n 1000000 --threads 8 --prefix "k$round" \
            >"$T/crash$round.out" 2>/dev/null &
        LOADPID=$!
        sleep 1.5
        [ $phase = spool ] && pg_down
        sleep 1
        kill -9 "$LOADPID"
        wait "$LOADPID" 2>/dev/null
        LOADPID=
        [ $phase = spool ] && pg_up
        timeout 120 "$LOAD" --db-env GW --spool "$T" --writer crashw --n 0 >"$T/replay$round.out" 2>&1
    done
    grep '^completed' "$T/crash1.out" "$T/crash2.out" | sed 's/.*completed //' | sort >"$T/done.txt"
    q "SELECT request_id FROM audit_events" | sort >"$T/db.txt"
    n_done=$(wc -l <"$T/done.txt")
    missing=$(comm -23 "$T/done.txt" "$T/db.txt" | wc -l)
    check "kill -9: $n_done completed requests, none missing after restart" \
        sh -c "[ $n_done -gt 1000 ] && [ $missing = 0 ]"
    check "kill -9: no request id twice" \
        test "$(q "SELECT count(*) = count(DISTINCT request_id) FROM audit_events")" = t
    check "kill -9: chain intact across both crashes" \
        "$PYTHON" "$HERE/chain_check.py" "$PG_BIN/psql" "$PGPORT" crash
fi

echo "audit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
