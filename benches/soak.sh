#!/usr/bin/env bash
# A soak: the claims query over `datagen` at a steady rate for a long time, checkpointing
# every 10 s; every 10 s it samples the process's RSS and, from /metrics, the job's state
# bytes, watermark lag, rows in and checkpoints. Writes the samples as CSV and an SVG plot
# (RSS and state over time). Not part of CI.
#
#   benches/soak.sh [MINUTES] [ROWS_PER_SECOND] [OUT_DIR]
#
# Defaults: 30 minutes, 20,000 rows/s, benches/results/soak. RUNNEL_BINARY picks the binary
# (default: the release build, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-30}"
RATE="${2:-20000}"
OUT="${3:-benches/results/soak}"
PORT="${SOAK_METRICS_PORT:-9464}"
mkdir -p "$OUT"
if [ -z "${RUNNEL_BINARY:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
    cargo build --release --locked -p runnel-cli >&2
    RUNNEL_BINARY="$CARGO_TARGET_DIR/release/runnel"
fi
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/soak.sql" <<SQL
SET 'execution.checkpointing.interval' = '10 s';
CREATE TABLE claims (
    claim_id BIGINT,
    policy_id BIGINT,
    amount DECIMAL(12, 2),
    event_time TIMESTAMP(3),
    operation AS CASE WHEN MOD(claim_id, 10) = 0 THEN 'DELETE' ELSE 'INSERT' END,
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    'connector' = 'datagen', 'rows-per-second' = '$RATE',
    'fields.claim_id.kind' = 'sequence', 'fields.claim_id.start' = '1',
    'fields.claim_id.end' = '100000000000',
    'fields.policy_id.min' = '1', 'fields.policy_id.max' = '100000',
    'fields.amount.min' = '1', 'fields.amount.max' = '5000'
);
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

"$RUNNEL_BINARY" run "$work/soak.sql" --checkpoint-dir "$work/checkpoints" \
    --metrics-addr "127.0.0.1:$PORT" 2>"$OUT/runnel.log" &
pid=$!
# A series' value: the last field of its line (labels may hold spaces).
metric() { awk -v name="$1" 'index($0, name "{") == 1 || index($0, name " ") == 1 { print $NF; exit }' "$work/metrics"; }
csv="$OUT/samples.csv"
echo "seconds,rss_bytes,state_bytes,watermark_lag_ms,rows_in,checkpoints" >"$csv"
started=$(date +%s)
end=$((started + MINUTES * 60))
while [ "$(date +%s)" -lt "$end" ]; do
    sleep 10
    kill -0 "$pid" 2>/dev/null || { echo "soak: runnel exited; see $OUT/runnel.log" >&2; exit 1; }
    rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    curl -sf "http://127.0.0.1:$PORT/metrics" >"$work/metrics" || continue
    echo "$(($(date +%s) - started)),$((rss_kb * 1024)),$(metric runnel_state_bytes),$(metric runnel_watermark_lag_milliseconds),$(metric runnel_rows_in_total),$(metric runnel_checkpoints_total)" >>"$csv"
done
kill -TERM "$pid"
wait "$pid" || true

# The plot: RSS and state (MB) against minutes.
python3 - "$csv" "$OUT/soak.svg" "$RATE" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
width, height, left, bottom = 720, 320, 60, 40
xs = [int(r["seconds"]) / 60 for r in rows]
series = {
    "RSS": ([int(r["rss_bytes"]) / 2**20 for r in rows], "#1f77b4"),
    "state": ([float(r["state_bytes"] or 0) / 2**20 for r in rows], "#ff7f0e"),
}
top = max(max(v) for v, _ in series.values()) * 1.15 or 1
span = max(xs) or 1
def point(x, y):
    return f"{left + x / span * (width - left - 20):.1f},{height - bottom - y / top * (height - bottom - 20):.1f}"
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
       f'<rect width="{width}" height="{height}" fill="white"/>',
       f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" stroke="black"/>',
       f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="black"/>',
       f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">minutes (claims over datagen, {sys.argv[3]} rows/s, checkpoints every 10 s)</text>']
for i in range(5):
    y = top * i / 4
    out.append(f'<text x="{left - 6}" y="{point(0, y).split(",")[1]}" text-anchor="end">{y:.0f} MB</text>')
for m in range(0, int(span) + 1, max(1, int(span) // 6)):
    out.append(f'<text x="{point(m, 0).split(",")[0]}" y="{height - bottom + 16}" text-anchor="middle">{m}</text>')
for n, (name, (values, color)) in enumerate(series.items()):
    path = " ".join(point(x, y) for x, y in zip(xs, values))
    out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
    out.append(f'<text x="{left + 10 + n * 90}" y="16" fill="{color}">{name}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out))
PY
awk -F, 'NR == 2 { first = $0 } NR > 1 { last = $0; if ($2 > peak) peak = $2 }
    END { print "first sample: " first; print "last sample:  " last; printf "peak RSS: %.1f MB\n", peak / 1048576 }' "$csv"
echo "samples: $csv, plot: $OUT/soak.svg"
