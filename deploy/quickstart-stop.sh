#!/bin/sh
# deploy/quickstart-stop.sh — stops what deploy/quickstart.sh started: the
# gateway (SIGTERM, then waits for it to finish its audit records and exit)
# and the quickstart's PostgreSQL (pg_ctl stop). The data stays: `make
# quickstart` starts both again. Safe to run any number of times.
#
#   make quickstart-stop     sh deploy/quickstart-stop.sh
#   make quickstart-clean    sh deploy/quickstart-stop.sh --clean   (then removes QUICKSTART_DIR)
#   sh deploy/quickstart-stop.sh --gateway-only                      (what quickstart.sh uses to restart)
#
# QUICKSTART_DIR as for the quickstart (default var/quickstart).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QS=${QUICKSTART_DIR:-$ROOT/var/quickstart}
case "$QS" in /*) ;; *) QS="$(pwd)/$QS" ;; esac
MODE=all
case "${1:-}" in
'') ;;
--gateway-only) MODE=gateway ;;
--clean) MODE=clean ;;
*)
    echo "usage: quickstart-stop.sh [--gateway-only | --clean]" >&2
    exit 2
    ;;
esac

if [ ! -d "$QS" ]; then
    echo "quickstart-stop: nothing to stop ($QS does not exist)"
    exit 0
fi
status=0

# A pid is ours while it is alive (not a zombie left for a parent that does
# not reap) and runs `moegate serve` with this quickstart's policy.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ "$state" != Z ]
}
ours() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "moegate serve --policy $QS/policy.yaml"
}

stop_gateway() {
    pidf="$QS/run/gateway.pid"
    if [ ! -f "$pidf" ]; then
        echo "gateway: not running (no pid file)"
        return 0
    fi
    pid=$(cat "$pidf")
    case "$pid" in '' | *[!0-9]*)
        echo "gateway: $pidf holds no pid; removed"
        rm -f "$pidf"
        return 0
        ;;
    esac
    if ! alive "$pid" || ! ours "$pid"; then
        echo "gateway: not running (pid $pid is gone)"
        rm -f "$pidf"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    # it finishes the requests in flight and makes the last audit records
    # and the closing checkpoint durable before it exits
    i=0
    while alive "$pid" && [ $i -lt 300 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if alive "$pid"; then
        echo "gateway: pid $pid did not stop within 30 s of SIGTERM: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
        sleep 0.2
        status=1
    fi
    rm -f "$pidf"
    echo "gateway: stopped (pid $pid)"
}

stop_postgres() {
    [ -f "$QS/pg/data/PG_VERSION" ] || {
        echo "PostgreSQL: no cluster in $QS/pg"
        return 0
    }
    PG_BIN=$(cat "$QS/run/pg_bin" 2>/dev/null || ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ ! -x "$PG_BIN/pg_ctl" ]; then
        echo "PostgreSQL: no pg_ctl in '$PG_BIN'" >&2
        status=1
        return 0
    fi
    as_owner() {
        if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
    }
    if ! as_owner "$PG_BIN/pg_ctl" -D "$QS/pg/data" status >/dev/null 2>&1; then
        echo "PostgreSQL: not running"
        return 0
    fi
    if as_owner "$PG_BIN/pg_ctl" -D "$QS/pg/data" -m fast -w -t 60 stop >/dev/null; then
        echo "PostgreSQL: stopped"
    else
        echo "PostgreSQL: pg_ctl stop failed (log: $QS/pg/postgresql.log)" >&2
        status=1
    fi
}

stop_gateway
[ "$MODE" = gateway ] && exit $status
stop_postgres
if [ "$MODE" = clean ]; then
    if [ $status != 0 ]; then
        echo "quickstart-clean: something did not stop; $QS kept" >&2
    elif [ -f "$QS/.moegate-quickstart" ]; then
        rm -rf "$QS"
        echo "removed $QS"
    else
        echo "quickstart-clean: $QS was not made by the quickstart (no .moegate-quickstart in it); kept" >&2
        status=1
    fi
fi
exit $status
