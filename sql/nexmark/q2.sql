-- Nexmark q2 (selection), as published. Run after ddl.sql.
SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0;
