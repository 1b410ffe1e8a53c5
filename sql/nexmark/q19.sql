-- Nexmark q19 (auction top-10 price): each auction's 10 highest bids, as published; an
-- updating Top-N. Run after ddl.sql.
SELECT * FROM
(SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
WHERE rank_number <= 10;
