CREATE TABLE sink (policy_id BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
    claim_count BIGINT, total_amount DECIMAL(22, 2)) WITH ('connector' = 'blackhole');
INSERT INTO sink
SELECT policy_id, window_start, window_end, COUNT(*), SUM(amount)
FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
WHERE operation = 'INSERT'
GROUP BY policy_id, window_start, window_end;
