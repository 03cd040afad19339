# tests/gateway/env.sh — what the suites and benchmarks that run a real
# `moegate serve` share (sourced, after tests/audit/pg.sh and with MG set):
#
#   gw_audit_db NAME     a database NAME in the running PostgreSQL (pg_start),
#                        migrated with `moegate db migrate`, and a login role
#                        gw granted moegate_gateway; sets and exports DB (the
#                        superuser's connection string)
#   gw_tls DIR [rsa|ec]  DIR/ca.{key,crt} and DIR/server.{key,crt} for
#                        localhost and 127.0.0.1 (key mode 0600); rsa by default
#   gw_wait URL CA PID   waits up to 60 s for URL/health; 1 when the process
#                        PID exits first or the time runs out
gw_audit_db() {
    psql_q postgres "DO \$\$ BEGIN CREATE ROLE gw LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" \
        >/dev/null || return 1
    psql_q postgres "CREATE DATABASE $1" >/dev/null || return 1
    DB="host=127.0.0.1 port=$PGPORT user=postgres dbname=$1"
    export DB
    out=$("$MG" db migrate --db-env DB 2>&1) || { echo "$out" >&2; return 1; }
    psql_q "$1" "SET client_min_messages TO warning; GRANT moegate_gateway TO gw" >/dev/null
}

gw_tls() {
    case "${2:-rsa}" in
    ec) kopt="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1" ;;
    *) kopt="-newkey rsa:2048" ;;
    esac
    # shellcheck disable=SC2086
    openssl req -x509 $kopt -nodes -keyout "$1/ca.key" -out "$1/ca.crt" -days 2 -subj "/CN=moegate test CA" \
        2>/dev/null &&
        openssl req $kopt -nodes -keyout "$1/server.key" -out "$1/server.csr" -subj "/CN=localhost" 2>/dev/null &&
        printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" >"$1/san.ext" &&
        openssl x509 -req -in "$1/server.csr" -CA "$1/ca.crt" -CAkey "$1/ca.key" -CAcreateserial \
            -out "$1/server.crt" -days 2 -extfile "$1/san.ext" 2>/dev/null &&
        chmod 600 "$1/server.key"
}

gw_wait() {
    for _ in $(seq 1 300); do
        curl -s --cacert "$2" -o /dev/null "$1/health" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
