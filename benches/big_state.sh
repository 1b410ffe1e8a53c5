#!/usr/bin/env bash
# Checkpoints of big state: the claims query with KEYS live keys (default 10 million, one
# open window), checkpointing every 10 s, at-least-once into a blackhole. Two datagen
# tables feed it: one writes every key once as fast as the job takes it, then one changes
# TRICKLE keys a second (default 10,000: 1 % of 10 million keys between two checkpoints)
# for SECONDS seconds. Prints each committed checkpoint's bytes, its duration (the sink
# waits that long) and the longest pause of a subtask at its barrier, and the peak RSS.
# Not part of CI.
#
#   benches/big_state.sh [KEYS] [TRICKLE] [SECONDS]
#
# INCREMENTAL=false takes whole snapshots (default: incremental checkpoints, Flink's
# 'execution.checkpointing.incremental'). QUERY=updating runs the aggregate without a
# window (GROUP BY policy_id: an updating aggregate, emitting every change) instead;
# QUERY=join joins the keys with the changes (a regular join: every key is a live row of
# its left side, every change one of its right side).
# RUNNEL_BINARY picks the binary (default: the release build, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-10000000}"
TRICKLE="${2:-10000}"
SECONDS_RUN="${3:-120}"
if [ -z "${RUNNEL_BINARY:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
    cargo build --release --locked -p runnel-cli >&2
    RUNNEL_BINARY="$CARGO_TARGET_DIR/release/runnel"
fi
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

# A one-day window keeps every key live for the whole run.
cat >"$work/big_state.sql" <<SQL
SET 'execution.checkpointing.interval' = '10 s';
SET 'execution.checkpointing.incremental' = '${INCREMENTAL:-true}';
CREATE TABLE every_key (
    claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), event_time TIMESTAMP(3),
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    'connector' = 'datagen', 'rows-per-second' = '100000000',
    'fields.claim_id.kind' = 'sequence', 'fields.claim_id.start' = '1',
    'fields.claim_id.end' = '$KEYS',
    'fields.policy_id.kind' = 'sequence', 'fields.policy_id.start' = '1',
    'fields.policy_id.end' = '$KEYS',
    'fields.amount.min' = '1', 'fields.amount.max' = '5000'
);
CREATE TABLE changes (
    claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), event_time TIMESTAMP(3),
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    'connector' = 'datagen', 'rows-per-second' = '$TRICKLE',
    'number-of-rows' = '$((TRICKLE * SECONDS_RUN))',
    'fields.policy_id.min' = '1', 'fields.policy_id.max' = '$KEYS',
    'fields.amount.min' = '1', 'fields.amount.max' = '5000'
);
CREATE TABLE totals (
    policy_id BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
    claim_count BIGINT, total_amount DECIMAL(22, 2)
) WITH ('connector' = 'blackhole');
SQL
if [ "${QUERY:-window}" = join ]; then
    cat >>"$work/big_state.sql" <<SQL
CREATE TABLE joined (claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), changed DECIMAL(12, 2))
    WITH ('connector' = 'blackhole');
INSERT INTO joined
SELECT k.claim_id, k.policy_id, k.amount, c.amount
FROM every_key k JOIN changes c ON k.policy_id = c.policy_id;
SQL
elif [ "${QUERY:-window}" = updating ]; then
    cat >>"$work/big_state.sql" <<SQL
CREATE TABLE running_totals (policy_id BIGINT, claim_count BIGINT, total_amount DECIMAL(22, 2))
    WITH ('connector' = 'blackhole');
INSERT INTO running_totals
SELECT policy_id, COUNT(*), SUM(amount)
FROM (SELECT * FROM every_key UNION ALL SELECT * FROM changes)
GROUP BY policy_id;
SQL
else
    cat >>"$work/big_state.sql" <<SQL
INSERT INTO totals
SELECT policy_id, window_start, window_end, COUNT(*), SUM(amount)
FROM TABLE(TUMBLE(TABLE (SELECT * FROM every_key UNION ALL SELECT * FROM changes),
                  DESCRIPTOR(event_time), INTERVAL '1' DAY))
GROUP BY policy_id, window_start, window_end;
SQL
fi

RUNNEL_LOG="${RUNNEL_LOG:-runnel_runtime=info}" "$RUNNEL_BINARY" run "$work/big_state.sql" --checkpoint-dir "$work/checkpoints" \
    >"$work/out.log" 2>"$work/runnel.log" &
pid=$!
peak=0
end=$(($(date +%s) + SECONDS_RUN + 60))
while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 1
done
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" || true
[ -n "${KEEP:-}" ] && echo "work dir: $work"
echo "claims query (${QUERY:-window}), $KEYS keys, $TRICKLE changing a second, checkpoints every 10 s:"
grep "checkpoint committed" "$work/runnel.log" | sed 's/\x1b\[[0-9;]*m//g' |
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "  checkpoint %s: %s bytes written (a restore reads %s), %s ms, longest pause of a subtask %s ms\n",
                  v["checkpoint"], v["bytes"], v["restore_bytes"] == "" ? v["bytes"] : v["restore_bytes"], v["millis"], v["stall_ms"] }'
echo "peak RSS: $((peak / 1024)) MB"
