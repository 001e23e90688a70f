/**
 * The jobs sales defines: a hold's expiry, queued in the transaction that takes the stock, and
 * freeing the waiting-room slots of paid or expired holds, queued in the transaction that ends them.
 */
import type { Task, TaskList } from 'graphile-worker';
import type { Pool } from '../platform/db/pool.js';
import { EXPIRE_HOLD_TASK, expireHold, RELEASE_ADMISSION_TASK } from './holds.js';

/** The tasks whose jobs the sales batches insert into graphile-worker's job table themselves (batch-sql.ts). */
export const DIRECTLY_WRITTEN_TASKS = [EXPIRE_HOLD_TASK, RELEASE_ADMISSION_TASK] as const;

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
    // One ticket (a hold that ended alone) or several (the holds of a batch of payments, see
    // batch-sql.ts convertPaidHolds); a release is idempotent, so a job run again does no harm.
    const { sale_id, ticket, tickets } = payload as { sale_id: string; ticket?: string; tickets?: string[] };
    for (const each of tickets ?? [ticket]) {
      if (typeof each !== 'string') throw new Error(`${RELEASE_ADMISSION_TASK}: malformed payload ${JSON.stringify(payload)}`);
      await deps.releaseAdmission(sale_id, each);
    }
  };
  return { [EXPIRE_HOLD_TASK]: expire, [RELEASE_ADMISSION_TASK]: release };
}
