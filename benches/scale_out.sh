#!/usr/bin/env bash
# The claims job spread over 1, 2 and 3 `runnel` processes ('execution.target' = 'kafka'):
# wall time from the first process's start until every process exited, over a topic of
# EVENTS claims (6 partitions, JSON, written once by a Runnel job from `datagen`), and the
# events per second that makes. Every process runs THREADS members (default 1), each on
# its own thread, so on a 2-core machine a third process competes with the other two (and
# with the broker) for the cores.
#
#   benches/scale_out.sh [EVENTS]        (default 2000000; Kafka up: scripts/kafka.sh start)
#   THREADS=2 benches/scale_out.sh       (each process runs two members, on two threads)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-2000000}
SERVERS=127.0.0.1:9092
RUN_ID=$(date +%s)
TOPIC=bench.scale.claims.$EVENTS
WORK=$(mktemp -d /var/tmp/runnel-scale-out.XXXXXX)
[ -n "${KEEP_LOGS:-}" ] || trap 'rm -rf "$WORK"' EXIT

cargo build --release -p runnel-cli >/dev/null
RUNNEL=${CARGO_TARGET_DIR:-target}/release/runnel

# Fill the topic once per size (a later run reuses it).
cat >"$WORK/fill.sql" <<SQL
SET 'parallelism.default' = '1';
CREATE TABLE claims_source (claim_no BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), op_code INT)
WITH ('connector' = 'datagen', 'rows-per-second' = '1000000000', 'number-of-rows' = '$EVENTS',
      'fields.claim_no.kind' = 'sequence', 'fields.claim_no.start' = '1', 'fields.claim_no.end' = '$EVENTS',
      'fields.policy_id.min' = '1', 'fields.policy_id.max' = '10000',
      'fields.amount.max' = '5000', 'fields.op_code.min' = '0', 'fields.op_code.max' = '9');
CREATE TABLE claims_topic (claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2),
    operation STRING, event_time TIMESTAMP(3))
WITH ('connector' = 'kafka', 'topic' = '$TOPIC', 'properties.bootstrap.servers' = '$SERVERS',
      'format' = 'json');
INSERT INTO claims_topic
SELECT CONCAT('c-', CAST(claim_no AS STRING)), policy_id, amount,
       CASE WHEN op_code < 8 THEN 'INSERT' WHEN op_code < 9 THEN 'UPDATE' ELSE 'DELETE' END,
       TO_TIMESTAMP_MILLIS(1767225600000 + claim_no * 10)
FROM claims_source;
SQL
if ! scripts/kafka.sh topics --list 2>/dev/null | grep -qx "$TOPIC"; then
    scripts/kafka.sh topics --create --topic "$TOPIC" --partitions 6 >/dev/null
    "$RUNNEL" run "$WORK/fill.sql" 2>/dev/null
fi

job() { # NAME OUTPUT
    cat <<SQL
SET 'execution.target' = 'kafka';
SET 'parallelism.default' = '${THREADS:-1}';
SET 'pipeline.name' = '$1';
SET 'pipeline.max-parallelism' = '6';
CREATE TABLE claims (claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
    event_time TIMESTAMP(3), WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
WITH ('connector' = 'kafka', 'topic' = '$TOPIC', 'properties.bootstrap.servers' = '$SERVERS',
      'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
      'format' = 'json');
CREATE TABLE claims_aggregated_5min (policy_id BIGINT, window_start TIMESTAMP(3),
    window_end TIMESTAMP(3), claim_count BIGINT, total_amount DECIMAL(22, 2))
WITH ('connector' = 'kafka', 'topic' = '$2', 'properties.bootstrap.servers' = '$SERVERS',
      'format' = 'json', 'key.format' = 'json', 'key.fields' = 'policy_id');
INSERT INTO claims_aggregated_5min
SELECT policy_id, window_start, window_end, COUNT(*) AS claim_count, SUM(amount) AS total_amount
FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
WHERE operation = 'INSERT'
GROUP BY policy_id, window_start, window_end;
SQL
}

echo "claims job over $EVENTS events (6 partitions), spread over N processes:"
printf '%-10s %10s %14s\n' processes seconds "events/s"
for n in 1 2 3; do
    name=bench-scale-$RUN_ID-$n
    job "$name" "$name.out" >"$WORK/$name.sql"
    start=$(date +%s.%N)
    pids=()
    for _ in $(seq "$n"); do
        RUNNEL_LOG=${RUNNEL_LOG:-warn} "$RUNNEL" run "$WORK/$name.sql" 2>>"$WORK/$name.log" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || { echo "a process of $n failed:" >&2; tail -20 "$WORK/$name.log" >&2; exit 1; }
    done
    end=$(date +%s.%N)
    awk -v n="$n" -v s="$start" -v e="$end" -v ev="$EVENTS" \
        'BEGIN { printf "%-10d %10.1f %14.0f\n", n, e - s, ev / (e - s) }'
done
