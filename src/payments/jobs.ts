/**
 * The jobs payments defines: reconciling one attempt, and the periodic sweep for attempts a
 * crash left open.
 */
import type { Task, TaskList } from 'graphile-worker';
import {
  RECONCILE_TASK,
  type ReconcileDeps,
  type ReconcilePayload,
  reconcileAttempt,
  SWEEP_TASK,
  sweepOpenAttempts,
} from './reconciliation.js';

export interface PaymentJobDeps extends ReconcileDeps {
  onExhausted?: (payload: ReconcilePayload) => void;
}

export function paymentTasks(deps: PaymentJobDeps): TaskList {
  const reconcile: Task = async (payload, helpers) => {
    const input = payload as ReconcilePayload;
    const result = await reconcileAttempt(deps, input);
    if (result === 'exhausted') {
      helpers.logger.error(`reconciliation of ${input.attempt_id} gave up after ${input.round} rounds; the attempt needs an operator`);
      deps.onExhausted?.(input);
    }
  };
  const sweep: Task = async () => {
    await sweepOpenAttempts(deps.pool, deps.options);
  };
  return { [RECONCILE_TASK]: reconcile, [SWEEP_TASK]: sweep };
}

/** Every minute (crontab's finest grain): the sweep is a safety net, not the main path. */
export const PAYMENT_CRONTAB = `* * * * * ${SWEEP_TASK} ?max=1`;
