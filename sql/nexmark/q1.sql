-- Nexmark q1 (currency conversion), as published. Run after ddl.sql.
SELECT auction, bidder, 0.908 * price as price, dateTime, extra FROM bid;
