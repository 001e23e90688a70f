-- A PaymentIntent and an order are each updated once or twice within seconds of being inserted
-- (processing, then succeeded; awaiting_payment, then paid), and no index covers the columns
-- those updates change. Such an update can be HOT, writing no index entry, only if the new
-- version fits on the row's own page; at the default fillfactor (100) insertions fill every page,
-- and about half of these updates were not HOT. With a fifth of each page kept free, a quick
-- checkouts run (bench/README.md, the twentieth session) wrote 3.5 rather than 3.9 non-HOT
-- updates and 45.3 rather than 46.5 index entries per paid checkout. The setting governs pages
-- written from now on; existing pages keep what they hold.
alter table payment_intents set (fillfactor = 80);
alter table orders set (fillfactor = 80);
