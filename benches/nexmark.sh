#!/usr/bin/env bash
# Throughput of a Nexmark query from sql/nexmark/ over the in-process generator, release
# build. The published queries write into their `blackhole` sink tables (rows discarded,
# so the engine is measured rather than printing); the rows of a bare SELECT of
# benches/queries/ are printed to /dev/null.
#
#   benches/nexmark.sh QUERY [EVENTS] [TPS]     e.g. benches/nexmark.sh q11 10000000
#
# QUERY is a file of sql/nexmark/ (q0, q11, ...) or of benches/queries/ (over_range, ...).
#
# EVENTS defaults to 10M; TPS (events per second of event time) to Flink's 10M.
# Prints runnel's summary line and the process's wall time, CPU time and peak memory,
# so events per CPU-second can be compared across machines.
set -euo pipefail
cd "$(dirname "$0")/.."
QUERY="${1:?usage: benches/nexmark.sh QUERY [EVENTS] [TPS]}"
EVENTS="${2:-10000000}"
TPS="${3:-10000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WORK="${RUNNEL_BENCH_DIR:-/var/tmp/runnel-bench}"
mkdir -p "$WORK"
JOB="$WORK/nexmark-$QUERY.sql"
{
    sed -e "s/\${EVENTS_NUM}/$EVENTS/" -e "s/\${TPS}/$TPS/g" sql/nexmark/ddl.sql
    if [ -f "sql/nexmark/$QUERY.sql" ]; then
        sed -e "s|\${FLINK_HOME}|$PWD/sql/nexmark|g" -e "s|\${NEXMARK_DIR}|$WORK|g" \
            -e "s|\${SUBMIT_TIME}|$(date +%s)|g" "sql/nexmark/$QUERY.sql"
    else
        cat "benches/queries/$QUERY.sql"
    fi
} >"$JOB"
cargo build --release --locked -p runnel-cli >&2
/usr/bin/time -f "wall %e s, cpu %U+%S s, peak rss %M KB" \
    "$CARGO_TARGET_DIR/release/runnel" run "$JOB" >/dev/null
echo "$QUERY: $EVENTS events (tps $TPS)"
