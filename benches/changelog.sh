#!/usr/bin/env bash
# A task's state in its changelog topic, across processes ('execution.target' = 'kafka'):
# the claims totals per policy (an aggregate without a window, into an upsert-kafka
# table) over EVENTS claims of KEYS policies in a 6-partition topic, so that each of the
# six keyed tasks holds about KEYS/6 keys. One process runs the job to the end of the
# topic; the script then prints
#   - the bytes the run wrote into the job's changelog topics (their size on the broker:
#     compaction has not run yet, its segments roll after 10 minutes), and
#   - how long a process started again takes to restore each task from its changelog
#     (its "task restored" log lines), from the changelog alone and from a local copy
#     (its checkpoint directory) plus the tail, and its wall time: it joins the group, restores
#     the six tasks, finds them finished, and exits.
#
#   benches/changelog.sh [EVENTS] [KEYS]   (default 2000000 600000; Kafka up: scripts/kafka.sh start)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-2000000}
KEYS=${2:-600000}
SERVERS=127.0.0.1:9092
KAFKA_DATA=${KAFKA_DATA:-/var/tmp/runnel-kafka-9092/data}
RUN_ID=$(date +%s)
TOPIC=bench.changelog.claims.$EVENTS.$KEYS
WORK=$(mktemp -d /var/tmp/runnel-changelog.XXXXXX)
[ -n "${KEEP_LOGS:-}" ] || trap 'rm -rf "$WORK"' EXIT

cargo build --release -p runnel-cli >/dev/null
RUNNEL=${CARGO_TARGET_DIR:-target}/release/runnel

# Fill the topic once per size (a later run reuses it).
cat >"$WORK/fill.sql" <<SQL
SET 'parallelism.default' = '1';
CREATE TABLE claims_source (claim_no BIGINT, policy_id BIGINT, amount DECIMAL(12, 2))
WITH ('connector' = 'datagen', 'rows-per-second' = '1000000000', 'number-of-rows' = '$EVENTS',
      'fields.claim_no.kind' = 'sequence', 'fields.claim_no.start' = '1', 'fields.claim_no.end' = '$EVENTS',
      'fields.policy_id.min' = '1', 'fields.policy_id.max' = '$KEYS', 'fields.amount.max' = '5000');
CREATE TABLE claims_topic (claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2),
    operation STRING, event_time TIMESTAMP(3))
WITH ('connector' = 'kafka', 'topic' = '$TOPIC', 'properties.bootstrap.servers' = '$SERVERS',
      'format' = 'json');
INSERT INTO claims_topic
SELECT CONCAT('c-', CAST(claim_no AS STRING)), policy_id, amount, 'INSERT',
       TO_TIMESTAMP_MILLIS(1767225600000 + claim_no * 10)
FROM claims_source;
SQL
if ! scripts/kafka.sh topics --list 2>/dev/null | grep -qx "$TOPIC"; then
    scripts/kafka.sh topics --create --topic "$TOPIC" --partitions 6 >/dev/null
    "$RUNNEL" run "$WORK/fill.sql" 2>/dev/null
fi

NAME=bench-changelog-$RUN_ID
cat >"$WORK/job.sql" <<SQL
SET 'execution.target' = 'kafka';
SET 'pipeline.name' = '$NAME';
SET 'pipeline.max-parallelism' = '6';
CREATE TABLE claims (claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
    event_time TIMESTAMP(3), WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
WITH ('connector' = 'kafka', 'topic' = '$TOPIC', 'properties.bootstrap.servers' = '$SERVERS',
      'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
      'format' = 'json');
CREATE TABLE totals (policy_id BIGINT, claim_count BIGINT, total_amount DECIMAL(22, 2),
    PRIMARY KEY (policy_id) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = '$NAME.out', 'properties.bootstrap.servers' = '$SERVERS',
      'key.format' = 'json', 'value.format' = 'json');
INSERT INTO totals SELECT policy_id, COUNT(*) AS claim_count, SUM(amount) AS total_amount
FROM claims GROUP BY policy_id;
SQL

run() { # LOG [ARGS...]
    local log=$1 start end
    shift
    start=$(date +%s.%N)
    RUNNEL_LOG=${RUNNEL_LOG:-info} "$RUNNEL" run "$WORK/job.sql" "$@" 2>"$log" >/dev/null \
        || { echo "the job failed:" >&2; tail -20 "$log" >&2; exit 1; }
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }'
}

restores() { # LOG: the keyed tasks' restores
    grep "task restored" "$1" | grep -v "state_bytes=0" \
        | sed -E 's/.*task=([^ ]+).*records=([0-9]+).*bytes=([0-9]+).*read_ms=([0-9]+).*build_ms=([0-9]+).*state_bytes=([0-9]+).*/    task \1: \2 records (\3 bytes), all tasks read in \4 ms, its operators rebuilt in \5 ms, state \6 bytes/'
}

echo "claims totals over $EVENTS events of $KEYS policies (6 partitions, 6 keyed tasks), one process:"
first=$(run "$WORK/first.log" --checkpoint-dir "$WORK/local")
bytes=$(find "$KAFKA_DATA" -path "*$NAME-stage-*-changelog-*" -name '*.log' -printf '%s\n' \
    | awk '{ s += $1 } END { print s + 0 }')
echo "  first run: $first s wall, $((EVENTS * 10 / ${first/./} )) events/s; changelog topics: $((bytes / 1048576)) MB written"
again=$(run "$WORK/again.log")
echo "  started again without its checkpoint directory: $again s wall; each task read from its whole changelog:"
restores "$WORK/again.log"
local=$(run "$WORK/local.log" --checkpoint-dir "$WORK/local")
echo "  started again with its checkpoint directory: $local s wall; each task from its local copy and the changelog's tail:"
restores "$WORK/local.log"
grep -c "from_local_copy=true" "$WORK/local.log" | sed 's/^/    tasks restored from a local copy: /'
