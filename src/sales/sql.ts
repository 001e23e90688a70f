import type { Queryable } from '../platform/db/pool.js';
import type { HoldLine, HoldStatus } from './domain.js';

export interface SaleRow {
  merchant_id: string;
  id: string;
  name: string;
  currency: string;
  opens_at: Date;
  closes_at: Date | null;
  per_buyer_limit: number;
  hold_seconds: number;
  admit_per_second: number;
  max_shoppers: number;
  grace_seconds: number;
  created_at: Date;
  updated_at: Date;
  hosted_page: boolean;
  brand_name: string | null;
  brand_logo_url: string | null;
  brand_color: string | null;
  success_url: string | null;
  cancel_url: string | null;
}

/** The hosted page's settings of a sale (migration 009). */
export type HostedSettings = Pick<SaleRow, 'hosted_page' | 'brand_name' | 'brand_logo_url' | 'brand_color' | 'success_url' | 'cancel_url'>;

export interface ItemRow {
  merchant_id: string;
  id: string;
  sale_id: string;
  name: string;
  price: number;
  stock_total: number;
  stock_available: number;
  stock_held: number;
  stock_sold: number;
}

export interface HoldRow {
  merchant_id: string;
  id: string;
  sale_id: string;
  buyer_reference: string;
  status: HoldStatus;
  admission_ticket: string | null;
  amount: number;
  currency: string;
  expires_at: Date;
  created_at: Date;
}

export const SALE_COLUMNS = `merchant_id, id, name, currency, opens_at, closes_at, per_buyer_limit, hold_seconds, admit_per_second,
  max_shoppers, grace_seconds, created_at, updated_at, hosted_page, brand_name, brand_logo_url, brand_color, success_url, cancel_url`;
const ITEM_COLUMNS = 'merchant_id, id, sale_id, name, price, stock_total, stock_available, stock_held, stock_sold';
export const HOLD_COLUMNS = 'merchant_id, id, sale_id, buyer_reference, status, admission_ticket, amount, currency, expires_at, created_at';

export async function insertSale(db: Queryable, sale: Omit<SaleRow, 'created_at' | 'updated_at' | keyof HostedSettings>): Promise<SaleRow> {
  const { rows } = await db.query<SaleRow>(
    `insert into sales (merchant_id, id, name, currency, opens_at, closes_at, per_buyer_limit, hold_seconds, admit_per_second,
       max_shoppers, grace_seconds)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning ${SALE_COLUMNS}`,
    [
      sale.merchant_id,
      sale.id,
      sale.name,
      sale.currency,
      sale.opens_at,
      sale.closes_at,
      sale.per_buyer_limit,
      sale.hold_seconds,
      sale.admit_per_second,
      sale.max_shoppers,
      sale.grace_seconds,
    ],
  );
  return rows[0] as SaleRow;
}

export type SaleChanges = Partial<
  Pick<
    SaleRow,
    'name' | 'opens_at' | 'closes_at' | 'per_buyer_limit' | 'hold_seconds' | 'admit_per_second' | 'max_shoppers' | 'grace_seconds'
  >
>;

export async function updateSale(db: Queryable, merchantId: string, id: string, changes: SaleChanges): Promise<SaleRow | undefined> {
  const { rows } = await db.query<SaleRow>(
    `update sales set name = coalesce($3, name), opens_at = coalesce($4, opens_at),
       closes_at = case when $5::boolean then $6 else closes_at end,
       per_buyer_limit = coalesce($7, per_buyer_limit), hold_seconds = coalesce($8, hold_seconds),
       admit_per_second = coalesce($9, admit_per_second), max_shoppers = coalesce($10, max_shoppers),
       grace_seconds = coalesce($11, grace_seconds), updated_at = now()
     where merchant_id = $1 and id = $2 returning ${SALE_COLUMNS}`,
    [
      merchantId,
      id,
      changes.name ?? null,
      changes.opens_at ?? null,
      'closes_at' in changes,
      changes.closes_at ?? null,
      changes.per_buyer_limit ?? null,
      changes.hold_seconds ?? null,
      changes.admit_per_second ?? null,
      changes.max_shoppers ?? null,
      changes.grace_seconds ?? null,
    ],
  );
  return rows[0];
}

export async function selectSale(db: Queryable, merchantId: string, id: string): Promise<SaleRow | undefined> {
  const { rows } = await db.query<SaleRow>({
    name: 'sales_select_sale',
    text: `select ${SALE_COLUMNS} from sales where merchant_id = $1 and id = $2`,
    values: [merchantId, id],
  });
  return rows[0];
}

/** Changes the hosted page's settings; a field left out keeps its value, null clears it. */
export async function updateHostedSettings(
  db: Queryable,
  merchantId: string,
  id: string,
  changes: Partial<HostedSettings>,
): Promise<SaleRow | undefined> {
  const fields = ['hosted_page', 'brand_name', 'brand_logo_url', 'brand_color', 'success_url', 'cancel_url'] as const;
  const given = fields.filter((field) => changes[field] !== undefined);
  if (given.length === 0) return selectSale(db, merchantId, id);
  const sets = given.map((field, index) => `${field} = $${index + 3}`).join(', ');
  const { rows } = await db.query<SaleRow>(
    `update sales set ${sets}, updated_at = now() where merchant_id = $1 and id = $2 returning ${SALE_COLUMNS}`,
    [merchantId, id, ...given.map((field) => changes[field])],
  );
  return rows[0];
}

/** A sale whose hosted page is on, found by id alone: the page is public and knows no merchant. */
export async function selectHostedSale(db: Queryable, id: string): Promise<SaleRow | undefined> {
  const { rows } = await db.query<SaleRow>({
    name: 'sales_select_hosted_sale',
    text: `select ${SALE_COLUMNS} from sales where id = $1 and hosted_page`,
    values: [id],
  });
  return rows[0];
}

export async function selectSales(db: Queryable, merchantId: string, limit: number, startingAfter?: string): Promise<SaleRow[]> {
  const { rows } = await db.query<SaleRow>(
    `select ${SALE_COLUMNS} from sales where merchant_id = $1 and ($2::text is null or id < $2) order by id desc limit $3`,
    [merchantId, startingAfter ?? null, limit],
  );
  return rows;
}

export async function insertItem(db: Queryable, item: Pick<ItemRow, 'merchant_id' | 'id' | 'sale_id' | 'name' | 'price' | 'stock_total'>) {
  const { rows } = await db.query<ItemRow>(
    `insert into sale_items (merchant_id, id, sale_id, name, price, stock_total)
     values ($1, $2, $3, $4, $5, $6)
     returning merchant_id, id, sale_id, name, price, stock_total, stock_total as stock_available, 0 as stock_held, 0 as stock_sold`,
    [item.merchant_id, item.id, item.sale_id, item.name, item.price, item.stock_total],
  );
  return rows[0] as ItemRow;
}

export async function selectItems(db: Queryable, merchantId: string, saleIds: string[]): Promise<ItemRow[]> {
  const { rows } = await db.query<ItemRow>({
    name: 'sales_select_items',
    text: `select ${ITEM_COLUMNS} from items where merchant_id = $1 and sale_id = any($2::text[]) order by id`,
    values: [merchantId, saleIds],
  });
  return rows;
}

/**
 * What a hold may take from each of a sale's items, read without a lock: units not allocated
 * to holds, plus returns of ended holds not yet credited. Cheap (no sum over the hold rows),
 * and exactly the `items` view's available.
 */
export async function selectFreeUnits(db: Queryable, merchantId: string, saleId: string) {
  const { rows } = await db.query<{ id: string; name: string; price: number; free: number }>({
    name: 'sales_select_free_units',
    text: `select i.id, i.name, i.price, (i.stock_total - i.stock_allocated + coalesce(r.quantity, 0))::int as free
           from sale_items i
           left join (select item_id, sum(quantity) as quantity from stock_returns where merchant_id = $1 group by item_id) r
             on r.item_id = i.id
           where i.merchant_id = $1 and i.sale_id = $2 order by i.id`,
    values: [merchantId, saleId],
  });
  return rows;
}

/**
 * Locks items for an allocation, in id order, and reads what is free: unallocated units and
 * returns waiting to be credited. Returns are only ever credited under this lock, so whoever
 * holds it credits each exactly once. `for no key update`: the foreign keys of new hold lines
 * (key share) do not wait for it.
 */
export async function lockItemsForAllocation(db: Queryable, merchantId: string, saleId: string, itemIds: string[]) {
  const { rows } = await db.query<AllocatableItem>({
    name: 'sales_lock_items_for_allocation',
    text: lockItemsForAllocationSql('$1', '$2', '$3'),
    values: [merchantId, saleId, itemIds],
  });
  return new Map(rows.map((row) => [row.id, row]));
}

/** An item as an allocation reads it under its row lock (lockItemsForAllocation). */
export interface AllocatableItem {
  id: string;
  name: string;
  price: number;
  unallocated: number;
  returned: number;
}

/** lockItemsForAllocation's statement, with its merchant, sale and item-ids parameters named by the caller. */
export function lockItemsForAllocationSql(merchant: string, sale: string, itemIds: string): string {
  return `select i.id, i.name, i.price, i.stock_total - i.stock_allocated as unallocated,
                 (select coalesce(sum(r.quantity), 0) from stock_returns r where r.merchant_id = ${merchant} and r.item_id = i.id)::int as returned
          from sale_items i
          where i.merchant_id = ${merchant} and i.sale_id = ${sale} and i.id = any(${itemIds}::text[]) order by i.id for no key update of i`;
}

/** Credits the waiting returns of these items (whose rows the caller has locked), many at once. */
export async function creditReturns(db: Queryable, merchantId: string, itemIds: string[]): Promise<void> {
  await db.query({
    name: 'sales_credit_returns',
    text: `with returned as (
             delete from stock_returns where merchant_id = $1 and item_id = any($2::text[]) returning item_id, quantity),
           per_item as (select item_id, sum(quantity)::int as quantity from returned group by item_id)
           update sale_items i set stock_allocated = i.stock_allocated - p.quantity
           from per_item p where i.merchant_id = $1 and i.id = p.item_id`,
    values: [merchantId, itemIds],
  });
}

/**
 * Allocates units of items to holds, all or none per item: the guard in the WHERE clause (and
 * the table's check) is what keeps an item from ever giving more than it has. Returns how many
 * items gave what was asked.
 */
export async function allocateStock(db: Queryable, merchantId: string, taken: Map<string, number>): Promise<number> {
  const { rowCount } = await db.query({
    name: 'sales_allocate_stock',
    text: `update sale_items i set stock_allocated = i.stock_allocated + t.quantity
           from unnest($2::text[], $3::int[]) as t(id, quantity)
           where i.merchant_id = $1 and i.id = t.id and i.stock_allocated + t.quantity <= i.stock_total`,
    values: [merchantId, [...taken.keys()], [...taken.values()]],
  });
  return rowCount ?? 0;
}

/**
 * Files the units of an ended hold (expired or released) to go back to their items: one insert,
 * no item row lock. The item's next allocation credits them.
 */
export async function returnHoldStock(db: Queryable, merchantId: string, holdId: string): Promise<void> {
  await db.query({
    name: 'sales_return_hold_stock',
    text: `insert into stock_returns (merchant_id, hold_id, item_id, quantity)
           select merchant_id, hold_id, item_id, quantity from hold_lines where merchant_id = $1 and hold_id = $2`,
    values: [merchantId, holdId],
  });
}

/** Units a buyer holds or bought in a sale: what the per-buyer limit counts. */
export async function selectBuyerQuantity(db: Queryable, merchantId: string, saleId: string, buyerReference: string): Promise<number> {
  const { rows } = await db.query<{ quantity: number }>({
    name: 'sales_select_buyer_quantity',
    text: `select coalesce(sum(l.quantity), 0)::int as quantity
           from holds h join hold_lines l on l.merchant_id = h.merchant_id and l.hold_id = h.id
           where h.merchant_id = $1 and h.sale_id = $2 and h.buyer_reference = $3 and h.status in ('active', 'converted')`,
    values: [merchantId, saleId, buyerReference],
  });
  return rows[0]?.quantity ?? 0;
}

/** Whether a hold already used this waiting-room ticket (one hold per admission). */
export async function ticketUsed(db: Queryable, merchantId: string, saleId: string, ticket: string): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'sales_ticket_used',
    text: 'select 1 from holds where merchant_id = $1 and sale_id = $2 and admission_ticket = $3',
    values: [merchantId, saleId, ticket],
  });
  return rowCount === 1;
}

/** Serializes one buyer's holds in one sale, so two at once cannot both pass the limit. */
export async function lockBuyer(db: Queryable, merchantId: string, saleId: string, buyerReference: string): Promise<void> {
  await db.query({
    name: 'sales_lock_buyer',
    text: `select pg_advisory_xact_lock(hashtextextended($1 || '/' || $2 || '/' || $3, 0))`,
    values: [merchantId, saleId, buyerReference],
  });
}

export async function insertHold(db: Queryable, hold: Omit<HoldRow, 'created_at' | 'status'>, lines: HoldLine[]): Promise<HoldRow> {
  const { rows } = await db.query<HoldRow>({
    name: 'sales_insert_hold',
    text: `with hold as (
             insert into holds (merchant_id, id, sale_id, buyer_reference, status, amount, currency, expires_at, admission_ticket)
             values ($1, $2, $3, $4, 'active', $5, $6, $7, $10) returning ${HOLD_COLUMNS}),
           lines as (
             insert into hold_lines (merchant_id, hold_id, item_id, quantity)
             select $1, $2, l.item_id, l.quantity from unnest($8::text[], $9::int[]) as l(item_id, quantity))
           select * from hold`,
    values: [
      hold.merchant_id,
      hold.id,
      hold.sale_id,
      hold.buyer_reference,
      hold.amount,
      hold.currency,
      hold.expires_at,
      lines.map((line) => line.item_id),
      lines.map((line) => line.quantity),
      hold.admission_ticket,
    ],
  });
  return rows[0] as HoldRow;
}

export async function selectHold(db: Queryable, merchantId: string, id: string, forUpdate = false): Promise<HoldRow | undefined> {
  const { rows } = await db.query<HoldRow>({
    name: forUpdate ? 'sales_select_hold_for_update' : 'sales_select_hold',
    text: `select ${HOLD_COLUMNS} from holds where merchant_id = $1 and id = $2${forUpdate ? ' for update' : ''}`,
    values: [merchantId, id],
  });
  return rows[0];
}

export async function selectHoldLines(db: Queryable, merchantId: string, holdId: string): Promise<HoldLine[]> {
  const { rows } = await db.query<HoldLine>({
    name: 'sales_select_hold_lines',
    text: 'select item_id, quantity from hold_lines where merchant_id = $1 and hold_id = $2 order by item_id',
    values: [merchantId, holdId],
  });
  return rows;
}

/** Moves a hold out of `active`; false when it had already left (expired, released, paid). */
export async function finishHold(db: Queryable, merchantId: string, id: string, status: Exclude<HoldStatus, 'active'>): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'sales_finish_hold',
    text: `update holds set status = $3, updated_at = now() where merchant_id = $1 and id = $2 and status = 'active'`,
    values: [merchantId, id, status],
  });
  return rowCount === 1;
}

export async function extendHold(db: Queryable, merchantId: string, id: string, expiresAt: Date): Promise<void> {
  await db.query('update holds set expires_at = $3, updated_at = now() where merchant_id = $1 and id = $2 and status = $4', [
    merchantId,
    id,
    expiresAt,
    'active',
  ]);
}

/** Units still available across a sale's items: what the waiting room admits buyers for. */
export async function selectAvailableUnits(db: Queryable, merchantId: string, saleId: string): Promise<number> {
  const { rows } = await db.query<{ available: number }>({
    name: 'sales_select_available_units',
    text: `select (coalesce(sum(i.stock_total - i.stock_allocated), 0)
                   + coalesce((select sum(r.quantity) from stock_returns r join sale_items j on j.merchant_id = r.merchant_id and j.id = r.item_id
                               where r.merchant_id = $1 and j.sale_id = $2), 0))::int as available
           from sale_items i where i.merchant_id = $1 and i.sale_id = $2`,
    values: [merchantId, saleId],
  });
  return rows[0]?.available ?? 0;
}

export * from './orders-sql.js';
