-- Nexmark q0 (pass-through), as published. Run after ddl.sql.
SELECT auction, bidder, price, dateTime, extra FROM bid;
