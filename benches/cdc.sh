#!/usr/bin/env bash
# Change data capture throughput on the real pipeline: PostgreSQL → Debezium (Kafka
# Connect) → a Kafka topic, preloaded; then, timed, Runnel reading that topic as
# `debezium-json`, release build:
#   1. per-policy totals (ChangelogNormalize by claim_id, unwindowed aggregate) to a
#      blackhole: change events per CPU-second;
#   2. every claim's current row upserted into a PostgreSQL table through the `jdbc`
#      sink: rows per second into the database (and the table checked against the source);
#   3. claims joined with their policy (a regular join of the two changelogs: 10,000
#      policies, a fifth renamed) to a blackhole: change events per CPU-second.
#
#   benches/cdc.sh [CLAIMS]      (default 200000; the topic holds ~1.9 records per claim)
#
# Starts Kafka, PostgreSQL and Kafka Connect with the scripts in scripts/ (left running).
set -euo pipefail
cd "$(dirname "$0")/.."
CLAIMS="${1:-200000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WORK="${RUNNEL_BENCH_DIR:-/var/tmp/runnel-bench}/cdc"
mkdir -p "$WORK"
PG_PORT="${PG_PORT:-5433}"

servers=$(scripts/kafka.sh start)
scripts/postgres.sh start >/dev/null
connect=$(KAFKA_BOOTSTRAP="$servers" scripts/connect.sh start)
cargo build --release --locked -p runnel-cli >&2

sql() { PGPASSWORD=runnel psql -qAt -h 127.0.0.1 -p "$PG_PORT" -U runnel -d runnel -v ON_ERROR_STOP=1 "$@"; }
offsets() {
    java -cp "$HOME/.cache/runnel/kafka_2.13-4.4.0/libs/*" org.apache.kafka.tools.GetOffsetShell \
        --bootstrap-server "$servers" --topic "$1" 2>/dev/null | awk -F: '{ n += $3 } END { print n + 0 }'
}

run="bench_cdc_$(date +%s)"
topic="$run.bench_cdc.claims"
echo "== the workload: $CLAIMS claims inserted, half updated, a fifth moved, a tenth deleted" >&2
sql <<SQL
DROP SCHEMA IF EXISTS bench_cdc CASCADE;
CREATE SCHEMA bench_cdc;
CREATE TABLE bench_cdc.claims (
    claim_id bigint PRIMARY KEY, policy_id bigint NOT NULL, amount numeric(12, 2) NOT NULL,
    status text NOT NULL, updated_at timestamp NOT NULL);
CREATE TABLE bench_cdc.policies (policy_id bigint PRIMARY KEY, holder text NOT NULL);
DROP SCHEMA IF EXISTS bench_cdc_wh CASCADE;
CREATE SCHEMA bench_cdc_wh;
CREATE TABLE bench_cdc_wh.claims (
    claim_id bigint PRIMARY KEY, policy_id bigint, amount numeric(12, 2), status text);
SQL
curl -fsS -X POST -H 'Content-Type: application/json' "$connect/connectors" --data @- >/dev/null <<JSON
{"name": "$run", "config": {
  "connector.class": "io.debezium.connector.postgresql.PostgresConnector", "tasks.max": "1",
  "database.hostname": "127.0.0.1", "database.port": "$PG_PORT", "database.user": "runnel",
  "database.password": "runnel", "database.dbname": "runnel", "topic.prefix": "$run",
  "table.include.list": "bench_cdc.claims,bench_cdc.policies", "plugin.name": "pgoutput", "slot.name": "$run",
  "slot.drop.on.stop": "true", "publication.name": "$run", "publication.autocreate.mode": "filtered"}}
JSON
until curl -fsS "$connect/connectors/$run/status" | grep -q '"tasks":\[{"id":0,"state":"RUNNING"'; do sleep 0.5; done
sql -c "INSERT INTO bench_cdc.policies SELECT g, 'holder-' || g FROM generate_series(0, 9999) g"
sql -c "UPDATE bench_cdc.policies SET holder = holder || '-renamed' WHERE policy_id % 5 = 0"
step=20000
for ((from = 0; from < CLAIMS; from += step)); do
    to=$((from + step - 1 < CLAIMS - 1 ? from + step - 1 : CLAIMS - 1))
    sql -c "INSERT INTO bench_cdc.claims SELECT g, g % 10000, (g * 37 % 100000) / 100.0, 'open', now() FROM generate_series($from, $to) g"
done
for ((from = 0; from < CLAIMS; from += step)); do
    to=$((from + step - 1))
    sql -c "UPDATE bench_cdc.claims SET amount = amount + 1, status = 'assessed', updated_at = now() WHERE claim_id BETWEEN $from AND $to AND claim_id % 2 = 0"
    sql -c "UPDATE bench_cdc.claims SET policy_id = (policy_id + 7) % 10000, updated_at = now() WHERE claim_id BETWEEN $from AND $to AND claim_id % 5 = 0"
    sql -c "DELETE FROM bench_cdc.claims WHERE claim_id BETWEEN $from AND $to AND claim_id % 10 = 3"
done
changes=$((CLAIMS + CLAIMS / 2 + CLAIMS / 5 + CLAIMS / 10))
records=$((changes + CLAIMS / 10)) # each delete is followed by a tombstone
echo "== waiting for Debezium to write $records records to $topic" >&2
started=$(date +%s)
until [ "$(offsets "$topic")" -ge "$records" ]; do
    sleep 2
    if (( $(date +%s) - started > 1800 )); then echo "Debezium did not catch up" >&2; exit 1; fi
done
echo "Debezium wrote $records records in $(( $(date +%s) - started )) s after the last change" >&2
until [ "$(offsets "$run.bench_cdc.policies")" -ge 12000 ]; do sleep 1; done

table() {
    cat <<SQL
CREATE TABLE claims (
    claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), status STRING,
    updated_at TIMESTAMP(6),
    PRIMARY KEY (claim_id) NOT ENFORCED
) WITH (
    'connector' = 'kafka', 'topic' = '$topic', 'properties.bootstrap.servers' = '$servers',
    'properties.group.id' = 'runnel-bench-$1', 'scan.startup.mode' = 'earliest-offset',
    'scan.bounded.mode' = 'latest-offset',
    'format' = 'debezium-json', 'debezium-json.schema-include' = 'true');
SQL
}
{
    table totals
    cat <<SQL
CREATE TABLE totals (policy_id BIGINT, claims BIGINT, total DECIMAL(22, 2)) WITH ('connector' = 'blackhole');
INSERT INTO totals SELECT policy_id, COUNT(*), SUM(amount) FROM claims GROUP BY policy_id;
SQL
} >"$WORK/totals.sql"
{
    table warehouse
    cat <<SQL
CREATE TABLE claims_copy (
    claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), status STRING,
    PRIMARY KEY (claim_id) NOT ENFORCED
) WITH (
    'connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:$PG_PORT/runnel',
    'table-name' = 'bench_cdc_wh.claims', 'username' = 'runnel', 'password' = 'runnel',
    'sink.buffer-flush.max-rows' = '5000', 'sink.buffer-flush.interval' = '1 s');
INSERT INTO claims_copy SELECT claim_id, policy_id, amount, status FROM claims;
SQL
} >"$WORK/warehouse.sql"

{
    table join
    cat <<SQL
CREATE TABLE policies (
    policy_id BIGINT, holder STRING, PRIMARY KEY (policy_id) NOT ENFORCED
) WITH (
    'connector' = 'kafka', 'topic' = '$run.bench_cdc.policies',
    'properties.bootstrap.servers' = '$servers', 'properties.group.id' = 'runnel-bench-join',
    'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
    'format' = 'debezium-json', 'debezium-json.schema-include' = 'true');
CREATE TABLE joined (claim_id BIGINT, holder STRING, amount DECIMAL(12, 2)) WITH ('connector' = 'blackhole');
INSERT INTO joined SELECT c.claim_id, p.holder, c.amount FROM claims c JOIN policies p ON c.policy_id = p.policy_id;
SQL
} >"$WORK/join.sql"

echo "== 1. Debezium JSON → per-policy totals (blackhole), $records records" >&2
/usr/bin/time -f "wall %e s, cpu %U s user + %S s sys, peak memory %M KiB" \
    "$CARGO_TARGET_DIR/release/runnel" run "$WORK/totals.sql"
echo "== 2. Debezium JSON → jdbc upserts into PostgreSQL" >&2
/usr/bin/time -f "wall %e s, cpu %U s user + %S s sys, peak memory %M KiB" \
    "$CARGO_TARGET_DIR/release/runnel" run "$WORK/warehouse.sql"
differ=$(sql -c "SELECT count(*) FROM (SELECT claim_id, policy_id, amount, status FROM bench_cdc.claims
    EXCEPT SELECT * FROM bench_cdc_wh.claims) d")
rows=$(sql -c "SELECT count(*) FROM bench_cdc_wh.claims")
echo "warehouse: $rows rows, $differ differ from the source table" >&2
echo "== 3. Debezium JSON → claims joined with their policy (blackhole), $records + 12000 records" >&2
/usr/bin/time -f "wall %e s, cpu %U s user + %S s sys, peak memory %M KiB" \
    "$CARGO_TARGET_DIR/release/runnel" run "$WORK/join.sql"
curl -fsS -X DELETE "$connect/connectors/$run" >/dev/null || true
[ "$differ" = 0 ]
