-- Nexmark q4 (average price for a category): the average winning bid per category, as
-- published. The join bounds the bid by its auction's own `expires`, which is no fixed
-- interval, so it runs with a state TTL (each row meets the other side's rows within
-- 1 hour of event time; Nexmark's auctions last seconds). Both aggregates are
-- unwindowed: the result is an updating stream. Run after ddl.sql.
SET 'table.exec.state.ttl' = '1 h';

SELECT
    Q.category,
    AVG(Q.final)
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
