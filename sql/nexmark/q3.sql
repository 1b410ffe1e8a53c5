-- Nexmark q3 (local item suggestion): sellers in OR, ID or CA of auctions in category 10,
-- as published. A regular join of two streams: it runs with a state TTL, which bounds
-- it by event time (each row meets the other side's rows within 1 hour of it).
-- Run after ddl.sql.
SET 'table.exec.state.ttl' = '1 h';

SELECT
    P.name, P.city, P.state, A.id
FROM
    auction AS A INNER JOIN person AS P on A.seller = P.id
WHERE
    A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
