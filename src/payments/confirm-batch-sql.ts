/**
 * The statements of coalesced confirmation (confirm-batches.ts): each carries every request of
 * its batch, so a batch costs the same few round trips whatever its size. Intents are locked
 * first and in one sorted order, as every other path locks an intent before its attempt, so
 * two batches, or a batch and a webhook's completion, cannot deadlock.
 */
import { nextEventCte } from '../events/service.js';
import { capturePostingsCte, postingShape } from '../ledger/service.js';
import { jsonbArray } from '../platform/db/params.js';
import type { Queryable } from '../platform/db/pool.js';
import { finishKeysCte, lockedKeysCte } from '../platform/idempotency/sql.js';
import { newId } from '../platform/ids.js';
import { CONFIRMABLE, providerKeyFor } from './domain.js';
import { type AttemptRow, type NewIntent, type PaymentIntentRow, rowOfNewIntent } from './sql.js';

const INTENT_COLUMNS = `p.merchant_id, p.id, p.amount, p.currency, p.status, p.capture_method, p.payment_method, p.provider_reference,
  p.description, p.metadata, p.amount_capturable, p.amount_received, p.amount_refunded, p.last_payment_error,
  p.cancellation_reason, p.canceled_at, p.created_at, p.updated_at`;

/**
 * The first phase of a batch of confirms: for each request whose intent is confirmable (with a
 * payment method) and whose key is new, its key at `authorization_started`, its intent
 * processing and its authorize attempt. A request with nothing written gets no row.
 */
const START_AUTHORIZATIONS = `with req as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::text[],
               $9::text[], $10::text[])
               as r(merchant_id, key_kind, key, method, path, fingerprint, intent_id, payment_method, attempt_id, provider_key)),
           confirmable as materialized (
             select p.merchant_id, p.id from payment_intents p join req r on p.merchant_id = r.merchant_id and p.id = r.intent_id
             where p.status = any($11::text[]) and coalesce(r.payment_method, p.payment_method) is not null
             order by p.merchant_id, p.id
             for update of p),
           ${lockedKeysCte({
             merchantId: 'r.merchant_id',
             keyKind: 'r.key_kind',
             key: 'r.key',
             method: 'r.method',
             path: 'r.path',
             fingerprint: 'r.fingerprint',
             recoveryPoint: "'authorization_started'",
             resourceId: 'r.intent_id',
             ttlHours: '$12',
             from: 'req r join confirmable c on c.merchant_id = r.merchant_id and c.id = r.intent_id',
             returning: 'merchant_id, resource_id',
           })},
           moved as (
             update payment_intents p
             set status = 'processing', payment_method = coalesce(r.payment_method, p.payment_method), last_payment_error = null,
               updated_at = now()
             from key k join req r on r.merchant_id = k.merchant_id and r.intent_id = k.resource_id
             where p.merchant_id = k.merchant_id and p.id = k.resource_id and p.status = any($11::text[])
             returning ${INTENT_COLUMNS}),
           attempt as (
             insert into payment_attempts (merchant_id, id, payment_intent_id, refund_id, operation, amount,
               provider_idempotency_key, status)
             select p.merchant_id, r.attempt_id, p.id, null, 'authorize', p.amount, r.provider_key, 'started'
             from moved p join req r on r.merchant_id = p.merchant_id and r.intent_id = p.id
             returning merchant_id, id, payment_intent_id, amount, provider_idempotency_key)
           select ${INTENT_COLUMNS}, a.id as attempt_id, a.amount as attempt_amount, a.provider_idempotency_key
           from moved p join attempt a on a.merchant_id = p.merchant_id and a.payment_intent_id = p.id`;

export interface StartRow {
  merchantId: string;
  keyKind: 'secret' | 'publishable';
  key: string;
  method: string;
  path: string;
  fingerprint: Buffer;
  intentId: string;
  paymentMethod: string | null;
  attemptId: string;
  providerKey: string;
}

export interface Started {
  intent: PaymentIntentRow;
  attempt: AttemptRow;
}

/**
 * A confirm's first phase for an intent created in the same statement (an order batch's that
 * confirms): the intent with its payment method, processing, and its authorize attempt, as the
 * statement writes them.
 */
export function startedOfNewIntent(created: NewIntent, paymentMethod: string): Started {
  const attemptId = newId('pa');
  return {
    intent: { ...rowOfNewIntent(created), status: 'processing', payment_method: paymentMethod },
    attempt: openAuthorization(created.merchantId, attemptId, created.id, created.amount, providerKeyFor(created.merchantId, attemptId)),
  };
}

/** An authorize attempt as a first phase inserts it: started, nothing known from the provider yet. */
function openAuthorization(merchantId: string, id: string, intentId: string, amount: number, providerKey: string): AttemptRow {
  return {
    merchant_id: merchantId,
    id,
    payment_intent_id: intentId,
    refund_id: null,
    operation: 'authorize',
    amount,
    provider_idempotency_key: providerKey,
    status: 'started',
    provider_reference: null,
    error_code: null,
  };
}

/** One statement for a batch's first phases; yields what it started, by intent id. */
export async function startAuthorizations(db: Queryable, batch: StartRow[], ttlHours: number): Promise<Map<string, Started>> {
  const column = <T>(pick: (row: StartRow) => T) => batch.map(pick);
  const { rows } = await db.query<PaymentIntentRow & { attempt_id: string; attempt_amount: number; provider_idempotency_key: string }>({
    name: 'payments_batch_start_authorizations',
    text: START_AUTHORIZATIONS,
    values: [
      column((r) => r.merchantId),
      column((r) => r.keyKind),
      column((r) => r.key),
      column((r) => r.method),
      column((r) => r.path),
      column((r) => r.fingerprint),
      column((r) => r.intentId),
      column((r) => r.paymentMethod),
      column((r) => r.attemptId),
      column((r) => r.providerKey),
      CONFIRMABLE,
      ttlHours,
    ],
  });
  const started = new Map<string, Started>();
  for (const { attempt_id, attempt_amount, provider_idempotency_key, ...intent } of rows) {
    const attempt = openAuthorization(intent.merchant_id, attempt_id, intent.id, attempt_amount, provider_idempotency_key);
    started.set(intent.id, { intent, attempt });
  }
  return started;
}

/**
 * The completion's first statement: lock the batch's intents, settle the attempts still open
 * as succeeded (an attempt another path settled first is left alone), and move their intents
 * from processing to succeeded. One row per settled attempt; the intent's columns are null
 * if it was not processing (which the caller refuses: an open attempt means processing).
 */
const SETTLE_CAPTURED = `with req as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
               as r(merchant_id, intent_id, attempt_id, reference, received)),
           locked as materialized (
             select p.merchant_id, p.id from payment_intents p join req r on p.merchant_id = r.merchant_id and p.id = r.intent_id
             order by p.merchant_id, p.id
             for update of p),
           settled as (
             update payment_attempts a
             set status = 'succeeded', provider_reference = coalesce(r.reference, a.provider_reference), error_code = null,
               updated_at = now()
             from req r join locked l on l.merchant_id = r.merchant_id and l.id = r.intent_id
             where a.merchant_id = r.merchant_id and a.id = r.attempt_id and a.status in ('started', 'unknown')
             returning a.merchant_id, a.payment_intent_id),
           moved as (
             update payment_intents p
             set status = 'succeeded', provider_reference = r.reference, amount_received = r.received, amount_capturable = 0,
               updated_at = now()
             from settled s join req r on r.merchant_id = s.merchant_id and r.intent_id = s.payment_intent_id
             where p.merchant_id = s.merchant_id and p.id = s.payment_intent_id and p.status = 'processing'
             returning ${INTENT_COLUMNS})
           select s.payment_intent_id as settled_intent_id, p.*
           from settled s left join moved p on p.merchant_id = s.merchant_id and p.id = s.payment_intent_id`;

export interface SettleRow {
  merchantId: string;
  intentId: string;
  attemptId: string;
  reference: string;
  received: number;
}

/** Settles a batch's captured authorizations; yields the succeeded intents (undefined: not processing), by intent id. */
export async function settleCaptured(db: Queryable, batch: SettleRow[]): Promise<Map<string, PaymentIntentRow | undefined>> {
  const { rows } = await db.query<{ settled_intent_id: string } & PaymentIntentRow>({
    name: 'payments_batch_settle_captured',
    text: SETTLE_CAPTURED,
    values: [
      batch.map((r) => r.merchantId),
      batch.map((r) => r.intentId),
      batch.map((r) => r.attemptId),
      batch.map((r) => r.reference),
      batch.map((r) => r.received),
    ],
  });
  return new Map(rows.map(({ settled_intent_id, ...intent }) => [settled_intent_id, intent.id ? intent : undefined]));
}

const CAPTURE = postingShape('capture');

/**
 * The completion's second statement, for the intents it moved: each one's
 * `payment_intent.succeeded` event (its next sequence), its capture posting, and its key's
 * stored answer.
 */
const RECORD_SUCCEEDED = `with req as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[], $7::bigint[],
               $8::text[], $9::text[], $10::int[], $11::jsonb[])
               as r(merchant_id, intent_id, event_id, view, ltx_id, currency, amount, key_kind, key, status, body)),
           ${nextEventCte({
             merchantId: 'r.merchant_id',
             id: 'r.event_id',
             type: "'payment_intent.succeeded'",
             objectId: 'r.intent_id',
             data: "jsonb_build_object('object', r.view)",
             createdAt: '$12::timestamptz',
             from: 'req r',
           })},
           ${capturePostingsCte({
             merchantId: 'r.merchant_id',
             transactionId: 'r.ltx_id',
             currency: 'r.currency',
             paymentIntentId: 'r.intent_id',
             amount: 'r.amount',
             from: 'req r',
             accounts: '$13',
             signs: '$14',
           })},
           ${finishKeysCte({
             merchantId: 'r.merchant_id',
             keyKind: 'r.key_kind',
             key: 'r.key',
             status: 'r.status',
             body: 'r.body',
             from: 'req r',
           })}
           select (select count(*)::int from event) as events, (select count(*)::int from finished_key) as keys`;

export interface RecordRow {
  merchantId: string;
  intentId: string;
  eventId: string;
  view: unknown;
  ledgerTransactionId: string;
  currency: string;
  amount: number;
  keyKind: string;
  key: string;
  status: number;
  body: unknown;
}

/** Records a batch's succeeded payments; yields how many events and keys it wrote. */
export async function recordSucceeded(db: Queryable, batch: RecordRow[], createdAt: Date): Promise<{ events: number; keys: number }> {
  const { rows } = await db.query<{ events: number; keys: number }>({
    name: 'payments_batch_record_succeeded',
    text: RECORD_SUCCEEDED,
    values: [
      batch.map((r) => r.merchantId),
      batch.map((r) => r.intentId),
      batch.map((r) => r.eventId),
      jsonbArray(batch.map((r) => r.view)),
      batch.map((r) => r.ledgerTransactionId),
      batch.map((r) => r.currency),
      batch.map((r) => r.amount),
      batch.map((r) => r.keyKind),
      batch.map((r) => r.key),
      batch.map((r) => r.status),
      jsonbArray(batch.map((r) => r.body)),
      createdAt,
      CAPTURE.accounts,
      CAPTURE.signs,
    ],
  });
  return rows[0] ?? { events: 0, keys: 0 };
}
