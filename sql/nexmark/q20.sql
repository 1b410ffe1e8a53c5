-- Nexmark q20 (expand bid with auction): bids with their auction's details for category
-- 10, as published. A regular join of two streams: it runs with a state TTL (see q3).
-- Run after ddl.sql.
SET 'table.exec.state.ttl' = '1 h';

SELECT
    auction, bidder, price, channel, url, B.dateTime, B.extra,
    itemName, description, initialBid, reserve, A.dateTime, expires, seller, category, A.extra
FROM
    bid AS B INNER JOIN auction AS A on B.auction = A.id
WHERE A.category = 10;
