/**
 * The worker's task list and schedule, composed from the capabilities' jobs.
 */
import type { Config } from '../config.js';
import { PAYMENT_CRONTAB, paymentTasks } from '../payments/jobs.js';
import type { Pool } from '../platform/db/pool.js';
import { IDEMPOTENCY_CRONTAB, idempotencyTasks } from '../platform/idempotency/jobs.js';
import { startWorker, type Worker } from '../platform/jobs/runner.js';
import type { Metrics } from '../platform/observability/metrics.js';
import type { PaymentProvider } from '../providers/provider.js';
import { convertPaidHold } from '../sales/holds.js';
import { salesTasks } from '../sales/jobs.js';
import { webhookTasks } from '../webhooks/jobs.js';
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

export function runWorker(deps: {
  config: Config;
  pool: Pool;
  provider: PaymentProvider;
  metrics?: Metrics;
  log: Logger;
}): Promise<Worker> {
  const { config, pool, provider } = deps;
  const tasks = {
    // The reconciler completes payments here: their orders are marked paid in the same transaction.
    ...paymentTasks({ pool, provider, options: reconcileOptions(config), onPaymentSucceeded: convertPaidHold }),
    ...idempotencyTasks({ pool, lockTimeoutMs: config.idempotencyLockTimeoutMs }),
    ...salesTasks({ pool }),
    ...webhookTasks({ pool, settings: webhookSettings(config), metrics: deps.metrics, log: deps.log }),
  };
  return startWorker({
    pool,
    tasks,
    crontab: [PAYMENT_CRONTAB, IDEMPOTENCY_CRONTAB].join('\n'),
    concurrency: config.workerConcurrency,
    lockTimeoutMs: config.jobLockTimeoutMs,
    pollIntervalMs: config.jobPollIntervalMs,
    metrics: deps.metrics,
    log: deps.log,
  });
}
