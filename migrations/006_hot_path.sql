-- One hold per waiting-room admission: the admission token is spent by the hold that commits
-- with its ticket, never before, so a refused or crashed request leaves the token usable.
create unique index holds_one_per_ticket on holds (merchant_id, sale_id, admission_ticket)
  where admission_ticket is not null;

-- No checkout step after the hold takes an item's row lock per buyer. The item row keeps one
-- counter, the units allocated to holds, which only the allocation (batched, or a single hold)
-- changes: paying for a hold changes the hold's status and nothing else, and a hold that
-- expires or is released files a return that the item's next allocation credits, many at once.
-- Held and sold are what the hold rows say, so `items` becomes a view that reads them: exact at
-- every moment, with the same columns as before (available + held + sold = total).
alter table items rename to sale_items;
alter table sale_items add column stock_allocated integer not null default 0;
update sale_items set stock_allocated = stock_held + stock_sold;
-- Dropping the columns drops their checks, and the check that they add up.
alter table sale_items drop column stock_available, drop column stock_held, drop column stock_sold;
-- Allocated = held + sold + returns not yet credited (the audit checks it against the rows).
alter table sale_items add constraint sale_items_allocated_within_total check (stock_allocated between 0 and stock_total);

-- Units of an ended hold waiting to be credited back to their item. One row per hold line:
-- the key refuses a line returned twice.
create table stock_returns (
  merchant_id text collate "C" not null,
  hold_id text collate "C" not null,
  item_id text collate "C" not null,
  quantity integer not null check (quantity > 0),
  created_at timestamptz not null default now(),
  primary key (merchant_id, hold_id, item_id),
  foreign key (merchant_id, hold_id, item_id) references hold_lines (merchant_id, hold_id, item_id)
);
create index stock_returns_by_item on stock_returns (merchant_id, item_id);

-- Held and sold per item are sums over its hold lines.
create index hold_lines_by_item on hold_lines (merchant_id, item_id) include (hold_id, quantity);

create view items as
select i.merchant_id, i.id, i.sale_id, i.name, i.price, i.stock_total,
       (i.stock_total - coalesce(s.held, 0) - coalesce(s.sold, 0))::integer as stock_available,
       coalesce(s.held, 0)::integer as stock_held,
       coalesce(s.sold, 0)::integer as stock_sold,
       i.created_at
from sale_items i
left join lateral (
  select sum(l.quantity) filter (where h.status = 'active') as held,
         sum(l.quantity) filter (where h.status = 'converted') as sold
  from hold_lines l
  join holds h on h.merchant_id = l.merchant_id and h.id = l.hold_id
  where l.merchant_id = i.merchant_id and l.item_id = i.id and h.status in ('active', 'converted')
) s on true;
