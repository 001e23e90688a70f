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
import { jobSpanAttributes } from '../platform/jobs/runner.js';
import type { Metrics } from '../platform/observability/metrics.js';
import { inSpan, SpanKind } from '../platform/observability/tracing.js';
import { type AttemptRecord, type DeliveryKey, type DeliveryTarget, readAndRecord, takeWaitingBatches } from './delivery-sql.js';
import { type AttemptOutcome, type AttemptResult, outcomeOf, resultLabel, retryDelayMs, signatureHeader, statusAfter } from './domain.js';
import { DELIVER_TASK, DELIVERIES_PER_BATCH_MAX, type WebhookSettings } from './service.js';
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
 * readAndRecord). A worker running many deliveries thus makes a fraction of the round trips
 * and commits it would make one job at a time. A batch job's reads, and its records, are one
 * call each: they go in one statement, with other jobs' calls when there is room.
 */
export interface DeliveryStore {
  /** The deliveries with their endpoint and event, in the order asked; undefined for one there is not. */
  targets(keys: readonly DeliveryKey[]): Promise<(DeliveryTarget | undefined)[]>;
  /** Records attempts that need nothing else written with them; for each, true when recorded. */
  record(attempts: readonly AttemptRecord[]): Promise<boolean[]>;
}

// At most this many reads and records per coalesced statement (a batch job's call, at most
// DELIVERIES_PER_BATCH_MAX, goes whole): above the jobs a worker runs at once in any sensible
// setting (FLOODGATE_WORKER_CONCURRENCY), small enough that one statement's arrays and locks
// stay small.
const DELIVERY_BATCH_MAX = 100;

type StoreCall = { kind: 'targets'; keys: readonly DeliveryKey[] } | { kind: 'record'; attempts: readonly AttemptRecord[] };
type StoreAnswer = (DeliveryTarget | undefined)[] | boolean[];

/** One statement for a batch of mixed calls; each call's answers in the batch's order. */
async function runStoreCalls(pool: Pool, calls: StoreCall[]): Promise<StoreAnswer[]> {
  const keys: DeliveryKey[] = [];
  const attempts: AttemptRecord[] = [];
  for (const call of calls) {
    if (call.kind === 'targets') keys.push(...call.keys);
    else attempts.push(...call.attempts);
  }
  const { targets, recorded } = await readAndRecord(pool, keys, attempts);
  let [target, record] = [0, 0];
  return calls.map((call) => {
    if (call.kind === 'targets') {
      target += call.keys.length;
      return targets.slice(target - call.keys.length, target);
    }
    record += call.attempts.length;
    return recorded.slice(record - call.attempts.length, record);
  });
}

export function deliveryStore(pool: Pool): DeliveryStore {
  const call = coalesce<StoreCall, StoreAnswer>({
    run: (calls) => runStoreCalls(pool, calls),
    batchMax: DELIVERY_BATCH_MAX,
    sizeOf: (call) => (call.kind === 'targets' ? call.keys.length : call.attempts.length),
  });
  return {
    targets: (keys) => call({ kind: 'targets', keys }) as Promise<(DeliveryTarget | undefined)[]>,
    record: (attempts) => call({ kind: 'record', attempts }) as Promise<boolean[]>,
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

/** One attempt of one delivery: the deliver_webhook job's body. */
export async function deliver(deps: DeliverDeps, job: DeliveryJob): Promise<DeliverResult> {
  const [target] = await deps.store.targets([keyOf(job)]);
  const step = await sendOnce(deps, job, target);
  if (step.kind === 'skipped') return step.result;
  // Shared with the other jobs finishing now (see DeliveryStore).
  const recorded = needsFollowUp(step.sent)
    ? await recordWithFollowUp(deps, step.sent)
    : (await deps.store.record([step.sent.attempt]))[0] === true;
  return account(deps, step.sent, recorded);
}

/**
 * A batch job's payload: deliveries of one merchant, each waiting for the same attempt of the
 * same round (the fan-out's batches, migrations/011_batched_deliveries.sql: round 1, attempt 1).
 */
export interface DeliveryBatch {
  merchant_id: string;
  delivery_ids: string[];
  round: number;
  attempt: number;
}

/**
 * One attempt of each delivery of a batch: the deliver_webhooks job's body. A job costs about
 * as much as a delivery's own work, so the fan-out gives a statement's deliveries one job, and a
 * job that starts late first takes the waiting jobs of its merchant into itself (takeWaiting).
 *
 * The deliveries are read in one query (one call of the store: other jobs' reads and records
 * share it when there is room) and sent at once; the transport's per-host socket limit
 * queues what one receiver cannot take, and its timeout runs from the moment the batch hands
 * it the request, so every request has ended within that timeout. Each delivery then goes the
 * single job's way, in a span of its own like a deliver_webhook job's, with the same skips,
 * metrics and log lines, except that the attempts that need only their record (a success, a
 * last failure) are recorded together, one call of the store, once every request has ended. A
 * failure that schedules a retry or disables its endpoint is recorded with that, in a
 * transaction of its own, as the single job does.
 *
 * A delivery that throws (its failure path's transaction, say) fails only itself: the others
 * are still recorded, then the job throws. graphile-worker runs it again later, as it does
 * after a worker's death mid-batch; the run again skips each delivery already recorded (no
 * longer waiting for this attempt) and sends the others again: at-least-once, as for a single job.
 */
export async function deliverBatch(deps: DeliverDeps, batch: DeliveryBatch, queued: BatchJob): Promise<DeliverResult[]> {
  const { merchant_id, round, attempt } = batch;
  const taken = await takeWaiting(deps, batch, queued);
  const jobs = [...batch.delivery_ids, ...taken].map((delivery_id): DeliveryJob => ({ merchant_id, delivery_id, round, attempt }));
  const targets = await deps.store.targets(jobs.map(keyOf));
  const together = recordTogether(deps.store, jobs.length);
  const settled = await Promise.allSettled(
    jobs.map((job, n) =>
      inSpan(`process ${DELIVER_TASK}`, { kind: SpanKind.CONSUMER, attributes: spanAttributes(job, queued.id) }, () =>
        deliverOfBatch(deps, job, targets[n], together),
      ),
    ),
  );
  const failures = settled.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []));
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, `${failures.length} of ${jobs.length} deliveries failed`);
  return settled.map((result) => (result as PromiseFulfilledResult<DeliverResult>).value);
}

/** The batch job as graphile-worker runs it: its id, and when it was due. */
export interface BatchJob {
  id: string;
  run_at: Date;
}

// A batch job that starts this long after it was due finds a queue behind it, and takes the
// waiting batch jobs of its merchant (takeWaitingBatches). One that starts on time runs alone:
// when the worker keeps up there is nothing to take, and looking would cost a statement per job.
// The clocks compared are PostgreSQL's (run_at) and the worker's; a skew between them larger than
// this only makes every job look, or none.
const LATE_AFTER_MS = 100;

/** The delivery ids of the waiting batch jobs a late batch job takes into itself; none when it is on time or full. */
function takeWaiting(deps: DeliverDeps, batch: DeliveryBatch, queued: BatchJob): Promise<string[]> {
  const room = DELIVERIES_PER_BATCH_MAX - batch.delivery_ids.length;
  if (room <= 0 || Date.now() - queued.run_at.getTime() < LATE_AFTER_MS) return Promise.resolve([]);
  const running = {
    jobId: queued.id,
    merchantId: batch.merchant_id,
    round: batch.round,
    attempt: batch.attempt,
    deliveries: batch.delivery_ids.length,
  };
  return takeWaitingBatches(deps.pool, running, room);
}

/** One delivery of a batch: deliver's steps, its record shared with the batch's when it can be. */
async function deliverOfBatch(
  deps: DeliverDeps,
  job: DeliveryJob,
  target: DeliveryTarget | undefined,
  together: RecordTogether,
): Promise<DeliverResult> {
  let step: Step;
  try {
    step = await sendOnce(deps, job, target);
  } catch (error) {
    together.pass();
    throw error;
  }
  if (step.kind === 'skipped') {
    together.pass();
    return step.result;
  }
  if (!needsFollowUp(step.sent)) return account(deps, step.sent, await together.record(step.sent.attempt));
  together.pass();
  return account(deps, step.sent, await recordWithFollowUp(deps, step.sent));
}

/** The batch's shared record: each delivery comes once, with the attempt to record or without one. */
interface RecordTogether {
  /** Resolves once the batch's statement has run: true when this attempt was recorded. */
  record(attempt: AttemptRecord): Promise<boolean>;
  pass(): void;
}

/** Records the attempts of a batch's deliveries in one call of the store once each of `expected` deliveries has come. */
function recordTogether(store: DeliveryStore, expected: number): RecordTogether {
  const attempts: AttemptRecord[] = [];
  const answers: { resolve: (recorded: boolean) => void; reject: (error: unknown) => void }[] = [];
  let came = 0;
  const arrive = () => {
    came += 1;
    if (came !== expected || attempts.length === 0) return;
    store.record(attempts).then(
      (recorded) => {
        for (const [n, answer] of answers.entries()) answer.resolve(recorded[n] === true);
      },
      (error: unknown) => {
        for (const answer of answers) answer.reject(error);
      },
    );
  };
  return {
    record: (attempt) =>
      new Promise<boolean>((resolve, reject) => {
        attempts.push(attempt);
        answers.push({ resolve, reject });
        arrive();
      }),
    pass: arrive,
  };
}

const keyOf = (job: DeliveryJob): DeliveryKey => ({ merchantId: job.merchant_id, deliveryId: job.delivery_id });

/** A delivery's span in a batch: the one graphile-worker's runner gives a deliver_webhook job (platform/jobs/runner.ts). */
function spanAttributes(job: DeliveryJob, jobId: string) {
  return { ...jobSpanAttributes(DELIVER_TASK, jobId), 'floodgate.webhook_delivery.id': job.delivery_id };
}

/** An attempt sent, not yet recorded. */
interface Sent {
  job: DeliveryJob;
  endpointId: string;
  result: AttemptResult;
  outcome: AttemptOutcome;
  attempt: AttemptRecord;
}

type Step = { kind: 'skipped'; result: DeliverResult } | { kind: 'sent'; sent: Sent };

/** A delivery's checks, then its request unless there is nothing to send. */
async function sendOnce(deps: DeliverDeps, job: DeliveryJob, target: DeliveryTarget | undefined): Promise<Step> {
  const skipped = (reason: string): Step => ({ kind: 'skipped', result: { kind: 'skipped', reason } });
  // Deleted endpoint, finished or canceled delivery, or a job overtaken by a later one: nothing to do.
  if (!target) return skipped('delivery_missing');
  if (target.status !== 'pending' || target.round !== job.round || target.attempts !== job.attempt - 1) {
    return skipped('not_waiting_for_this_attempt');
  }
  if (target.endpoint_status !== 'enabled') return skipped('endpoint_disabled');
  return { kind: 'sent', sent: await send(deps, job, target) };
}

/**
 * Success or a last failure writes the attempt alone: one statement, atomic by itself, which
 * the caller shares with others. A retry (its next job) or a 410 (the endpoint disabled)
 * writes more, all or nothing, in a transaction of its own (recordWithFollowUp).
 */
const needsFollowUp = (sent: Sent) => sent.outcome === 'retry_scheduled' || sent.outcome === 'endpoint_disabled';

/** Signs the delivery's event and POSTs it once. */
async function send(deps: DeliverDeps, job: DeliveryJob, target: DeliveryTarget): Promise<Sent> {
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
  const attempt: AttemptRecord = {
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
  return { job, endpointId: target.endpoint_id, result, outcome, attempt };
}

/** Records a failed attempt with its retry's job, or with its endpoint disabled (410); true when recorded. */
function recordWithFollowUp(deps: DeliverDeps, sent: Sent): Promise<boolean> {
  const { job, attempt } = sent;
  return withTransaction(deps.pool, async (client) => {
    const {
      recorded: [done],
    } = await readAndRecord(client, [], [attempt]);
    if (!done) return false;
    if (sent.outcome === 'retry_scheduled') {
      const next: DeliveryJob = { ...job, attempt: job.attempt + 1 };
      await addJob(client, DELIVER_TASK, { ...next }, { runAt: attempt.nextAttemptAt as Date });
    } else {
      await sql.disableEndpoint(client, job.merchant_id, sent.endpointId, 'The endpoint answered 410 Gone.');
    }
    return true;
  });
}

/** An attempt's metrics and log line, the same whichever job made it. */
function account(deps: DeliverDeps, sent: Sent, recorded: boolean): DeliverResult {
  const { job, result, outcome } = sent;
  deps.metrics?.webhookDeliveryDuration.observe({ result: resultLabel(result) }, result.durationMs / 1000);
  if (!recorded) return { kind: 'skipped', reason: 'recorded_by_another_run' };
  deps.metrics?.webhookDeliveries.inc({ outcome });
  if (outcome === 'dead' || outcome === 'endpoint_disabled') {
    deps.log?.warn({ deliveryId: job.delivery_id, endpointId: sent.endpointId, outcome }, 'webhook delivery stopped');
  }
  return { kind: 'attempted', outcome };
}
