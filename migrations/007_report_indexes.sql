-- Indexes the reports read through (src/reporting/sql.ts); test/report-plans.test.ts fails
-- when a report query scans a large table instead.
--
-- Payment totals by day, status and currency walk a merchant's payments in a date range.
-- created_at never changes, so this index leaves updates of a payment's status HOT.
create index payment_intents_by_created on payment_intents (merchant_id, created_at);
-- A sale's orders: the sale report's counts by status and paid revenue, and the CSV export,
-- which pages through them in id order. Without it they filter every order of the merchant.
create index orders_by_sale on orders (merchant_id, sale_id, id);
