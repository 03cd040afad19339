# Sourced by tests/audit/suite.sh and bench/audit.sh: a throw-away
# PostgreSQL server in a temporary folder on a random loopback port.
#
# initdb refuses to run as root, so as root the server runs as the
# `postgres` system user (Debian's postgresql package creates it) in a
# folder it owns; otherwise as the current user. The caller sets a trap
# that calls pg_cleanup. After pg_start: PGPORT, PGHOST (127.0.0.1),
# PG_DIR, PG_SUPER (superuser connection string) are set.

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

pg_as() { # run a server binary as the server's owner
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_free_port() {
    "${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pg_start() { # [extra postgres -c options...]
    [ -x "$PG_BIN/initdb" ] || { echo "pg.sh: no PostgreSQL binaries (make deps)" >&2; return 1; }
    PG_DIR=$(mktemp -d /tmp/moegate-pg.XXXXXX)
    chmod 755 "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
    PGPORT=$(pg_free_port)
    PGHOST=127.0.0.1
    export PGPORT PGHOST
    pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
        >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
    PG_OPTS="-p $PGPORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=on $*"
    pg_up
    PG_SUPER="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
}

pg_up() {
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -o "$PG_OPTS" -l "$PG_DIR/server.log" -w -t 30 \
        start >/dev/null || { tail -n 20 "$PG_DIR/server.log" >&2; return 1; }
}

pg_down() { # fast shutdown: connections are cut, as in an outage
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null
}

pg_cleanup() {
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ]; then
        pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 10 stop >/dev/null 2>&1
        rm -rf "$PG_DIR"
    fi
}

psql_q() { # DB SQL: one value, unaligned, as the superuser
    "$PG_BIN/psql" -X -q -tA -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres -d "$1" -c "$2"
}
