-- The webhook fan-out runs once per statement, not once per event. A statement that inserts
-- many events (a batch of coalesced PaymentIntent creations, src/payments/create-batches.ts)
-- then creates every delivery in one insert and adds every delivery job with ONE call of
-- graphile_worker.add_jobs: one `jobs:insert` notification per statement where the row trigger
-- sent one per event. Notifications matter on a surge's hot path: PostgreSQL queues a
-- transaction's notifications under one global lock taken at commit, so notifying transactions
-- commit one at a time. A statement inserting one event behaves as before. The job's task,
-- payload and trace context are those of migrations/008 (src/webhooks/jobs.ts).
drop trigger events_fan_out_to_webhooks on events;

create or replace function webhooks_fan_out() returns trigger language plpgsql as $$
declare
  traceparent text := coalesce(current_setting('floodgate.traceparent', true), '');
  added bigint;
begin
  -- (No job_spec variable: a declared type is looked up when the function is created, and
  -- graphile_worker's schema is installed after the migrations.)
  with delivery as (
    insert into webhook_deliveries (merchant_id, id, endpoint_id, event_id, status, next_attempt_at, created_at, updated_at)
    select endpoint.merchant_id, webhook_delivery_id(event.id, endpoint.id), endpoint.id, event.id, 'pending', now(), now(), now()
    from inserted_events event
    join webhook_endpoints endpoint on endpoint.merchant_id = event.merchant_id and endpoint.status = 'enabled'
      and (event.type = any (endpoint.enabled_events) or '*' = any (endpoint.enabled_events))
    returning merchant_id, id
  )
  select count(*) into added from (
    select graphile_worker.add_jobs(batch.specs) from (
      select array_agg(row('deliver_webhook',
      (jsonb_build_object('merchant_id', delivery.merchant_id, 'delivery_id', delivery.id, 'round', 1, 'attempt', 1)
        || case when traceparent = '' then '{}'::jsonb
                else jsonb_build_object('_trace', jsonb_build_object('traceparent', traceparent)) end)::json,
      null, null, null, null, null, null)::graphile_worker.job_spec order by delivery.id) as specs
      from delivery) batch
    where batch.specs is not null) jobs;
  return null;
end $$;

create trigger events_fan_out_to_webhooks after insert on events
  referencing new table as inserted_events
  for each statement execute function webhooks_fan_out();
