/**
 * The worker: graphile-worker running our task list, with
 * - a local queue, which fetches jobs in batches (roughly tenfold the throughput of one
 *   fetch per job when the queue is deep), and completions batched the same way;
 * - a lock sweeper: a worker killed with SIGKILL leaves its jobs locked; graphile-worker
 *   would free them only after four hours, so every worker frees jobs locked longer than
 *   `lockTimeoutMs` (longer than any job may run, plus the local queue's hold time);
 * - job metrics from graphile-worker's events.
 * Every loop here has run() (start) and a step the tests can call (sweepLocks).
 */
import { EventEmitter } from 'node:events';
import { Logger, type Runner, run, runMigrations, type TaskList, type WorkerEvents } from 'graphile-worker';
import type { Logger as PinoLogger } from 'pino';
import type { Pool, Queryable } from '../db/pool.js';
import type { Metrics } from '../observability/metrics.js';
import { contextFrom, inSpan, SpanKind, TRACE_PAYLOAD_KEY } from '../observability/tracing.js';

export interface WorkerOptions {
  pool: Pool;
  tasks: TaskList;
  /** graphile-worker crontab lines for periodic tasks. */
  crontab?: string;
  concurrency: number;
  lockTimeoutMs: number;
  pollIntervalMs: number;
  metrics?: Metrics;
  log: PinoLogger;
  /**
   * Called once if the runner stops without stop() having been called: graphile-worker ends its
   * runner when its worker pool or its cron gives up, and from then on no job runs in this
   * process. The process should exit (or start a new worker) so that a supervisor sees it.
   */
  onFailure?: (error: Error) => void;
  /** How long an idle runner may go without fetching before it counts as stalled; see stallWatch. */
  stallAfterMs?: number;
}

// Jobs wait at most this long in a worker's local queue before going back to the database;
// it must stay well below the lock timeout, or the sweeper would free jobs a live worker holds.
export const LOCAL_QUEUE_TTL_MS = 30_000;
// A job's lock dates from its fetch, so its age when it ends is its wait in the local queue
// plus its run. Waits are capped at this share of the lock timeout, which leaves the rest of
// it (three quarters) for the run, however short the timeout is configured.
const LOCAL_QUEUE_TTL_SHARE_OF_LOCK_TIMEOUT = 0.25;

/** How long jobs may wait in the local queue under `lockTimeoutMs`. */
function localQueueTtlMs(lockTimeoutMs: number): number {
  return Math.min(LOCAL_QUEUE_TTL_MS, Math.floor(lockTimeoutMs * LOCAL_QUEUE_TTL_SHARE_OF_LOCK_TIMEOUT));
}
// Fetch this many jobs per query when the queue is deep.
const LOCAL_QUEUE_SIZE = 50;
// Jobs that finish within this many ms of each other are marked complete by one statement (one
// commit) instead of one each: about a third less CPU per job in `npm run bench`, and fewer WAL
// flushes. A finished job stays locked up to this much longer; if its worker dies in that
// window, the job runs again once its lock is freed: the at-least-once that every task already
// allows for (a worker can always die between finishing a job and marking it complete).
const COMPLETE_JOB_BATCH_DELAY_MS = 10;

/**
 * graphile-worker's schema, and a task row for each of `directTasks`: the tasks whose jobs our
 * statements insert into its job table themselves (sales/jobs.ts). graphile-worker adds a task's
 * row with the first job its own functions add or when a worker starts; a statement that finds
 * none fails, so on a new deployment the first sale's first batches would fail and fall back to
 * the single path, one request at a time on the hot item, at the worst moment.
 */
export async function migrateJobs(pool: Pool, directTasks: readonly string[]): Promise<void> {
  await runMigrations({ pgPool: pool, logger: quietLogger() });
  await pool.query('insert into graphile_worker._private_tasks (identifier) select unnest($1::text[]) on conflict do nothing', [
    directTasks,
  ]);
}

/** A job's consumer span attributes (messaging semantic conventions). */
export function jobSpanAttributes(task: string, jobId: string) {
  return {
    'messaging.system': 'graphile_worker',
    'messaging.operation.type': 'process',
    'messaging.destination.name': task,
    'messaging.message.id': jobId,
  };
}

/**
 * Each task runs in a consumer span that continues the trace of the transaction that added the
 * job; the trace context is taken out of the payload before the task sees it.
 */
function traced(tasks: TaskList): TaskList {
  const wrapped: TaskList = {};
  for (const [name, task] of Object.entries(tasks)) {
    wrapped[name] = (payload, helpers) => {
      let body = payload;
      let carrier: unknown;
      if (payload && typeof payload === 'object' && !Array.isArray(payload) && TRACE_PAYLOAD_KEY in payload) {
        const { [TRACE_PAYLOAD_KEY]: found, ...rest } = payload as Record<string, unknown>;
        carrier = found;
        body = rest;
      }
      const attributes = jobSpanAttributes(name, helpers.job.id);
      return inSpan(`process ${name}`, { kind: SpanKind.CONSUMER, attributes, parent: contextFrom(carrier) }, async () =>
        (task as NonNullable<typeof task>)(body, helpers),
      );
    };
  }
  return wrapped;
}

export interface Worker {
  runner: Runner;
  stop(): Promise<void>;
}

export async function startWorker(options: WorkerOptions): Promise<Worker> {
  const events: WorkerEvents = new EventEmitter() as WorkerEvents;
  observe(events, options);
  const runner = await run({
    pgPool: options.pool,
    taskList: traced(options.tasks),
    // An empty crontab would make graphile-worker look for a crontab file.
    crontab: options.crontab || '# no periodic tasks',
    concurrency: options.concurrency,
    pollInterval: options.pollIntervalMs,
    noHandleSignals: true,
    events,
    logger: quietLogger(options.log),
    preset: {
      worker: {
        localQueue: { size: Math.max(LOCAL_QUEUE_SIZE, options.concurrency + 1), ttl: localQueueTtlMs(options.lockTimeoutMs) },
        // Free the locks of jobs that stay locked past the timeout far sooner than 4 hours.
        minResetLockedInterval: Math.max(1_000, Math.floor(options.lockTimeoutMs / 2)),
        maxResetLockedInterval: Math.max(2_000, options.lockTimeoutMs),
        // Record completions and failures through graphile-worker's batcher, which stop()
        // flushes and waits for. Unbatched (its default) they are not awaited: stop() returned
        // while a finished job was still locked, and a process that then closed its pool left
        // it locked, to run a second time once the lock timed out.
        completeJobBatchDelay: COMPLETE_JOB_BATCH_DELAY_MS,
        failJobBatchDelay: 0,
      },
    },
  });
  const sweepEveryMs = Math.max(500, Math.floor(options.lockTimeoutMs / 2));
  const sweeper = setInterval(() => {
    sweepLocks(options.pool, options.lockTimeoutMs).catch((error) => options.log.warn({ err: error }, 'lock sweep failed'));
  }, sweepEveryMs);
  sweeper.unref();
  let stopping = false;
  let failed = false;
  const stoppedByItself = (error: unknown) => {
    if (stopping || failed) return;
    failed = true;
    clearInterval(sweeper);
    clearInterval(watch);
    const failure = error instanceof Error ? error : new Error(`the job runner stopped by itself${error ? `: ${String(error)}` : ''}`);
    options.log.error({ err: failure }, 'job runner stopped: no job will run in this process');
    options.onFailure?.(failure);
  };
  runner.promise.then(() => stoppedByItself(undefined), stoppedByItself);
  const watch = stallWatch(events, options, stoppedByItself);
  return {
    runner,
    async stop() {
      stopping = true;
      clearInterval(sweeper);
      clearInterval(watch);
      // Graceful: running jobs finish; jobs waiting in the local queue are returned unlocked.
      await runner.stop();
    },
  };
}

/**
 * Frees jobs locked longer than the lock timeout: their worker died. Returns the ids of the
 * workers whose jobs were freed.
 */
export async function sweepLocks(db: Queryable, lockTimeoutMs: number): Promise<string[]> {
  const { rows } = await db.query<{ locked_by: string }>(
    `select distinct locked_by from graphile_worker.jobs
     where locked_by is not null and locked_at < now() - make_interval(secs => $1::float8 / 1000)`,
    [lockTimeoutMs],
  );
  const workerIds = rows.map((row) => row.locked_by);
  if (workerIds.length > 0) await db.query('select graphile_worker.force_unlock_workers($1::text[])', [workerIds]);
  return workerIds;
}

/**
 * A runner can stall without stopping: when graphile-worker 0.17's job fetch fails in some ways
 * (a pool connect that times out under load, seen in the drill), its local queue gives up and
 * its runner's promise never settles, so no job runs again in this process and nothing says so.
 * An idle runner fetches at least every poll interval, so one with a free slot that has not
 * fetched for many poll intervals is stalled; a busy one finishes or times out a job within the
 * lock timeout, so one silent for twice that is too. Either counts as stopping by itself.
 */
function stallWatch(events: WorkerEvents, options: WorkerOptions, stalled: (error: Error) => void): NodeJS.Timeout {
  const idleStallMs = options.stallAfterMs ?? Math.max(STALL_MIN_MS, STALL_POLL_INTERVALS * options.pollIntervalMs);
  const checkEveryMs = Math.max(100, Math.min(idleStallMs / 4, 5_000));
  const clock = new StallClock({
    idleStallMs,
    busyStallMs: Math.max(idleStallMs, 2 * options.lockTimeoutMs),
    checkEveryMs,
    concurrency: options.concurrency,
    now: Date.now(),
  });
  events.on('localQueue:getJobs:complete', () => clock.fetched(Date.now()));
  events.on('worker:getJob:empty', () => clock.fetched(Date.now()));
  events.on('job:start', () => clock.started(Date.now()));
  events.on('job:complete', () => clock.completed(Date.now()));
  const timer = setInterval(() => {
    const error = clock.check(Date.now());
    if (error) stalled(error);
  }, checkEveryMs);
  timer.unref();
  return timer;
}

/**
 * The stall watch's clocks, apart from timers so a test can drive them. A check that comes far
 * later than its interval means this process did not run meanwhile (stopped by a signal, a
 * paused VM or container, an event loop blocked by something else): the runner could not have
 * fetched either, so the clocks restart rather than report a stall the next fetch would end.
 */
export class StallClock {
  private running = 0;
  private lastFetch: number;
  private lastActivity: number;
  private lastCheck: number;

  constructor(
    private readonly limits: { idleStallMs: number; busyStallMs: number; checkEveryMs: number; concurrency: number; now: number },
  ) {
    this.lastFetch = limits.now;
    this.lastActivity = limits.now;
    this.lastCheck = limits.now;
  }

  fetched(now: number): void {
    this.lastFetch = now;
    this.lastActivity = now;
  }

  started(now: number): void {
    this.running++;
    this.lastActivity = now;
  }

  completed(now: number): void {
    this.running = Math.max(0, this.running - 1);
    this.lastActivity = now;
  }

  /** The stall to report now, if any. */
  check(now: number): Error | undefined {
    const late = now - this.lastCheck > PAUSED_CHECKS * this.limits.checkEveryMs;
    this.lastCheck = now;
    if (late) {
      this.lastFetch = now;
      this.lastActivity = now;
      return undefined;
    }
    const idle = this.running < this.limits.concurrency;
    const silentMs = now - (idle ? this.lastFetch : this.lastActivity);
    if (silentMs <= (idle ? this.limits.idleStallMs : this.limits.busyStallMs)) return undefined;
    return new Error(`the job runner stalled: no job fetched${idle ? '' : ', started or finished'} for ${silentMs} ms`);
  }
}
// A check this many intervals late means the process itself was not running.
const PAUSED_CHECKS = 3;
// An idle runner that has not fetched for this many poll intervals (and at least STALL_MIN_MS:
// a loaded machine delays timers by seconds) is stalled.
const STALL_POLL_INTERVALS = 20;
const STALL_MIN_MS = 30_000;

function observe(events: WorkerEvents, options: WorkerOptions): void {
  const metrics = options.metrics;
  const started = new WeakMap<object, bigint>();
  events.on('job:start', ({ job }) => started.set(job, process.hrtime.bigint()));
  events.on('job:complete', ({ job, error }) => {
    const start = started.get(job);
    if (!metrics || start === undefined) return;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    metrics.jobDuration.observe({ task: job.task_identifier, outcome: error ? 'error' : 'success' }, seconds);
  });
  events.on('job:error', ({ job, error }) => {
    metrics?.jobFailures.inc({ task: job.task_identifier });
    if (job.attempts < job.max_attempts) metrics?.jobRetries.inc({ task: job.task_identifier });
    options.log.warn({ task: job.task_identifier, jobId: job.id, attempts: job.attempts, err: error }, 'job failed');
  });
  events.on('job:failed', ({ job, error }) => {
    options.log.error({ task: job.task_identifier, jobId: job.id, err: error }, 'job failed permanently');
  });
}

/** graphile-worker logs through ours, one level quieter: its info lines are routine. */
function quietLogger(log?: PinoLogger): Logger {
  return new Logger(() => (level, message, meta) => {
    if (!log) return;
    if (level === 'error') log.error({ meta }, message);
    else if (level === 'warning') log.warn({ meta }, message);
    else log.debug({ meta }, message);
  });
}
