/**
 * The jobs webhooks define, for the worker role to run. The fan-out adds deliver_webhooks jobs,
 * each a batch of a statement's deliveries (migrations/011_batched_deliveries.sql; a job that
 * starts late takes the waiting ones into itself, see deliverBatch); retries and redeliveries
 * are deliver_webhook jobs, one delivery each. Deliveries schedule their own retries
 * (a new job per attempt, with its run_at, in the transaction that records the failed one), so
 * graphile-worker's own retries only cover a task that threw: the database was unreachable.
 * Those keep graphile-worker's default of 25 attempts with its exponential backoff, longer than
 * any database outage we plan for.
 */
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { TaskList } from 'graphile-worker';
import type { Logger } from 'pino';
import { rememberingOpened, sealerFor } from '../platform/crypto/sealed.js';
import type { Pool } from '../platform/db/pool.js';
import type { Metrics } from '../platform/observability/metrics.js';
import { VERSION } from '../version.js';
import { deliver, deliverBatch, deliveryStore } from './delivery.js';
import { DELIVER_BATCH_TASK, DELIVER_TASK, DELIVERIES_PER_BATCH_MAX, pruneAttempts, type WebhookSettings } from './service.js';
import { createTransport } from './transport.js';

export const PRUNE_ATTEMPTS_TASK = 'prune_webhook_attempts';
// Hourly: each run deletes at most 100,000 old attempts, so a backlog clears within hours.
export const WEBHOOK_CRONTAB = `17 * * * * ${PRUNE_ATTEMPTS_TASK} ?max=1`;

// Opened signing secrets a worker keeps: an endpoint's current and previous secret, for far more
// endpoints than deliver at once (16 per merchant), at about 100 bytes each.
const OPENED_SECRETS_MAX = 10_000;

const DeliveryJobPayload = Type.Object({
  merchant_id: Type.String(),
  delivery_id: Type.String(),
  round: Type.Integer({ minimum: 1 }),
  attempt: Type.Integer({ minimum: 1 }),
});

const DeliveryBatchPayload = Type.Object({
  merchant_id: Type.String(),
  // Not checked for duplicates (hashing every id showed in profiles): a delivery named twice is
  // sent twice and recorded once, which at-least-once delivery allows.
  delivery_ids: Type.Array(Type.String(), { minItems: 1, maxItems: DELIVERIES_PER_BATCH_MAX }),
  round: Type.Integer({ minimum: 1 }),
  attempt: Type.Integer({ minimum: 1 }),
});

export interface WebhookWorkerDeps {
  pool: Pool;
  settings: WebhookSettings;
  metrics?: Metrics;
  log?: Logger;
}

export function webhookTasks(deps: WebhookWorkerDeps): TaskList {
  const transport = createTransport({
    timeoutMs: deps.settings.timeoutMs,
    allowPrivate: deps.settings.allowPrivate,
    userAgent: `Floodgate-Webhooks/${VERSION}`,
  });
  const sealer = rememberingOpened(sealerFor(deps.settings.secretsKeys), OPENED_SECRETS_MAX);
  const store = deliveryStore(deps.pool);
  const deliverDeps = { ...deps, store, transport, sealer };
  return {
    [DELIVER_TASK]: async (payload) => {
      // A payload that does not parse was not written by us; failing loudly beats guessing.
      if (!Value.Check(DeliveryJobPayload, payload)) throw new Error(`${DELIVER_TASK}: malformed payload ${JSON.stringify(payload)}`);
      const job: Static<typeof DeliveryJobPayload> = payload;
      await deliver(deliverDeps, job);
    },
    [DELIVER_BATCH_TASK]: async (payload, helpers) => {
      if (!Value.Check(DeliveryBatchPayload, payload)) {
        throw new Error(`${DELIVER_BATCH_TASK}: malformed payload ${JSON.stringify(payload)}`);
      }
      const batch: Static<typeof DeliveryBatchPayload> = payload;
      await deliverBatch(deliverDeps, batch, helpers.job);
    },
    [PRUNE_ATTEMPTS_TASK]: async () => {
      const deleted = await pruneAttempts(deps.pool, deps.settings.attemptRetentionDays);
      if (deleted > 0)
        deps.log?.info({ deleted, retentionDays: deps.settings.attemptRetentionDays }, 'old webhook delivery attempts deleted');
    },
  };
}
