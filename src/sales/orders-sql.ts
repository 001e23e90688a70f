/** The orders of sales: one per hold, paid by its PaymentIntent (sql.ts re-exports these). */
import { selectByScopedIds } from '../platform/db/by-ids.js';
import type { Queryable } from '../platform/db/pool.js';
import type { OrderStatus } from './domain.js';

export interface OrderRow {
  merchant_id: string;
  id: string;
  sale_id: string;
  hold_id: string;
  payment_intent_id: string;
  amount: number;
  currency: string;
  status: OrderStatus;
  paid_at: Date | null;
  created_at: Date;
}

/** A new order of a hold (what it pays for is the hold's amount), awaiting its payment. */
export function orderOfHold(
  hold: Pick<OrderRow, 'merchant_id' | 'sale_id' | 'amount' | 'currency'> & { id: string },
  orderId: string,
  intentId: string,
  now: Date,
): OrderRow {
  return {
    merchant_id: hold.merchant_id,
    id: orderId,
    sale_id: hold.sale_id,
    hold_id: hold.id,
    payment_intent_id: intentId,
    amount: hold.amount,
    currency: hold.currency,
    status: 'awaiting_payment',
    paid_at: null,
    created_at: now,
  };
}

const ORDER_COLUMNS = 'merchant_id, id, sale_id, hold_id, payment_intent_id, amount, currency, status, paid_at, created_at';

export async function insertOrder(db: Queryable, order: Omit<OrderRow, 'created_at' | 'paid_at' | 'status'>): Promise<OrderRow> {
  const { rows } = await db.query<OrderRow>(
    `insert into orders (merchant_id, id, sale_id, hold_id, payment_intent_id, amount, currency, status)
     values ($1, $2, $3, $4, $5, $6, $7, 'awaiting_payment') returning ${ORDER_COLUMNS}`,
    [order.merchant_id, order.id, order.sale_id, order.hold_id, order.payment_intent_id, order.amount, order.currency],
  );
  return rows[0] as OrderRow;
}

export async function selectOrderByHold(db: Queryable, merchantId: string, holdId: string): Promise<OrderRow | undefined> {
  const { rows } = await db.query<OrderRow>(`select ${ORDER_COLUMNS} from orders where merchant_id = $1 and hold_id = $2`, [
    merchantId,
    holdId,
  ]);
  return rows[0];
}

export async function selectOrder(db: Queryable, merchantId: string, id: string): Promise<OrderRow | undefined> {
  const { rows } = await db.query<OrderRow>(`select ${ORDER_COLUMNS} from orders where merchant_id = $1 and id = $2`, [merchantId, id]);
  return rows[0];
}

/** Orders by id, many at once (order-batches.ts reads the orders that confirms paid together), by scopedKey. */
export function selectOrdersByIds(db: Queryable, merchantIds: string[], ids: string[]): Promise<Map<string, OrderRow>> {
  return selectByScopedIds(db, { name: 'sales_select_orders_by_ids', table: 'orders', columns: ORDER_COLUMNS }, merchantIds, ids);
}

export async function selectOrders(
  db: Queryable,
  query: { merchantId: string; limit: number; startingAfter?: string; saleId?: string },
): Promise<OrderRow[]> {
  const { rows } = await db.query<OrderRow>(
    `select ${ORDER_COLUMNS} from orders
     where merchant_id = $1 and ($2::text is null or id < $2) and ($3::text is null or sale_id = $3)
     order by id desc limit $4`,
    [query.merchantId, query.startingAfter ?? null, query.saleId ?? null, query.limit],
  );
  return rows;
}

/** Marks the order of a payment paid, once; returns it, or undefined if there is none to mark. */
export async function markOrderPaid(db: Queryable, merchantId: string, paymentIntentId: string): Promise<OrderRow | undefined> {
  const { rows } = await db.query<OrderRow>({
    name: 'sales_mark_order_paid',
    text: `update orders set status = 'paid', paid_at = now(), updated_at = now()
           where merchant_id = $1 and payment_intent_id = $2 and status = 'awaiting_payment'
           returning ${ORDER_COLUMNS}`,
    values: [merchantId, paymentIntentId],
  });
  return rows[0];
}

export async function expireOrderOfHold(db: Queryable, merchantId: string, holdId: string): Promise<void> {
  await db.query(
    `update orders set status = 'expired', updated_at = now() where merchant_id = $1 and hold_id = $2 and status = 'awaiting_payment'`,
    [merchantId, holdId],
  );
}
