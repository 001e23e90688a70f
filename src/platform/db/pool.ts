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
  /** How long a session keeps its plans before planning again at the tables' sizes of then (default PLAN_REFRESH_MS). */
  planRefreshMs?: number;
}

/**
 * Each pooled session plans a prepared statement once and keeps that plan. Our statements are
 * named (prepared once per connection), and the hot path's are large batch statements (a dozen
 * CTEs over unnested arrays) whose plans do not depend on the values: PostgreSQL's default
 * nevertheless re-plans them on every execution, because a generic plan's estimated cost comes
 * out above a custom plan's. Measured on a surge's checkouts (bench/README.md, the thirteenth
 * session), planning was a third of the batch statements' time and this setting removed most of
 * it with the same execution time. Every partial index's predicate is written as a literal in
 * the statements that use it, so a generic plan can use it too. An operator's own PGOPTIONS
 * comes after ours and wins; `options` in the connection string replaces ours (node-postgres
 * lets the URL's parameters override the pool's).
 *
 * A plan kept is a plan made at the tables' sizes of the moment it was made: made while a table
 * was near empty (a new database's first sale, or the bench's tables just truncated), it scans
 * that table whole, and keeps scanning it while the surge fills it with thousands of rows a
 * second, until autovacuum's next analyze invalidates it (up to a minute, autovacuum_naptime).
 * Measured: a batch update by key planned on an empty table took 10.4 ms per execution once the
 * table held 50,000 rows, 0.23 ms planned again. So each session drops its plans (`discard
 * plans`: the prepared statements stay) once they are PLAN_REFRESH_MS old, on the first use
 * after that, and plans each statement again when it next runs.
 *
 * And no JIT compilation. PostgreSQL compiles a statement whose plan's estimated cost passes
 * `jit_above_cost` (100,000), on every execution, and a kept plan keeps that decision. None of
 * our statements runs long enough to gain from it, and the one that passed the mark, the stock
 * gauge's read of every hold line of a sale's items (src/sales/metrics.ts), took 82 ms a scrape,
 * 76 of them compiling, and 9.9 ms without (bench/README.md, the twenty-fourth session).
 */
const SESSION_OPTIONS = ['-c plan_cache_mode=force_generic_plan -c jit=off', process.env.PGOPTIONS].filter(Boolean).join(' ');

/**
 * Ten seconds: at the 600 checkouts a second the 2-core machine carries, `idempotency_keys`
 * grows by about 18,000 rows (three keys a checkout) in that time. Planning again is cheap at
 * this period: in a quick checkouts bench it added about 70 plannings to the 770 a run makes
 * anyway, and the run's total planning time stayed within its spread (844 and 995 ms with it,
 * 976 and 1,128 without; bench/README.md, the fourteenth session).
 */
export const PLAN_REFRESH_MS = 10_000;

export function createPool(options: PoolOptions): Pool {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    options: SESSION_OPTIONS,
    max: options.max,
    statement_timeout: options.statementTimeoutMs,
    // Fail fast when the database is unreachable or the pool is saturated, instead of queueing
    // requests behind it without bound; the HTTP edge answers 503 with Retry-After.
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
    application_name: options.applicationName ?? 'floodgate',
    // Notice a peer that vanished without closing (a crashed machine, a cut network).
    keepAlive: true,
    // Queries issued before the previous one's answer go out at once, each with its own Sync,
    // and are answered in order: a transaction's BEGIN travels with its first statement
    // (withTransaction), one round trip fewer per transaction. A caller that awaits each query
    // sees no difference.
    pipeline: true,
  });
  // A client losing its connection must not crash the process: the pool replaces idle ones,
  // and a query in flight fails with its own error.
  pool.on('error', () => {});
  const plannedAt = new WeakMap<pg.PoolClient, number>();
  const refreshMs = options.planRefreshMs ?? PLAN_REFRESH_MS;
  pool.on('connect', (client) => {
    client.on('error', () => {});
    plannedAt.set(client, performance.now());
  });
  pool.on('acquire', (client) => {
    const now = performance.now();
    if (now - (plannedAt.get(client) ?? now) < refreshMs) return;
    plannedAt.set(client, now);
    // Not awaited: it goes out ahead of the caller's first statement (pipelined, or queued on
    // the client), outside any transaction. Should it fail, the connection is broken and the
    // caller's statement fails with its own error.
    client.query('discard plans').catch(() => {});
  });
  return pool;
}

export interface TransactionOptions {
  /** false: the commit does not wait for its WAL flush (a hold batch's; see hold-batches.ts). */
  synchronousCommit?: boolean;
  /**
   * Plan the transaction's statements without sequential scans (`enable_seqscan = off`), for a
   * batch whose every lookup is by key. Its plans are kept (see createPool), and a plan made
   * while a table was near empty (a new deployment's first sale, or the bench's phases, which
   * start on truncated tables) scans that table whole on every batch while the surge grows it,
   * until the plan is refreshed. A table no index can serve is still scanned.
   */
  keyedLookups?: boolean;
  /**
   * Plan the transaction's statements with index scans only: no sequential and no bitmap scans
   * (`enable_seqscan`, `enable_bitmapscan` off), for a statement that must read a queue's head
   * in index order whatever the table's statistics say (see webhooks/delivery-sql.ts
   * takeWaitingBatches). Implies keyedLookups.
   */
  indexScansOnly?: boolean;
}

/** BEGIN with the transaction's settings, sent as one query (no round trip of their own). */
function beginStatement(options: TransactionOptions): string {
  let text = 'begin';
  if (options.synchronousCommit === false) text += '; set local synchronous_commit = off';
  if (options.keyedLookups || options.indexScansOnly) text += '; set local enable_seqscan = off';
  if (options.indexScansOnly) text += '; set local enable_bitmapscan = off';
  return text;
}

/**
 * Runs fn inside one transaction on one pooled connection. Commits when fn returns, rolls back
 * when it throws. Never call out over the network from fn: the transaction would be held open
 * for as long as the remote side takes.
 */
export async function withTransaction<T>(pool: Pool, fn: (client: Client) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  const client = await pool.connect();
  let suspect = false;
  try {
    // BEGIN is not awaited: it goes out pipelined with fn's first statement (createPool), so a
    // transaction costs no round trip of its own; on the surge's hot row, every round trip
    // inside the transaction is time the row stays locked. Its answer comes before the first
    // statement's. A BEGIN fails only on a session that cannot run statements either (a broken
    // connection, a transaction left aborted), so the first statement fails with it and fn
    // never goes on outside a transaction.
    const begun = client.query(beginStatement(options));
    begun.catch(() => {});
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
    await begun;
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
 * withTransaction for work whose last statement's answer is not needed to decide to commit:
 * fn issues that statement without awaiting it and returns its promise as `last`, and the
 * COMMIT goes out pipelined right behind it, one round trip for both (on a hot row, the time
 * its lock is held). The statement must be issued by the time fn returns (its `query` called,
 * nothing awaited before it), or the COMMIT would overtake it. A failing last statement aborts
 * the transaction, and PostgreSQL answers the COMMIT with a rollback: its rejection is then this
 * call's, with nothing committed. So the statement must itself refuse what would make the
 * commit wrong (a constraint, not a count checked afterwards).
 */
export async function withTransactionEndingIn<T, Last>(
  pool: Pool,
  fn: (client: Client) => Promise<{ value: T; last: Promise<Last> }>,
  options: TransactionOptions = {},
): Promise<{ value: T; last: Last }> {
  const { value, last } = await withTransaction(
    pool,
    async (client) => {
      const result = await fn(client);
      // Answered before the COMMIT, and awaited only after it.
      result.last.catch(() => {});
      return result;
    },
    options,
  );
  return { value, last: await last };
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
