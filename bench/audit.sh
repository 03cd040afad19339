#!/bin/sh
# bench/audit.sh BUILD — the audit writer benchmark (bench/bench_audit.c)
# against a PostgreSQL started here (initdb + pg_ctl in a temporary folder,
# random port, fsync and synchronous_commit on, as in production) and
# removed afterwards. Prints markdown tables; bench/README.md keeps the
# measured figures. BENCH_AUDIT_N sets the records per throughput row.
set -eu
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../tests/audit/pg.sh"
T=$(mktemp -d /tmp/moegate-bench-audit.XXXXXX)
trap 'pg_cleanup; rm -rf "$T"' EXIT INT TERM
# a server sized for the writer: WAL room so checkpoints do not land
# inside a measured row; everything else stays at its default
pg_start -c max_wal_size=4GB -c shared_buffers=256MB
psql_q postgres "CREATE DATABASE bench" >/dev/null
export BENCH_DB="host=127.0.0.1 port=$PGPORT user=postgres dbname=bench"
"$BUILD/moegate" db migrate --db-env BENCH_DB >/dev/null
openssl genpkey -algorithm ed25519 -out "$T/ckpt.pem" 2>/dev/null
echo "PostgreSQL $(psql_q bench 'SHOW server_version'), synchronous_commit=$(psql_q bench 'SHOW synchronous_commit'), fsync=$(psql_q bench 'SHOW fsync'), $(nproc) CPUs"
"$BUILD/bench/bench_audit" --db-env BENCH_DB --spool "$T" --n "${BENCH_AUDIT_N:-100000}" \
    --payload 1024 --batches 512,4096 --threads 64,256 --ckpt-key "$T/ckpt.pem"
