-- Idempotency keys are scoped by the kind of API key that sent them. A publishable key sits in
-- every buyer's browser; without this, anyone holding it could take a key name the merchant's
-- server is about to use (POST /v1/holds with `Idempotency-Key: order-1001`), and the server's
-- own request with that key would be refused as a mismatch for as long as the key is kept.
alter table idempotency_keys
  add column key_kind text not null default 'secret' check (key_kind in ('secret', 'publishable'));

-- Holds are the publishable POST: keys stored by them before this migration belong to that scope.
update idempotency_keys set key_kind = 'publishable' where request_path = '/v1/holds';

alter table idempotency_keys drop constraint idempotency_keys_pkey;
alter table idempotency_keys add primary key (merchant_id, key_kind, idempotency_key);
