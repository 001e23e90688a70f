/**
 * The jobs sales defines: a hold's expiry, queued in the transaction that takes the stock.
 */
import type { Task, TaskList } from 'graphile-worker';
import type { Pool } from '../platform/db/pool.js';
import { EXPIRE_HOLD_TASK, expireHold } from './holds.js';

export function salesTasks(deps: { pool: Pool }): TaskList {
  const expire: Task = async (payload) => {
    await expireHold(deps.pool, payload as { merchant_id: string; hold_id: string });
  };
  return { [EXPIRE_HOLD_TASK]: expire };
}
