-- Sales, their items with fixed stock, holds and orders. Stock is kept as counters on the item
-- row (available + held + sold = total, checked by the database), so taking stock is one
-- guarded UPDATE that can never go below zero, whatever the concurrency.

create table sales (
  merchant_id text collate "C" not null references merchants (merchant_id),
  id text collate "C" not null,
  name text not null check (length(name) between 1 and 200),
  currency text not null check (currency ~ '^[a-z]{3}$'),
  opens_at timestamptz not null,
  closes_at timestamptz,
  per_buyer_limit integer not null check (per_buyer_limit between 1 and 100),
  hold_seconds integer not null check (hold_seconds between 30 and 3600),
  -- The waiting room: buyers admitted per second, buyers shopping at once, and how long a
  -- waiting buyer may go without polling before their place is given up.
  admit_per_second real not null check (admit_per_second > 0 and admit_per_second <= 10000),
  max_shoppers integer not null check (max_shoppers between 0 and 1000000),
  grace_seconds integer not null check (grace_seconds between 3 and 3600),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (merchant_id, id),
  check (closes_at is null or closes_at > opens_at)
);

create table items (
  merchant_id text collate "C" not null,
  id text collate "C" not null,
  sale_id text collate "C" not null,
  name text not null check (length(name) between 1 and 200),
  price bigint not null check (price > 0),
  stock_total integer not null check (stock_total >= 0),
  stock_available integer not null check (stock_available >= 0),
  stock_held integer not null default 0 check (stock_held >= 0),
  stock_sold integer not null default 0 check (stock_sold >= 0),
  created_at timestamptz not null default now(),
  primary key (merchant_id, id),
  foreign key (merchant_id, sale_id) references sales (merchant_id, id),
  check (stock_available + stock_held + stock_sold = stock_total)
);
create index items_by_sale on items (merchant_id, sale_id);

create table holds (
  merchant_id text collate "C" not null,
  id text collate "C" not null,
  sale_id text collate "C" not null,
  buyer_reference text not null,
  status text not null check (status in ('active', 'released', 'expired', 'converted')),
  -- The waiting-room ticket whose admission this hold spent; its shopper slot is freed when
  -- the hold ends.
  admission_ticket text,
  amount bigint not null check (amount > 0),
  currency text not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (merchant_id, id),
  foreign key (merchant_id, sale_id) references sales (merchant_id, id)
);
-- The per-buyer limit counts a buyer's live and converted holds in a sale.
create index holds_by_buyer on holds (merchant_id, sale_id, buyer_reference) where status in ('active', 'converted');
-- Metrics count active holds per sale.
create index holds_active on holds (sale_id) where status = 'active';

create table hold_lines (
  merchant_id text collate "C" not null,
  hold_id text collate "C" not null,
  item_id text collate "C" not null,
  quantity integer not null check (quantity > 0),
  primary key (merchant_id, hold_id, item_id),
  foreign key (merchant_id, hold_id) references holds (merchant_id, id),
  foreign key (merchant_id, item_id) references items (merchant_id, id)
);

create table orders (
  merchant_id text collate "C" not null,
  id text collate "C" not null,
  sale_id text collate "C" not null,
  hold_id text collate "C" not null,
  payment_intent_id text collate "C" not null,
  amount bigint not null check (amount > 0),
  currency text not null,
  status text not null check (status in ('awaiting_payment', 'paid', 'expired')),
  paid_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (merchant_id, id),
  foreign key (merchant_id, hold_id) references holds (merchant_id, id),
  foreign key (merchant_id, payment_intent_id) references payment_intents (merchant_id, id)
);
-- One order per hold, and the completion command finds an order by its payment.
create unique index orders_one_per_hold on orders (merchant_id, hold_id);
create unique index orders_by_payment on orders (merchant_id, payment_intent_id);
