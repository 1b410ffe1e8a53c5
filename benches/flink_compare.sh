#!/usr/bin/env bash
# Runnel and Apache Flink side by side on the same JSON-lines files (parsing included):
# the claims query and Nexmark q5, q7, q8, q11 (benches/flink/queries/), each engine
# writing to a blackhole sink. Nexmark reads the published Kafka table's shape — one JSON
# record per event with nested person / auction / bid rows — through sql/nexmark/ddl.sql's
# table (on the file instead of the generator) and its views; claims read
# benches/flink/ddl.sql's flat table.
#
#   benches/flink_compare.sh [EVENTS] [FLINK_PARALLELISM]      (defaults: 2000000, 2)
#
# ENGINES="runnel flink" (the default) picks the engines; RUNNEL=path runs another
# runnel binary (an earlier build, to compare). Unless CHECK=0, each query then runs once
# more on each engine into CSV files instead of the blackhole, and the two outputs are
# compared: row count and an order-free checksum of the rows (benches/flink/compare_outputs.py).
#
# Flink runs through PyFlink 2.3 (PyPI's apache-flink bundles Flink with its filesystem
# and JSON connectors; Java 17 runs it), installed once into $FLINK_VENV
# (default /var/tmp/pyflink-venv). Prints per query and engine: wall time, CPU time
# (user + system of the whole process tree) and events per CPU-second.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-2000000}"
PARALLELISM="${2:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WORK="${RUNNEL_BENCH_DIR:-/var/tmp/runnel-bench}/flink-compare"
DATA="$WORK/nested-$EVENTS"
FLINK_VENV="${FLINK_VENV:-/var/tmp/pyflink-venv}"
mkdir -p "$WORK"

ENGINES="${ENGINES:-runnel flink}"
CHECK="${CHECK:-1}"
if [ -z "${RUNNEL:-}" ]; then
    cargo build --release --locked -p runnel-cli >&2
    RUNNEL="$CARGO_TARGET_DIR/release/runnel"
fi

if [[ " $ENGINES " == *" flink "* || "$CHECK" != 0 ]] && { [ ! -x "$FLINK_VENV/bin/python" ] || ! "$FLINK_VENV/bin/python" -c 'import pyflink' 2>/dev/null; }; then
    echo "installing PyFlink 2.3 into $FLINK_VENV (once)" >&2
    python3 -m venv "$FLINK_VENV"
    "$FLINK_VENV/bin/pip" install -q apache-flink==2.3.0
fi

# `CREATE TABLE $1 (...)` with the physical columns of the Nexmark table of
# sql/nexmark/ddl.sql (event_type and the nested person / auction / bid rows).
events_columns() {
    awk -v name="$1" '
        /^CREATE TABLE datagen \(/ { print "CREATE TABLE " name " ("; on = 1; next }
        on && /^    `?dateTime`? AS/ { on = 0; sub(/,[[:space:]]*$/, "", last); print last; printf ")"; exit }
        on { if (have) print last; last = $0; have = 1 }
    ' sql/nexmark/ddl.sql
}

# sql/nexmark/ddl.sql (the Nexmark table, its event-time column and watermark, and the
# published person / auction / bid views) reading the events file instead of the
# generator: the published Kafka table's shape, on a file both engines read.
nexmark_ddl() {
    awk -v path="$DATA/events.json" '
        /^\) WITH \($/ && !done { skip = 1; next }
        skip && /^\);$/ { print ") WITH ('"'"'connector'"'"' = '"'"'filesystem'"'"', '"'"'path'"'"' = '"'"'" path "'"'"', '"'"'format'"'"' = '"'"'json'"'"');"; skip = 0; done = 1; next }
        skip { next }
        { print }
    ' sql/nexmark/ddl.sql
}

if [ ! -f "$DATA/done" ]; then
    echo "writing $EVENTS Nexmark events and $EVENTS claims as JSON lines into $DATA" >&2
    rm -rf "$DATA" && mkdir -p "$DATA"
    {
        sed -e "s/\${EVENTS_NUM}/$EVENTS/" -e "s/\${TPS}/100000/g" sql/nexmark/ddl.sql
        # The published Kafka table's shape: one JSON record per event, with nested
        # person / auction / bid rows (the generator table's physical columns).
        events_columns "events_file"
        echo " WITH ('connector' = 'filesystem', 'path' = '$DATA/events.json', 'format' = 'json');"
        echo "INSERT INTO events_file SELECT event_type, person, auction, bid FROM datagen;"
        cat <<SQL
CREATE TABLE claims_source (claim_no BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), op_code INT)
WITH ('connector' = 'datagen', 'rows-per-second' = '1000000000', 'number-of-rows' = '$EVENTS',
      'fields.claim_no.kind' = 'sequence', 'fields.claim_no.start' = '1', 'fields.claim_no.end' = '$EVENTS',
      'fields.policy_id.min' = '1', 'fields.policy_id.max' = '10000',
      'fields.amount.max' = '5000', 'fields.op_code.min' = '0', 'fields.op_code.max' = '9');
CREATE TABLE claims_file (claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2),
    operation STRING, event_time TIMESTAMP(3))
WITH ('connector' = 'filesystem', 'path' = '$DATA/claims.json', 'format' = 'json');
INSERT INTO claims_file
SELECT CONCAT('c-', CAST(claim_no AS STRING)), policy_id, amount,
       CASE WHEN op_code < 8 THEN 'INSERT' WHEN op_code < 9 THEN 'UPDATE' ELSE 'DELETE' END,
       TO_TIMESTAMP_MILLIS(1767225600000 + claim_no * 10)
FROM claims_source;
SQL
    } >"$WORK/generate.sql"
    "$RUNNEL" run "$WORK/generate.sql" >/dev/null
    touch "$DATA/done"
fi

# Wall seconds and CPU seconds of a command and its children: "wall cpu". A command that
# prints TREE_CPU_SECONDS=x (the Flink driver: its JVM is not a waited-for child) is
# taken at its word for the CPU.
measure() {
    /usr/bin/time -f "%e %U %S" -o "$WORK/time.txt" "$@" >"$WORK/stdout.txt" 2>"$WORK/stderr.txt" || {
        cat "$WORK/stderr.txt" >&2
        return 1
    }
    tree=$(sed -n 's/^TREE_CPU_SECONDS=//p' "$WORK/stdout.txt")
    awk -v tree="$tree" '{ printf "%s %.2f", $1, (tree != "" ? tree : $2 + $3) }' "$WORK/time.txt"
}

# The script of `query` into $WORK/$query.sql, its sink replaced by CSV files in $2 when given.
query_script() {
    local query="$1" out="${2:-}"
    if [ "$query" = claims ]; then
        sed -e "s|\${DATA}|$DATA|g" benches/flink/ddl.sql
    else
        nexmark_ddl
    fi
    if [ -n "$out" ]; then
        sed -e "s|'connector' = 'blackhole'|'connector' = 'filesystem', 'path' = '$out', 'format' = 'csv'|" \
            "benches/flink/queries/$query.sql"
    else
        cat "benches/flink/queries/$query.sql"
    fi
}

run_engine() {
    local engine="$1" script="$2"
    if [ "$engine" = runnel ]; then
        measure "$RUNNEL" run "$script"
    else
        measure "$FLINK_VENV/bin/python" benches/flink/run_flink.py "$script" "$PARALLELISM"
    fi
}

QUERIES="${QUERIES:-claims q5 q7 q8 q11}"
printf "%-7s %-8s %9s %9s %15s\n" query engine "wall s" "cpu s" "events/CPU-s"
for query in $QUERIES; do
    query_script "$query" >"$WORK/$query.sql"
    for engine in $ENGINES; do
        result=$(run_engine "$engine" "$WORK/$query.sql")
        read -r wall cpu <<<"$result"
        awk -v q="$query" -v e="$engine" -v w="$wall" -v c="$cpu" -v n="$EVENTS" \
            'BEGIN { printf "%-7s %-8s %9.2f %9.2f %15.0f\n", q, e, w, c, n / c }'
    done
done

[ "$CHECK" = 0 ] && exit 0
# The same queries into CSV files (Flink checkpoints every 2 s so its files are
# committed; its last checkpoint, at the end of the input, commits the rest).
failed=0
for query in $QUERIES; do
    for engine in runnel flink; do
        out="$WORK/out/$query/$engine"
        rm -rf "$out" && mkdir -p "$out"
        query_script "$query" "$out" >"$WORK/$query-$engine-check.sql"
        FLINK_CHECKPOINT_MS=2000 run_engine "$engine" "$WORK/$query-$engine-check.sql" >/dev/null
    done
    if "$FLINK_VENV/bin/python" benches/flink/compare_outputs.py \
        "$WORK/out/$query/runnel" "$WORK/out/$query/flink" >"$WORK/compare.txt"; then
        echo "$query: equal ($(sed -n 's/.*runnel: //p' "$WORK/compare.txt"))"
    else
        echo "$query: DIFFERENT" && cat "$WORK/compare.txt" && failed=1
    fi
done
exit $failed
