-- The canonical Runnel job: count claims and sum amounts per policy over 5-minute
-- tumbling windows, keeping only inserts. Reads a bundled sample of CDC events and
-- prints the windowed results. Run it with:
--   cargo run -p runnel-cli -- run sql/examples/claims.sql
-- sql/examples/claims_kafka.sql is the same job between Kafka topics.

CREATE TABLE claims (
    claim_id   STRING,
    policy_id  BIGINT,
    amount     DECIMAL(12, 2),
    operation  STRING,
    event_time TIMESTAMP(3),
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = 'sql/examples/data/claims.json',
    'format' = 'json'
);

CREATE TABLE claims_aggregated_5min (
    policy_id    BIGINT,
    window_start TIMESTAMP(3),
    window_end   TIMESTAMP(3),
    claim_count  BIGINT,
    total_amount DECIMAL(22, 2)
) WITH (
    'connector' = 'print'
);

INSERT INTO claims_aggregated_5min
SELECT policy_id, window_start, window_end, COUNT(*) AS claim_count, SUM(amount) AS total_amount
FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
WHERE operation = 'INSERT'
GROUP BY policy_id, window_start, window_end;
