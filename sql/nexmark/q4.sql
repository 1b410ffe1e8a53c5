-- Nexmark q4 (average price for a category): the average winning bid per category, as
-- published. The join bounds each bid by its auction's own `expires`: an auction is
-- dropped once the watermark passes its expires, a bid once it passes the bid's time,
-- so state stays bounded without a TTL. Both aggregates are unwindowed: the result is an
-- updating stream. Run after ddl.sql.

CREATE TABLE nexmark_q4 (
  category  BIGINT,
  `final`  BIGINT
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO nexmark_q4
SELECT
    Q.category,
    AVG(Q.final)
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
