/**
 * The queue as operators see it: selectQueue's counts per task, formatQueue's table, the queue
 * gauges Prometheus scrapes, and `floodgate jobs` run as the real CLI against this file's
 * database. The jobs are in every state at once: due, scheduled, running (held by a real
 * worker), waiting for a retry and failed for good.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { createTestDatabase } from '../../../test/helpers.js';
import { waitUntil } from '../../../test/receiver.js';
import { createMetrics } from '../observability/metrics.js';
import { registerQueueMetrics } from './metrics.js';
import { addJob, formatQueue, type QueueRow, selectQueue } from './queue.js';
import { startWorker } from './runner.js';

const ROOT = path.resolve(import.meta.dirname, '../../..');
// Registered first so that it runs first: the worker stops before the database goes.
let stopWorker = async () => {};
after(() => stopWorker());
const db = await createTestDatabase();
const { pool } = db;

/** Moves a task's jobs as graphile-worker's failJobs would after a failed run. */
async function failOnce(task: string, options: { forGood: boolean }) {
  await pool.query(
    `update graphile_worker._private_jobs
     set attempts = case when $2 then max_attempts else attempts + 1 end, last_error = 'the task failed',
         run_at = case when $2 then run_at else now() + interval '1 hour' end
     where task_id = (select id from graphile_worker._private_tasks where identifier = $1)`,
    [task, options.forGood],
  );
}

// Due now, one of them for ten minutes; due in an hour; failed once, retried in an hour;
// failed for good.
for (let n = 0; n < 3; n++) await addJob(pool, 'q_due', { n });
await addJob(pool, 'q_due', { n: 3 }, { runAt: new Date(Date.now() - 600_000) });
for (let n = 0; n < 2; n++) await addJob(pool, 'q_later', { n }, { runAt: new Date(Date.now() + 3_600_000) });
await addJob(pool, 'q_retry', {});
await failOnce('q_retry', { forGood: false });
await addJob(pool, 'q_dead', {}, { maxAttempts: 3 });
await failOnce('q_dead', { forGood: true });

// Running: a worker holds two jobs, one on its first of 25 attempts and one on its last.
let release: () => void = () => {};
const released = new Promise<void>((resolve) => {
  release = resolve;
});
await addJob(pool, 'q_running', { n: 0 });
await addJob(pool, 'q_running', { n: 1 }, { maxAttempts: 1 });
const worker = await startWorker({
  pool,
  tasks: { q_running: () => released },
  concurrency: 2,
  lockTimeoutMs: 60_000,
  pollIntervalMs: 50,
  log: pino({ level: 'silent' }),
});
stopWorker = async () => {
  release();
  await worker.stop();
};
await waitUntil('the worker runs both jobs', async () => {
  const { rows } = await pool.query(`select 1 from graphile_worker.jobs where task_identifier = 'q_running' and locked_at is not null`);
  return rows.length === 2;
});

const EXPECTED: Record<string, Omit<QueueRow, 'task' | 'oldest_waiting_seconds'>> = {
  q_dead: { waiting: 0, scheduled: 0, running: 0, retrying: 0, failed: 1 },
  q_due: { waiting: 4, scheduled: 0, running: 0, retrying: 0, failed: 0 },
  q_later: { waiting: 0, scheduled: 2, running: 0, retrying: 0, failed: 0 },
  q_retry: { waiting: 0, scheduled: 1, running: 0, retrying: 1, failed: 0 },
  q_running: { waiting: 0, scheduled: 0, running: 2, retrying: 0, failed: 0 },
};

function assertQueue(rows: QueueRow[]) {
  assert.deepEqual(
    rows.map((row) => row.task),
    Object.keys(EXPECTED),
  );
  for (const { task, oldest_waiting_seconds: oldest, ...counts } of rows) {
    assert.deepEqual(counts, EXPECTED[task], task);
    if (task === 'q_due') assert.ok(oldest !== null && oldest >= 600 && oldest < 3_600, `q_due oldest ${oldest}`);
    else assert.equal(oldest, null, task);
  }
}

function floodgate(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', ...args],
      { cwd: ROOT, env: { ...process.env, DATABASE_URL: db.url, FLOODGATE_LOG_LEVEL: 'warn' }, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('the job queue by task', () => {
  test('selectQueue counts each state once: waiting, scheduled, running, retrying, failed', async () => {
    assertQueue(await selectQueue(pool));
  });

  test('formatQueue prints one aligned row per task', async () => {
    const table = formatQueue(await selectQueue(pool)).split('\n');
    assert.equal(table.length, 1 + Object.keys(EXPECTED).length);
    assert.deepEqual(table[0]?.split(/\s{2,}/), ['task', 'waiting', 'scheduled', 'running', 'retrying', 'failed', 'oldest waiting']);
    assert.equal(new Set(table.map((line) => line.length)).size, 1, 'every line as wide as the header');
    const cells = Object.fromEntries(table.slice(1).map((line) => [line.split(/\s+/)[0], line.split(/\s{2,}/).slice(1)]));
    assert.deepEqual(cells.q_running, ['0', '0', '2', '0', '0', '-']);
    assert.deepEqual(cells.q_retry, ['0', '1', '0', '1', '0', '-']);
    assert.match(cells.q_due?.at(-1) ?? '', /^\d+\.\d s$/);
    assert.equal(formatQueue([]), 'no jobs');
  });

  test('the queue gauges report waiting jobs per task and the age of the oldest', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    registerQueueMetrics(metrics, pool);
    const gauge = async (name: string) => {
      const values = (await metrics.registry.getSingleMetric(name)?.get())?.values ?? [];
      return Object.fromEntries(values.map((value) => [value.labels.task, value.value]));
    };
    assert.deepEqual(await gauge('floodgate_jobs_waiting'), { q_dead: 0, q_due: 4, q_later: 0, q_retry: 0, q_running: 0 });
    const oldest = await gauge('floodgate_jobs_oldest_waiting_seconds');
    assert.ok((oldest.q_due ?? 0) >= 600, `q_due oldest ${oldest.q_due}`);
    assert.deepEqual({ ...oldest, q_due: 0 }, { q_dead: 0, q_due: 0, q_later: 0, q_retry: 0, q_running: 0 });
    assert.match(await metrics.registry.metrics(), /floodgate_jobs_waiting\{task="q_due"\} 4/);
  });

  test('`floodgate jobs` prints the table, and `--json` the rows', async () => {
    const [table, json] = await Promise.all([floodgate('jobs'), floodgate('jobs', '--json')]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^task\s+waiting\s+scheduled\s+running\s+retrying\s+failed\s+oldest waiting$/);
    assert.deepEqual(
      lines.slice(1).map((line) => line.split(/\s+/)[0]),
      Object.keys(EXPECTED),
    );
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stdout.trim().split('\n').length, 1, 'one line of JSON');
    assertQueue(JSON.parse(json.stdout));
  });
});
