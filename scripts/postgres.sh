#!/usr/bin/env bash
# Runs one real PostgreSQL server on 127.0.0.1 for Runnel's tests: Debian's package, a
# fresh data directory, logical replication on (Debezium reads its write-ahead log).
#
#   scripts/postgres.sh start    install the package if missing, init, start, wait until it serves
#   scripts/postgres.sh stop     stop the server; no process is left behind
#   scripts/postgres.sh resume   start a stopped server again on its data (restart tests)
#   scripts/postgres.sh status   say whether it runs
#
# Environment:
#   PG_PORT        port (default 5433, next to a system server's 5432)
#   PG_STATE_DIR   data directory, log and socket (default /var/tmp/runnel-postgres-$PG_PORT)
#   PG_USER        the OS user the server runs as when started by root (default postgres)
#
# `start` is idempotent and prints the connection URL: superuser `runnel`, password
# `runnel`, database `runnel`.
set -euo pipefail

PG_PORT="${PG_PORT:-5433}"
STATE="${PG_STATE_DIR:-/var/tmp/runnel-postgres-$PG_PORT}"
DATA="$STATE/data"
LOG="$STATE/postgres.log"
RUN_AS="${PG_USER:-postgres}"
URL="postgres://runnel:runnel@127.0.0.1:$PG_PORT/runnel"

log() { echo "postgres.sh: $*" >&2; }

bin_dir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/postgres" ] && { echo "$dir"; return; }
    done
    return 1
}

install() {
    if bin_dir >/dev/null; then return; fi
    log "installing Debian's postgresql package"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    else
        sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    # The package starts a cluster of its own on 5432; the tests use their own.
}

# Runs a command as the server's user (PostgreSQL refuses to run as root).
as_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$RUN_AS" -- "$@"
    else
        "$@"
    fi
}

serving() {
    local bin
    bin=$(bin_dir) || return 1
    as_user "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null
}

wait_serving() {
    for _ in $(seq 1 150); do
        serving && return 0
        sleep 0.2
    done
    log "PostgreSQL did not start on port $PG_PORT; its log:"
    tail -n 30 "$LOG" >&2 || true
    return 1
}

start_server() {
    local bin
    bin=$(bin_dir)
    as_user "$bin/pg_ctl" -D "$DATA" -l "$LOG" -o "-p $PG_PORT -k $STATE" -w start >/dev/null
    wait_serving
}

case "${1:-}" in
start)
    if serving; then
        log "PostgreSQL already serving on 127.0.0.1:$PG_PORT"
        echo "$URL"
        exit 0
    fi
    install
    bin=$(bin_dir)
    rm -rf "$STATE"
    mkdir -p "$STATE"
    [ "$(id -u)" = 0 ] && chown "$RUN_AS" "$STATE"
    pw="$STATE/.pw"
    echo runnel >"$pw"
    [ "$(id -u)" = 0 ] && chown "$RUN_AS" "$pw"
    as_user "$bin/initdb" -D "$DATA" -U runnel --pwfile="$pw" -A scram-sha-256 \
        --auth-local=trust -E UTF8 >"$STATE/initdb.log"
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    echo "host replication runnel 127.0.0.1/32 scram-sha-256" >>"$DATA/pg_hba.conf"
    start_server
    as_user "$bin/psql" -q -h "$STATE" -p "$PG_PORT" -U runnel -d postgres \
        -c "CREATE DATABASE runnel" >/dev/null
    log "PostgreSQL serving on 127.0.0.1:$PG_PORT (data in $DATA)"
    echo "$URL"
    ;;
resume)
    if serving; then
        echo "$URL"
        exit 0
    fi
    start_server
    log "PostgreSQL resumed on 127.0.0.1:$PG_PORT"
    echo "$URL"
    ;;
stop)
    if bin=$(bin_dir) && [ -f "$DATA/postmaster.pid" ]; then
        as_user "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    log "PostgreSQL on port $PG_PORT stopped"
    ;;
status)
    if serving; then
        echo "serving on 127.0.0.1:$PG_PORT"
    else
        echo "not running"
        exit 1
    fi
    ;;
*)
    echo "usage: $0 start|stop|resume|status" >&2
    exit 2
    ;;
esac
