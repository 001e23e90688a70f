-- The webhook fan-out adds one delivery job per statement and merchant, not one per delivery:
-- a `deliver_webhooks` job names up to 100 deliveries, which the worker reads in one query,
-- sends concurrently, and records in one statement (src/webhooks/delivery.ts). A job costs the
-- worker and PostgreSQL about as much as a delivery's own work (fetching, locking, completing
-- it, its read and its record), so a statement of many events pays that once per hundred
-- deliveries instead of once per delivery.
--
-- As in migrations/010, the statement makes ONE add_jobs call, so one `jobs:insert`
-- notification: notifying commits are serialized by PostgreSQL. The payload keeps the trace
-- context of migrations/008 under "_trace". A retry of a failed delivery is still a
-- `deliver_webhook` job of its own (scheduled by the worker with its backoff), as are
-- redeliveries; `deliver_webhook` jobs queued before this migration run as they always did.
--
-- Chunks of at most 100 deliveries: the worker's read and record statements take their arrays
-- in batches of that size (src/webhooks/service.ts), and a job of 100 sends that many requests
-- at once, which the transport's per-host socket limit queues.
create or replace function webhooks_fan_out() returns trigger language plpgsql as $$
declare
  traceparent text := coalesce(current_setting('floodgate.traceparent', true), '');
  trace jsonb := case when traceparent = '' then '{}'::jsonb
                      else jsonb_build_object('_trace', jsonb_build_object('traceparent', traceparent)) end;
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
  ),
  chunked as (
    select merchant_id, id, (row_number() over (partition by merchant_id order by id) - 1) / 100 as chunk
    from delivery
  ),
  job as (
    select merchant_id, chunk, jsonb_agg(id order by id) as delivery_ids
    from chunked
    group by merchant_id, chunk
  )
  select count(*) into added from (
    select graphile_worker.add_jobs(batch.specs) from (
      select array_agg(row('deliver_webhooks',
        (jsonb_build_object('merchant_id', job.merchant_id, 'delivery_ids', job.delivery_ids, 'round', 1, 'attempt', 1)
          || trace)::json,
        null, null, null, null, null, null)::graphile_worker.job_spec order by job.merchant_id, job.chunk) as specs
      from job) batch
    where batch.specs is not null) jobs;
  return null;
end $$;
