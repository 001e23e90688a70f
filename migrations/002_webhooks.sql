-- Outbound webhooks: endpoints, one delivery per (event, endpoint), and a log of attempts.
-- Also gives every event a per-object sequence number so receivers can order what they get.

-- Events of one object are numbered 1, 2, 3, ... in the order they were written. Writers
-- hold the object's row lock (a guarded UPDATE or SELECT ... FOR UPDATE, or the row is new),
-- so max + 1 is safe; the unique constraint turns a writer that forgot the lock into an error
-- instead of two events with the same number. It also serves the max lookup.
alter table events add column sequence integer;
update events set sequence = numbered.n
from (select merchant_id, id, row_number() over (partition by merchant_id, object_id order by id) as n from events) numbered
where events.merchant_id = numbered.merchant_id and events.id = numbered.id;
alter table events alter column sequence set not null;
alter table events add constraint events_sequence_per_object unique (merchant_id, object_id, sequence);

create table webhook_endpoints (
  merchant_id text collate "C" not null references merchants (merchant_id),
  id text collate "C" not null,
  url text not null check (length(url) between 1 and 2048),
  -- Event types, or '*' for every type.
  enabled_events text[] not null check (cardinality(enabled_events) >= 1),
  description text,
  status text not null check (status in ('enabled', 'disabled')),
  disabled_reason text,
  -- Signing secrets (whsec_ + base64). Kept as they are, not hashed: every delivery is signed
  -- with them. During a rotation the previous secret also signs until it expires.
  secret text not null,
  previous_secret text,
  previous_secret_expires_at timestamptz,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  primary key (merchant_id, id)
);
-- Every event looks up its merchant's enabled endpoints; for most merchants there are none and
-- this index answers that with one probe.
create index webhook_endpoints_enabled on webhook_endpoints (merchant_id) where status = 'enabled';

create table webhook_deliveries (
  merchant_id text collate "C" not null,
  id text collate "C" not null,
  endpoint_id text collate "C" not null,
  event_id text collate "C" not null,
  status text not null check (status in ('pending', 'succeeded', 'dead', 'canceled')),
  -- 1, plus one per redelivery; attempts counts the attempts of the current round.
  round integer not null default 1 check (round >= 1),
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz,
  last_attempt_at timestamptz,
  last_status_code integer,
  last_error text,
  last_duration_ms integer,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  primary key (merchant_id, id),
  foreign key (merchant_id, endpoint_id) references webhook_endpoints (merchant_id, id) on delete cascade,
  foreign key (merchant_id, event_id) references events (merchant_id, id)
);
-- Deliveries of an event (redelivery, the event filter); also at most one per endpoint.
create unique index webhook_deliveries_by_event on webhook_deliveries (merchant_id, event_id, endpoint_id);
-- Listing by status (the dead-letter list) and by endpoint (also the cascade and a 410's
-- cancellation of the endpoint's pending deliveries), newest first.
create index webhook_deliveries_by_status on webhook_deliveries (merchant_id, status, id);
create index webhook_deliveries_by_endpoint on webhook_deliveries (merchant_id, endpoint_id, id);

create table webhook_delivery_attempts (
  merchant_id text collate "C" not null,
  delivery_id text collate "C" not null,
  round integer not null,
  attempt integer not null,
  status_code integer,
  error text,
  duration_ms integer not null,
  attempted_at timestamptz not null,
  primary key (merchant_id, delivery_id, round, attempt),
  foreign key (merchant_id, delivery_id) references webhook_deliveries (merchant_id, id) on delete cascade
);

-- A delivery's id follows from its event and endpoint: the event id's time part (so deliveries
-- list in event order) and 14 hex digits of a hash of the pair. The fan-out below and a
-- redelivery thus agree on the id without reading anything first.
create function webhook_delivery_id(event_id text, endpoint_id text) returns text
language sql stable strict parallel safe as $$
  select 'wd_' || left(split_part(event_id, '_', 2), 8)
    || left(encode(sha256(convert_to(event_id || ' ' || endpoint_id, 'UTF8')), 'hex'), 14)
$$;

-- The outbox fan-out: whoever inserts an event (events.record, the payment fast path, anything
-- later) creates its deliveries and their jobs in the same transaction, so a delivery exists
-- exactly when its event committed. With no enabled endpoint this is one index probe. The task
-- name and payload are those of src/webhooks/jobs.ts.
create function webhooks_fan_out() returns trigger language plpgsql as $$
declare
  delivery record;
begin
  for delivery in
    insert into webhook_deliveries (merchant_id, id, endpoint_id, event_id, status, next_attempt_at, created_at, updated_at)
    select endpoint.merchant_id, webhook_delivery_id(new.id, endpoint.id), endpoint.id, new.id, 'pending', now(), now(), now()
    from webhook_endpoints endpoint
    where endpoint.merchant_id = new.merchant_id and endpoint.status = 'enabled'
      and (new.type = any (endpoint.enabled_events) or '*' = any (endpoint.enabled_events))
    returning merchant_id, id
  loop
    perform graphile_worker.add_job('deliver_webhook',
      json_build_object('merchant_id', delivery.merchant_id, 'delivery_id', delivery.id, 'round', 1, 'attempt', 1));
  end loop;
  return null;
end $$;

create trigger events_fan_out_to_webhooks after insert on events
  for each row execute function webhooks_fan_out();
