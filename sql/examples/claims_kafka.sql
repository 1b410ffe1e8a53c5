-- The claims job between Kafka topics (start a broker with scripts/kafka.sh start).
-- Reads claims.events from the beginning and keeps running; Ctrl-C stops it.

CREATE TABLE claims (
    claim_id   STRING,
    policy_id  BIGINT,
    amount     DECIMAL(12, 2),
    operation  STRING,
    event_time TIMESTAMP(3),
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    'connector' = 'kafka',
    'topic' = 'claims.events',
    'properties.bootstrap.servers' = '127.0.0.1:9092',
    'properties.group.id' = 'runnel-claims',
    'scan.startup.mode' = 'earliest-offset',
    'format' = 'json'
);

CREATE TABLE claims_aggregated_5min (
    policy_id    BIGINT,
    window_start TIMESTAMP(3),
    window_end   TIMESTAMP(3),
    claim_count  BIGINT,
    total_amount DECIMAL(22, 2)
) WITH (
    'connector' = 'kafka',
    'topic' = 'claims.aggregated.5min',
    'properties.bootstrap.servers' = '127.0.0.1:9092',
    'format' = 'json',
    'key.format' = 'json',
    'key.fields' = 'policy_id'
);

INSERT INTO claims_aggregated_5min
SELECT policy_id, window_start, window_end, COUNT(*) AS claim_count, SUM(amount) AS total_amount
FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
WHERE operation = 'INSERT'
GROUP BY policy_id, window_start, window_end;
