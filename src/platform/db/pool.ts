import pg from 'pg';
import { traceCarrier } from '../observability/tracing.js';

// PostgreSQL returns bigint (int8) and numeric as strings by default. Amounts are minor units
// capped far below 2^53 by the payment domain, so parsing int8 to a JS number is exact.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));

export type Pool = pg.Pool;
export type Client = pg.PoolClient;
/** Something that runs a query: the pool itself or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>;

export interface PoolOptions {
  connectionString: string;
  max: number;
  statementTimeoutMs: number;
  /** How long a caller waits for a free connection before giving up (default 5 s). */
  connectionTimeoutMs?: number;
  applicationName?: string;
}

export function createPool(options: PoolOptions): Pool {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max,
    statement_timeout: options.statementTimeoutMs,
    // Fail fast when the database is unreachable or the pool is saturated, instead of queueing
    // requests behind it without bound; the HTTP edge answers 503 with Retry-After.
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
    application_name: options.applicationName ?? 'floodgate',
    // Notice a peer that vanished without closing (a crashed machine, a cut network).
    keepAlive: true,
  });
  // A client losing its connection must not crash the process: the pool replaces idle ones,
  // and a query in flight fails with its own error.
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/**
 * Runs fn inside one transaction on one pooled connection. Commits when fn returns, rolls back
 * when it throws. Never call out over the network from fn: the transaction would be held open
 * for as long as the remote side takes.
 */
export async function withTransaction<T>(
  pool: Pool,
  fn: (client: Client) => Promise<T>,
  options: { synchronousCommit?: boolean } = {},
): Promise<T> {
  const client = await pool.connect();
  let suspect = false;
  try {
    // One round trip either way (a simple query may hold two statements): on the surge's hot
    // row, every round trip inside the transaction is time the row stays locked.
    await client.query(options.synchronousCommit === false ? 'begin; set local synchronous_commit = off' : 'begin');
    // With tracing on, jobs that database triggers add in this transaction continue its trace
    // (see migrations/008): one more statement per transaction, only then.
    const { traceparent } = traceCarrier();
    if (traceparent) {
      await client.query({
        name: 'trace_set_context',
        text: `select set_config('floodgate.traceparent', $1, true)`,
        values: [traceparent],
      });
    }
    const result = await fn(client);
    await commitReplicated(client);
    return result;
  } catch (error) {
    if (error instanceof SyncReplicationCanceledError) suspect = true;
    else await client.query('rollback').catch(() => {});
    throw error;
  } finally {
    // A connection whose commit was not replicated leads to a server that may be an orphaned
    // primary: it is closed, not reused.
    client.release(suspect ? true : undefined);
  }
}

/**
 * A COMMIT waiting for the synchronous standby that is cancelled (a statement timeout, a
 * cancel request) returns success with only a WARNING: committed locally, maybe never
 * replicated. On an orphaned old primary that row is lost in the failover. Such a commit is
 * not acknowledged: it throws SyncReplicationCanceledError (the edge answers 503; a retry with
 * the same Idempotency-Key goes to the real primary and replays or redoes the work).
 */
async function commitReplicated(client: Client): Promise<void> {
  await replicated(client, () => client.query('commit'));
}

/**
 * Runs fn, one autocommit statement (a request's whole work in one round trip), on one pooled
 * connection, under the same rule as withTransaction's commit: a commit the synchronous standby
 * did not confirm throws SyncReplicationCanceledError, and the connection is closed.
 */
export async function withAutocommit<T>(pool: Pool, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let suspect = false;
  try {
    return await replicated(client, () => fn(client));
  } catch (error) {
    if (error instanceof SyncReplicationCanceledError) suspect = true;
    throw error;
  } finally {
    client.release(suspect ? true : undefined);
  }
}

async function replicated<T>(client: Client, commit: () => Promise<T>): Promise<T> {
  let canceled = false;
  const onNotice = (notice: { message?: string }) => {
    if (notice.message?.startsWith(SYNC_REP_CANCELED)) canceled = true;
  };
  client.on('notice', onNotice);
  let result: T;
  try {
    result = await commit();
  } finally {
    client.off('notice', onNotice);
  }
  if (canceled) throw new SyncReplicationCanceledError();
  return result;
}

const SYNC_REP_CANCELED = 'canceling wait for synchronous replication';

export class SyncReplicationCanceledError extends Error {
  readonly code = SYNC_REPLICATION_CANCELED;
  constructor() {
    super('the commit was not confirmed by the synchronous standby (canceled while waiting): not acknowledged');
    this.name = 'SyncReplicationCanceledError';
  }
}

export const SYNC_REPLICATION_CANCELED = 'floodgate_sync_replication_canceled';
