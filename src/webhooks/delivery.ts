/**
 * Delivering webhooks: the jobs' use cases. A delivery attempt follows the money path's rule:
 * nothing is held open across the network. The job reads what to send, sends it outside any
 * transaction, then records the attempt and schedules the next one (a new job with its run_at)
 * in one transaction, guarded so that a job run twice records once. At-least-once: a worker
 * killed after sending but before recording leaves the job to run again, and the receiver gets
 * the same message (same `webhook-id`) twice.
 */
import type { Logger } from 'pino';
import * as events from '../events/service.js';
import type { Sealer } from '../platform/crypto/sealed.js';
import { coalesce } from '../platform/db/group-commit.js';
import { type Pool, withTransaction } from '../platform/db/pool.js';
import { addJob } from '../platform/jobs/queue.js';
import type { Metrics } from '../platform/observability/metrics.js';
import { outcomeOf, resultLabel, retryDelayMs, signatureHeader, statusAfter } from './domain.js';
import { DELIVER_TASK, type WebhookSettings } from './service.js';
import * as sql from './sql.js';
import type { Transport } from './transport.js';

/** A delivery job's payload: which delivery, and which attempt of which round it is for. */
export interface DeliveryJob {
  merchant_id: string;
  delivery_id: string;
  round: number;
  attempt: number;
}

/**
 * The reads and writes of delivery jobs, coalesced across the jobs running at once: the jobs
 * that start and those that finish while one statement is in flight share the next one (see
 * sql.readAndRecord). A worker running many deliveries thus makes a fraction of the round trips
 * and commits it would make one job at a time.
 */
export interface DeliveryStore {
  /** The delivery with its endpoint and event; undefined when there is none. */
  target(key: sql.DeliveryKey): Promise<sql.DeliveryTarget | undefined>;
  /** Records an attempt that needs nothing else written with it; true when recorded. */
  record(attempt: sql.AttemptRecord): Promise<boolean>;
}

// At most this many reads and records per coalesced statement: above the jobs a worker runs at
// once in any sensible setting (FLOODGATE_WORKER_CONCURRENCY), small enough that one
// statement's arrays and locks stay small.
const DELIVERY_BATCH_MAX = 100;

type StoreCall = { kind: 'target'; key: sql.DeliveryKey } | { kind: 'record'; attempt: sql.AttemptRecord };
type StoreAnswer = sql.DeliveryTarget | boolean | undefined;

/** One statement for a batch of mixed calls; each call's answer in the batch's order. */
async function runStoreCalls(pool: Pool, calls: StoreCall[]): Promise<StoreAnswer[]> {
  const keys: sql.DeliveryKey[] = [];
  const attempts: sql.AttemptRecord[] = [];
  for (const call of calls) {
    if (call.kind === 'target') keys.push(call.key);
    else attempts.push(call.attempt);
  }
  const { targets, recorded } = await sql.readAndRecord(pool, keys, attempts);
  let [target, record] = [0, 0];
  return calls.map((call) => (call.kind === 'target' ? targets[target++] : recorded[record++]));
}

export function deliveryStore(pool: Pool): DeliveryStore {
  const call = coalesce<StoreCall, StoreAnswer>({ run: (calls) => runStoreCalls(pool, calls), batchMax: DELIVERY_BATCH_MAX });
  return {
    target: (key) => call({ kind: 'target', key }) as Promise<sql.DeliveryTarget | undefined>,
    record: (attempt) => call({ kind: 'record', attempt }) as Promise<boolean>,
  };
}

export interface DeliverDeps {
  pool: Pool;
  store: DeliveryStore;
  settings: WebhookSettings;
  sealer: Sealer;
  transport: Transport;
  metrics?: Metrics;
  log?: Logger;
}

export type DeliverResult = { kind: 'skipped'; reason: string } | { kind: 'attempted'; outcome: string };

/** One attempt of one delivery: the job's body. */
export async function deliver(deps: DeliverDeps, job: DeliveryJob): Promise<DeliverResult> {
  const target = await deps.store.target({ merchantId: job.merchant_id, deliveryId: job.delivery_id });
  // Deleted endpoint, finished or canceled delivery, or a job overtaken by a later one: nothing to do.
  if (!target) return { kind: 'skipped', reason: 'delivery_missing' };
  if (target.status !== 'pending' || target.round !== job.round || target.attempts !== job.attempt - 1) {
    return { kind: 'skipped', reason: 'not_waiting_for_this_attempt' };
  }
  if (target.endpoint_status !== 'enabled') return { kind: 'skipped', reason: 'endpoint_disabled' };
  if (!target.event) throw new Error(`event ${target.event_id} of delivery ${job.delivery_id} is missing`);
  const event = events.toApiEvent(target.event);

  const body = JSON.stringify(event);
  const timestamp = Math.floor(Date.now() / 1000);
  const headers = {
    // The event id: the same for every attempt and redelivery of this event, which is what
    // receivers deduplicate on.
    'webhook-id': event.id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': signatureHeader(
      target.secrets.map((secret) => deps.sealer.open(secret)),
      event.id,
      timestamp,
      body,
    ),
  };
  const attemptedAt = new Date();
  const result = await deps.transport.post(target.url, headers, body);
  const outcome = outcomeOf(result, job.attempt, deps.settings.maxAttempts);
  const nextAttemptAt = outcome === 'retry_scheduled' ? new Date(Date.now() + retryDelayMs(job.attempt, deps.settings)) : null;

  const attempt: sql.AttemptRecord = {
    merchantId: job.merchant_id,
    deliveryId: job.delivery_id,
    round: job.round,
    attempt: job.attempt,
    status: statusAfter(outcome),
    nextAttemptAt,
    statusCode: result.kind === 'response' ? result.statusCode : null,
    error: result.kind === 'error' ? result.error : null,
    durationMs: result.durationMs,
    attemptedAt,
  };
  // Success or a last failure writes the attempt alone: one statement, atomic by itself and
  // shared with the other jobs finishing now. A retry (its next job) or a 410 (the endpoint
  // disabled) writes more, all or nothing, in a transaction of its own.
  const followUp = outcome === 'retry_scheduled' || outcome === 'endpoint_disabled';
  const recorded = !followUp
    ? await deps.store.record(attempt)
    : await withTransaction(deps.pool, async (client) => {
        const {
          recorded: [done],
        } = await sql.readAndRecord(client, [], [attempt]);
        if (!done) return false;
        if (outcome === 'retry_scheduled') {
          const next: DeliveryJob = { ...job, attempt: job.attempt + 1 };
          await addJob(client, DELIVER_TASK, { ...next }, { runAt: nextAttemptAt as Date });
        } else {
          await sql.disableEndpoint(client, job.merchant_id, target.endpoint_id, 'The endpoint answered 410 Gone.');
        }
        return true;
      });
  deps.metrics?.webhookDeliveryDuration.observe({ result: resultLabel(result) }, result.durationMs / 1000);
  if (!recorded) return { kind: 'skipped', reason: 'recorded_by_another_run' };
  deps.metrics?.webhookDeliveries.inc({ outcome });
  if (outcome === 'dead' || outcome === 'endpoint_disabled') {
    deps.log?.warn({ deliveryId: job.delivery_id, endpointId: target.endpoint_id, outcome }, 'webhook delivery stopped');
  }
  return { kind: 'attempted', outcome };
}
