-- Nexmark q18 (find last bid): each bidder's latest bid per auction, as published
-- (deduplication: an updating Top-1). Run after ddl.sql.
SELECT auction, bidder, price, channel, url, dateTime, extra
 FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY dateTime DESC) AS rank_number
       FROM bid)
 WHERE rank_number <= 1;
