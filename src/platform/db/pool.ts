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
export async function withTransaction<T>(pool: Pool, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('begin');
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
    await client.query('commit');
    return result;
  } catch (error) {
    await client.query('rollback').catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}
