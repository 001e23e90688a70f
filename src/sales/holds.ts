/**
 * Holds: stock taken for a buyer for a limited time. Taking stock is a guarded UPDATE per item
 * in one transaction (rows locked in item-id order, so concurrent holds cannot deadlock);
 * the per-buyer limit is checked under a per-buyer advisory lock. Each hold's expiry is a job
 * added in the same transaction. A hold whose payment is in flight is extended, not expired,
 * so a payment that succeeds late always finds its stock.
 */

import assert from 'node:assert/strict';
import { cancelUnpaidForExpiry } from '../payments/service.js';
import type { Client, Pool } from '../platform/db/pool.js';
import { withTransaction } from '../platform/db/pool.js';
import type { ApiError } from '../platform/http/errors.js';
import { newId } from '../platform/ids.js';
import { addJob, removeJob } from '../platform/jobs/queue.js';
import * as batchSql from './batch-sql.js';
import { type HoldLine, normalizeLines } from './domain.js';
import { admissionRefused, buyerLimitRefusal, holdAmount, linesRefusal, saleRefusal, soldOut, TOKEN_ALREADY_USED } from './hold-rules.js';
import * as sql from './sql.js';

export const EXPIRE_HOLD_TASK = 'expire_hold';
/** A hold's one expiry job (batch-sql.ts writes and removes the same key in SQL: 'expire_hold:' || id). */
const expiryJobKey = (holdId: string) => `expire_hold:${holdId}`;
export const RELEASE_ADMISSION_TASK = 'release_admission';

export type HoldResult = { kind: 'created'; hold: sql.HoldRow; lines: HoldLine[] } | { kind: 'refused'; error: ApiError };

const refused = (error: ApiError): HoldResult => ({ kind: 'refused', error });

/** Takes the stock of `lines` for a buyer, in the caller's transaction. */
export async function takeHold(
  client: Client,
  request: {
    merchantId: string;
    saleId: string;
    buyerReference: string;
    lines: HoldLine[];
    now: Date;
    /** The checked admission token; absent for holds placed without the waiting room (tests). */
    admission?: { ok: true; ticketId: string } | { ok: false; reason: string };
  },
): Promise<HoldResult> {
  const { merchantId, saleId, buyerReference } = request;
  const sale = await sql.selectSale(client, merchantId, saleId);
  const closed = saleRefusal(saleId, sale, request.now);
  if (closed) return refused(closed);
  assert.ok(sale, 'saleRefusal refuses a missing sale');
  // After the sale's ownership: another merchant's request learns nothing about the token.
  const admission = request.admission;
  if (admission && !admission.ok) return refused(admissionRefused(admission.reason));
  const ticket = admission?.ok ? admission.ticketId : null;
  const lines = normalizeLines(request.lines);
  const items = new Map((await sql.selectFreeUnits(client, merchantId, saleId)).map((item) => [item.id, item]));
  // Units read without a lock: once an item sells out, the crowd behind it is answered here
  // instead of queueing for its row lock. The locked read below stays the authority.
  const linesRefused = linesRefusal(sale.currency, lines, items, (item) => item.free);
  if (linesRefused) return refused(linesRefused);
  const amount = holdAmount(lines, items);
  await sql.lockBuyer(client, merchantId, saleId, buyerReference);
  // A token is bound to one buyer, so the buyer's lock also serializes the uses of one token:
  // this check cannot race (and a unique index backs it).
  if (ticket && (await sql.ticketUsed(client, merchantId, saleId, ticket))) return refused(admissionRefused(TOKEN_ALREADY_USED));
  const overLimit = buyerLimitRefusal(sale, await sql.selectBuyerQuantity(client, merchantId, saleId, buyerReference), lines);
  if (overLimit) return refused(overLimit);
  // A savepoint, so a sold-out line undoes the lines taken before it (and the expiry job) but
  // the refusal itself can still be stored with the idempotency key in this transaction.
  await client.query('savepoint take_stock');
  const holdId = newId('hold');
  const expiresAt = new Date(request.now.getTime() + sale.hold_seconds * 1000);
  // The expiry job before the stock: an item's row stays locked from its guarded UPDATE until
  // the commit, and every hold on a hot item queues for that lock. (The hold itself must come
  // after: its lines' foreign keys would share-lock the item rows first, which costs more.)
  await scheduleExpiry(client, { merchant_id: merchantId, id: holdId, expires_at: expiresAt });
  const locked = await sql.lockItemsForAllocation(
    client,
    merchantId,
    saleId,
    lines.map((line) => line.item_id),
  );
  const short = lines.find((line) => {
    const item = locked.get(line.item_id);
    return !item || item.unallocated + item.returned < line.quantity;
  });
  if (short) {
    await client.query('rollback to savepoint take_stock');
    return refused(soldOut(items.get(short.item_id) as { id: string; name: string }, short));
  }
  const returning = [...locked.values()].filter((item) => item.returned > 0).map((item) => item.id);
  if (returning.length > 0) await sql.creditReturns(client, merchantId, returning);
  const taken = new Map(lines.map((line) => [line.item_id, line.quantity]));
  assert.equal(await sql.allocateStock(client, merchantId, taken), taken.size, 'the locked items give what they were read to have');
  const hold = await sql.insertHold(
    client,
    {
      merchant_id: merchantId,
      id: holdId,
      sale_id: saleId,
      buyer_reference: buyerReference,
      admission_ticket: ticket,
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
      jobKey: expiryJobKey(hold.id),
    },
  );
}

/**
 * A hold that was paid or expired frees its buyer's shopper slot in the waiting room. The job is
 * added in the transaction that ends the hold, so it exists exactly when the hold ended; its
 * key makes it one per ticket, and the release itself is idempotent (a ticket leaves once).
 */
async function scheduleAdmissionRelease(client: Client, hold: Pick<sql.HoldRow, 'sale_id' | 'admission_ticket'>) {
  if (!hold.admission_ticket) return;
  await addJob(
    client,
    RELEASE_ADMISSION_TASK,
    { sale_id: hold.sale_id, ticket: hold.admission_ticket },
    { jobKey: `release_admission:${hold.admission_ticket}`, jobKeyMode: 'preserve_run_at' },
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
  await sql.returnHoldStock(client, merchantId, holdId);
  if (order) await sql.expireOrderOfHold(client, merchantId, holdId);
  // A buyer who releases is answered after the commit and frees the slot then, at once; an
  // expiry has no one to answer, so its job does it. A released hold's expiry has nothing left
  // to do: removed, as a paid one's is, instead of a worker's transaction finding it released.
  if (status === 'expired') await scheduleAdmissionRelease(client, hold);
  else await removeJob(client, expiryJobKey(holdId));
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
  // Nothing else: the hold's units were allocated when it was taken and stay so; sold is what
  // the converted holds say. No item row is locked on the way to paid. Its expiry has nothing
  // left to do: removed, instead of a worker's transaction finding the hold converted.
  await removeJob(client, expiryJobKey(order.hold_id));
  const hold = await sql.selectHold(client, order.merchant_id, order.hold_id);
  if (hold) await scheduleAdmissionRelease(client, hold);
}

/**
 * convertPaidHold for a batch of payments completed together (coalesced confirmation), in one
 * statement: the same orders paid, holds converted and expiry jobs removed, and one admission
 * release job per sale for the batch's tickets (batch-sql.ts convertPaidHolds).
 */
export async function convertPaidHolds(client: Client, intents: { merchant_id: string; id: string }[]): Promise<void> {
  if (intents.length === 0) return;
  const { paid, converted } = await batchSql.convertPaidHolds(
    client,
    RELEASE_ADMISSION_TASK,
    intents.map((intent) => ({ merchantId: intent.merchant_id, id: intent.id })),
  );
  // As convertPaidHold: money taken without stock must fail loudly (here the whole batch, whose
  // requests then complete one by one, the faulty one failing alone).
  if (converted !== paid) throw new Error(`${paid - converted} of ${paid} paid orders found their hold no longer active`);
}
