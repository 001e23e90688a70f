/**
 * The worker's side of a surge, measured on the real `floodgate worker` process (its default
 * concurrency, pool and local queue, the production task list and crontab):
 *
 * - jobs: N cheap jobs are added in one transaction while the worker is paused; it is resumed
 *   and the clock runs until none is left. Jobs per second is graphile-worker's own ceiling
 *   (fetching, running, completing) plus one trivial statement per job.
 * - webhooks: while the worker is paused, N payments are created through the API for a merchant
 *   with one endpoint at the local receiver, so the events' trigger adds N deliveries and their
 *   N jobs exactly as in production. The worker is resumed and the clock runs until every
 *   delivery has succeeded.
 * - sustained: the API creates payments at a fixed rate while the worker delivers; the queue's
 *   depth is sampled every second, and every delivery's latency is taken from its event's
 *   created_at (the API's clock) to its arrival at the receiver (the same machine's clock).
 *
 * Pausing is SIGSTOP/SIGCONT: the worker process stays up and warm (JIT, pooled connections,
 * keep-alive sockets to the receiver) across phases and rounds, and uses no CPU while another
 * phase runs. Every wait below is bounded in time.
 */
import { performance } from 'node:perf_hooks';
import { CLEANUP_TASK } from '../src/platform/idempotency/jobs.js';
import { DELIVER_BATCH_TASK, DELIVER_TASK } from '../src/webhooks/service.js';
import type { BackendCpuSampler } from './backends.js';
import type { LoadGenerator } from './loadgen.js';
import { busyFraction, busyMs, cpuSnapshot, processCpuMs, processMinorFaults, processWrites } from './machine.js';
import type { Receiver } from './receiver.js';
import type { ApiServer, BenchDatabase, WorkerProcess } from './setup.js';
import { type LatencySummary, round, summarize } from './stats.js';

/**
 * The job the throughput phase runs: a real task of the production list whose work, on the
 * emptied idempotency_keys table, is one DELETE that finds nothing. So jobs/s is the queue's
 * cost (fetch, run, complete) plus one trivial round trip.
 */
export const JOB_TASK = CLEANUP_TASK;

// Bounds on every wait; far above what a phase needs on a slow machine, they only end a run
// that has stopped making progress.
const DRAIN_TIMEOUT_MS = 120_000;
const JOBS_SETTLE_TIMEOUT_MS = 10_000;
const CREATE_TIMEOUT_MS = 120_000;
const LOADGEN_DRAIN_TIMEOUT_MS = 10_000;
// Polling for the end of a drain: more often as the end nears (finer resolution), never more
// often than this, so the bench's own queries stay a small cost.
const POLL_MIN_MS = 10;
const POLL_MAX_MS = 200;
// Jobs run, unmeasured, before each job phase: the worker's pool reopens what it closed while
// paused, as the API gets an unmeasured burst before each of its phases.
const WARM_JOBS = 200;
// The first deliveries of a webhook phase, not measured for the same reason: the payments are
// created while the worker is paused, for longer than its pool's idle timeout (10 s), so it
// reopens its connections as it resumes. This share of the phase's deliveries, at least
// WARM_DELIVERIES_MIN of them and at most half, is done before its CPU window opens.
const WARM_DELIVERIES_SHARE = 0.1;
const WARM_DELIVERIES_MIN = 100;
// The sustained phase: the API's open loop stops as overloaded past this much backlog.
const BACKLOG_SECONDS_MAX = 2;
// The queue "grows" when its depth (deliveries pending) rises faster than this share of the
// offered rate and ends above GROWTH_FLOOR_DELIVERIES (about what the worker had at once when
// each delivery was a job: its local queue of 50 and the jobs running). Below either, it is flat.
const GROWTH_SHARE = 0.02;
const GROWTH_FLOOR_DELIVERIES = 100;

export interface WorkerContext {
  db: BenchDatabase;
  server: ApiServer;
  loadgen: LoadGenerator;
  sampler: BackendCpuSampler;
  worker: WorkerProcess;
  receiver: Receiver;
  /** HTTP connections of the load generator when it creates payments. */
  clients: number;
}

export interface WorkerCpu {
  /** Share of all cores busy during the phase, whoever used them. */
  machineBusy: number;
  /** CPU per job (delivery) in µs: the worker process, the receiver, the PostgreSQL backends. */
  workerUsPerJob: number;
  receiverUsPerJob: number;
  backendsUsPerJob: number;
  /** Cores used by everything else (other developers, the bench's polling, PostgreSQL's writers). */
  otherCores: number;
  /**
   * Write system calls of the worker per job (delivery): its round trips to PostgreSQL (one
   * write per query) plus, for a delivery, its HTTP request. Unlike CPU time, other processes
   * do not move it, so it shows a change in round trips even on a noisy machine.
   */
  workerWritesPerJob: number;
  /**
   * Minor page faults of the worker per job (delivery): memory its heap had to map again, each
   * costing the machine's pageFaultUs of CPU inside workerUsPerJob. Like writes, other processes
   * do not move it.
   */
  workerFaultsPerJob: number;
}

export interface JobsPhaseResult {
  round: number;
  task: string;
  jobs: number;
  elapsedMs: number;
  /** Jobs per second, from the worker's resume to the poll that found none left. */
  throughput: number;
  /** Jobs left when the phase gave up; 0 when drained. */
  left: number;
  cpu: WorkerCpu;
}

export interface WebhooksPhaseResult {
  round: number;
  /** Deliveries the events' trigger created: one per payment created. */
  deliveries: number;
  /** Delivery jobs queued for them when the drain began: fewer than the deliveries when the fan-out batched them. */
  jobs: number;
  /** The API creating those payments, closed loop: its rate with the fan-out to one endpoint. */
  creation: { throughput: number; ok: number; errors: Record<string, number> };
  elapsedMs: number;
  /** Deliveries per second, from the worker's resume to the poll that found none pending. */
  throughput: number;
  succeeded: number;
  /** Attempts made; more than the deliveries means some were retried. */
  attempts: number;
  /** Requests the receiver got, and how many of them repeated an event it had already seen. */
  received: number;
  duplicates: number;
  left: number;
  cpu: WorkerCpu;
}

export interface SustainedResult {
  rate: number;
  durationS: number;
  api: { throughput: number; ok: number; latency: LatencySummary; errors: Record<string, number>; overloaded: boolean };
  /**
   * Deliveries pending (their job waiting or running), sampled every second while the API ran
   * and the worker finished. Jobs are no measure of the queue since a job delivers a batch.
   */
  depth: { atS: number; deliveries: number }[];
  /** Least-squares slope of the depth over the phase, deliveries per second. */
  slopePerS: number;
  grows: boolean;
  /** Deliveries created during the phase, and delivered by the end of the wait after it. */
  deliveries: number;
  delivered: number;
  /** After the API stopped, the time the worker took to deliver the rest; undefined if it did not within the wait. */
  drainS: number | undefined;
  /** From the event's created_at to its arrival at the receiver, delivered events only. */
  latency: LatencySummary;
  cpu: WorkerCpu;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** CPU readings around a measured stretch: the machine's, the worker's, the receiver's and the backends'. */
class CpuWindow {
  private constructor(
    private readonly ctx: WorkerContext,
    private readonly machine: ReturnType<typeof cpuSnapshot>,
    private readonly workerMs: number,
    private readonly receiverMs: number,
    private readonly workerWrites: number,
    private readonly workerFaults: number,
    private readonly startedAt: number,
  ) {}

  static async open(ctx: WorkerContext): Promise<CpuWindow> {
    await ctx.sampler.start();
    return new CpuWindow(
      ctx,
      cpuSnapshot(),
      processCpuMs(ctx.worker.pid) ?? 0,
      processCpuMs(ctx.receiver.pid) ?? 0,
      processWrites(ctx.worker.pid) ?? 0,
      processMinorFaults(ctx.worker.pid) ?? 0,
      performance.now(),
    );
  }

  async close(units: number): Promise<WorkerCpu> {
    const elapsedMs = performance.now() - this.startedAt;
    const workerMs = (processCpuMs(this.ctx.worker.pid) ?? 0) - this.workerMs;
    const receiverMs = (processCpuMs(this.ctx.receiver.pid) ?? 0) - this.receiverMs;
    const workerWrites = (processWrites(this.ctx.worker.pid) ?? 0) - this.workerWrites;
    const workerFaults = (processMinorFaults(this.ctx.worker.pid) ?? 0) - this.workerFaults;
    const machine = cpuSnapshot();
    const backendsMs = await this.ctx.sampler.stop();
    const otherMs = busyMs(this.machine, machine) - workerMs - receiverMs - backendsMs;
    const per = (ms: number) => Math.round((ms * 1000) / Math.max(units, 1));
    return {
      machineBusy: busyFraction(this.machine, machine),
      workerUsPerJob: per(workerMs),
      receiverUsPerJob: per(receiverMs),
      backendsUsPerJob: per(backendsMs),
      otherCores: round(Math.max(otherMs, 0) / elapsedMs, 2),
      workerWritesPerJob: round(workerWrites / Math.max(units, 1), 1),
      workerFaultsPerJob: round(workerFaults / Math.max(units, 1), 2),
    };
  }
}

/**
 * Polls `read` until it returns 0 or `timeoutMs` passes. Returns the last value and when it was
 * read (performance.now()). The interval shrinks as the value nears 0, by the rate it falls at.
 */
async function pollUntilZero(read: () => Promise<number>, timeoutMs: number): Promise<{ remaining: number; at: number }> {
  const deadline = performance.now() + timeoutMs;
  let previous: { value: number; at: number } | undefined;
  for (;;) {
    const value = await read();
    const at = performance.now();
    if (value === 0 || at >= deadline) return { remaining: value, at };
    const falling = previous ? (previous.value - value) / (at - previous.at) : 0;
    const etaMs = falling > 0 ? value / falling : Number.POSITIVE_INFINITY;
    previous = { value, at };
    await sleep(Math.min(POLL_MAX_MS, Math.max(POLL_MIN_MS, etaMs / 4)));
  }
}

/** Polls `read` until it returns `target` or less, or `timeoutMs` passes; returns the last value. */
async function pollUntilAtMost(read: () => Promise<number>, target: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value <= target || performance.now() >= deadline) return value;
    await sleep(POLL_MIN_MS);
  }
}

async function countJobs(db: BenchDatabase, tasks: string | readonly string[]): Promise<number> {
  // The private table rather than the jobs view: the count is all that is needed, without the
  // view's joins. Locked jobs (running, or waiting in a worker's local queue) count too.
  const { rows } = await db.query<{ count: number }>(
    `select count(*)::int as count from graphile_worker._private_jobs
     where task_id in (select id from graphile_worker._private_tasks where identifier = any($1))`,
    [typeof tasks === 'string' ? [tasks] : tasks],
  );
  return rows[0]?.count ?? 0;
}

// The fan-out's batch jobs and the single delivery jobs (retries).
const DELIVERY_TASKS = [DELIVER_BATCH_TASK, DELIVER_TASK] as const;

/**
 * Deletes the delivery jobs a phase left queued while the worker was paused (the fan-out max
 * phase's): a reset truncates their deliveries but not graphile-worker's jobs, and the next
 * drain would count and run them.
 */
export async function dropQueuedDeliveries(db: BenchDatabase): Promise<void> {
  await db.query(
    `delete from graphile_worker._private_jobs
     where task_id in (select id from graphile_worker._private_tasks where identifier = any($1))`,
    [DELIVERY_TASKS],
  );
}

async function countDeliveries(db: BenchDatabase, merchantId: string, status?: string): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    'select count(*)::int as count from webhook_deliveries where merchant_id = $1 and ($2::text is null or status = $2)',
    [merchantId, status ?? null],
  );
  return rows[0]?.count ?? 0;
}

/** Adds `count` jobs of `task` in one statement, as graphile-worker's add_jobs does in bulk. */
async function addJobs(db: BenchDatabase, task: string, count: number): Promise<void> {
  await db.query(
    `select count(*) from graphile_worker.add_jobs(array(
       select row($1::text, '{}'::json, null, null, null, null, null, null)::graphile_worker.job_spec
       from generate_series(1, $2)))`,
    [task, count],
  );
}

/**
 * First jobs of a freshly started worker, run before it is ever paused. graphile-worker 0.17.3
 * caches the promise of its first query (the ids of its tasks); a worker frozen while that
 * query connects finds its connect timed out when it runs again, keeps the rejected promise,
 * and never fetches a job after that. So the worker runs these to completion (its task ids
 * are then cached as values, and its pool is open) before the first pause.
 */
export async function primeWorker(ctx: WorkerContext): Promise<void> {
  await addJobs(ctx.db, JOB_TASK, WARM_JOBS);
  const { remaining } = await pollUntilZero(() => countJobs(ctx.db, JOB_TASK), DRAIN_TIMEOUT_MS);
  if (remaining > 0) throw new Error(`a new worker left ${remaining} of ${WARM_JOBS} jobs undone`);
  ctx.worker.pause();
}

/** Runs `count` jobs, unmeasured, and leaves the worker paused. */
async function warmJobs(ctx: WorkerContext, count: number): Promise<void> {
  ctx.worker.pause();
  await addJobs(ctx.db, JOB_TASK, count);
  ctx.worker.resume();
  const { remaining } = await pollUntilZero(() => countJobs(ctx.db, JOB_TASK), DRAIN_TIMEOUT_MS);
  ctx.worker.pause();
  if (remaining > 0) throw new Error(`the worker left ${remaining} of ${count} warm-up jobs undone`);
}

export async function jobsPhase(ctx: WorkerContext, roundNumber: number, jobs: number): Promise<JobsPhaseResult> {
  await ctx.db.reset();
  await warmJobs(ctx, WARM_JOBS);
  // Paused: all the jobs are in the queue before the worker may take the first.
  await addJobs(ctx.db, JOB_TASK, jobs);
  const window = await CpuWindow.open(ctx);
  const startedAt = performance.now();
  ctx.worker.resume();
  const { remaining, at } = await pollUntilZero(() => countJobs(ctx.db, JOB_TASK), DRAIN_TIMEOUT_MS);
  const cpu = await window.close(jobs - remaining);
  ctx.worker.pause();
  const elapsedMs = at - startedAt;
  return {
    round: roundNumber,
    task: JOB_TASK,
    jobs,
    elapsedMs: Math.round(elapsedMs),
    throughput: Math.round(((jobs - remaining) / elapsedMs) * 1000),
    left: remaining,
    cpu,
  };
}

/** Creates payments for the webhook merchant through the API, closed loop, `count` of them. */
function createPayments(ctx: WorkerContext, count: number) {
  return ctx.loadgen.run({
    mode: 'closed',
    port: ctx.server.port,
    connections: ctx.clients,
    durationMs: CREATE_TIMEOUT_MS,
    authorization: `Bearer ${ctx.db.webhookSecretKey}`,
    requestsMax: count,
    drainTimeoutMs: LOADGEN_DRAIN_TIMEOUT_MS,
  });
}

export async function webhooksPhase(ctx: WorkerContext, roundNumber: number, deliveries: number): Promise<WebhooksPhaseResult> {
  const merchantId = ctx.db.webhookMerchantId;
  // The webhook tables keep the statistics of the previous phase's deliveries through the
  // truncation, as a production database has statistics. A bench database younger than
  // autovacuum's first pass has none: the planner then guessed, and read each delivery through
  // an index that scans every delivery of the merchant (quadratic in the phase's size).
  await ctx.db.query('analyze webhook_deliveries, webhook_endpoints, webhook_delivery_attempts');
  await ctx.db.reset();
  ctx.worker.pause();
  await ctx.receiver.take();
  const creation = await createPayments(ctx, deliveries);
  const created = await countDeliveries(ctx.db, merchantId);
  const jobs = await countJobs(ctx.db, DELIVERY_TASKS);
  // Like every measured phase, the drain starts without the dirty pages of what came before.
  await ctx.db.query('checkpoint');
  const startedAt = performance.now();
  ctx.worker.resume();
  const warm = Math.min(Math.floor(created / 2), Math.max(WARM_DELIVERIES_MIN, Math.round(created * WARM_DELIVERIES_SHARE)));
  await pollUntilAtMost(() => countDeliveries(ctx.db, merchantId, 'pending'), created - warm, DRAIN_TIMEOUT_MS);
  const window = await CpuWindow.open(ctx);
  // Read after the window opened: what was delivered meanwhile costs the window, not its count.
  const pendingAtOpen = await countDeliveries(ctx.db, merchantId, 'pending');
  const { remaining, at } = await pollUntilZero(() => countDeliveries(ctx.db, merchantId, 'pending'), DRAIN_TIMEOUT_MS);
  // A job's completion (graphile-worker deleting it) follows its delivery's record; that work
  // counts in the CPU per delivery, not in the time.
  await pollUntilZero(() => countJobs(ctx.db, DELIVERY_TASKS), JOBS_SETTLE_TIMEOUT_MS);
  const cpu = await window.close(pendingAtOpen - remaining);
  ctx.worker.pause();
  const elapsedMs = at - startedAt;
  const { rows } = await ctx.db.query<{ succeeded: number; attempts: number }>(
    `select (count(*) filter (where status = 'succeeded'))::int as succeeded, coalesce(sum(attempts), 0)::int as attempts
     from webhook_deliveries where merchant_id = $1`,
    [merchantId],
  );
  const arrivals = await ctx.receiver.take();
  return {
    round: roundNumber,
    deliveries: created,
    jobs,
    creation: { throughput: creation.throughput, ok: creation.ok, errors: creation.errors },
    elapsedMs: Math.round(elapsedMs),
    throughput: Math.round(((created - remaining) / elapsedMs) * 1000),
    succeeded: rows[0]?.succeeded ?? 0,
    attempts: rows[0]?.attempts ?? 0,
    received: arrivals.ids.length + arrivals.unrecorded,
    duplicates: arrivals.ids.length - new Set(arrivals.ids).size,
    left: remaining,
    cpu,
  };
}

/** Least-squares slope of y over x. */
function slope(points: { x: number; y: number }[]): number {
  if (points.length < 2) return 0;
  const meanX = points.reduce((sum, point) => sum + point.x, 0) / points.length;
  const meanY = points.reduce((sum, point) => sum + point.y, 0) / points.length;
  let covariance = 0;
  let variance = 0;
  for (const point of points) {
    covariance += (point.x - meanX) * (point.y - meanY);
    variance += (point.x - meanX) ** 2;
  }
  return variance > 0 ? covariance / variance : 0;
}

export async function sustainedPhase(ctx: WorkerContext, rate: number, durationS: number, drainWaitS: number): Promise<SustainedResult> {
  const merchantId = ctx.db.webhookMerchantId;
  await ctx.db.reset();
  await ctx.receiver.take();
  ctx.worker.resume();
  const window = await CpuWindow.open(ctx);
  const startedAt = performance.now();
  const depth: SustainedResult['depth'] = [];
  // One sample a second, at whole seconds from the start, through the phase and the drain after it.
  let sampling = true;
  let wake = () => {};
  const sampler = (async () => {
    for (let second = 0; sampling && second <= durationS + drainWaitS + LOADGEN_DRAIN_TIMEOUT_MS / 1000; second++) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, startedAt + second * 1000 - performance.now()));
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      if (!sampling) break;
      const deliveries = await countDeliveries(ctx.db, merchantId, 'pending');
      depth.push({ atS: round((performance.now() - startedAt) / 1000, 2), deliveries });
    }
  })();
  const api = await ctx.loadgen.run({
    mode: 'open',
    port: ctx.server.port,
    connections: ctx.clients,
    durationMs: durationS * 1000,
    rate,
    authorization: `Bearer ${ctx.db.webhookSecretKey}`,
    requestsMax: Math.ceil(rate * durationS * 1.5),
    drainTimeoutMs: LOADGEN_DRAIN_TIMEOUT_MS,
    queueMax: Math.ceil(rate * BACKLOG_SECONDS_MAX),
  });
  const loadEndedAt = performance.now();
  const drained = await pollUntilZero(() => countDeliveries(ctx.db, merchantId, 'pending'), drainWaitS * 1000);
  if (drained.remaining === 0) await pollUntilZero(() => countJobs(ctx.db, DELIVERY_TASKS), JOBS_SETTLE_TIMEOUT_MS);
  sampling = false;
  wake();
  await sampler;
  const deliveries = await countDeliveries(ctx.db, merchantId);
  const cpu = await window.close(deliveries - drained.remaining);
  ctx.worker.pause();

  const arrivals = await ctx.receiver.take();
  const { rows } = await ctx.db.query<{ id: string; created_ms: number }>(
    'select id, (extract(epoch from created_at) * 1000)::float8 as created_ms from events where merchant_id = $1',
    [merchantId],
  );
  const createdAt = new Map(rows.map((row) => [row.id, row.created_ms]));
  const latenciesUs: number[] = [];
  const seen = new Set<string>();
  arrivals.ids.forEach((id, index) => {
    const created = createdAt.get(id);
    if (created === undefined || seen.has(id)) return;
    seen.add(id);
    latenciesUs.push(((arrivals.times[index] as number) - created) * 1000);
  });
  const during = depth.filter((sample) => sample.atS <= durationS + 0.5);
  const slopePerS = round(slope(during.map((sample) => ({ x: sample.atS, y: sample.deliveries }))), 1);
  const finalDepth = during.at(-1)?.deliveries ?? 0;
  return {
    rate,
    durationS,
    api: { throughput: api.throughput, ok: api.ok, latency: api.latency, errors: api.errors, overloaded: api.overloaded },
    depth,
    slopePerS,
    grows: slopePerS > rate * GROWTH_SHARE && finalDepth > GROWTH_FLOOR_DELIVERIES,
    deliveries,
    delivered: seen.size,
    drainS: drained.remaining === 0 ? round((drained.at - loadEndedAt) / 1000, 2) : undefined,
    latency: summarize(latenciesUs),
    cpu,
  };
}

/** Registers the webhook merchant's one endpoint, at the receiver, through the API as a merchant would. */
export async function registerEndpoint(ctx: { server: ApiServer; db: BenchDatabase; receiver: Receiver }): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${ctx.server.port}/v1/webhook_endpoints`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${ctx.db.webhookSecretKey}`,
      'idempotency-key': `bench-endpoint-${Date.now()}`,
      'content-type': 'application/json',
    },
    body: JSON.stringify({ url: ctx.receiver.url, enabled_events: ['*'] }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await response.json()) as { id?: string };
  if (response.status !== 200 || !body.id)
    throw new Error(`could not register the webhook endpoint: ${response.status} ${JSON.stringify(body)}`);
  return body.id;
}
