/**
 * Holds: stock taken for a buyer for a limited time. Taking stock is a guarded UPDATE per item
 * in one transaction (rows locked in item-id order, so concurrent holds cannot deadlock);
 * the per-buyer limit is checked under a per-buyer advisory lock. Each hold's expiry is a job
 * added in the same transaction. A hold whose payment is in flight is extended, not expired,
 * so a payment that succeeds late always finds its stock.
 */

import { cancelUnpaidForExpiry } from '../payments/service.js';
import type { Client, Pool } from '../platform/db/pool.js';
import { withTransaction } from '../platform/db/pool.js';
import { ApiError } from '../platform/http/errors.js';
import { newId } from '../platform/ids.js';
import { addJob } from '../platform/jobs/queue.js';
import { type HoldLine, normalizeLines, salePhase, totalQuantity } from './domain.js';
import * as sql from './sql.js';

export const EXPIRE_HOLD_TASK = 'expire_hold';

export type HoldResult = { kind: 'created'; hold: sql.HoldRow; lines: HoldLine[] } | { kind: 'refused'; error: ApiError };

const refused = (error: ApiError): HoldResult => ({ kind: 'refused', error });
const soldOut = (item: sql.ItemRow, line: HoldLine) =>
  new ApiError('sold_out', `Item '${item.id}' (${item.name}) has fewer than ${line.quantity} left.`, 'items');

/** Takes the stock of `lines` for a buyer, in the caller's transaction. */
export async function takeHold(
  client: Client,
  request: { merchantId: string; saleId: string; buyerReference: string; lines: HoldLine[]; now: Date; admissionTicket?: string },
): Promise<HoldResult> {
  const { merchantId, saleId, buyerReference } = request;
  const sale = await sql.selectSale(client, merchantId, saleId);
  if (!sale) return refused(new ApiError('resource_missing', `No such sale: '${saleId}'`, 'sale'));
  const phase = salePhase(sale, request.now);
  if (phase === 'scheduled') return refused(new ApiError('sale_not_open', `The sale opens at ${sale.opens_at.toISOString()}.`));
  if (phase === 'closed') return refused(new ApiError('sale_closed', 'The sale has closed.'));
  const lines = normalizeLines(request.lines);
  const items = new Map((await sql.selectItems(client, merchantId, [saleId])).map((item) => [item.id, item]));
  for (const line of lines) {
    const item = items.get(line.item_id);
    if (!item) return refused(new ApiError('parameter_invalid', `No item '${line.item_id}' in this sale.`, 'items'));
    // Read without a lock: once an item sells out, the crowd behind it is answered here instead
    // of queueing for its row lock. The guarded UPDATE below stays the authority.
    if (item.stock_available < line.quantity) return refused(soldOut(item, line));
  }
  await sql.lockBuyer(client, merchantId, saleId, buyerReference);
  const already = await sql.selectBuyerQuantity(client, merchantId, saleId, buyerReference);
  if (already + totalQuantity(lines) > sale.per_buyer_limit) {
    return refused(
      new ApiError(
        'buyer_limit_exceeded',
        `A buyer may hold at most ${sale.per_buyer_limit} units in this sale; this buyer has ${already}.`,
        'items',
      ),
    );
  }
  // A savepoint, so a sold-out line undoes the lines taken before it (and the expiry job) but
  // the refusal itself can still be stored with the idempotency key in this transaction.
  await client.query('savepoint take_stock');
  const holdId = newId('hold');
  const expiresAt = new Date(request.now.getTime() + sale.hold_seconds * 1000);
  // The expiry job before the stock: an item's row stays locked from its guarded UPDATE until
  // the commit, and every hold on a hot item queues for that lock. (The hold itself must come
  // after: its lines' foreign keys would share-lock the item rows first, which costs more.)
  await scheduleExpiry(client, { merchant_id: merchantId, id: holdId, expires_at: expiresAt });
  for (const line of lines) {
    if (!(await sql.takeStock(client, merchantId, saleId, line))) {
      await client.query('rollback to savepoint take_stock');
      return refused(soldOut(items.get(line.item_id) as sql.ItemRow, line));
    }
  }
  const amount = lines.reduce((sum, line) => sum + (items.get(line.item_id)?.price ?? 0) * line.quantity, 0);
  const hold = await sql.insertHold(
    client,
    {
      merchant_id: merchantId,
      id: holdId,
      sale_id: saleId,
      buyer_reference: buyerReference,
      admission_ticket: request.admissionTicket ?? null,
      amount,
      currency: sale.currency,
      expires_at: expiresAt,
    },
    lines,
  );
  return { kind: 'created', hold, lines };
}

async function scheduleExpiry(client: Client, hold: Pick<sql.HoldRow, 'merchant_id' | 'id' | 'expires_at'>) {
  await addJob(
    client,
    EXPIRE_HOLD_TASK,
    { merchant_id: hold.merchant_id, hold_id: hold.id },
    {
      runAt: hold.expires_at,
      jobKey: `expire_hold:${hold.id}`,
    },
  );
}

export type ReleaseResult = 'released' | 'not_active' | 'payment_in_progress' | 'missing';

/**
 * Ends an active hold and returns its stock: on expiry (`expired`) or at the buyer's request
 * (`released`). Refuses while the hold's payment may still move money.
 */
export async function endHold(client: Client, merchantId: string, holdId: string, status: 'expired' | 'released'): Promise<ReleaseResult> {
  const hold = await sql.selectHold(client, merchantId, holdId, true);
  if (!hold) return 'missing';
  if (hold.status !== 'active') return 'not_active';
  const order = await sql.selectOrderByHold(client, merchantId, holdId);
  if (order && (await cancelUnpaidForExpiry(client, merchantId, order.payment_intent_id)) === 'in_flight') return 'payment_in_progress';
  await sql.finishHold(client, merchantId, holdId, status);
  for (const line of await sql.selectHoldLines(client, merchantId, holdId)) await sql.returnStock(client, merchantId, line);
  if (order) await sql.expireOrderOfHold(client, merchantId, holdId);
  return 'released';
}

/** The expiry job: expire the hold, or extend it while its payment is in flight. */
export async function expireHold(
  pool: Pool,
  payload: { merchant_id: string; hold_id: string },
  now = new Date(),
): Promise<ReleaseResult | 'extended' | 'not_due'> {
  return withTransaction(pool, async (client) => {
    const hold = await sql.selectHold(client, payload.merchant_id, payload.hold_id, true);
    if (!hold) return 'missing';
    if (hold.status !== 'active') return 'not_active';
    if (hold.expires_at > now) {
      await scheduleExpiry(client, hold);
      return 'not_due';
    }
    const result = await endHold(client, payload.merchant_id, payload.hold_id, 'expired');
    if (result !== 'payment_in_progress') return result;
    const sale = await sql.selectSale(client, hold.merchant_id, hold.sale_id);
    const extended = new Date(now.getTime() + (sale?.hold_seconds ?? 60) * 1000);
    await sql.extendHold(client, hold.merchant_id, hold.id, extended);
    await scheduleExpiry(client, { ...hold, expires_at: extended });
    return 'extended';
  });
}

/** The completion command's listener: the payment of an order succeeded. */
export async function convertPaidHold(client: Client, intent: { merchant_id: string; id: string }): Promise<void> {
  const order = await sql.markOrderPaid(client, intent.merchant_id, intent.id);
  if (!order) return;
  if (!(await sql.finishHold(client, order.merchant_id, order.hold_id, 'converted'))) {
    // Holds with a payment in flight are extended, never expired, so this cannot happen; if it
    // does, the money is taken without stock, and the audit must say so rather than hide it.
    throw new Error(`order ${order.id} was paid but its hold ${order.hold_id} is no longer active`);
  }
  for (const line of await sql.selectHoldLines(client, order.merchant_id, order.hold_id))
    await sql.sellStock(client, order.merchant_id, line);
}
