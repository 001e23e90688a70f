-- The hosted sale page (/s/:sale): a merchant turns it on per sale, with its branding and the
-- URLs a buyer returns to. The page is public, so it finds a sale by id alone: sale ids are
-- random and unique across merchants, and the partial index keeps only the sales that are on.
alter table sales
  add column hosted_page boolean not null default false,
  add column brand_name text check (length(brand_name) between 1 and 200),
  add column brand_logo_url text check (length(brand_logo_url) between 1 and 2000),
  add column brand_color text check (brand_color ~ '^#[0-9a-f]{6}$'),
  add column success_url text check (length(success_url) between 1 and 2000),
  add column cancel_url text check (length(cancel_url) between 1 and 2000);
-- Not unique: ids are unique per merchant already, and a unique index that does not lead with
-- merchant_id could not be kept on a sharded table (test/citus-ready.test.ts).
create index sales_hosted_by_id on sales (id) where hosted_page;

-- Buyer sessions of the hosted page in single-node mode (without REDIS_URL). With Redis they
-- live there instead. A session is one JSON document, replaced whole under a version check.
create table hosted_sessions (
  id text collate "C" primary key,
  version integer not null,
  data jsonb not null,
  expires_at timestamptz not null
);
create index hosted_sessions_expiry on hosted_sessions (expires_at);
