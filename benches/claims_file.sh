#!/usr/bin/env bash
# Throughput of the claims query (filter + 5-minute TUMBLE aggregate) over N events read
# from a JSON-lines file, release build, results to a blackhole sink.
#
#   benches/claims_file.sh [EVENTS]      (default 1000000)
#
# Prints runnel's own summary (rows in, rows/s over the whole job) and the wall and CPU
# time of the process, so events per CPU-second can be compared across machines.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WORK="${RUNNEL_BENCH_DIR:-/var/tmp/runnel-bench}"
mkdir -p "$WORK"
DATA="$WORK/claims-$EVENTS.json"

if [ ! -f "$DATA" ]; then
    echo "generating $EVENTS claim events into $DATA" >&2
    python3 - "$EVENTS" "$DATA" <<'PY'
import random, sys, datetime
n, path = int(sys.argv[1]), sys.argv[2]
rng = random.Random(42)
start = datetime.datetime(2026, 1, 1)
ops = ["INSERT"] * 6 + ["UPDATE"] * 3 + ["DELETE"]
with open(path, "w") as f:
    for i in range(n):
        t = start + datetime.timedelta(milliseconds=i * 100 - rng.randrange(4000))
        f.write('{"claim_id":"c-%d","policy_id":%d,"amount":%d.%02d,"operation":"%s","event_time":"%s"}\n' % (
            i, rng.randrange(1, 10001), rng.randrange(1, 5000), rng.randrange(100), rng.choice(ops),
            t.strftime("%Y-%m-%d %H:%M:%S.") + "%03d" % (t.microsecond // 1000)))
PY
fi

cargo build --release --locked -p runnel-cli >&2
cat >"$WORK/claims-bench.sql" <<SQL
CREATE TABLE claims (
    claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
    event_time TIMESTAMP(3),
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '$DATA', 'format' = 'json');
CREATE TABLE claims_aggregated_5min (
    policy_id BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
    claim_count BIGINT, total_amount DECIMAL(22, 2)
) WITH ('connector' = 'blackhole');
INSERT INTO claims_aggregated_5min
SELECT policy_id, window_start, window_end, COUNT(*), SUM(amount)
FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
WHERE operation = 'INSERT'
GROUP BY policy_id, window_start, window_end;
SQL
/usr/bin/time -f "wall %e s, cpu %U s user + %S s sys, peak memory %M KiB" \
    "$CARGO_TARGET_DIR/release/runnel" run "$WORK/claims-bench.sql"
