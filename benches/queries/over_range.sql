-- Per-bid sliding maximum: each bid with the highest price on its auction in the 10 s
-- up to it (an OVER RANGE window). Not part of Nexmark; run with benches/nexmark.sh.
SELECT auction, price, dateTime,
       MAX(price) OVER (PARTITION BY auction ORDER BY dateTime
                        RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS max_10s
FROM bid;
