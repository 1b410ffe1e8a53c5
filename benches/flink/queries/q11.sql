CREATE TABLE sink (bidder BIGINT, bid_count BIGINT, starttime TIMESTAMP(3),
    endtime TIMESTAMP(3)) WITH ('connector' = 'blackhole');
INSERT INTO sink
SELECT B.bidder, count(*) AS bid_count,
       SESSION_START(B.`dateTime`, INTERVAL '10' SECOND) AS starttime,
       SESSION_END(B.`dateTime`, INTERVAL '10' SECOND) AS endtime
FROM bid B
GROUP BY B.bidder, SESSION(B.`dateTime`, INTERVAL '10' SECOND);
