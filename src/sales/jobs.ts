/**
 * The jobs sales defines: a hold's expiry, queued in the transaction that takes the stock, and
 * freeing a paid or expired hold's waiting-room slot, queued in the transaction that ends it.
 */
import type { Task, TaskList } from 'graphile-worker';
import type { Pool } from '../platform/db/pool.js';
import { EXPIRE_HOLD_TASK, expireHold, RELEASE_ADMISSION_TASK } from './holds.js';

export interface SalesTaskDeps {
  pool: Pool;
  /** Frees a ticket's shopper slot in the waiting room (idempotent). */
  releaseAdmission: (saleId: string, ticketId: string) => Promise<unknown>;
}

export function salesTasks(deps: SalesTaskDeps): TaskList {
  const expire: Task = async (payload) => {
    await expireHold(deps.pool, payload as { merchant_id: string; hold_id: string });
  };
  const release: Task = async (payload) => {
    const { sale_id, ticket } = payload as { sale_id: string; ticket: string };
    await deps.releaseAdmission(sale_id, ticket);
  };
  return { [EXPIRE_HOLD_TASK]: expire, [RELEASE_ADMISSION_TASK]: release };
}
