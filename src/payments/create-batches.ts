/**
 * Coalesced PaymentIntent creation. In a surge every buyer's checkout creates an intent, and
 * one creation alone is one statement and one commit: one WAL flush per request, and, for a
 * merchant with a webhook endpoint, one `jobs:insert` notification per commit, which
 * serializes the committing transactions (PostgreSQL takes one global lock to queue a
 * transaction's notifications). So a node gathers the unconfirmed creations that arrive
 * together and writes them in one statement: every key, intent and `payment_intent.created`
 * event of the batch, one commit, one fan-out to webhook deliveries with one `add_jobs` and
 * one notification (migrations/010_batched_fan_out.sql).
 *
 * Each request keeps its own idempotency key and answer. A key that already exists (a retry,
 * or a key reused with other parameters) is not created by the batch: the request then
 * resolves its key alone, exactly as the single statement's caller does. Keys twice in one
 * batch, and a statement that fails as a whole, are handled as platform/db/keyed-batches.ts
 * says: one bad request never fails the others.
 */
import { firstEventCte } from '../events/service.js';
import { type KeyedWrite, keyedBatch } from '../platform/db/keyed-batches.js';
import { jsonbArray } from '../platform/db/params.js';
import { type Pool, type Queryable, withAutocommit } from '../platform/db/pool.js';
import { finishedKeyCte } from '../platform/idempotency/sql.js';
import type { NewIntent } from './sql.js';

export interface IntentCreation extends KeyedWrite {
  intent: NewIntent;
  eventId: string;
  responseBody: unknown;
}

/** `created`: written by the batch; `exists`: its key was there first; `single`: run it alone. */
export type CreationOutcome = 'created' | 'exists' | 'single';

/** SQL expressions for each column of new intents, and the FROM clause they are selected from. */
export interface NewIntentColumns {
  merchantId: string;
  id: string;
  amount: string;
  currency: string;
  status: string;
  captureMethod: string;
  paymentMethod: string;
  description: string;
  metadata: string;
  createdAt: string;
  from: string;
}

/**
 * A CTE named `intent` inserting the intents a statement creates, one per row of `from`; it
 * yields their ids (for their created events). For a capability whose own statement creates
 * intents with its rows (orders), so the columns of an intent are spelt out in one place.
 */
export function newIntentsCte(c: NewIntentColumns): string {
  return `intent as (
             insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, payment_method,
               description, metadata, created_at, updated_at)
             select ${c.merchantId}, ${c.id}, ${c.amount}, ${c.currency}, ${c.status}, ${c.captureMethod}, ${c.paymentMethod},
               ${c.description}, ${c.metadata}, ${c.createdAt}, ${c.createdAt}
             from ${c.from}
             returning id)`;
}

export interface IntentBatchOptions {
  pool: Pool;
  ttlHours: number;
  windowMs: number;
  batchMax: number;
  /** Batches in flight at once on a node: creations do not contend, so commits may overlap. */
  maxRunning: number;
  onBatch?: (size: number) => void;
}

const INSERT_INTENTS_WITH_FINISHED_KEYS = `with req as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::jsonb[], $7::bigint[],
               $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::jsonb[], $14::text[], $15::timestamptz[])
               as r(merchant_id, key_kind, key, fingerprint, id, body, amount, currency, status, capture_method,
                    payment_method, description, metadata, event_id, created_at)),
           ${finishedKeyCte({
             merchantId: 'r.merchant_id',
             keyKind: 'r.key_kind',
             key: 'r.key',
             method: "'POST'",
             path: "'/v1/payment_intents'",
             fingerprint: 'r.fingerprint',
             resourceId: 'r.id',
             status: '200',
             body: 'r.body',
             now: 'r.created_at',
             ttlHours: '$16',
             from: 'req r',
             returning: 'resource_id',
           })},
           ${newIntentsCte({
             merchantId: 'r.merchant_id',
             id: 'r.id',
             amount: 'r.amount',
             currency: 'r.currency',
             status: 'r.status',
             captureMethod: 'r.capture_method',
             paymentMethod: 'r.payment_method',
             description: 'r.description',
             metadata: 'r.metadata',
             createdAt: 'r.created_at',
             from: 'req r join key on key.resource_id = r.id',
           })},
           ${firstEventCte({
             merchantId: 'r.merchant_id',
             id: 'r.event_id',
             type: "'payment_intent.created'",
             data: "jsonb_build_object('object', r.body)",
             createdAt: 'r.created_at',
             objectCte: 'intent',
             join: 'join req r on r.id = intent.id',
           })}
           select id from intent`;

export class IntentCreationBatcher {
  readonly submit: (creation: IntentCreation) => Promise<CreationOutcome>;

  constructor(options: IntentBatchOptions) {
    this.submit = keyedBatch<IntentCreation, CreationOutcome>({
      ...options,
      group: 'payment_intents',
      single: 'single',
      write: async (batch) => {
        // One autocommit statement (no BEGIN/COMMIT round trips: a creation alone costs what the
        // one-statement path costs), with the commit guard of platform/db/pool.ts.
        const created = await withAutocommit(options.pool, (client) => insertIntentsWithFinishedKeys(client, batch, options.ttlHours));
        return batch.map((creation) => (created.has(creation.intent.id) ? 'created' : 'exists'));
      },
    });
  }
}

/** One statement for a batch of creations; yields the ids of the intents it created. */
export async function insertIntentsWithFinishedKeys(db: Queryable, batch: IntentCreation[], ttlHours: number): Promise<Set<string>> {
  const column = <T>(pick: (creation: IntentCreation) => T) => batch.map(pick);
  const { rows } = await db.query<{ id: string }>({
    name: 'payments_insert_intents_with_finished_keys',
    text: INSERT_INTENTS_WITH_FINISHED_KEYS,
    values: [
      column((c) => c.merchantId),
      column((c) => c.keyKind),
      column((c) => c.key),
      column((c) => c.fingerprint),
      column((c) => c.intent.id),
      jsonbArray(column((c) => c.responseBody)),
      column((c) => c.intent.amount),
      column((c) => c.intent.currency),
      column((c) => c.intent.status),
      column((c) => c.intent.captureMethod),
      column((c) => c.intent.paymentMethod),
      column((c) => c.intent.description),
      jsonbArray(column((c) => c.intent.metadata)),
      column((c) => c.eventId),
      column((c) => c.intent.createdAt),
      ttlHours,
    ],
  });
  return new Set(rows.map((row) => row.id));
}
