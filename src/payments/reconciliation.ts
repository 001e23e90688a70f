/**
 * Reconciliation: settling attempts whose outcome we do not know (the call timed out) or that
 * a crash left open (committed, then the process died before or during the call).
 *
 * The reconciler asks the provider about our idempotency key. If the provider recorded the
 * call, its answer is applied through the completion command. If the provider never saw it,
 * the reconciler sends the call itself under the same key — moving the payment forward, never
 * guessing backward: should the original request still be in flight, the provider answers
 * both with the one result. While the provider cannot answer, it asks again with exponential
 * backoff and full jitter; after `maxAttempts` rounds it stops and reports the attempt.
 */
import type { Client, Pool } from '../platform/db/pool.js';
import { withTransaction } from '../platform/db/pool.js';
import { addJob } from '../platform/jobs/queue.js';
import type { PaymentProvider } from '../providers/service.js';
import { type AttemptOutcome, completeAttempt, loadAttempt, outcomeFromOperation, sendAttempt } from './completion.js';
import type { CompletionDeps } from './hooks.js';
import { RECONCILE_TASK, type ReconcilePayload, scheduleReconciliation } from './reconciliation-queue.js';
import type * as sql from './sql.js';

export { RECONCILE_TASK, type ReconcilePayload, scheduleReconciliation };

import { markReconciliationExhausted, selectStaleOpenAttempts } from './sql.js';

export const SWEEP_TASK = 'sweep_open_attempts';

export interface ReconcileOptions {
  baseDelayMs: number;
  maxDelayMs: number;
  maxAttempts: number;
  /** Open attempts untouched for this long have certainly lost their request. */
  staleAfterMs: number;
}

/** Full jitter: a delay drawn uniformly below the capped exponential bound. */
export function backoffDelayMs(round: number, options: Pick<ReconcileOptions, 'baseDelayMs' | 'maxDelayMs'>, random = Math.random): number {
  const bound = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** Math.max(0, round - 1));
  return Math.floor(random() * bound);
}

/** The longest reconciliation can take before it gives up: the bound on unknown outcomes. */
export function reconcileDeadlineMs(options: Pick<ReconcileOptions, 'baseDelayMs' | 'maxDelayMs' | 'maxAttempts'>): number {
  let total = 0;
  for (let round = 1; round < options.maxAttempts; round++) total += Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (round - 1));
  return total;
}

export type ReconcileResult = 'settled' | 'already_settled' | 'rescheduled' | 'exhausted' | 'missing';

export interface ReconcileDeps extends CompletionDeps {
  pool: Pool;
  provider: PaymentProvider;
  options: ReconcileOptions;
}

export async function reconcileAttempt(deps: ReconcileDeps, payload: ReconcilePayload): Promise<ReconcileResult> {
  const loaded = await loadAttempt(deps.pool, payload.merchant_id, payload.attempt_id);
  if (!loaded) return 'missing';
  const { attempt, intent } = loaded;
  if (attempt.status !== 'started' && attempt.status !== 'unknown') return 'already_settled';
  const recorded = await deps.provider.retrieve(attempt.provider_idempotency_key);
  let outcome: AttemptOutcome | undefined;
  if (recorded.kind === 'succeeded') {
    outcome = recorded.value ? outcomeFromOperation(recorded.value) : await sendAttempt(deps.provider, intent, attempt);
  }
  if (!outcome || outcome.kind === 'unknown') {
    if (payload.round >= deps.options.maxAttempts) {
      await markReconciliationExhausted(deps.pool, attempt.merchant_id, attempt.id);
      return 'exhausted';
    }
    const runAt = new Date(Date.now() + backoffDelayMs(payload.round, deps.options));
    await withTransaction(deps.pool, (client) => scheduleAgain(client, attempt, payload.round + 1, runAt));
    return 'rescheduled';
  }
  const settled = outcome;
  await withTransaction(deps.pool, (client) => completeAttempt(client, deps, attempt.merchant_id, attempt.id, settled));
  return 'settled';
}

async function scheduleAgain(client: Client, attempt: sql.AttemptRow, round: number, runAt: Date) {
  // The running job still holds the key, so `replace` makes a new job rather than editing it.
  const payload: ReconcilePayload = { merchant_id: attempt.merchant_id, attempt_id: attempt.id, round };
  await addJob(client, RECONCILE_TASK, { ...payload }, { jobKey: `reconcile:${attempt.id}`, runAt });
}

// Enough for a minute's backlog at surge rates; the next sweep takes the rest.
const SWEEP_BATCH_MAX = 1_000;

/** Finds open attempts whose request is long over (a crash) and queues their reconciliation. */
export async function sweepOpenAttempts(pool: Pool, options: Pick<ReconcileOptions, 'staleAfterMs'>): Promise<number> {
  const stale = await selectStaleOpenAttempts(pool, options.staleAfterMs, SWEEP_BATCH_MAX);
  for (const attempt of stale) await scheduleReconciliation(pool, attempt);
  return stale.length;
}
