-- Operator dashboard: a merchant's users (who sign in at /dashboard) and, in single-node mode,
-- their sessions (with Redis, sessions live there instead). Keyed by merchant_id first, as
-- every table is, so the schema stays distributable by merchant.
create table dashboard_users (
  merchant_id text collate "C" not null references merchants (merchant_id),
  id text collate "C" not null,
  email text not null check (length(email) between 3 and 254),
  -- scrypt$N$r$p$salt$key (base64url); never the password.
  password_hash text not null,
  created_at timestamptz not null default now(),
  primary key (merchant_id, id)
);
-- One account per email across merchants: the sign-in form asks for an email, not a merchant.
create unique index dashboard_users_email on dashboard_users (lower(email));

create table dashboard_sessions (
  -- SHA-256 of the cookie's token: a database leak reveals no usable session.
  token_hash bytea primary key,
  merchant_id text collate "C" not null,
  user_id text collate "C" not null,
  csrf_token text not null,
  expires_at timestamptz not null,
  foreign key (merchant_id, user_id) references dashboard_users (merchant_id, id) on delete cascade
);
create index dashboard_sessions_expiry on dashboard_sessions (expires_at);

-- Traces: a webhook delivery job added by the events trigger continues the trace of the
-- transaction that inserted the event. The application sets floodgate.traceparent (transaction
-- local) when tracing is on; the job's payload then carries it under "_trace", which the
-- worker takes out before the task sees the payload. Unset, the payload is as before.
create or replace function webhooks_fan_out() returns trigger language plpgsql as $$
declare
  delivery record;
  traceparent text := coalesce(current_setting('floodgate.traceparent', true), '');
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
      (jsonb_build_object('merchant_id', delivery.merchant_id, 'delivery_id', delivery.id, 'round', 1, 'attempt', 1)
        || case when traceparent = '' then '{}'::jsonb
                else jsonb_build_object('_trace', jsonb_build_object('traceparent', traceparent)) end)::json);
  end loop;
  return null;
end $$;
