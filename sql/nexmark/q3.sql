-- Nexmark q3 (local item suggestion): sellers in OR, ID or CA of auctions in category 10,
-- as published. A regular join of two streams without a time bound: as in Flink it keeps
-- every auction and person (EXPLAIN and the job's start warn); SET 'table.exec.state.ttl'
-- bounds it by event time. Run after ddl.sql.

CREATE TABLE nexmark_q3 (
  name  VARCHAR,
  city  VARCHAR,
  state  VARCHAR,
  id  BIGINT
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO nexmark_q3
SELECT
    P.name, P.city, P.state, A.id
FROM
    auction AS A INNER JOIN person AS P on A.seller = P.id
WHERE
    A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
