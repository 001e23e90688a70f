-- A delivery's record (pending -> succeeded, with its last attempt) is the one write every
-- delivery makes, and it could never be HOT: webhook_deliveries_by_status names `status`, so
-- changing it wrote a new entry in each of the table's four indexes. An index that names a
-- column in its key, an expression or its predicate keeps every update of that column from
-- being HOT, so the listing by status gets a column that a successful delivery leaves alone:
-- `undelivered` is the status of a delivery that was given up (dead) or canceled, else null.
-- The lists that need an index (the dead letters, the canceled) read it through a partial
-- index of those rows only; the others (pending, succeeded) walk the primary key, newest
-- first, as the unfiltered list does. With a fifth of each page kept free, the new version
-- fits beside the old (as for payment_intents and orders in 012). On a scratch database
-- (bench/README.md, the twenty-third session) this took a record from 38-44 to about 25 us of
-- PostgreSQL's CPU a delivery.
--
-- Adding a stored generated column rewrites the table once, under its lock.
alter table webhook_deliveries
  add column undelivered text generated always as (case when status in ('dead', 'canceled') then status end) stored;
create index webhook_deliveries_undelivered on webhook_deliveries (merchant_id, undelivered, id) where undelivered is not null;
drop index webhook_deliveries_by_status;
alter table webhook_deliveries set (fillfactor = 80);
