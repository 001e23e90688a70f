/**
 * The worker's task list and schedule, composed from the capabilities' jobs.
 */
import type { TaskList } from 'graphile-worker';
import type { Config } from '../config.js';
import { PAYMENT_CRONTAB, paymentTasks } from '../payments/jobs.js';
import type { Pool } from '../platform/db/pool.js';
import { IDEMPOTENCY_CRONTAB, idempotencyTasks } from '../platform/idempotency/jobs.js';
import { startWorker, type Worker } from '../platform/jobs/runner.js';
import type { Metrics } from '../platform/observability/metrics.js';
import type { PaymentProvider } from '../providers/provider.js';
import { convertPaidHold } from '../sales/holds.js';
import { salesTasks } from '../sales/jobs.js';
import { WEBHOOK_CRONTAB, webhookTasks } from '../webhooks/jobs.js';
import { webhookSettings } from '../webhooks/service.js';
import type { Logger } from './runtime.js';

export function reconcileOptions(config: Config) {
  return {
    baseDelayMs: config.reconcileBaseDelayMs,
    maxDelayMs: config.reconcileMaxDelayMs,
    maxAttempts: config.reconcileMaxAttempts,
    // A request's attempt is settled within its provider timeout; twice that, it was lost.
    staleAfterMs: config.providerTimeoutMs * 2 + 5_000,
  };
}

/** Every periodic task, one crontab line each; every line names a task of workerTasks(). */
export const WORKER_CRONTAB = [PAYMENT_CRONTAB, IDEMPOTENCY_CRONTAB, WEBHOOK_CRONTAB].join('\n');

/** The task list a worker runs: every capability's jobs. */
export function workerTasks(deps: {
  config: Config;
  pool: Pool;
  provider: PaymentProvider;
  metrics?: Metrics;
  log: Logger;
  releaseAdmission: (saleId: string, ticketId: string) => Promise<unknown>;
}): TaskList {
  const { config, pool, provider } = deps;
  return {
    // The reconciler completes payments here: their orders are marked paid in the same transaction.
    ...paymentTasks({ pool, provider, options: reconcileOptions(config), onPaymentSucceeded: convertPaidHold }),
    ...idempotencyTasks({ pool, lockTimeoutMs: config.idempotencyLockTimeoutMs }),
    ...salesTasks({ pool, releaseAdmission: deps.releaseAdmission }),
    ...webhookTasks({ pool, settings: webhookSettings(config), metrics: deps.metrics, log: deps.log }),
  };
}

export function runWorker(deps: {
  config: Config;
  pool: Pool;
  provider: PaymentProvider;
  metrics?: Metrics;
  log: Logger;
  /** The runner stopped by itself: see WorkerOptions.onFailure. */
  onFailure?: (error: Error) => void;
  /** Frees a paid or expired hold's waiting-room slot: the API's room, or the shared one in Redis. */
  releaseAdmission: (saleId: string, ticketId: string) => Promise<unknown>;
}): Promise<Worker> {
  const { config, pool } = deps;
  return startWorker({
    pool,
    tasks: workerTasks(deps),
    crontab: WORKER_CRONTAB,
    concurrency: config.workerConcurrency,
    lockTimeoutMs: config.jobLockTimeoutMs,
    pollIntervalMs: config.jobPollIntervalMs,
    metrics: deps.metrics,
    log: deps.log,
    onFailure: deps.onFailure,
  });
}
