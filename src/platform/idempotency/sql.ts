import { jsonbArray } from '../db/params.js';
import type { Queryable } from '../db/pool.js';

/** A key is named by its merchant, the kind of API key that sent it, and the client's string. */
export interface KeyRef {
  merchantId: string;
  keyKind: 'secret' | 'publishable';
  key: string;
}

export interface IdempotencyKeyRow {
  merchant_id: string;
  key_kind: 'secret' | 'publishable';
  idempotency_key: string;
  request_method: string;
  request_path: string;
  request_fingerprint: Buffer;
  locked_at: Date | null;
  recovery_point: string;
  resource_id: string | null;
  response_status: number | null;
  response_body: unknown;
}

const COLUMNS = `merchant_id, key_kind, idempotency_key, request_method, request_path, request_fingerprint, locked_at,
  recovery_point, resource_id, response_status, response_body`;

/** SQL expressions (usually the caller's placeholders) for the columns of a finished key. */
export interface FinishedKeyColumns {
  merchantId: string;
  keyKind: string;
  key: string;
  method: string;
  path: string;
  fingerprint: string;
  resourceId: string;
  status: string;
  body: string;
  now: string;
  ttlHours: string;
  /** Rows to insert from (a batch's `unnest`); without it, one row of the values above. */
  from?: string;
  /** What the CTE yields per new key; `1` when not given. */
  returning?: string;
  /**
   * `skip` (the default): a key that exists is not written and yields no row, and the caller's
   * other CTEs write nothing for it. `fail`: the statement fails, for a caller that did its
   * request's work before writing its key and must not commit that work under another's key.
   */
  onConflict?: 'skip' | 'fail';
}

/** A CTE (named `key` unless told) inserting keys: the one insert the two forms below share. */
function insertKeysCte(c: { name?: string; row: string; from?: string; onConflict?: 'skip' | 'fail'; returning?: string }): string {
  return `${c.name ?? 'key'} as (
             insert into idempotency_keys (merchant_id, key_kind, idempotency_key, request_method, request_path,
               request_fingerprint, locked_at, recovery_point, resource_id, response_status, response_body, expires_at)
             ${c.from ? `select ${c.row} from ${c.from}` : `values (${c.row})`}
             ${c.onConflict === 'fail' ? '' : 'on conflict do nothing'}
             returning ${c.returning ?? '1'})`;
}

/**
 * A CTE named `key` for a statement that does a request's whole work in one round trip: it
 * inserts the key already finished, with its response, and yields one row only when the key is
 * new, so the caller's other CTEs write `from key` and nothing happens for a key that exists.
 */
export function finishedKeyCte(c: FinishedKeyColumns): string {
  return insertKeysCte({
    ...c,
    row: `${c.merchantId}, ${c.keyKind}, ${c.key}, ${c.method}, ${c.path}, ${c.fingerprint}, null, 'finished',
               ${c.resourceId}, ${c.status}, ${c.body}, ${c.now} + make_interval(hours => ${c.ttlHours})`,
  });
}

/** SQL expressions for a batch's keys that reach a recovery point as they are inserted, locked by their requests. */
export interface LockedKeyColumns {
  merchantId: string;
  keyKind: string;
  key: string;
  method: string;
  path: string;
  fingerprint: string;
  recoveryPoint: string;
  resourceId: string;
  ttlHours: string;
  /** Rows to insert from, joined as the caller needs. */
  from: string;
  returning: string;
  /** The CTE's name, `key` unless a statement writes two kinds of key (an order that confirms). */
  name?: string;
}

/**
 * A CTE (named `key` unless told) inserting a batch's new keys already at a recovery point (a
 * batch of first phases done in one statement): one row per key that was new, none for a key
 * that exists, whose request then resolves it alone.
 */
export function lockedKeysCte(c: LockedKeyColumns): string {
  return insertKeysCte({
    name: c.name,
    from: c.from,
    returning: c.returning,
    row: `${c.merchantId}, ${c.keyKind}, ${c.key}, ${c.method}, ${c.path}, ${c.fingerprint}, now(), ${c.recoveryPoint},
               ${c.resourceId}, null, null, now() + make_interval(hours => ${c.ttlHours})`,
  });
}

/**
 * A CTE named `finished_key` storing the final responses of a batch's keys (finishKey for
 * many): `from` yields one row per key. Answers that refuse authorization are not for it.
 */
export function finishKeysCte(c: { merchantId: string; keyKind: string; key: string; status: string; body: string; from: string }): string {
  return `finished_key as (
             update idempotency_keys k
             set recovery_point = 'finished', response_status = ${c.status}, response_body = ${c.body}, locked_at = null
             from ${c.from}
             where k.merchant_id = ${c.merchantId} and k.key_kind = ${c.keyKind} and k.idempotency_key = ${c.key}
             returning 1)`;
}

/** Inserts a new key, locked by the caller; returns nothing when the key already exists. */
export async function insertLockedKey(
  db: Queryable,
  key: KeyRef & { method: string; path: string; fingerprint: Buffer; ttlHours: number },
): Promise<IdempotencyKeyRow | undefined> {
  const { rows } = await db.query<IdempotencyKeyRow>({
    name: 'idempotency_insert_locked',
    text: `insert into idempotency_keys (merchant_id, key_kind, idempotency_key, request_method, request_path,
             request_fingerprint, locked_at, recovery_point, expires_at)
           values ($1, $2, $3, $4, $5, $6, now(), 'started', now() + make_interval(hours => $7))
           on conflict do nothing
           returning ${COLUMNS}`,
    values: [key.merchantId, key.keyKind, key.key, key.method, key.path, key.fingerprint, key.ttlHours],
  });
  return rows[0];
}

export async function selectKeyForUpdate(db: Queryable, ref: KeyRef): Promise<IdempotencyKeyRow | undefined> {
  const { rows } = await db.query<IdempotencyKeyRow>({
    name: 'idempotency_select_for_update',
    text: `select ${COLUMNS} from idempotency_keys
           where merchant_id = $1 and key_kind = $2 and idempotency_key = $3 for update`,
    values: [ref.merchantId, ref.keyKind, ref.key],
  });
  return rows[0];
}

/**
 * Takes the lock of a key nobody holds, or whose holder has been silent past the lock
 * timeout (its process died): the caller then resumes from the stored recovery point.
 */
export async function lockKeyIfFree(db: Queryable, ref: KeyRef, lockTimeoutMs: number): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'idempotency_lock_if_free',
    text: `update idempotency_keys set locked_at = now()
           where merchant_id = $1 and key_kind = $2 and idempotency_key = $3 and response_status is null
             and (locked_at is null or locked_at < now() - make_interval(secs => $4::float8 / 1000))`,
    values: [ref.merchantId, ref.keyKind, ref.key, lockTimeoutMs],
  });
  return rowCount === 1;
}

export async function setRecoveryPoint(db: Queryable, ref: KeyRef, recoveryPoint: string, resourceId: string | null): Promise<void> {
  await db.query({
    name: 'idempotency_set_recovery_point',
    text: `update idempotency_keys set recovery_point = $4, resource_id = coalesce($5, resource_id)
           where merchant_id = $1 and key_kind = $2 and idempotency_key = $3`,
    values: [ref.merchantId, ref.keyKind, ref.key, recoveryPoint, resourceId],
  });
}

export async function finishKey(db: Queryable, ref: KeyRef, status: number, body: unknown): Promise<void> {
  await db.query({
    name: 'idempotency_finish',
    text: `update idempotency_keys
           set recovery_point = 'finished', response_status = $4, response_body = $5, locked_at = null
           where merchant_id = $1 and key_kind = $2 and idempotency_key = $3`,
    values: [ref.merchantId, ref.keyKind, ref.key, status, JSON.stringify(body)],
  });
}

/** Forgets a key that has no response yet: the request leaves no trace under it. */
export async function deleteUnfinishedKey(db: Queryable, ref: KeyRef): Promise<void> {
  await db.query({
    name: 'idempotency_delete_unfinished',
    text: `delete from idempotency_keys
           where merchant_id = $1 and key_kind = $2 and idempotency_key = $3 and response_status is null`,
    values: [ref.merchantId, ref.keyKind, ref.key],
  });
}

/** Lets a retry with the same key run again from the given recovery point. */
export async function unlockKey(db: Queryable, ref: KeyRef, recoveryPoint: string): Promise<void> {
  await db.query({
    name: 'idempotency_unlock',
    text: `update idempotency_keys set locked_at = null, recovery_point = $4
           where merchant_id = $1 and key_kind = $2 and idempotency_key = $3 and response_status is null`,
    values: [ref.merchantId, ref.keyKind, ref.key, recoveryPoint],
  });
}

/**
 * A subquery yielding which of the keys in the `keys` array parameter exist already in one
 * scope: a batch leaves their requests to the single path. One primary-key probe per key: a
 * lateral subquery with a limit is never flattened, so each probe is the whole key. Written as
 * `idempotency_key = any($n)`, a plan made while the table was nearly empty (a new database, or
 * the bench's truncated one) scanned it whole and was kept as the table grew: in a surge every
 * batch then read every key the sale had written.
 */
export function existingKeysSql(merchant: string, keyKind: string, keys: string): string {
  return `select k.idempotency_key from unnest(${keys}::text[]) as r(key)
          cross join lateral (
            select idempotency_key from idempotency_keys
            where merchant_id = ${merchant} and key_kind = ${keyKind} and idempotency_key = r.key limit 1) k`;
}

/** The columns of a batch's finished keys, for `finishedKeysCte`: what each request answered. */
export interface FinishedKeys extends Pick<KeyRef, 'merchantId' | 'keyKind'> {
  method: string;
  path: string;
  ttlHours: number;
  keys: { key: string; fingerprint: Buffer; status: number; body: unknown }[];
}

/**
 * A batch's keys written already finished, with their answers, by the statement (or in the
 * transaction) that did their work: one insert, no update of rows written moments before (a
 * finished key's update is never HOT: it clears the indexed lock and grows the row). It fails
 * on a key some other node wrote since the batch looked (the transaction rolls back and every
 * request of the batch runs alone). A key whose answer refused authorization (401, 403) is not
 * stored, as on the single path, so it cannot squat a key name. `first` is the number of the
 * first of the nine placeholders it takes; `values` are theirs.
 */
export function finishedKeysCte(batch: FinishedKeys, first: number): { cte: string; values: unknown[] } {
  const stored = batch.keys.filter((key) => key.status !== 401 && key.status !== 403);
  const [merchantId, keyKind, method, path, ttlHours, keys, fingerprints, statuses, bodies] = Array.from(
    { length: 9 },
    (_, offset) => `$${first + offset}`,
  );
  return {
    cte: finishedKeyCte({
      merchantId: `${merchantId}::text`,
      keyKind: `${keyKind}::text`,
      method: `${method}::text`,
      path: `${path}::text`,
      key: 'k.key',
      fingerprint: 'k.fingerprint',
      resourceId: 'null',
      status: 'k.status',
      body: 'k.body',
      now: 'now()',
      ttlHours: `${ttlHours}::int`,
      from: `unnest(${keys}::text[], ${fingerprints}::bytea[], ${statuses}::int[], ${bodies}::jsonb[]) as k(key, fingerprint, status, body)`,
      onConflict: 'fail',
    }),
    values: [
      batch.merchantId,
      batch.keyKind,
      batch.method,
      batch.path,
      batch.ttlHours,
      stored.map((key) => key.key),
      stored.map((key) => key.fingerprint),
      stored.map((key) => key.status),
      jsonbArray(stored.map((key) => key.body)),
    ],
  };
}

/** `finishedKeysCte` alone: a batch whose requests were all refused writes only their keys. */
export async function insertFinishedKeys(db: Queryable, batch: FinishedKeys): Promise<void> {
  const { cte, values } = finishedKeysCte(batch, 1);
  await db.query({ name: 'idempotency_insert_finished_batch', text: `with ${cte} select count(*) from key`, values });
}
