-- The payments core. Every primary key and unique constraint starts with merchant_id so the
-- schema can be distributed by merchant; there are no cross-merchant foreign keys. Ids are
-- time-ordered text with a readable prefix, compared byte-wise (collate "C") so that listing
-- newest-first is a walk of the primary key.

create table merchants (
  merchant_id text collate "C" primary key,
  name text not null check (length(name) between 1 and 200),
  created_at timestamptz not null default now()
);

create table api_keys (
  merchant_id text collate "C" not null references merchants (merchant_id),
  key_id text collate "C" not null,
  kind text not null check (kind in ('secret', 'publishable')),
  -- Only a SHA-256 of the key is kept; the key itself is shown once, when created.
  key_hash bytea not null,
  -- The first characters of the key, so an operator can tell keys apart without the secret.
  display_prefix text not null,
  created_at timestamptz not null default now(),
  revoked_at timestamptz,
  primary key (merchant_id, key_id)
);
-- Authentication looks a key up by its hash before the merchant is known.
create index api_keys_by_hash on api_keys (key_hash);

create table payment_intents (
  merchant_id text collate "C" not null references merchants (merchant_id),
  id text collate "C" not null,
  amount bigint not null check (amount > 0),
  currency text not null check (currency ~ '^[a-z]{3}$'),
  status text not null check (status in ('requires_payment_method', 'requires_confirmation',
    'processing', 'requires_capture', 'succeeded', 'canceled')),
  capture_method text not null check (capture_method in ('automatic', 'manual')),
  payment_method text,
  -- The provider's id of the authorization or charge, once it exists.
  provider_reference text,
  description text,
  metadata jsonb not null default '{}',
  amount_capturable bigint not null default 0 check (amount_capturable >= 0),
  amount_received bigint not null default 0 check (amount_received >= 0 and amount_received <= amount),
  -- Refunds pending or succeeded: reserved when a refund is created so that concurrent refunds
  -- can never exceed what was received.
  amount_refunded bigint not null default 0 check (amount_refunded >= 0 and amount_refunded <= amount_received),
  last_payment_error jsonb,
  cancellation_reason text,
  canceled_at timestamptz,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  primary key (merchant_id, id)
);

-- One row per call we make to the provider. It is committed before the call, carrying the key
-- the provider deduplicates on, so a crash or timeout can always be resolved by asking the
-- provider about that key.
create table payment_attempts (
  merchant_id text collate "C" not null,
  id text collate "C" not null,
  payment_intent_id text collate "C" not null,
  refund_id text collate "C",
  operation text not null check (operation in ('authorize', 'capture', 'cancel', 'refund')),
  amount bigint not null check (amount >= 0),
  provider_idempotency_key text not null,
  status text not null check (status in ('started', 'succeeded', 'failed', 'unknown')),
  provider_reference text,
  error_code text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (merchant_id, id),
  foreign key (merchant_id, payment_intent_id) references payment_intents (merchant_id, id)
);
create index payment_attempts_by_intent on payment_attempts (merchant_id, payment_intent_id);
create index payment_attempts_unresolved on payment_attempts (updated_at) where status in ('started', 'unknown');

create table refunds (
  merchant_id text collate "C" not null,
  id text collate "C" not null,
  payment_intent_id text collate "C" not null,
  amount bigint not null check (amount > 0),
  currency text not null,
  status text not null check (status in ('pending', 'succeeded', 'failed')),
  reason text,
  metadata jsonb not null default '{}',
  failure_reason text,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  primary key (merchant_id, id),
  foreign key (merchant_id, payment_intent_id) references payment_intents (merchant_id, id)
);
create index refunds_by_intent on refunds (merchant_id, payment_intent_id);

create table events (
  merchant_id text collate "C" not null,
  id text collate "C" not null,
  type text not null,
  object_id text not null,
  data jsonb not null,
  created_at timestamptz not null,
  primary key (merchant_id, id)
);

create table idempotency_keys (
  merchant_id text collate "C" not null,
  idempotency_key text not null check (length(idempotency_key) between 1 and 255),
  request_method text not null,
  request_path text not null,
  -- SHA-256 of method, path and canonical body: the same key with another request is refused.
  request_fingerprint bytea not null,
  -- Set while a request holds the key; a retry before locked_at + lock timeout gets 409.
  locked_at timestamptz,
  recovery_point text not null,
  -- The object the request created, so a resumed request continues with it.
  resource_id text,
  response_status integer,
  response_body jsonb,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  primary key (merchant_id, idempotency_key)
);
create index idempotency_keys_expiry on idempotency_keys (expires_at);
-- Housekeeping finds keys whose request died holding the lock.
create index idempotency_keys_locked on idempotency_keys (locked_at) where locked_at is not null;

-- Provider webhook events already applied: a provider sends each at least once, often more.
create table provider_events (
  merchant_id text collate "C" not null references merchants (merchant_id),
  provider text not null,
  event_id text not null,
  received_at timestamptz not null default now(),
  primary key (merchant_id, provider, event_id)
);

-- Double-entry ledger: a transaction is a set of entries whose signed amounts sum to zero
-- (debits positive, credits negative). The database itself refuses an unbalanced transaction.
create table ledger_transactions (
  merchant_id text collate "C" not null,
  id text collate "C" not null,
  currency text not null,
  kind text not null check (kind in ('capture', 'refund')),
  payment_intent_id text collate "C" not null,
  refund_id text collate "C",
  created_at timestamptz not null default now(),
  primary key (merchant_id, id)
);
-- At most one capture posting per payment and one posting per refund, whatever retries do.
create unique index ledger_one_capture_per_payment on ledger_transactions (merchant_id, payment_intent_id)
  where kind = 'capture';
create unique index ledger_one_posting_per_refund on ledger_transactions (merchant_id, refund_id)
  where kind = 'refund';

create table ledger_entries (
  merchant_id text collate "C" not null,
  transaction_id text collate "C" not null,
  entry_no smallint not null,
  account text not null check (account in ('provider_clearing', 'merchant_balance')),
  currency text not null,
  amount bigint not null check (amount <> 0),
  primary key (merchant_id, transaction_id, entry_no),
  foreign key (merchant_id, transaction_id) references ledger_transactions (merchant_id, id)
);
create index ledger_entries_by_account on ledger_entries (merchant_id, account, currency);

create function ledger_check_balanced() returns trigger language plpgsql as $$
declare
  total numeric;
  entry_count integer;
  currencies integer;
begin
  select coalesce(sum(amount), 0), count(*), count(distinct currency)
    into total, entry_count, currencies
    from ledger_entries where merchant_id = new.merchant_id and transaction_id = new.transaction_id;
  if total <> 0 or entry_count < 2 or currencies <> 1 then
    raise exception 'ledger transaction % is unbalanced (sum %, % entries, % currencies)',
      new.transaction_id, total, entry_count, currencies
      using errcode = '23514';
  end if;
  return null;
end $$;

-- Deferred to commit, so the entries of one transaction can be inserted one by one.
create constraint trigger ledger_entries_balanced
  after insert on ledger_entries
  deferrable initially deferred
  for each row execute function ledger_check_balanced();

create function ledger_refuse_change() returns trigger language plpgsql as $$
begin
  raise exception 'ledger entries are append-only' using errcode = '42501';
end $$;

create trigger ledger_entries_append_only
  before update or delete on ledger_entries
  for each row execute function ledger_refuse_change();
