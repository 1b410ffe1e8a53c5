#!/usr/bin/env bash
# Runs Kafka Connect (standalone) with the Debezium PostgreSQL connector, against the
# broker of scripts/kafka.sh and the server of scripts/postgres.sh, for Runnel's CDC tests.
#
#   scripts/connect.sh start [CONNECTOR.properties]  fetch once (mvn, Maven Central), start, wait until
#                                                    the worker serves (and the connector runs, when given)
#   scripts/connect.sh stop                          stop the worker; no process is left behind
#   scripts/connect.sh status                        say whether it runs
#
# CONNECTOR.properties is a connector's configuration (Debezium's option names); without
# one, connectors are added through the worker's REST API (POST /connectors), as the
# tests do, so one worker serves a whole test run. The worker's own settings (JSON
# converters, file offsets) are written here. `start` prints the REST address.
#
# Environment:
#   KAFKA_BOOTSTRAP   the broker (default 127.0.0.1:9092)
#   CONNECT_PORT      the worker's REST port (default 8083)
#   CONNECT_VERSION   org.apache.kafka:connect-runtime version (default 4.3.0: Debezium 3.6.1 is
#                     built against Kafka 4.3 and calls a class 4.4 moved; the worker talks
#                     to the 4.4 broker of scripts/kafka.sh without trouble)
#   DEBEZIUM_VERSION  io.debezium:debezium-connector-postgres version (default 3.6.1.Final)
#   RUNNEL_CACHE      cache folder for the jars (default ~/.cache/runnel)
#   CONNECT_STATE_DIR log, offsets and pid file (default /var/tmp/runnel-connect-$CONNECT_PORT)
set -euo pipefail

CONNECT_VERSION="${CONNECT_VERSION:-4.3.0}"
DEBEZIUM_VERSION="${DEBEZIUM_VERSION:-3.6.1.Final}"
CONNECT_PORT="${CONNECT_PORT:-8083}"
BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
CACHE="${RUNNEL_CACHE:-$HOME/.cache/runnel}"
LIBS="$CACHE/connect-$CONNECT_VERSION/libs"
PLUGINS="$CACHE/debezium-postgres-$DEBEZIUM_VERSION/plugins"
STATE="${CONNECT_STATE_DIR:-/var/tmp/runnel-connect-$CONNECT_PORT}"
PIDFILE="$STATE/connect.pid"

log() { echo "connect.sh: $*" >&2; }

# Copies an artifact's runtime dependencies into a folder, once.
fetch_into() {
    local folder="$1" dependencies="$2"
    if [ -f "$folder/.complete" ]; then return; fi
    log "fetching into $folder from Maven Central"
    local work
    work=$(mktemp -d)
    cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.runnel</groupId>
  <artifactId>connect-fetch</artifactId>
  <version>1</version>
  <dependencies>$dependencies</dependencies>
</project>
POM
    mkdir -p "$folder"
    (cd "$work" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$folder") >&2
    rm -rf "$work"
    touch "$folder/.complete"
}

fetch() {
    fetch_into "$LIBS" "
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId><version>$CONNECT_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-json</artifactId><version>$CONNECT_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>"
    # The connector is a plugin of its own folder, loaded in isolation by the worker.
    fetch_into "$PLUGINS/debezium-connector-postgres" "
    <dependency><groupId>io.debezium</groupId><artifactId>debezium-connector-postgres</artifactId><version>$DEBEZIUM_VERSION</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>*</artifactId></exclusion></exclusions></dependency>"
}

running_pid() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && cat "$PIDFILE"
}

rest() {
    curl -fsS "http://127.0.0.1:$CONNECT_PORT$1" 2>/dev/null
}

case "${1:-}" in
start)
    connector="${2:-}"
    if [ -n "$connector" ] && [ ! -f "$connector" ]; then
        log "$connector: no such file"
        exit 2
    fi
    if running_pid >/dev/null; then
        if [ -z "$connector" ] && rest / >/dev/null; then
            log "Connect worker already serving on port $CONNECT_PORT"
            echo "http://127.0.0.1:$CONNECT_PORT"
            exit 0
        fi
        log "a Connect worker already runs (pid $(cat "$PIDFILE")); stop it first"
        exit 1
    fi
    fetch
    mkdir -p "$STATE"
    cat >"$STATE/worker.properties" <<CONF
bootstrap.servers=$BOOTSTRAP
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
offset.storage.file.filename=$STATE/offsets
offset.flush.interval.ms=1000
plugin.path=$PLUGINS
listeners=http://127.0.0.1:$CONNECT_PORT
CONF
    cat >"$STATE/log4j2.properties" <<CONF
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = $STATE/connect.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d %p %c{1}: %m%n
CONF
    nohup java -Xmx512m -Dlog4j2.configurationFile="$STATE/log4j2.properties" \
        -cp "$LIBS/*" org.apache.kafka.connect.cli.ConnectStandalone \
        "$STATE/worker.properties" ${connector:+"$connector"} >"$STATE/stdout.log" 2>&1 &
    echo $! >"$PIDFILE"
    name=$([ -n "$connector" ] && sed -n 's/^name=//p' "$connector" || true)
    for _ in $(seq 1 300); do
        if ! running_pid >/dev/null; then
            log "the Connect worker exited; its log:"
            tail -n 40 "$STATE/connect.log" "$STATE/stdout.log" >&2 || true
            exit 1
        fi
        if [ -z "$name" ] && rest / >/dev/null; then
            log "Connect worker serving on port $CONNECT_PORT (log in $STATE)"
            echo "http://127.0.0.1:$CONNECT_PORT"
            exit 0
        fi
        if [ -n "$name" ] && rest "/connectors/$name/status" | grep -q '"tasks":\[{"id":0,"state":"RUNNING"'; then
            log "Debezium connector $name running (Connect on port $CONNECT_PORT, log in $STATE)"
            echo "http://127.0.0.1:$CONNECT_PORT"
            exit 0
        fi
        sleep 0.5
    done
    log "Connect${name:+ connector $name} did not start within 150 s; its log:"
    tail -n 40 "$STATE/connect.log" >&2 || true
    exit 1
    ;;
stop)
    if pid=$(running_pid); then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    log "Connect worker stopped"
    ;;
status)
    if pid=$(running_pid); then
        echo "running (pid $pid)"
    else
        echo "not running"
        exit 1
    fi
    ;;
*)
    echo "usage: $0 start [CONNECTOR.properties]|stop|status" >&2
    exit 2
    ;;
esac
