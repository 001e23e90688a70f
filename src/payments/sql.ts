import { firstEventCte } from '../events/service.js';
import type { Queryable } from '../platform/db/pool.js';
import { finishedKeyCte } from '../platform/idempotency/sql.js';
import type { PaymentIntentStatus } from './domain.js';

export interface PaymentIntentRow {
  merchant_id: string;
  id: string;
  amount: number;
  currency: string;
  status: PaymentIntentStatus;
  capture_method: 'automatic' | 'manual';
  payment_method: string | null;
  provider_reference: string | null;
  description: string | null;
  metadata: Record<string, string>;
  amount_capturable: number;
  amount_received: number;
  amount_refunded: number;
  last_payment_error: Record<string, string> | null;
  cancellation_reason: string | null;
  canceled_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

export interface NewIntent {
  merchantId: string;
  id: string;
  amount: number;
  currency: string;
  status: PaymentIntentStatus;
  captureMethod: 'automatic' | 'manual';
  paymentMethod: string | null;
  description: string | null;
  metadata: Record<string, string>;
  createdAt: Date;
}

/** The row a new intent becomes when inserted: nothing paid, captured or refunded yet. */
export function rowOfNewIntent(intent: NewIntent): PaymentIntentRow {
  return {
    merchant_id: intent.merchantId,
    id: intent.id,
    amount: intent.amount,
    currency: intent.currency,
    status: intent.status,
    capture_method: intent.captureMethod,
    payment_method: intent.paymentMethod,
    provider_reference: null,
    description: intent.description,
    metadata: intent.metadata,
    amount_capturable: 0,
    amount_received: 0,
    amount_refunded: 0,
    last_payment_error: null,
    cancellation_reason: null,
    canceled_at: null,
    created_at: intent.createdAt,
    updated_at: intent.createdAt,
  };
}

const INTENT_COLUMNS = `merchant_id, id, amount, currency, status, capture_method, payment_method, provider_reference,
  description, metadata, amount_capturable, amount_received, amount_refunded, last_payment_error,
  cancellation_reason, canceled_at, created_at, updated_at`;

/**
 * The hot path of a surge: create a PaymentIntent, its `payment_intent.created` event and the
 * finished idempotency key in one statement, so one round trip both does the work and records
 * the response a retry will replay. When the key already exists nothing is written and the
 * result is false; the caller then resolves the existing key. The key's and the event's parts
 * of the statement come from their owners (platform/idempotency, events); the event is the new
 * intent's first, and inserting it fans it out to webhook endpoints (migrations/002_webhooks.sql).
 */
const INSERT_INTENT_WITH_FINISHED_KEY = `with ${finishedKeyCte({
  merchantId: '$1',
  keyKind: '$16',
  key: '$2',
  method: "'POST'",
  path: "'/v1/payment_intents'",
  fingerprint: '$3',
  resourceId: '$4',
  status: '200',
  body: '$5::jsonb',
  now: '$11::timestamptz',
  ttlHours: '$6',
})},
           intent as (
             insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, payment_method,
               description, metadata, created_at, updated_at)
             select $1, $4, $7, $8, $9, $10, $12, $13, $14, $11, $11 from key
             returning id),
           ${firstEventCte({
             merchantId: '$1',
             id: '$15',
             type: "'payment_intent.created'",
             data: "jsonb_build_object('object', $5::jsonb)",
             createdAt: '$11',
             objectCte: 'intent',
           })}
           select exists (select 1 from event) as created`;

export async function insertIntentWithFinishedKey(
  db: Queryable,
  intent: NewIntent,
  key: { keyKind: 'secret' | 'publishable'; key: string; fingerprint: Buffer; ttlHours: number; eventId: string; responseBody: unknown },
): Promise<boolean> {
  const { rows } = await db.query<{ created: boolean }>({
    name: 'payments_insert_intent_with_finished_key',
    text: INSERT_INTENT_WITH_FINISHED_KEY,
    values: [
      intent.merchantId,
      key.key,
      key.fingerprint,
      intent.id,
      JSON.stringify(key.responseBody),
      key.ttlHours,
      intent.amount,
      intent.currency,
      intent.status,
      intent.captureMethod,
      intent.createdAt,
      intent.paymentMethod,
      intent.description,
      JSON.stringify(intent.metadata),
      key.eventId,
      key.keyKind,
    ],
  });
  return rows[0]?.created === true;
}

export async function insertIntent(db: Queryable, intent: NewIntent): Promise<PaymentIntentRow> {
  const { rows } = await db.query<PaymentIntentRow>({
    name: 'payments_insert_intent',
    text: `insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, payment_method,
             description, metadata, created_at, updated_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
           returning ${INTENT_COLUMNS}`,
    values: [
      intent.merchantId,
      intent.id,
      intent.amount,
      intent.currency,
      intent.status,
      intent.captureMethod,
      intent.paymentMethod,
      intent.description,
      JSON.stringify(intent.metadata),
      intent.createdAt,
    ],
  });
  return rows[0] as PaymentIntentRow;
}

export async function selectIntent(
  db: Queryable,
  merchantId: string,
  id: string,
  forUpdate = false,
): Promise<PaymentIntentRow | undefined> {
  const { rows } = await db.query<PaymentIntentRow>({
    name: forUpdate ? 'payments_select_intent_for_update' : 'payments_select_intent',
    text: `select ${INTENT_COLUMNS} from payment_intents where merchant_id = $1 and id = $2${forUpdate ? ' for update' : ''}`,
    values: [merchantId, id],
  });
  return rows[0];
}

/** The intent, locked; undefined when another transaction holds its lock (or it does not exist). */
export async function selectIntentUnlessLocked(db: Queryable, merchantId: string, id: string): Promise<PaymentIntentRow | undefined> {
  const { rows } = await db.query<PaymentIntentRow>({
    name: 'payments_select_intent_unless_locked',
    text: `select ${INTENT_COLUMNS} from payment_intents where merchant_id = $1 and id = $2 for update skip locked`,
    values: [merchantId, id],
  });
  return rows[0];
}

export async function selectIntents(db: Queryable, merchantId: string, limit: number, startingAfter?: string): Promise<PaymentIntentRow[]> {
  const { rows } = await db.query<PaymentIntentRow>({
    name: 'payments_select_intents',
    text: `select ${INTENT_COLUMNS} from payment_intents
           where merchant_id = $1 and ($2::text is null or id < $2)
           order by id desc limit $3`,
    values: [merchantId, startingAfter ?? null, limit],
  });
  return rows;
}

/** Columns a status change may set; anything else about an intent is fixed at creation. */
export interface IntentChanges {
  payment_method?: string | null;
  provider_reference?: string | null;
  amount_capturable?: number;
  amount_received?: number;
  amount_refunded?: number;
  last_payment_error?: Record<string, string> | null;
  cancellation_reason?: string | null;
  canceled_at?: Date | null;
}

const CHANGEABLE: ReadonlySet<string> = new Set<keyof IntentChanges>([
  'payment_method',
  'provider_reference',
  'amount_capturable',
  'amount_received',
  'amount_refunded',
  'last_payment_error',
  'cancellation_reason',
  'canceled_at',
]);

/**
 * Moves an intent to `to` only if it is still in one of `from`: the guard that keeps a final
 * state from ever being overwritten, whatever races. Returns the updated row, or undefined
 * when the guard refused.
 */
export async function transitionIntent(
  db: Queryable,
  change: { merchantId: string; id: string; from: readonly PaymentIntentStatus[]; to: PaymentIntentStatus; set?: IntentChanges },
): Promise<PaymentIntentRow | undefined> {
  const entries = Object.entries(change.set ?? {}).filter(([, value]) => value !== undefined);
  const values: unknown[] = [change.merchantId, change.id, change.from, change.to];
  const assignments = entries.map(([column, value]) => {
    if (!CHANGEABLE.has(column)) throw new Error(`column ${column} cannot be changed`);
    values.push(column === 'last_payment_error' && value !== null ? JSON.stringify(value) : value);
    return `${column} = $${values.length}`;
  });
  const { rows } = await db.query<PaymentIntentRow>(
    `update payment_intents set status = $4, updated_at = now()${assignments.map((a) => `, ${a}`).join('')}
     where merchant_id = $1 and id = $2 and status = any($3::text[])
     returning ${INTENT_COLUMNS}`,
    values,
  );
  return rows[0];
}

/** Records a provider event as applied; false when it was applied before. */
export async function insertProviderEvent(db: Queryable, merchantId: string, provider: string, eventId: string): Promise<boolean> {
  const { rowCount } = await db.query(
    'insert into provider_events (merchant_id, provider, event_id) values ($1, $2, $3) on conflict do nothing',
    [merchantId, provider, eventId],
  );
  return rowCount === 1;
}

export * from './attempts-sql.js';
export * from './refunds-sql.js';

/**
 * Newest intents in one status. No index serves the status: this walks the merchant's intents
 * newest first until it has `limit`, which is what an operator's filter needs (recent ones).
 */
export async function selectIntentsWithStatus(
  db: Queryable,
  merchantId: string,
  status: string,
  limit: number,
  startingAfter?: string,
): Promise<PaymentIntentRow[]> {
  const { rows } = await db.query<PaymentIntentRow>({
    name: 'payments_select_intents_with_status',
    text: `select ${INTENT_COLUMNS} from payment_intents
           where merchant_id = $1 and status = $2 and ($3::text is null or id < $3)
           order by id desc limit $4`,
    values: [merchantId, status, startingAfter ?? null, limit],
  });
  return rows;
}
