/**
 * The statement under test, taken from the server's own code rather than copied: the real
 * insertIntentWithFinishedKey is called with a stand-in for the pool that records the query
 * instead of sending it. The pgbench script is built from that record, so a change to the
 * statement changes both sides of the comparison at once.
 */
import { viewOfNewIntent } from '../src/payments/service.js';
import { insertIntentWithFinishedKey, type NewIntent } from '../src/payments/sql.js';
import type { Queryable } from '../src/platform/db/pool.js';
import { fingerprint } from '../src/platform/idempotency/keys.js';
import { newId } from '../src/platform/ids.js';
import { REQUEST_BODY } from './loadgen.js';

interface CapturedQuery {
  name: string;
  text: string;
  values: unknown[];
}

// Stand-ins for the values that must differ on every transaction; found again by identity.
const KEY = Symbol('idempotency key');
const INTENT_ID = Symbol('intent id');
const EVENT_ID = Symbol('event id');

async function capture(merchantId: string, ttlHours: number): Promise<CapturedQuery> {
  let captured: CapturedQuery | undefined;
  const recorder = {
    query: async (config: CapturedQuery) => {
      captured = config;
      return { rows: [{ created: true }] };
    },
  } as unknown as Queryable;
  // The same intent and response body the server builds in createUnconfirmed for this request.
  const createdAt = new Date();
  const intent: NewIntent = {
    merchantId,
    id: INTENT_ID as unknown as string,
    amount: 2000,
    currency: 'usd',
    status: 'requires_payment_method',
    captureMethod: 'automatic',
    paymentMethod: null,
    description: null,
    metadata: {},
    createdAt,
  };
  const responseBody = viewOfNewIntent({ ...intent, id: newId('pi') });
  await insertIntentWithFinishedKey(recorder, intent, {
    keyKind: 'secret',
    key: KEY as unknown as string,
    fingerprint: fingerprint('POST', '/v1/payment_intents', JSON.parse(REQUEST_BODY)),
    ttlHours,
    eventId: EVENT_ID as unknown as string,
    responseBody,
  });
  if (!captured) throw new Error('insertIntentWithFinishedKey sent no query');
  return captured;
}

export interface PgbenchScript {
  /** The script file's text. */
  script: string;
  /** -D variables: the parameters that are the same on every transaction. */
  variables: Record<string, string>;
  /** The statement as the server sends it, for the report. */
  statementName: string;
}

/** A parameter as node-pg puts it on the wire, in text form (a Buffer goes as bytea hex). */
function wireText(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`;
  if (typeof value === 'string' || typeof value === 'number') return String(value);
  throw new Error(`no pgbench form for parameter ${String(value)}`);
}

/**
 * Builds the pgbench script that runs the server's statement with the same parameter values,
 * except the three that must be unique per transaction:
 *   - the idempotency key: 18 random digits, as the load generator sends;
 *   - the intent and event ids: a per-client counter interleaved across clients, so new ids
 *     grow over time as the server's time-ordered ids do (and land at the right edge of the
 *     primary key, not at random places in it).
 * pgbench variables cannot hold NULL, so the parameters that are always NULL on this path are
 * written as the literal null: the same value, typed by the same column.
 */
export async function buildPgbenchScript(options: { merchantId: string; ttlHours: number; clients: number }): Promise<PgbenchScript> {
  const query = await capture(options.merchantId, options.ttlHours);
  const variables: Record<string, string> = {
    n: '0',
    clients: String(options.clients),
    // A new base per run keeps ids unique across runs without reading the table.
    idbase: String(100_000_000_000_000_000 + Date.now() * 1000),
  };
  const text = query.text.replace(/\$(\d+)/g, (_, digits: string) => {
    const value = query.values[Number(digits) - 1];
    if (value === KEY) return ':key';
    if (value === INTENT_ID || value === EVENT_ID) return ':id';
    if (value === null) return 'null';
    variables[`p${digits}`] = wireText(value);
    return `:p${digits}`;
  });
  const script = [
    '\\set n :n + 1',
    '\\set id :idbase + :n * :clients + :client_id',
    '\\set key random(100000000000000000, 999999999999999999)',
    `${text};`,
    '',
  ].join('\n');
  return { script, variables, statementName: query.name };
}
