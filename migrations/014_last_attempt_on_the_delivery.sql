-- A delivery's last attempt is on the delivery itself (attempts, last_attempt_at,
-- last_status_code, last_error, last_duration_ms): webhook_delivery_attempts now logs only the
-- attempts that a later one superseded. Most deliveries succeed at their first attempt, and
-- logging it wrote a row, its primary key, its time index entry and a foreign key check, all
-- to repeat what the delivery's own record (a HOT update since 013) had just written. Now a
-- record moves the attempt it supersedes into the log (src/webhooks/delivery-sql.ts), and a
-- redelivery moves the last attempt of the round it ends (src/webhooks/sql.ts requeueEvent).
-- The log shown for a delivery is its last attempt, then the logged ones; the prune job still
-- deletes logged attempts past their retention, and a delivery keeps its last one.
--
-- Logged attempts that are their delivery's last one in its current round are now on the
-- delivery; their rows go.
delete from webhook_delivery_attempts a
using webhook_deliveries d
where d.merchant_id = a.merchant_id and d.id = a.delivery_id and d.attempts > 0 and a.round = d.round and a.attempt = d.attempts;
