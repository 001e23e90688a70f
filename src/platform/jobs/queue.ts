/**
 * Adding jobs. Always inside the transaction of the change that causes the job, so a job
 * exists exactly when its cause committed (graphile-worker keeps jobs in PostgreSQL).
 */
import type { Queryable } from '../db/pool.js';
import { TRACE_PAYLOAD_KEY, traceCarrier } from '../observability/tracing.js';

/** The payload with the current trace context, so the job's run continues the trace that added it. */
function withTraceContext(payload: Record<string, unknown>): Record<string, unknown> {
  const carrier = traceCarrier();
  return Object.keys(carrier).length > 0 ? { ...payload, [TRACE_PAYLOAD_KEY]: carrier } : payload;
}

export interface JobOptions {
  runAt?: Date;
  maxAttempts?: number;
  /** A job with the same key replaces the waiting one instead of doubling it. */
  jobKey?: string;
  /** `replace` (default) moves the waiting job to the new run_at; `preserve_run_at` keeps its time. */
  jobKeyMode?: 'replace' | 'preserve_run_at';
  queueName?: string;
  priority?: number;
}

export async function addJob(db: Queryable, task: string, payload: Record<string, unknown>, options: JobOptions = {}): Promise<void> {
  await db.query({
    name: 'jobs_add_job',
    text: `select graphile_worker.add_job($1, $2::json, queue_name => $3, run_at => $4, max_attempts => $5,
             job_key => $6, priority => $7, job_key_mode => $8)`,
    values: [
      task,
      JSON.stringify(withTraceContext(payload)),
      options.queueName ?? null,
      options.runAt ?? null,
      options.maxAttempts ?? null,
      options.jobKey ?? null,
      options.priority ?? null,
      options.jobKeyMode ?? 'replace',
    ],
  });
}

/**
 * Removes the job with this key that has not run yet (graphile-worker's remove_job: a job running
 * now keeps running, and will not be retried). For a job whose cause went away in this
 * transaction, so that no worker spends a transaction finding there is nothing to do.
 */
export async function removeJob(db: Queryable, jobKey: string): Promise<void> {
  await db.query({ name: 'jobs_remove_job', text: 'select graphile_worker.remove_job($1)', values: [jobKey] });
}

/**
 * SQL for job rows a statement writes into graphile-worker's job table itself, as add_jobs writes
 * them with its defaults (25 attempts, priority 0, no queue, no flags): for batch statements whose
 * jobs need none of add_jobs' other work (see sales/batch-sql.ts writeHolds for what that costs).
 * The version is pinned (package.json). The task's row must exist: migrateJobs adds one for each
 * task written this way, and without it the statement fails on the missing task_id.
 *
 * `task` is an SQL expression of the task's identifier; `payload`, `runAt` and `key` (null when
 * omitted) are expressions over the rows of `from` (a FROM clause, with WHERE or GROUP BY).
 */
export function insertJobsSql(job: { task: string; payload: string; runAt: string; key?: string; from: string }): string {
  return `insert into graphile_worker._private_jobs (task_id, payload, run_at, max_attempts, key, priority)
             select (select id from graphile_worker._private_tasks where identifier = ${job.task}),
                    ${job.payload}, ${job.runAt}, 25, ${job.key ?? 'null'}, 0
             ${job.from}`;
}

/**
 * WITH queries that remove the jobs whose keys a query yields (`keys`: one column named key), as
 * graphile-worker's remove_job removes one, for a statement that removes many at once: a job
 * not locked (or whose lock is older than the 4 hours after which graphile-worker frees it) is
 * deleted; one a worker holds now keeps running, without its key and its retries. Each key is
 * probed by itself (`limit 1`: see sales/batch-sql.ts lockStock), in the default collation: a
 * key made from our ids (`'expire_hold:' || id`) takes their collation "C", and compared in it
 * the key could not use graphile-worker's index on key, so every probe scanned the whole job
 * table (every pending expiry of a surge). Equality is byte equality in both collations, so
 * the answer is the same. Named `<name>_found`, `<name>`
 * (the deleted) and `<name>_disarmed`; a modifying WITH query runs whether or not it is read.
 */
export function removeJobsCtes(name: string, keys: string): string {
  return `${name}_found as (
             select j.id, j.locked_at
             from (${keys}) as k
             cross join lateral (select id, locked_at from graphile_worker._private_jobs where key = k.key collate "default" limit 1) j),
           ${name} as (
             delete from graphile_worker._private_jobs j using ${name}_found f
             where j.id = f.id and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
             returning 1),
           ${name}_disarmed as (
             update graphile_worker._private_jobs j set key = null, attempts = j.max_attempts, updated_at = now()
             from ${name}_found f
             where j.id = f.id and f.locked_at >= now() - interval '4 hours'
             returning 1)`;
}

export interface QueueRow {
  task: string;
  waiting: number;
  scheduled: number;
  running: number;
  retrying: number;
  failed: number;
  oldest_waiting_seconds: number | null;
}

/**
 * The queue by task: waiting (due, unlocked), scheduled (due later), running (locked),
 * retrying (failed at least once, will run again) and failed (out of attempts, kept for replay).
 * graphile-worker counts an attempt when a worker takes the job, so a running job's attempts
 * say nothing about failures: retrying and failed count unlocked jobs only.
 */
export async function selectQueue(db: Queryable): Promise<QueueRow[]> {
  const { rows } = await db.query<QueueRow>(
    `select task_identifier as task,
            count(*) filter (where locked_at is null and run_at <= now() and attempts < max_attempts)::int as waiting,
            count(*) filter (where locked_at is null and run_at > now() and attempts < max_attempts)::int as scheduled,
            count(*) filter (where locked_at is not null)::int as running,
            count(*) filter (where locked_at is null and attempts > 0 and attempts < max_attempts)::int as retrying,
            count(*) filter (where locked_at is null and attempts >= max_attempts)::int as failed,
            extract(epoch from now() - min(run_at) filter (where locked_at is null and run_at <= now()
              and attempts < max_attempts))::float8 as oldest_waiting_seconds
     from graphile_worker.jobs
     group by task_identifier
     order by task_identifier`,
  );
  return rows;
}

export function formatQueue(rows: QueueRow[]): string {
  if (rows.length === 0) return 'no jobs';
  const header = ['task', 'waiting', 'scheduled', 'running', 'retrying', 'failed', 'oldest waiting'];
  const lines = rows.map((row) => [
    row.task,
    String(row.waiting),
    String(row.scheduled),
    String(row.running),
    String(row.retrying),
    String(row.failed),
    row.oldest_waiting_seconds === null ? '-' : `${row.oldest_waiting_seconds.toFixed(1)} s`,
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...lines.map((line) => (line[column] as string).length)));
  const format = (cells: string[]) =>
    cells
      .map((cell, column) => (column === 0 ? cell.padEnd(widths[column] as number) : cell.padStart(widths[column] as number)))
      .join('  ');
  return [format(header), ...lines.map(format)].join('\n');
}
