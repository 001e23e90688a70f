/**
 * The SQL of one hold, taken from the server's own code: the real sales.createHold runs once
 * against the bench database through a pool that records every statement it sends (and then
 * sends it), with the admission check stubbed out (it is Redis's work, not the database's).
 * The pgbench script is built from that record, so a change to takeHold or to the idempotency
 * key handling changes both sides of the comparison at once.
 *
 * What one hold sends, in order (the record is in the JSON results):
 *   insert the idempotency key, locked                         (autocommit)
 *   begin
 *     select the sale; select its items                         (takeHold's checks)
 *     pg_advisory_xact_lock(buyer); select the buyer's quantity (per-buyer limit)
 *     savepoint; update items ... where stock_available >= q     (the hot row)
 *     insert hold + lines (one CTE); graphile_worker.add_job    (expiry)
 *     store the response with the idempotency key
 *   commit
 */
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import type { Pool } from '../src/platform/db/pool.js';
import { createPool } from '../src/platform/db/pool.js';
import { fingerprint } from '../src/platform/idempotency/keys.js';
import { createHold } from '../src/sales/service.js';
import type { PgbenchScript } from './statement.js';

interface Recorded {
  name?: string;
  text: string;
  values: unknown[];
}

// Stand-ins for the values that differ on every hold; each becomes `prefix || :id` in pgbench.
const KEY_MARK = 'bench-key-@@ID@@';
const BUYER_MARK = 'bench-buyer-@@ID@@';
const TICKET_MARK = 'qt_@@ID@@';

type QueryArg = string | { name?: string; text: string; values?: unknown[] };

function recordingPool(pool: Pool, log: Recorded[]): Pool {
  const record = (query: QueryArg, values?: unknown[]) => {
    if (typeof query === 'string') log.push({ text: query, values: values ?? [] });
    else log.push({ name: query.name, text: query.text, values: query.values ?? values ?? [] });
  };
  const wrapQuery = (target: { query: (...args: never[]) => unknown }) => (query: QueryArg, values?: unknown[]) => {
    record(query, values);
    return (target.query as (q: QueryArg, v?: unknown[]) => unknown)(query, values);
  };
  const forward = <T extends object>(target: T, prop: string | symbol) => {
    const value = Reflect.get(target, prop);
    return typeof value === 'function' ? value.bind(target) : value;
  };
  return new Proxy(pool, {
    get(target, prop) {
      if (prop === 'query') return wrapQuery(target);
      if (prop === 'connect') {
        return async () => {
          const client = await target.connect();
          return new Proxy(client, { get: (c, p) => (p === 'query' ? wrapQuery(c) : forward(c, p)) });
        };
      }
      return forward(target, prop);
    },
  });
}

export interface HoldCapture {
  statements: Recorded[];
  pgbench: PgbenchScript;
}

/** Runs one real hold through a recording pool and turns what it sent into a pgbench script. */
export async function captureHold(options: {
  databaseUrl: string;
  merchantId: string;
  saleId: string;
  itemId: string;
  clients: number;
}): Promise<HoldCapture> {
  const config = loadConfig({});
  const pool = createPool({
    connectionString: options.databaseUrl,
    max: 1,
    statementTimeoutMs: 30_000,
    applicationName: 'floodgate-bench',
  });
  const log: Recorded[] = [];
  try {
    const params = {
      sale: options.saleId,
      buyer_reference: BUYER_MARK,
      admission_token: 'adm_stand_in',
      items: [{ item: options.itemId, quantity: 1 }],
    };
    const reply = await createHold(
      {
        pool: recordingPool(pool, log),
        idempotency: { ttlHours: config.idempotencyKeyTtlHours, lockTimeoutMs: config.idempotencyLockTimeoutMs },
        admit: async () => ({ ok: true, ticketId: TICKET_MARK }),
        releaseAdmission: async () => undefined,
      },
      {
        merchantId: options.merchantId,
        keyKind: 'publishable',
        idempotencyKey: KEY_MARK,
        method: 'POST',
        path: '/v1/holds',
        fingerprint: fingerprint('POST', '/v1/holds', params),
      },
      params,
    );
    if (reply.status !== 200) throw new Error(`the captured hold failed: ${JSON.stringify(reply.body)}`);
  } finally {
    await pool.end();
  }
  const holdId = log.find((entry) => entry.name === 'sales_insert_hold')?.values[1];
  if (typeof holdId !== 'string') throw new Error('the captured hold sent no sales_insert_hold');
  return { statements: log, pgbench: buildScript(log, holdId, options.clients, await parameterTypes(options.databaseUrl, log)) };
}

/**
 * The type PostgreSQL infers for each parameter of each statement (from PREPARE), so a value
 * rebuilt by concatenation in the pgbench script can be cast back to it (text is not assigned
 * to a jsonb column implicitly).
 */
async function parameterTypes(databaseUrl: string, log: Recorded[]): Promise<string[][]> {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'floodgate-bench' });
  await client.connect();
  try {
    const types: string[][] = [];
    for (const [index, entry] of log.entries()) {
      if (entry.values.length === 0) {
        types.push([]);
        continue;
      }
      await client.query(`prepare bench_capture_${index} as ${entry.text}`);
      const { rows } = await client.query<{ types: string[] }>(
        'select parameter_types::text[] as types from pg_prepared_statements where name = $1',
        [`bench_capture_${index}`],
      );
      await client.query(`deallocate bench_capture_${index}`);
      types.push(rows[0]?.types ?? []);
    }
    return types;
  } finally {
    await client.end();
  }
}

/** A parameter as node-pg puts it on the wire, in text form. */
function wireText(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`;
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value))
    return `{${value.map((element) => (typeof element === 'number' ? String(element) : JSON.stringify(String(element)))).join(',')}}`;
  throw new Error(`no pgbench form for parameter ${String(value)}`);
}

function buildScript(log: Recorded[], holdId: string, clients: number, types: string[][]): PgbenchScript {
  // Each per-hold value becomes a constant prefix and the transaction's :id.
  const unique: [string, string][] = [
    [holdId, 'hold_'],
    [KEY_MARK, 'bench-key-'],
    [BUYER_MARK, 'bench-buyer-'],
    [TICKET_MARK, 'qt_'],
  ];
  const variables: Record<string, string> = { n: '0', clients: String(clients), idbase: '0' };
  let counter = 0;
  const constant = (text: string) => {
    const name = `v${++counter}`;
    variables[name] = text;
    return `:${name}::text`;
  };
  const lines = ['\\set n :n + 1', '\\set id :idbase + :n * :clients + :client_id'];
  for (const [index, entry] of log.entries()) {
    const text = entry.text.replace(/\$(\d+)/g, (_, digits: string) => {
      const value = entry.values[Number(digits) - 1];
      if (value === null || value === undefined) return 'null';
      const wire = wireText(value);
      if (!unique.some(([mark]) => wire.includes(mark))) {
        const name = `v${++counter}`;
        variables[name] = wire;
        return `:${name}`;
      }
      // Split around every per-hold value; pgbench variables cannot hold text built per
      // transaction, so the text is concatenated in SQL (a few µs more on pgbench's side).
      const pattern = new RegExp(unique.map(([mark]) => mark.replace(/[.*+?^${}()|[\]\\@]/g, '\\$&')).join('|'), 'g');
      const parts: string[] = [];
      let last = 0;
      for (const match of wire.matchAll(pattern)) {
        if ((match.index ?? 0) > last) parts.push(constant(wire.slice(last, match.index)));
        const prefix = unique.find(([mark]) => mark === match[0])?.[1] as string;
        parts.push(constant(prefix), ':id::text');
        last = (match.index ?? 0) + match[0].length;
      }
      if (last < wire.length) parts.push(constant(wire.slice(last)));
      return `(${parts.join(' || ')})::${types[index]?.[Number(digits) - 1] ?? 'text'}`;
    });
    lines.push(`${text.replace(/\s+/g, ' ').trim()};`);
  }
  return { script: `${lines.join('\n')}\n`, variables, statementName: log.map((entry) => entry.name ?? entry.text).join(', ') };
}
