-- Change data capture: the claims of an insurance policy system, as Debezium captures
-- them from PostgreSQL (`insurance.claims`: inserts, updates, deletes, keyed by
-- claim_id), totalled per policy over 5-minute tumbling windows by the claim's filing
-- time, per policy over all time, and per plan with each claim counted under the plan
-- its policy had when the claim was filed (`insurance.policies`, a versioned table).
--
--   runnel run sql/examples/claims_cdc.sql
--
-- The input files hold records exactly as Debezium 3.6 wrote them to Kafka (JSON
-- converter without schemas; DECIMAL as base64, TIMESTAMP(3) as epoch milliseconds; a
-- delete followed by its tombstone). To read the live topic instead, make `claims` a
-- Kafka table: 'connector' = 'kafka', 'topic' = 'example.insurance.claims',
-- 'properties.bootstrap.servers' = '127.0.0.1:9092'; docs/cdc.md runs the whole
-- pipeline, PostgreSQL to PostgreSQL.

CREATE TABLE claims (
    claim_id   STRING,
    policy_id  BIGINT,
    amount     DECIMAL(12, 2),
    status     STRING,
    filed_at   TIMESTAMP(3),
    captured_from STRING METADATA FROM 'value.source.table' VIRTUAL,
    PRIMARY KEY (claim_id) NOT ENFORCED,
    WATERMARK FOR filed_at AS filed_at - INTERVAL '5' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = 'sql/examples/data/claims_debezium.json',
    'format' = 'debezium-json'
);

-- Each window once, when the watermark passes its end; an update or delete of a claim
-- retracts from its window while the window is open.
CREATE TABLE claims_per_policy_5min (
    policy_id BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
    claims BIGINT, total DECIMAL(22, 2)
) WITH ('connector' = 'print');

INSERT INTO claims_per_policy_5min
SELECT policy_id, window_start, window_end, COUNT(*), SUM(amount)
FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(filed_at), INTERVAL '5' MINUTES))
GROUP BY policy_id, window_start, window_end;

-- Every policy's current totals, revised as claims change (+I, -U/+U, -D).
CREATE TABLE totals_per_policy (
    policy_id BIGINT, claims BIGINT, total DECIMAL(22, 2),
    PRIMARY KEY (policy_id) NOT ENFORCED
) WITH ('connector' = 'print');

INSERT INTO totals_per_policy
SELECT policy_id, COUNT(*), SUM(amount) FROM claims GROUP BY policy_id;

-- The policies: a versioned table (changes with a primary key and a watermark), each
-- version valid from `valid_from` (policy 7 moved to the premium plan at 09:05, policy 12
-- to the basic plan at 09:10).
CREATE TABLE policies (
    policy_id  BIGINT,
    holder     STRING,
    plan       STRING,
    valid_from TIMESTAMP(3),
    PRIMARY KEY (policy_id) NOT ENFORCED,
    WATERMARK FOR valid_from AS valid_from - INTERVAL '5' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = 'sql/examples/data/policies_debezium.json',
    'format' = 'debezium-json'
);

-- Each claim with the policy version valid when it was filed (an event-time temporal
-- join: a claim waits until both watermarks pass its filing time).
CREATE VIEW claims_with_policy AS
SELECT c.claim_id, c.amount, c.filed_at, p.plan
FROM claims AS c
JOIN policies FOR SYSTEM_TIME AS OF c.filed_at AS p ON c.policy_id = p.policy_id;

CREATE TABLE claims_per_plan_5min (
    plan STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
    claims BIGINT, total DECIMAL(22, 2)
) WITH ('connector' = 'print');

INSERT INTO claims_per_plan_5min
SELECT plan, window_start, window_end, COUNT(*), SUM(amount)
FROM TABLE(TUMBLE(TABLE claims_with_policy, DESCRIPTOR(filed_at), INTERVAL '5' MINUTES))
GROUP BY plan, window_start, window_end;
