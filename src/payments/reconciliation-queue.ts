/**
 * Queuing a reconciliation: the completion command does it when an outcome is unknown, in its
 * own transaction, so it stays a leaf that the reconciler (which runs the completion) and the
 * completion itself can both import without a cycle.
 */
import type { Queryable } from '../platform/db/pool.js';
import { addJob } from '../platform/jobs/queue.js';
import type * as sql from './sql.js';

export const RECONCILE_TASK = 'reconcile_attempt';

export interface ReconcilePayload {
  merchant_id: string;
  attempt_id: string;
  round: number;
}

/** Queues a reconciliation of the attempt, in the caller's transaction. */
export async function scheduleReconciliation(db: Queryable, attempt: Pick<sql.AttemptRow, 'merchant_id' | 'id'>, round = 1, runAt?: Date) {
  const payload: ReconcilePayload = { merchant_id: attempt.merchant_id, attempt_id: attempt.id, round };
  // One reconciliation per attempt at a time; a sweep never postpones one already waiting.
  await addJob(db, RECONCILE_TASK, { ...payload }, { jobKey: `reconcile:${attempt.id}`, jobKeyMode: 'preserve_run_at', runAt });
}
