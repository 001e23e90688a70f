-- Guards the database keeps itself, whatever the code above it does.

-- A ledger transaction must have entries. The balance check runs per entry, so a transaction
-- with none was never checked; this one runs at COMMIT for every new transaction, like the
-- balance check, so entries may still follow the transaction row within the same commit.
create function ledger_check_has_entries() returns trigger language plpgsql as $$
begin
  if not exists (select 1 from ledger_entries where merchant_id = new.merchant_id and transaction_id = new.id) then
    raise exception 'ledger transaction % has no entries', new.id using errcode = '23514';
  end if;
  return null;
end $$;

create constraint trigger ledger_transactions_have_entries
  after insert on ledger_transactions
  deferrable initially deferred
  for each row execute function ledger_check_has_entries();

-- The ledger is append-only, its transactions as well as their entries, and TRUNCATE (which
-- row triggers never see) is refused too.
create function refuse_append_only_change() returns trigger language plpgsql as $$
begin
  raise exception '% is append-only: % is refused', tg_table_name, tg_op using errcode = '42501';
end $$;

create trigger ledger_transactions_append_only
  before update or delete on ledger_transactions
  for each row execute function refuse_append_only_change();

create trigger ledger_transactions_no_truncate
  before truncate on ledger_transactions
  for each statement execute function refuse_append_only_change();

create trigger ledger_entries_no_truncate
  before truncate on ledger_entries
  for each statement execute function refuse_append_only_change();

-- The delivery-attempt log is kept for a retention period (FLOODGATE_WEBHOOK_ATTEMPT_RETENTION_DAYS);
-- the prune job finds the old attempts by time.
create index webhook_delivery_attempts_by_time on webhook_delivery_attempts (attempted_at);
