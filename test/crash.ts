/**
 * A process that dies mid-request, for the recovery tests.
 *
 * The app under test is built on a pool and a provider that behave normally until a planned
 * moment and from then on fail every call, as a dead process's connections do: PostgreSQL rolls
 * back the transaction that was open, and nothing the process would have done next happens. In
 * particular its error handling cannot unlock the idempotency key, so the key stays locked at
 * the last recovery point that committed, which is exactly what a crash leaves behind. No
 * production code changes: the seam is the pool and provider that buildApp already takes.
 */
import type { Pool } from '../src/platform/db/pool.js';
import type { PaymentProvider } from '../src/providers/provider.js';

export interface Query {
  name?: string;
  text: string;
  values?: unknown[];
}

export interface CrashPlan {
  /** Die as soon as the transaction (or lone statement) that ran a matching query has committed. */
  afterCommitOf?: (query: Query) => boolean;
  /** Die when a matching query is about to be sent: its transaction never commits. */
  atQuery?: (query: Query) => boolean;
  /** Die once the provider has answered this call, before the answer is recorded. */
  afterProviderCall?: keyof PaymentProvider;
}

export class ProcessDied extends Error {
  constructor() {
    super('the process died (simulated)');
    this.name = 'ProcessDied';
  }
}

/**
 * The statement that moves a key to a recovery point, in platform/idempotency/sql.ts; its values
 * are merchant, key kind, key, recovery point, resource. A batch of confirms' first phase
 * (payments/confirm-batch-sql.ts) inserts its keys at `authorization_started` directly.
 */
export const committedRecoveryPoint =
  (name: string) =>
  (query: Query): boolean =>
    (query.name === 'idempotency_set_recovery_point' && query.values?.[3] === name) ||
    (name === 'authorization_started' && startedConfirmBatch(query));

/** The statement that creates a key, locked at `started`. */
export const insertedKey = (query: Query): boolean => query.name === 'idempotency_insert_locked';

/** The statement of a batch of confirms' first phases (payments/confirm-batch-sql.ts): keys at authorization_started. */
export const startedConfirmBatch = (query: Query): boolean => query.name === 'payments_batch_start_authorizations';

/** The completion of a batch of confirms: its transaction stores the keys' final responses. */
export const completedConfirmBatch = (query: Query): boolean => query.name === 'payments_batch_record_succeeded';

/** The statement that stores a key's final response. */
export const finishedKey = (query: Query): boolean => query.name === 'idempotency_finish';

function toQuery(args: unknown[]): Query {
  const [first, values] = args;
  if (typeof first === 'string') return { text: first, values: values as unknown[] | undefined };
  return first as Query;
}

export interface Crash {
  pool: Pool;
  provider: PaymentProvider;
  /** True once the planned moment has come. */
  readonly died: boolean;
}

/** Wraps a real pool and provider so that they die as `plan` says. */
export function crashing(real: Pool, provider: PaymentProvider, plan: CrashPlan): Crash {
  let died = false;
  const die = (): never => {
    died = true;
    throw new ProcessDied();
  };
  const matches = (test: ((query: Query) => boolean) | undefined, query: Query) => test?.(query) === true;

  const query = async (...args: unknown[]) => {
    const q = toQuery(args);
    if (died || matches(plan.atQuery, q)) die();
    const result = await (real.query as (...a: unknown[]) => Promise<unknown>)(...args);
    if (matches(plan.afterCommitOf, q)) died = true;
    return result;
  };

  const connect = async () => {
    if (died) die();
    const client = await real.connect();
    let dieAtCommit = false;
    let inTransaction = false;
    const clientQuery = async (...args: unknown[]) => {
      const q = toQuery(args);
      // The server rolls back a dead connection's transaction; let the rollback through so the
      // real connection goes back to the pool clean.
      if (died && q.text === 'rollback') return client.query('rollback');
      if (died || matches(plan.atQuery, q)) die();
      const result = await (client.query as (...a: unknown[]) => Promise<unknown>)(...args);
      // withTransaction may send settings with its BEGIN ('begin; set local ...').
      if (q.text === 'begin' || q.text?.startsWith('begin;')) inTransaction = true;
      if (q.text === 'commit' || q.text === 'rollback') inTransaction = false;
      if (matches(plan.afterCommitOf, q)) dieAtCommit = true;
      // A lone statement on a client (withAutocommit) commits as it returns.
      if (dieAtCommit && (q.text === 'commit' || !inTransaction)) died = true;
      return result;
    };
    return new Proxy(client, {
      get(target, prop) {
        if (prop === 'query') return clientQuery;
        const value = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };

  const pool = new Proxy(real, {
    get(target, prop) {
      if (prop === 'query') return query;
      if (prop === 'connect') return connect;
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });

  const wrappedProvider = new Proxy(provider, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        if (died) die();
        const result = await value.apply(target, args);
        if (prop === plan.afterProviderCall) died = true;
        return result;
      };
    },
  });

  return {
    pool,
    provider: wrappedProvider,
    get died() {
      return died;
    },
  };
}
