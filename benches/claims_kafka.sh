#!/usr/bin/env bash
# Throughput of the claims query (filter + 5-minute TUMBLE aggregate) reading JSON
# records from Kafka: EVENTS claims in a topic of PARTITIONS partitions, read from the
# beginning to the end offsets found at start, at parallelism PARTITIONS (a reader per
# partition), results to a blackhole sink. The broker is scripts/kafka.sh's, on the
# same machine (resumed here, with its topics, if it is not running).
#
#   benches/claims_kafka.sh [EVENTS] [PARTITIONS]      (defaults: 10000000, 2)
#
# The topic runnel-bench.claims-json.EVENTS.PARTITIONS is filled once by a Runnel job
# (the datagen connector's claims, written as JSON) and kept for later runs.
# RUNNEL=path times another runnel binary (to compare builds); ROUNDS=n runs n times.
# Prints, per run, wall and CPU seconds of the runnel process and events per second.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-10000000}"
PARTITIONS="${2:-2}"
ROUNDS="${ROUNDS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WORK="${RUNNEL_BENCH_DIR:-/var/tmp/runnel-bench}/claims-kafka"
mkdir -p "$WORK"
if [ -z "${RUNNEL:-}" ]; then
    cargo build --release --locked -p runnel-cli >&2
    RUNNEL="$CARGO_TARGET_DIR/release/runnel"
fi
# `resume` keeps the broker's topics from an earlier run (`start` begins empty).
BOOTSTRAP=$(scripts/kafka.sh resume)
TOPIC="runnel-bench.claims-json.$EVENTS.$PARTITIONS"

# The marker says the topic was filled; the broker may have been started afresh since.
if ! scripts/kafka.sh topics --describe --topic "$TOPIC" >/dev/null 2>&1; then
    rm -f "$WORK/$TOPIC.filled"
fi
if [ ! -f "$WORK/$TOPIC.filled" ]; then
    echo "writing $EVENTS claims into $TOPIC ($PARTITIONS partitions)" >&2
    scripts/kafka.sh topics --delete --if-exists --topic "$TOPIC" >/dev/null 2>&1 || true
    scripts/kafka.sh topics --create --topic "$TOPIC" --partitions "$PARTITIONS" >/dev/null
    cat >"$WORK/fill.sql" <<SQL
CREATE TABLE generated (
    claim_no BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), op_code INT
) WITH (
    'connector' = 'datagen', 'rows-per-second' = '1000000000', 'number-of-rows' = '$EVENTS',
    'fields.claim_no.kind' = 'sequence', 'fields.claim_no.start' = '1',
    'fields.claim_no.end' = '$EVENTS',
    'fields.policy_id.min' = '1', 'fields.policy_id.max' = '10000',
    'fields.amount.max' = '5000', 'fields.op_code.min' = '0', 'fields.op_code.max' = '9'
);
CREATE TABLE claims_topic (
    claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
    event_time TIMESTAMP(3)
) WITH ('connector' = 'kafka', 'topic' = '$TOPIC',
        'properties.bootstrap.servers' = '$BOOTSTRAP', 'format' = 'json');
INSERT INTO claims_topic
SELECT CONCAT('c-', CAST(claim_no AS STRING)), policy_id, amount,
       CASE WHEN op_code < 8 THEN 'INSERT' WHEN op_code < 9 THEN 'UPDATE' ELSE 'DELETE' END,
       TO_TIMESTAMP_MILLIS(1767225600000 + claim_no * 10)
FROM generated;
SQL
    "$RUNNEL" run "$WORK/fill.sql" >/dev/null
    touch "$WORK/$TOPIC.filled"
fi

cat >"$WORK/query.sql" <<SQL
SET 'parallelism.default' = '$PARTITIONS';
CREATE TABLE claims (
    claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
    event_time TIMESTAMP(3),
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    'connector' = 'kafka', 'topic' = '$TOPIC', 'properties.bootstrap.servers' = '$BOOTSTRAP',
    'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
    'format' = 'json'
);
CREATE TABLE windows (
    policy_id BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
    claim_count BIGINT, total_amount DECIMAL(38, 2)
) WITH ('connector' = 'blackhole');
INSERT INTO windows
SELECT policy_id, window_start, window_end, COUNT(*), SUM(amount)
FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
WHERE operation = 'INSERT'
GROUP BY policy_id, window_start, window_end;
SQL

printf "%-6s %9s %9s %12s %15s\n" round "wall s" "cpu s" "events/s" "events/CPU-s"
for round in $(seq "$ROUNDS"); do
    /usr/bin/time -f "%e %U %S" -o "$WORK/time.txt" "$RUNNEL" run "$WORK/query.sql" >"$WORK/run.log" 2>&1 || {
        cat "$WORK/run.log" >&2
        exit 1
    }
    grep -q "$EVENTS rows in" "$WORK/run.log" || {
        echo "the job did not read $EVENTS claims:" >&2
        tail -3 "$WORK/run.log" >&2
        exit 1
    }
    awk -v r="$round" -v n="$EVENTS" '{ cpu = $2 + $3;
        printf "%-6s %9.2f %9.2f %12.0f %15.0f\n", r, $1, cpu, n / $1, n / cpu }' "$WORK/time.txt"
done
