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
 * resolves its key alone, exactly as the single statement's caller does. A key that appears
 * twice in one batch goes once; the later copy resolves alone after the batch. If the batch's
 * statement fails as a whole (a bad row, the database gone), nothing of it committed and each
 * request runs alone on the single statement, meeting its own outcome: one bad request never
 * fails the others. (Except a commit the synchronous standby did not confirm: see `run`.)
 */
import { firstEventCte } from '../events/service.js';
import { GroupCommit } from '../platform/db/group-commit.js';
import { type Pool, type Queryable, SyncReplicationCanceledError, withAutocommit } from '../platform/db/pool.js';
import { finishedKeyCte } from '../platform/idempotency/sql.js';
import type { NewIntent } from './sql.js';

export interface IntentCreation {
  intent: NewIntent;
  keyKind: 'secret' | 'publishable';
  key: string;
  fingerprint: Buffer;
  eventId: string;
  responseBody: unknown;
}

/** `created`: written by the batch; `exists`: its key was there first; `single`: run it alone. */
export type CreationOutcome = 'created' | 'exists' | 'single';

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
           intent as (
             insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, payment_method,
               description, metadata, created_at, updated_at)
             select r.merchant_id, r.id, r.amount, r.currency, r.status, r.capture_method, r.payment_method,
               r.description, r.metadata, r.created_at, r.created_at
             from req r join key on key.resource_id = r.id
             returning id),
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
  private readonly commits: GroupCommit<IntentCreation, CreationOutcome>;

  constructor(private readonly options: IntentBatchOptions) {
    // One group for the node: a batch may mix merchants, each row carries its own key scope.
    this.commits = new GroupCommit({
      windowMs: options.windowMs,
      batchMax: options.batchMax,
      maxRunning: options.maxRunning,
      run: (_group, batch) => this.run(batch),
      onBatch: options.onBatch,
    });
  }

  submit(creation: IntentCreation): Promise<CreationOutcome> {
    return this.commits.submit('payment_intents', creation);
  }

  private async run(batch: IntentCreation[]): Promise<CreationOutcome[]> {
    const seen = new Set<string>();
    const writes: IntentCreation[] = [];
    const firsts = batch.map((creation) => {
      const scoped = `${creation.intent.merchantId}\u0000${creation.keyKind}\u0000${creation.key}`;
      if (seen.has(scoped)) return false;
      seen.add(scoped);
      writes.push(creation);
      return true;
    });
    let created: Set<string>;
    try {
      // One autocommit statement (no BEGIN/COMMIT round trips: a creation alone costs what the
      // one-statement path costs), with the commit guard of platform/db/pool.ts: a commit the
      // synchronous standby did not confirm is acknowledged to no request of the batch.
      created = await withAutocommit(this.options.pool, (client) => insertIntentsWithFinishedKeys(client, writes, this.options.ttlHours));
    } catch (error) {
      // Committed here but maybe not on the standby: a request that ran alone now would find its
      // key and replay it, acknowledging what a failover may lose. Every request fails instead
      // (503, as withTransaction's callers do); its retry reaches the real primary.
      if (error instanceof SyncReplicationCanceledError) throw error;
      return batch.map(() => 'single');
    }
    return batch.map((creation, index) => {
      if (!firsts[index]) return 'single';
      return created.has(creation.intent.id) ? 'created' : 'exists';
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
      column((c) => c.intent.merchantId),
      column((c) => c.keyKind),
      column((c) => c.key),
      column((c) => c.fingerprint),
      column((c) => c.intent.id),
      column((c) => JSON.stringify(c.responseBody)),
      column((c) => c.intent.amount),
      column((c) => c.intent.currency),
      column((c) => c.intent.status),
      column((c) => c.intent.captureMethod),
      column((c) => c.intent.paymentMethod),
      column((c) => c.intent.description),
      column((c) => JSON.stringify(c.intent.metadata)),
      column((c) => c.eventId),
      column((c) => c.intent.createdAt),
      ttlHours,
    ],
  });
  return new Set(rows.map((row) => row.id));
}
