/**
 * Group commit for requests that each carry an idempotency key and whose batch is written by
 * one statement (payment creations, orders). What every such batch must do the same way:
 *
 * - a key that appears twice in one batch is written once; the later copy runs alone after the
 *   batch (and replays or is refused there, like any retry);
 * - if the batch's write fails as a whole (a bad row, the database gone), nothing of it
 *   committed, and every request runs alone and meets its own outcome: one bad request never
 *   fails the others;
 * - except a commit the synchronous standby did not confirm: it committed here, maybe not on
 *   the standby, and a request that ran alone now would find its key and replay it,
 *   acknowledging what a failover may lose. Every request of the batch fails instead (503, as
 *   withTransaction's callers do); its retry reaches the real primary.
 */
import { GroupCommit } from './group-commit.js';
import { SyncReplicationCanceledError } from './pool.js';

/** The scope of an idempotency key: keys are unique per merchant and kind of API key. */
export interface KeyedWrite {
  merchantId: string;
  keyKind: 'secret' | 'publishable';
  key: string;
  fingerprint: Buffer;
}

export interface KeyedBatchOptions<Request extends KeyedWrite, Outcome> {
  /** The group commit's name: one group per node, a batch may mix merchants. */
  group: string;
  windowMs: number;
  batchMax: number;
  maxRunning: number;
  onBatch?: (size: number) => void;
  /** The outcome that sends a request down its single path. */
  single: Outcome;
  /** Writes a batch whose keys are distinct; answers in its order. */
  write: (batch: Request[]) => Promise<Outcome[]>;
}

export function keyedBatch<Request extends KeyedWrite, Outcome>(
  options: KeyedBatchOptions<Request, Outcome>,
): (request: Request) => Promise<Outcome> {
  const run = async (batch: Request[]): Promise<Outcome[]> => {
    const seen = new Set<string>();
    const firsts = batch.map((request) => {
      const scoped = `${request.merchantId}\u0000${request.keyKind}\u0000${request.key}`;
      if (seen.has(scoped)) return false;
      seen.add(scoped);
      return true;
    });
    const writes = batch.filter((_, index) => firsts[index]);
    let written: Outcome[];
    try {
      written = await options.write(writes);
    } catch (error) {
      if (error instanceof SyncReplicationCanceledError) throw error;
      return batch.map(() => options.single);
    }
    let next = 0;
    return firsts.map((first) => (first ? (written[next++] as Outcome) : options.single));
  };
  const commits = new GroupCommit<Request, Outcome>({
    windowMs: options.windowMs,
    batchMax: options.batchMax,
    maxRunning: options.maxRunning,
    run: (_group, batch) => run(batch),
    onBatch: options.onBatch,
  });
  return (request) => commits.submit(options.group, request);
}
