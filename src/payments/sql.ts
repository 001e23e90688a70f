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

export interface AttemptRow {
  merchant_id: string;
  id: string;
  payment_intent_id: string;
  refund_id: string | null;
  operation: 'authorize' | 'capture' | 'cancel' | 'refund';
  amount: number;
  provider_idempotency_key: string;
  status: 'started' | 'succeeded' | 'failed' | 'unknown';
  provider_reference: string | null;
  error_code: string | null;
  created_at?: Date;
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

export async function insertAttempt(
  db: Queryable,
  attempt: {
    merchantId: string;
    id: string;
    paymentIntentId: string;
    refundId?: string;
    operation: AttemptRow['operation'];
    amount: number;
    providerIdempotencyKey: string;
  },
): Promise<void> {
  await db.query({
    name: 'payments_insert_attempt',
    text: `insert into payment_attempts (merchant_id, id, payment_intent_id, refund_id, operation, amount,
             provider_idempotency_key, status)
           values ($1, $2, $3, $4, $5, $6, $7, 'started')`,
    values: [
      attempt.merchantId,
      attempt.id,
      attempt.paymentIntentId,
      attempt.refundId ?? null,
      attempt.operation,
      attempt.amount,
      attempt.providerIdempotencyKey,
    ],
  });
}

/** The attempt in flight for an intent: at most one exists while it is processing. (Refunds: selectOpenRefundAttempt.) */
export async function selectOpenAttempt(
  db: Queryable,
  merchantId: string,
  paymentIntentId: string,
  operation: AttemptRow['operation'],
): Promise<AttemptRow | undefined> {
  const { rows } = await db.query<AttemptRow>({
    name: 'payments_select_open_attempt',
    text: `select merchant_id, id, payment_intent_id, refund_id, operation, amount, provider_idempotency_key, status,
             provider_reference, error_code
           from payment_attempts
           where merchant_id = $1 and payment_intent_id = $2 and operation = $3 and status in ('started', 'unknown')
           order by id desc limit 1`,
    values: [merchantId, paymentIntentId, operation],
  });
  return rows[0];
}

/**
 * The attempt in flight for one refund. Several refunds of a payment may be in flight at once,
 * so a refund must find its own attempt, not the payment's latest.
 */
export async function selectOpenRefundAttempt(
  db: Queryable,
  merchantId: string,
  paymentIntentId: string,
  refundId: string,
): Promise<AttemptRow | undefined> {
  const { rows } = await db.query<AttemptRow>({
    name: 'payments_select_open_refund_attempt',
    text: `select merchant_id, id, payment_intent_id, refund_id, operation, amount, provider_idempotency_key, status,
             provider_reference, error_code
           from payment_attempts
           where merchant_id = $1 and payment_intent_id = $2 and refund_id = $3 and operation = 'refund'
             and status in ('started', 'unknown')
           order by id desc limit 1`,
    values: [merchantId, paymentIntentId, refundId],
  });
  return rows[0];
}

/** Settles an attempt; refused (false) when it was already settled by someone else. */
export async function settleAttempt(
  db: Queryable,
  merchantId: string,
  id: string,
  outcome: { status: 'succeeded' | 'failed' | 'unknown'; providerReference?: string | null; errorCode?: string | null },
): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'payments_settle_attempt',
    text: `update payment_attempts set status = $3, provider_reference = coalesce($4, provider_reference),
             error_code = $5, updated_at = now()
           where merchant_id = $1 and id = $2 and status in ('started', 'unknown')`,
    values: [merchantId, id, outcome.status, outcome.providerReference ?? null, outcome.errorCode ?? null],
  });
  return rowCount === 1;
}

export async function selectAttempt(db: Queryable, merchantId: string, id: string): Promise<AttemptRow | undefined> {
  const { rows } = await db.query<AttemptRow>({
    name: 'payments_select_attempt',
    text: `select merchant_id, id, payment_intent_id, refund_id, operation, amount, provider_idempotency_key, status,
             provider_reference, error_code, created_at
           from payment_attempts where merchant_id = $1 and id = $2`,
    values: [merchantId, id],
  });
  return rows[0];
}

/**
 * Attempts still open (started or unknown) that were last touched before `olderThanMs` ago:
 * their request has certainly ended, so the reconciler may settle them.
 */
export async function selectStaleOpenAttempts(db: Queryable, olderThanMs: number, limit: number): Promise<AttemptRow[]> {
  const { rows } = await db.query<AttemptRow>(
    `select merchant_id, id, payment_intent_id, refund_id, operation, amount, provider_idempotency_key, status,
            provider_reference, error_code, created_at
     from payment_attempts
     where status in ('started', 'unknown') and updated_at < now() - make_interval(secs => $1::float8 / 1000)
       and error_code is distinct from 'reconciliation_exhausted'
       -- A reconciliation waiting or running is left to finish; one that failed for good (its
       -- job out of attempts) no longer counts, so the sweep queues the attempt again.
       and not exists (select 1 from graphile_worker.jobs j
                       where j.key = 'reconcile:' || payment_attempts.id and j.attempts < j.max_attempts)
     order by updated_at limit $2`,
    [olderThanMs, limit],
  );
  return rows;
}

/** Marks an attempt the reconciler gave up on, so sweeps leave it to an operator. */
export async function markReconciliationExhausted(db: Queryable, merchantId: string, id: string): Promise<void> {
  await db.query(
    `update payment_attempts set error_code = 'reconciliation_exhausted', updated_at = now()
     where merchant_id = $1 and id = $2 and status in ('started', 'unknown')`,
    [merchantId, id],
  );
}

/** Records a provider event as applied; false when it was applied before. */
export async function insertProviderEvent(db: Queryable, merchantId: string, provider: string, eventId: string): Promise<boolean> {
  const { rowCount } = await db.query(
    'insert into provider_events (merchant_id, provider, event_id) values ($1, $2, $3) on conflict do nothing',
    [merchantId, provider, eventId],
  );
  return rowCount === 1;
}

export * from './refunds-sql.js';

/** A payment's provider attempts, oldest first, for the operator dashboard. */
export async function selectAttemptsOfIntent(db: Queryable, merchantId: string, intentId: string, limit: number): Promise<AttemptRow[]> {
  const { rows } = await db.query<AttemptRow>({
    name: 'payments_select_attempts_of_intent',
    text: `select merchant_id, id, payment_intent_id, refund_id, operation, amount, provider_idempotency_key, status,
                  provider_reference, error_code, created_at
             from payment_attempts where merchant_id = $1 and payment_intent_id = $2 order by id limit $3`,
    values: [merchantId, intentId, limit],
  });
  return rows;
}

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

/** Attempts that are not settled (started, unknown) and payments authorized more than once. */
export async function selectAttemptAnomalies(db: Queryable, merchantId: string): Promise<{ open: number; authorized_twice: number }> {
  const { rows } = await db.query<{ open: number; authorized_twice: number }>({
    name: 'payments_select_attempt_anomalies',
    text: `select (select count(*)::int from payment_attempts where merchant_id = $1 and status in ('started', 'unknown')) as open,
                  (select count(*)::int from (select payment_intent_id from payment_attempts
                                               where merchant_id = $1 and operation = 'authorize' and status = 'succeeded'
                                               group by payment_intent_id having count(*) > 1) as doubled) as authorized_twice`,
    values: [merchantId],
  });
  return rows[0] ?? { open: 0, authorized_twice: 0 };
}
