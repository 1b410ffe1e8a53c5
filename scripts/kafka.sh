#!/usr/bin/env bash
# Runs one real Apache Kafka broker (KRaft mode, single node) on 127.0.0.1 for Runnel's tests.
#
#   scripts/kafka.sh start   fetch Kafka once (mvn, Maven Central), format storage, start, wait until it serves
#   scripts/kafka.sh stop    stop the broker; no process is left behind
#   scripts/kafka.sh resume  start a stopped broker again on its stored data (outage tests)
#   scripts/kafka.sh status  say whether it runs
#   scripts/kafka.sh topics ARGS...  Kafka's topic tool against the broker (e.g. --list,
#                                    --create --topic T --partitions 6)
#
# Environment:
#   KAFKA_PORT       broker port (default 9092); the controller listens on KAFKA_PORT + 1
#   KAFKA_VERSION    org.apache.kafka:kafka_2.13 version (default 4.4.0)
#   RUNNEL_CACHE     cache folder for the broker's jars (default ~/.cache/runnel)
#   KAFKA_STATE_DIR  where logs, data and the pid file live (default /var/tmp/runnel-kafka-$KAFKA_PORT)
#   KAFKA_SCRAM_PASSWORD  when set, the broker also listens with SASL_SSL on KAFKA_PORT + 2:
#                    TLS with a certificate of a throwaway CA (its PEM: $STATE/tls/ca.pem) and
#                    SCRAM-SHA-512, user "runnel" with this password (secured-broker tests)
#
# `start` is idempotent: a broker already serving on the port is reused. It prints the bootstrap address.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT=$((KAFKA_PORT + 1))
CACHE="${RUNNEL_CACHE:-$HOME/.cache/runnel}"
LIBS="$CACHE/kafka_2.13-$KAFKA_VERSION/libs"
STATE="${KAFKA_STATE_DIR:-/var/tmp/runnel-kafka-$KAFKA_PORT}"
PIDFILE="$STATE/kafka.pid"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

log() { echo "kafka.sh: $*" >&2; }

fetch() {
    if [ -f "$LIBS/.complete" ]; then return; fi
    log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its dependencies from Maven Central into $LIBS"
    local work
    work=$(mktemp -d)
    cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.runnel</groupId>
  <artifactId>kafka-broker-fetch</artifactId>
  <version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
  </dependencies>
</project>
POM
    mkdir -p "$LIBS"
    (cd "$work" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS") >&2
    rm -rf "$work"
    touch "$LIBS/.complete"
}

serving() {
    # A broker serves when a TCP connection to its port succeeds and the process is ours or already there.
    (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null
}

running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

JAVA_ARGS=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$STATE/log4j2.properties" -cp "$LIBS/*")
java_run() { java "${JAVA_ARGS[@]}" "$@"; }

SECURE_PORT=$((KAFKA_PORT + 2))
TLS="$STATE/tls"

# A throwaway CA and a broker certificate for 127.0.0.1 it signed, in $TLS; the broker's
# key store is PKCS12 with the password in $TLS/store-password.
make_certificates() {
    mkdir -p "$TLS"
    local store_password
    store_password=$(openssl rand -hex 16)
    echo "$store_password" >"$TLS/store-password"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS/ca.key" -out "$TLS/ca.pem" \
        -days 7 -subj "/CN=runnel-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$TLS/broker.key" -out "$TLS/broker.csr" \
        -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$TLS/san.ext"
    openssl x509 -req -in "$TLS/broker.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
        -CAcreateserial -out "$TLS/broker.pem" -days 7 -extfile "$TLS/san.ext" 2>/dev/null
    openssl pkcs12 -export -in "$TLS/broker.pem" -inkey "$TLS/broker.key" -name broker \
        -out "$TLS/broker.p12" -passout "pass:$store_password"
}

write_config() {
    mkdir -p "$STATE"
    local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
    local advertised="PLAINTEXT://127.0.0.1:$KAFKA_PORT"
    local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if [ -n "${KAFKA_SCRAM_PASSWORD:-}" ]; then
        make_certificates
        listeners="$listeners,SECURE://127.0.0.1:$SECURE_PORT"
        advertised="$advertised,SECURE://127.0.0.1:$SECURE_PORT"
        protocols="$protocols,SECURE:SASL_SSL"
    fi
    cat >"$STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$STATE/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
PROPS
    if [ -n "${KAFKA_SCRAM_PASSWORD:-}" ]; then
        cat >>"$STATE/server.properties" <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.secure.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.secure.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/broker.p12
ssl.keystore.password=$(cat "$TLS/store-password")
ssl.key.password=$(cat "$TLS/store-password")
PROPS
    fi
    cat >"$STATE/log4j2.properties" <<L4J
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $STATE/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
L4J
}

start() {
    if running_pid >/dev/null && serving; then
        echo "$BOOTSTRAP"
        return
    fi
    if serving; then
        log "port $KAFKA_PORT is already served by a process this script did not start; using it"
        echo "$BOOTSTRAP"
        return
    fi
    fetch
    command -v java >/dev/null || { log "java is not installed (Kafka needs Java 17+)"; exit 1; }
    if [ "${1:-}" = keep ] && [ -f "$STATE/server.properties" ]; then
        # Start again on the stored data (topics, offsets, transactions survive).
        : >"$STATE/server.log"
        : >"$STATE/stdout.log"
    else
        rm -rf "$STATE"
        write_config
        local cluster_id
        cluster_id=$(java_run kafka.tools.StorageTool random-uuid)
        local users=()
        if [ -n "${KAFKA_SCRAM_PASSWORD:-}" ]; then
            users=(--add-scram "SCRAM-SHA-512=[name=runnel,password=$KAFKA_SCRAM_PASSWORD]")
        fi
        java_run kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$STATE/server.properties" "${users[@]}" >"$STATE/format.log" 2>&1 ||
            { log "formatting storage failed:"; cat "$STATE/format.log" >&2; exit 1; }
    fi
    # setsid: the broker gets its own process group, so `stop` can end it and all it started.
    setsid java "${JAVA_ARGS[@]}" kafka.Kafka "$STATE/server.properties" >"$STATE/stdout.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 120); do
        if ! running_pid >/dev/null; then
            log "the broker exited during start; last lines of its logs:"
            tail -n 30 "$STATE/stdout.log" "$STATE/server.log" >&2 2>/dev/null || true
            exit 1
        fi
        if serving && grep -q "Kafka Server started" "$STATE/server.log" "$STATE/stdout.log" 2>/dev/null; then
            log "broker $KAFKA_VERSION serving on $BOOTSTRAP (state in $STATE)"
            echo "$BOOTSTRAP"
            return
        fi
        sleep 0.5
    done
    log "the broker did not start serving within 60 s; see $STATE/server.log"
    stop
    exit 1
}

stop() {
    local pid
    if pid=$(running_pid); then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        log "broker on port $KAFKA_PORT stopped"
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
start) start ;;
resume) start keep ;;
stop) stop ;;
status) if running_pid >/dev/null && serving; then echo "running on $BOOTSTRAP"; else echo "not running"; exit 1; fi ;;
fetch) fetch ;;
topics) shift; java_run org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
*) echo "usage: $0 start|stop|resume|status|fetch|topics ARGS..." >&2; exit 2 ;;
esac
