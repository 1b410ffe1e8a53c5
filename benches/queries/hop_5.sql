-- HOP with size/slide = 5 (Nexmark q5's windows: 10 s every 2 s), count per auction.
SELECT auction, COUNT(*) AS num, window_end
FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
