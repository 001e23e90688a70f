/**
 * Housekeeping of idempotency keys: expired keys are deleted in bounded batches, and keys whose
 * request died holding the lock are unlocked, so a retry resumes them at their recovery point.
 */
import type { Task, TaskList } from 'graphile-worker';
import type { Pool, Queryable } from '../db/pool.js';

export const CLEANUP_TASK = 'cleanup_idempotency_keys';
export const UNLOCK_TASK = 'unlock_stuck_idempotency_keys';

// Small enough that one delete holds its locks briefly; the loop takes the rest.
export const CLEANUP_BATCH_MAX = 1_000;
// A run stops after this many batches so one job cannot monopolise a worker; the next run goes on.
const CLEANUP_BATCHES_PER_RUN_MAX = 100;

export async function deleteExpiredKeys(db: Queryable, batchSize = CLEANUP_BATCH_MAX): Promise<number> {
  let deleted = 0;
  for (let batch = 0; batch < CLEANUP_BATCHES_PER_RUN_MAX; batch++) {
    const { rowCount } = await db.query(
      `delete from idempotency_keys where ctid in (
         select ctid from idempotency_keys where expires_at < now() limit $1 for update skip locked)`,
      [batchSize],
    );
    deleted += rowCount ?? 0;
    if ((rowCount ?? 0) < batchSize) break;
  }
  return deleted;
}

export async function unlockStuckKeys(db: Queryable, lockTimeoutMs: number): Promise<number> {
  const { rowCount } = await db.query(
    `update idempotency_keys set locked_at = null
     where locked_at < now() - make_interval(secs => $1::float8 / 1000) and response_status is null`,
    [lockTimeoutMs],
  );
  return rowCount ?? 0;
}

export function idempotencyTasks(deps: { pool: Pool; lockTimeoutMs: number }): TaskList {
  const cleanup: Task = async () => {
    await deleteExpiredKeys(deps.pool);
  };
  const unlock: Task = async () => {
    await unlockStuckKeys(deps.pool, deps.lockTimeoutMs);
  };
  return { [CLEANUP_TASK]: cleanup, [UNLOCK_TASK]: unlock };
}

export const IDEMPOTENCY_CRONTAB = [`*/5 * * * * ${CLEANUP_TASK} ?max=1`, `* * * * * ${UNLOCK_TASK} ?max=1`].join('\n');
