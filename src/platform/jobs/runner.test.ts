/**
 * The worker: the lock sweeper frees what a dead worker held and nothing a live one holds; a
 * graceful stop lets the running job finish and leaves nothing locked; failures and retries
 * show in the job metrics. Each test runs its own task names, so workers never take another
 * test's jobs.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Counter, Histogram } from 'prom-client';
import { createTestDatabase } from '../../../test/helpers.js';
import { waitUntil } from '../../../test/receiver.js';
import { createPool, type Client as PoolClient } from '../db/pool.js';
import { createMetrics } from '../observability/metrics.js';
import { addJob, type JobOptions } from './queue.js';
import { StallClock, startWorker, sweepLocks, type Worker, type WorkerOptions } from './runner.js';

const { pool, url } = await createTestDatabase();
const log = pino({ level: 'silent' });

interface JobRow {
  id: string;
  task: string;
  attempts: number;
  locked_at: Date | null;
  locked_by: string | null;
  last_error: string | null;
}

async function jobsOf(...tasks: string[]): Promise<JobRow[]> {
  const { rows } = await pool.query<JobRow>(
    `select id, task_identifier as task, attempts, locked_at, locked_by, last_error from graphile_worker.jobs
     where task_identifier = any($1) order by id`,
    [tasks],
  );
  return rows;
}

async function addJobs(task: string, count: number, options: JobOptions = {}) {
  for (let n = 0; n < count; n++) await addJob(pool, task, { n }, options);
}

/** Locks a task's jobs as a worker that took them `ago` and then died would leave them. */
async function lockAs(task: string, workerId: string, ago: string) {
  await pool.query(
    `update graphile_worker._private_jobs set locked_at = now() - $3::interval, locked_by = $2, attempts = attempts + 1
     where task_id = (select id from graphile_worker._private_tasks where identifier = $1)`,
    [task, workerId, ago],
  );
}

/** Runs fn with a started worker, and stops the worker whatever happens. */
async function withWorker(options: Partial<WorkerOptions> & Pick<WorkerOptions, 'tasks'>, fn: (worker: Worker) => Promise<void>) {
  const worker = await startWorker({ pool, concurrency: 1, lockTimeoutMs: 60_000, pollIntervalMs: 50, log, ...options });
  try {
    await fn(worker);
  } catch (error) {
    // The test's own failure is the one to report; stopping is best effort after it.
    await worker.stop().catch(() => {});
    throw error;
  }
  // A worker that cannot stop cleanly is a failure of its own.
  await worker.stop();
}

describe('the lock sweeper', () => {
  test('sweepLocks frees jobs locked longer than the lock timeout, and only those', async () => {
    await addJobs('sweep_dead', 2);
    await addJobs('sweep_live', 1);
    await lockAs('sweep_dead', 'worker_dead', '10 minutes');
    await lockAs('sweep_live', 'worker_live', '5 seconds');

    assert.deepEqual(await sweepLocks(pool, 60_000), ['worker_dead']);
    const [dead1, dead2, live] = await jobsOf('sweep_dead', 'sweep_live');
    for (const job of [dead1, dead2]) assert.deepEqual([job?.locked_at, job?.locked_by], [null, null]);
    assert.equal(live?.locked_by, 'worker_live');
    assert.notEqual(live?.locked_at, null);
    assert.deepEqual(await sweepLocks(pool, 60_000), [], 'nothing left to free');
  });

  test('a running worker sweeps by itself and runs the jobs a dead worker held', async () => {
    await addJobs('sweep_rescued', 2);
    await lockAs('sweep_rescued', 'worker_killed', '1 hour');
    const ran: number[] = [];
    await withWorker(
      { lockTimeoutMs: 1_000, tasks: { sweep_rescued: async (payload) => void ran.push((payload as { n: number }).n) } },
      () => waitUntil('both jobs of the dead worker ran', async () => (await jobsOf('sweep_rescued')).length === 0),
    );
    assert.deepEqual(ran.sort(), [0, 1], 'each once');
  });
});

describe('the local queue and the lock timeout', () => {
  test('jobs a live worker holds in its local queue are not swept from under it: each runs once', async () => {
    // Ten jobs of 300 ms each: one worker that fetched them all would hold the last ones for
    // longer than the 2 s lock timeout, though each job runs far shorter than it.
    const JOBS = 10;
    await addJobs('local_queue', JOBS);
    const runs: number[] = [];
    const tasks = {
      local_queue: async (payload: unknown) => {
        runs.push((payload as { n: number }).n);
        await new Promise((resolve) => setTimeout(resolve, 300));
      },
    };
    await withWorker({ tasks, lockTimeoutMs: 2_000 }, () =>
      withWorker({ tasks, lockTimeoutMs: 2_000 }, () =>
        waitUntil('every job has run', async () => (await jobsOf('local_queue')).length === 0, 30_000),
      ),
    );
    assert.deepEqual(
      runs.sort((a, b) => a - b),
      Array.from({ length: JOBS }, (_, n) => n),
      'each job ran exactly once',
    );
  });
});

describe('stopping a worker', () => {
  test('a graceful stop lets the running job finish and leaves no job locked', async () => {
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const started: number[] = [];
    const finished: number[] = [];
    const tasks = {
      stop_blocking: async (payload: unknown) => {
        started.push((payload as { n: number }).n);
        await released;
        finished.push((payload as { n: number }).n);
      },
    };
    await addJobs('stop_blocking', 4);
    const worker = await startWorker({ pool, tasks, concurrency: 1, lockTimeoutMs: 60_000, pollIntervalMs: 50, log });
    let stopped = false;
    let stopping: Promise<void> | undefined;
    try {
      await waitUntil('the first job runs', () => started.length === 1);
      stopping = worker.stop().then(() => {
        stopped = true;
      });
      // The stop waits for the running job: several round trips later it has not finished.
      for (let n = 0; n < 5; n++) await pool.query('select 1');
      assert.equal(stopped, false);
      assert.deepEqual(finished, []);
    } finally {
      release();
      await (stopping ?? worker.stop());
    }
    assert.equal(stopped, true);
    assert.deepEqual(finished, started, 'the running job finished');
    assert.equal(started.length, 1, 'no job started after the stop');
    const left = await jobsOf('stop_blocking');
    assert.equal(left.length, 3, `the finished job is gone, the others wait: ${JSON.stringify(left)}`);
    for (const job of left) assert.deepEqual([job.locked_at, job.locked_by, job.attempts], [null, null, 0]);
  });
});

const matches = (labels: Record<string, string>) => (value: { labels: Record<string, unknown> }) =>
  Object.entries(labels).every(([name, label]) => value.labels[name] === label);

async function counter(metric: Counter<'task'>, labels: Record<string, string>) {
  return (await metric.get()).values.find(matches(labels))?.value;
}

/** How many observations a histogram has with these labels. */
async function observations(metric: Histogram<'task' | 'outcome'>, labels: Record<string, string>) {
  const counts = (await metric.get()).values.filter((value) => value.metricName?.endsWith('_count'));
  return counts.find(matches(labels))?.value;
}

describe('job metrics', () => {
  test('the duration histogram, failures and retries move when a task fails', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    await addJobs('metrics_ok', 2);
    await addJobs('metrics_fail', 1, { maxAttempts: 1 });
    await addJobs('metrics_fail', 1, { maxAttempts: 5 });
    const tasks = {
      metrics_ok: async () => {},
      metrics_fail: async () => {
        throw new Error('the task failed');
      },
    };
    await withWorker({ tasks, metrics, concurrency: 2 }, () =>
      waitUntil('every job has run once', async () => {
        const jobs = await jobsOf('metrics_ok', 'metrics_fail');
        return jobs.length === 2 && jobs.every((job) => job.last_error !== null);
      }),
    );
    assert.equal(await counter(metrics.jobFailures, { task: 'metrics_fail' }), 2);
    assert.equal(await counter(metrics.jobFailures, { task: 'metrics_ok' }), undefined);
    assert.equal(await counter(metrics.jobRetries, { task: 'metrics_fail' }), 1, 'only the job with attempts left is retried');
    assert.equal(await observations(metrics.jobDuration, { task: 'metrics_fail', outcome: 'error' }), 2);
    assert.equal(await observations(metrics.jobDuration, { task: 'metrics_ok', outcome: 'success' }), 2);
    assert.equal(await observations(metrics.jobDuration, { task: 'metrics_ok', outcome: 'error' }), undefined);
  });
});

describe('a runner that stalls without stopping', () => {
  test('an idle runner that cannot fetch is reported as stopped by itself; a healthy idle one is not', async () => {
    // Its own pool of two, one of which the runner keeps for LISTEN: taking the other makes
    // every fetch wait, as a pool that times out under load does (the drill's stall), without
    // touching the shared pool.
    const small = createPool({ connectionString: url, max: 2, statementTimeoutMs: 30_000, connectionTimeoutMs: 60_000 });
    const failures: Error[] = [];
    const worker = await startWorker({
      pool: small,
      tasks: { stall_probe: async () => {} },
      concurrency: 1,
      lockTimeoutMs: 60_000,
      pollIntervalMs: 50,
      stallAfterMs: 1_000,
      log,
      onFailure: (error) => failures.push(error),
    });
    const held: PoolClient[] = [];
    try {
      // Healthy and idle for three stall periods: it fetches every poll interval.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      assert.equal(failures.length, 0, 'a healthy idle runner is not stalled');

      held.push(await small.connect());
      await waitUntil('the stall is reported', () => failures.length > 0, 10_000);
      assert.equal(failures.length, 1);
      assert.match(String(failures[0]?.message), /stalled: no job fetched for \d+ ms/);
    } finally {
      for (const client of held) client.release();
      // A stalled runner may not stop cleanly (that is what stalled means); the process it
      // runs in exits instead (onFailure). Here it gets a few seconds, then the test goes on.
      const bounded = (work: Promise<unknown>) =>
        Promise.race([work.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
      await bounded(worker.stop());
      await bounded(small.end());
    }
  });
});

describe('the stall watch clock', () => {
  const limits = { idleStallMs: 30_000, busyStallMs: 60_000, checkEveryMs: 5_000, concurrency: 2 };

  test('an idle runner silent past the idle limit is stalled; a busy one past the busy limit', () => {
    const idle = new StallClock({ ...limits, now: 0 });
    for (let now = 5_000; now <= 30_000; now += 5_000) assert.equal(idle.check(now), undefined, `not yet at ${now} ms`);
    assert.match(String(idle.check(35_000)?.message), /stalled: no job fetched for 35000 ms/);

    const busy = new StallClock({ ...limits, now: 0 });
    busy.started(0);
    busy.started(0);
    for (let now = 5_000; now <= 60_000; now += 5_000) assert.equal(busy.check(now), undefined, `not yet at ${now} ms`);
    assert.match(String(busy.check(65_000)?.message), /no job fetched, started or finished for 65000 ms/);
  });

  test('fetches and job activity keep it healthy', () => {
    const clock = new StallClock({ ...limits, now: 0 });
    for (let now = 5_000; now <= 120_000; now += 5_000) {
      if (now % 20_000 === 0) clock.fetched(now);
      assert.equal(clock.check(now), undefined, `healthy at ${now} ms`);
    }
  });

  test('a check far later than its interval (the process was stopped or paused) restarts the clocks instead of reporting', () => {
    const clock = new StallClock({ ...limits, now: 0 });
    clock.fetched(4_000);
    assert.equal(clock.check(5_000), undefined);
    // SIGSTOP for 40 s, then SIGCONT: the next check comes 40 s late.
    assert.equal(clock.check(45_000), undefined, 'a pause is not a stall');
    // The runner then gets a whole stall period from the resume.
    for (let now = 50_000; now <= 75_000; now += 5_000) assert.equal(clock.check(now), undefined, `not yet at ${now} ms`);
    assert.match(String(clock.check(80_000)?.message), /for 35000 ms/);
  });
});
