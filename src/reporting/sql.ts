/**
 * The report queries. Reports read other capabilities' tables (payments, sales) but never
 * write them: they are a read model over what those capabilities committed, run on a replica
 * when one is close enough. Each statement is exported so test/report-plans.test.ts can
 * EXPLAIN exactly this text and fail on a sequential scan of a large table.
 */
import type { Queryable } from '../platform/db/pool.js';

/** Payments by UTC day, status and currency, from a merchant's payments in [from, to). */
export const PAYMENT_TOTALS = `select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD') as day, status, currency,
    count(*)::int as count, sum(amount)::bigint as amount,
    sum(amount_received)::bigint as amount_received, sum(amount_refunded)::bigint as amount_refunded
  from payment_intents
  where merchant_id = $1 and created_at >= $2 and created_at < $3
  group by 1, 2, 3
  order by 1, 2, 3`;

export interface PaymentTotalRow {
  day: string;
  status: string;
  currency: string;
  count: number;
  amount: number;
  amount_received: number;
  amount_refunded: number;
}

export async function selectPaymentTotals(db: Queryable, merchantId: string, from: Date, to: Date): Promise<PaymentTotalRow[]> {
  const { rows } = await db.query<PaymentTotalRow>({
    name: 'reports_payment_totals',
    text: PAYMENT_TOTALS,
    values: [merchantId, from, to],
  });
  return rows;
}

export const SALE = `select id, name, currency, opens_at, closes_at from sales where merchant_id = $1 and id = $2`;

export interface SaleRow {
  id: string;
  name: string;
  currency: string;
  opens_at: Date;
  closes_at: Date | null;
}

export async function selectSale(db: Queryable, merchantId: string, saleId: string): Promise<SaleRow | undefined> {
  const { rows } = await db.query<SaleRow>({ name: 'reports_sale', text: SALE, values: [merchantId, saleId] });
  return rows[0];
}

/**
 * Each item's stock counters and what its paid orders brought in: units and revenue come from
 * the lines of the holds that paid orders were made from, at the item's price.
 */
export const ITEM_SALES = `with paid as (
    select line.item_id, sum(line.quantity)::int as units, sum(line.quantity::bigint * item.price)::bigint as revenue
    from orders o
    -- Each order's lines by primary key. OFFSET 0 keeps this a per-order lookup: as a plain
    -- join the planner may hash the whole hold_lines table for a sale of a few hundred orders.
    cross join lateral (
      select l.item_id, l.quantity from hold_lines l where l.merchant_id = o.merchant_id and l.hold_id = o.hold_id offset 0
    ) line
    join items item on item.merchant_id = o.merchant_id and item.id = line.item_id
    where o.merchant_id = $1 and o.sale_id = $2 and o.status = 'paid'
    group by line.item_id)
  select i.id, i.name, i.price, i.stock_total, i.stock_available, i.stock_held, i.stock_sold,
    coalesce(paid.units, 0)::int as units_paid, coalesce(paid.revenue, 0)::bigint as revenue
  from items i left join paid on paid.item_id = i.id
  where i.merchant_id = $1 and i.sale_id = $2
  order by i.id`;

export interface ItemSalesRow {
  id: string;
  name: string;
  price: number;
  stock_total: number;
  stock_available: number;
  stock_held: number;
  stock_sold: number;
  units_paid: number;
  revenue: number;
}

export async function selectItemSales(db: Queryable, merchantId: string, saleId: string): Promise<ItemSalesRow[]> {
  const { rows } = await db.query<ItemSalesRow>({ name: 'reports_item_sales', text: ITEM_SALES, values: [merchantId, saleId] });
  return rows;
}

export const ORDERS_BY_STATUS = `select status, count(*)::int as count, sum(amount)::bigint as amount
  from orders where merchant_id = $1 and sale_id = $2
  group by status order by status`;

export interface OrdersByStatusRow {
  status: string;
  count: number;
  amount: number;
}

export async function selectOrdersByStatus(db: Queryable, merchantId: string, saleId: string): Promise<OrdersByStatusRow[]> {
  const { rows } = await db.query<OrdersByStatusRow>({
    name: 'reports_orders_by_status',
    text: ORDERS_BY_STATUS,
    values: [merchantId, saleId],
  });
  return rows;
}

/** One page of a sale's orders in id order, with the buyer of each, after `afterId`. */
export const ORDER_EXPORT_PAGE = `select o.id, o.created_at, o.status, o.amount, o.currency, o.payment_intent_id, o.hold_id,
    -- A lookup by primary key per order of the page, never a join that may hash all holds.
    (select h.buyer_reference from holds h where h.merchant_id = o.merchant_id and h.id = o.hold_id) as buyer_reference,
    o.paid_at
  from orders o
  where o.merchant_id = $1 and o.sale_id = $2 and o.id > $3
  order by o.id
  limit $4`;

export interface OrderExportRow {
  id: string;
  created_at: Date;
  status: string;
  amount: number;
  currency: string;
  payment_intent_id: string;
  hold_id: string;
  buyer_reference: string;
  paid_at: Date | null;
}

export async function selectOrderExportPage(
  db: Queryable,
  merchantId: string,
  saleId: string,
  afterId: string,
  limit: number,
): Promise<OrderExportRow[]> {
  const { rows } = await db.query<OrderExportRow>({
    name: 'reports_order_export_page',
    text: ORDER_EXPORT_PAGE,
    values: [merchantId, saleId, afterId, limit],
  });
  return rows;
}
