/** The provider attempts of payments and their row type, re-exported from sql.ts. */
import type { Queryable } from '../platform/db/pool.js';

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
 * An attempt's status and, while it is `started`, how much of `waitMs` after the attempt was
 * last written is left, by the database's clock: how long more a provider event waits for the
 * request that made the call (provider-webhooks.ts awaitRequest). 0 once that is past, or when
 * the attempt is no longer started.
 */
export async function selectAttemptRequestWait(
  db: Queryable,
  merchantId: string,
  id: string,
  waitMs: number,
): Promise<{ status: AttemptRow['status']; remaining_ms: number } | undefined> {
  const { rows } = await db.query<{ status: AttemptRow['status']; remaining_ms: number }>({
    name: 'payments_select_attempt_request_wait',
    text: `select status,
             case when status = 'started'
               then greatest(0, ceil(extract(epoch from updated_at + make_interval(secs => $3::float8 / 1000) - now()) * 1000))::int
               else 0 end as remaining_ms
           from payment_attempts where merchant_id = $1 and id = $2`,
    values: [merchantId, id, waitMs],
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
