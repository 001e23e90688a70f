import type { Queryable } from '../platform/db/pool.js';
import { page } from '../platform/http/pagination.js';
import { newId } from '../platform/ids.js';
import * as sql from './sql.js';

export { type EventRow, type FirstEventColumns, firstEventCte, type NextEventColumns, nextEventCte } from './sql.js';

export const EVENT_TYPES = [
  'payment_intent.created',
  'payment_intent.amount_capturable_updated',
  'payment_intent.succeeded',
  'payment_intent.payment_failed',
  'payment_intent.canceled',
  'refund.created',
  'refund.updated',
  'refund.failed',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/**
 * Records an event in the caller's transaction: it exists exactly when the change it describes
 * committed. Hold the object's row lock (or have created it in this transaction): the event
 * takes the object's next sequence number. Inserting it also fans it out to the merchant's
 * webhook endpoints, in this transaction (a trigger, see migrations/002_webhooks.sql).
 */
export async function record(
  db: Queryable,
  merchantId: string,
  type: EventType,
  object: { id: string } & Record<string, unknown>,
): Promise<void> {
  const createdAt = new Date();
  await sql.insertEvent(db, { merchantId, id: newId('evt'), type, objectId: object.id, data: { object }, createdAt });
}

export function toApiEvent(row: sql.EventRow) {
  return {
    id: row.id,
    object: 'event' as const,
    type: row.type,
    created: Math.floor(row.created_at.getTime() / 1000),
    sequence: row.sequence,
    data: row.data,
  };
}

export async function list(
  db: Queryable,
  query: { merchantId: string; limit: number; startingAfter?: string; type?: string; objectId?: string },
) {
  const rows = await sql.selectEvents(db, { ...query, limit: query.limit + 1 });
  return page(rows.map(toApiEvent), query.limit, '/v1/events');
}

export async function retrieve(db: Queryable, merchantId: string, id: string) {
  const row = await sql.selectEvent(db, merchantId, id);
  return row ? toApiEvent(row) : undefined;
}
