-- HOP with size/slide = 60 (60 s every 1 s), count per auction: compare with hop_5.sql.
SELECT auction, COUNT(*) AS num, window_end
FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '1' SECOND, INTERVAL '60' SECOND))
GROUP BY auction, window_start, window_end;
