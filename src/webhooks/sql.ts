/**
 * The queries of webhooks. The fan-out of new events to their deliveries and delivery jobs is
 * the trigger of migrations/002_webhooks.sql (now as migrations/011_batched_deliveries.sql
 * defines it), so that every writer of events gets it in its own transaction.
 */
import type { EventRow } from '../events/service.js';
import type { Queryable } from '../platform/db/pool.js';

/** The values of webhook_deliveries.status (its check constraint in migrations/002_webhooks.sql). */
export const DELIVERY_STATUSES = ['pending', 'succeeded', 'dead', 'canceled'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

export interface EndpointRow {
  merchant_id: string;
  id: string;
  url: string;
  enabled_events: string[];
  description: string | null;
  status: 'enabled' | 'disabled';
  disabled_reason: string | null;
  previous_secret_expires_at: Date | null;
  created_at: Date;
}

export interface DeliveryRow {
  id: string;
  endpoint_id: string;
  event_id: string;
  status: DeliveryStatus;
  round: number;
  attempts: number;
  next_attempt_at: Date | null;
  last_attempt_at: Date | null;
  last_status_code: number | null;
  last_error: string | null;
  last_duration_ms: number | null;
  created_at: Date;
}

export interface AttemptRow {
  round: number;
  attempt: number;
  status_code: number | null;
  error: string | null;
  duration_ms: number;
  attempted_at: Date;
}

/** What a delivery job needs: the delivery's state, where and how to send it, and what. */
export interface DeliveryTarget {
  status: DeliveryStatus;
  round: number;
  attempts: number;
  event_id: string;
  endpoint_id: string;
  url: string;
  endpoint_status: 'enabled' | 'disabled';
  /** The current secret first, then the previous one while its overlap lasts. */
  secrets: string[];
  /** The event to send; undefined if it is missing (deliveries reference events, so never). */
  event: EventRow | undefined;
}

// An overlap that has ended reads as none, by the database's clock: the one that decides
// which secrets sign (selectDeliveryTarget).
const ENDPOINT_COLUMNS = `merchant_id, id, url, enabled_events, description, status, disabled_reason,
  case when previous_secret_expires_at > now() then previous_secret_expires_at end as previous_secret_expires_at, created_at`;
const DELIVERY_COLUMNS = `id, endpoint_id, event_id, status, round, attempts, next_attempt_at, last_attempt_at,
  last_status_code, last_error, last_duration_ms, created_at`;

/** Inserts an endpoint unless the merchant already has `endpointsMax`; undefined then. */
export async function insertEndpoint(
  db: Queryable,
  endpoint: { merchantId: string; id: string; url: string; enabledEvents: string[]; description: string | null; secret: string },
  endpointsMax: number,
): Promise<EndpointRow | undefined> {
  const { rows } = await db.query<EndpointRow>({
    name: 'webhooks_insert_endpoint',
    text: `insert into webhook_endpoints (merchant_id, id, url, enabled_events, description, status, secret, created_at, updated_at)
           select $1, $2, $3, $4, $5, 'enabled', $6, now(), now()
           where (select count(*) from webhook_endpoints where merchant_id = $1) < $7
           returning ${ENDPOINT_COLUMNS}`,
    values: [endpoint.merchantId, endpoint.id, endpoint.url, endpoint.enabledEvents, endpoint.description, endpoint.secret, endpointsMax],
  });
  return rows[0];
}

export async function selectEndpoint(db: Queryable, merchantId: string, id: string): Promise<EndpointRow | undefined> {
  const { rows } = await db.query<EndpointRow>({
    name: 'webhooks_select_endpoint',
    text: `select ${ENDPOINT_COLUMNS} from webhook_endpoints where merchant_id = $1 and id = $2`,
    values: [merchantId, id],
  });
  return rows[0];
}

export async function selectEndpoints(db: Queryable, merchantId: string, limit: number, startingAfter?: string): Promise<EndpointRow[]> {
  const { rows } = await db.query<EndpointRow>({
    name: 'webhooks_select_endpoints',
    text: `select ${ENDPOINT_COLUMNS} from webhook_endpoints
           where merchant_id = $1 and ($2::text is null or id < $2)
           order by id desc limit $3`,
    values: [merchantId, startingAfter ?? null, limit],
  });
  return rows;
}

/** Deletes an endpoint with its deliveries and their attempts (their jobs then find nothing to do). */
export async function deleteEndpoint(db: Queryable, merchantId: string, id: string): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'webhooks_delete_endpoint',
    text: 'delete from webhook_endpoints where merchant_id = $1 and id = $2',
    values: [merchantId, id],
  });
  return rowCount === 1;
}

/** Makes `secret` current; the old one keeps signing until `previousExpiresAt` (none when null). */
export async function rotateSecret(
  db: Queryable,
  merchantId: string,
  id: string,
  secret: string,
  previousExpiresAt: Date | null,
): Promise<EndpointRow | undefined> {
  const { rows } = await db.query<EndpointRow>({
    name: 'webhooks_rotate_secret',
    text: `update webhook_endpoints
           set previous_secret = case when $4::timestamptz is null then null else secret end,
               previous_secret_expires_at = $4, secret = $3, updated_at = now()
           where merchant_id = $1 and id = $2
           returning ${ENDPOINT_COLUMNS}`,
    values: [merchantId, id, secret, previousExpiresAt],
  });
  return rows[0];
}

/** A delivery, by its key. */
export interface DeliveryKey {
  merchantId: string;
  deliveryId: string;
}

export interface AttemptRecord {
  merchantId: string;
  deliveryId: string;
  round: number;
  attempt: number;
  status: DeliveryStatus;
  nextAttemptAt: Date | null;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  attemptedAt: Date;
}

type TargetRow = Omit<DeliveryTarget, 'event' | 'secrets'> & {
  n: number | null;
  secret: string;
  previous_secret: string | null;
  event_type: string | null;
  event_object_id: string;
  event_sequence: number;
  event_data: EventRow['data'];
  event_created_at: Date;
};

/**
 * The delivery jobs' reads and writes, in one statement however many: the deliveries `keys`
 * name, with their endpoint and event (a job's first read), and the `attempts` recorded (its
 * last write, one commit for all). Jobs that start and jobs that finish at the same time thus
 * share one round trip.
 *
 * An attempt is recorded only if its delivery is still pending and waiting for exactly that
 * attempt: a job run twice (its worker died after sending) or overtaken by a redelivery records
 * nothing; of two records of the same attempt in one call, one is. The reads see the deliveries
 * as they were before this statement's records (a read and a write of one delivery never meet
 * in one call: a job reads before it sends, and records after).
 *
 * Answers in the order asked: each key's target (undefined when there is no such delivery or
 * its endpoint is gone) and whether each attempt was recorded.
 */
export async function readAndRecord(
  db: Queryable,
  keys: readonly DeliveryKey[],
  attempts: readonly AttemptRecord[],
): Promise<{ targets: (DeliveryTarget | undefined)[]; recorded: boolean[] }> {
  const column = <T>(pick: (attempt: AttemptRecord) => T) => attempts.map(pick);
  const { rows } = await db.query<TargetRow & { recorded: number[] | null }>({
    name: 'webhooks_read_and_record',
    // Every array is read through a scalar subquery, (select $n): hidden from the planner, a batch
    // is estimated at ten rows whatever its size, so PostgreSQL keeps one generic plan. Seen as
    // constants, small batches looked cheaper to plan each time, and it did: planning this
    // statement took three times as long as running it.
    text: `with input as (
             select * from unnest((select $3::text[]), (select $4::text[]), (select $5::int[]), (select $6::int[]),
                                  (select $7::text[]), (select $8::timestamptz[]), (select $9::int[]), (select $10::text[]),
                                  (select $11::int[]), (select $12::timestamptz[])) with ordinality
               as i (merchant_id, delivery_id, round, attempt, status, next_attempt_at, status_code, error, duration_ms,
                     attempted_at, n)),
           delivery as (
             update webhook_deliveries d
             set status = i.status, attempts = i.attempt, next_attempt_at = i.next_attempt_at, last_attempt_at = i.attempted_at,
                 last_status_code = i.status_code, last_error = i.error, last_duration_ms = i.duration_ms, updated_at = now()
             from input i
             where d.merchant_id = i.merchant_id and d.id = i.delivery_id and d.status = 'pending' and d.round = i.round
               and d.attempts = i.attempt - 1
             returning i.*),
           -- A data-modifying WITH runs to completion whether or not the query reads it.
           logged as (
             insert into webhook_delivery_attempts (merchant_id, delivery_id, round, attempt, status_code, error, duration_ms, attempted_at)
             select merchant_id, delivery_id, round, attempt, status_code, error, duration_ms, attempted_at from delivery)
           -- One row at least, for the records' answer, however few targets; the answer rides on
           -- one row only (node-postgres parses an array in JavaScript, character by character,
           -- and a call of a hundred records and a hundred reads sent it a hundred times).
           select case when row_number() over () = 1 then array(select n::int from delivery) end as recorded, target.*
           from (select) as one
           left join (
             select k.n::int as n, t.*
             from unnest((select $1::text[]), (select $2::text[])) with ordinality as k (merchant_id, delivery_id, n)
             -- Each key is looked up by itself, as a one-key query would be: the fence (offset 0)
             -- keeps the planner from joining the keys to whole tables (guessing ten keys, it
             -- hashed them against every endpoint of every merchant).
             cross join lateral (
               select d.status, d.round, d.attempts, d.event_id, d.endpoint_id, e.url, e.status as endpoint_status, e.secret,
                 case when e.previous_secret_expires_at > now() then e.previous_secret end as previous_secret,
                 ev.type as event_type, ev.object_id as event_object_id, ev.sequence as event_sequence, ev.data as event_data,
                 ev.created_at as event_created_at
               from webhook_deliveries d
               join webhook_endpoints e on e.merchant_id = d.merchant_id and e.id = d.endpoint_id
               left join events ev on ev.merchant_id = d.merchant_id and ev.id = d.event_id
               where d.merchant_id = k.merchant_id and d.id = k.delivery_id
               offset 0) as t) as target on true`,
    values: [
      keys.map((key) => key.merchantId),
      keys.map((key) => key.deliveryId),
      column((a) => a.merchantId),
      column((a) => a.deliveryId),
      column((a) => a.round),
      column((a) => a.attempt),
      column((a) => a.status),
      column((a) => a.nextAttemptAt),
      column((a) => a.statusCode),
      column((a) => a.error),
      column((a) => a.durationMs),
      column((a) => a.attemptedAt),
    ],
  });
  const targets: (DeliveryTarget | undefined)[] = new Array(keys.length).fill(undefined);
  const recorded = new Array<boolean>(attempts.length).fill(false);
  for (const row of rows) for (const n of row.recorded ?? []) recorded[n - 1] = true;
  for (const row of rows) {
    const {
      n,
      recorded: _recorded,
      secret,
      previous_secret,
      event_type,
      event_object_id,
      event_sequence,
      event_data,
      event_created_at,
      ...target
    } = row;
    if (n === null) continue;
    const event =
      event_type === null
        ? undefined
        : {
            id: row.event_id,
            type: event_type,
            object_id: event_object_id,
            sequence: event_sequence,
            data: event_data,
            created_at: event_created_at,
          };
    targets[n - 1] = { ...target, secrets: previous_secret === null ? [secret] : [secret, previous_secret], event };
  }
  return { targets, recorded };
}

/** Disables an endpoint and cancels its pending deliveries, whose jobs then do nothing. */
export async function disableEndpoint(db: Queryable, merchantId: string, endpointId: string, reason: string): Promise<void> {
  await db.query({
    name: 'webhooks_disable_endpoint',
    text: `with endpoint as (
             update webhook_endpoints set status = 'disabled', disabled_reason = $3, updated_at = now()
             where merchant_id = $1 and id = $2 and status = 'enabled'
             returning id)
           update webhook_deliveries set status = 'canceled', next_attempt_at = null, updated_at = now()
           where merchant_id = $1 and endpoint_id = $2 and status = 'pending'`,
    values: [merchantId, endpointId, reason],
  });
}

export async function selectDeliveries(
  db: Queryable,
  query: { merchantId: string; limit: number; startingAfter?: string; status?: string; endpointId?: string; eventId?: string },
): Promise<DeliveryRow[]> {
  const { rows } = await db.query<DeliveryRow>(
    `select ${DELIVERY_COLUMNS} from webhook_deliveries
     where merchant_id = $1 and ($2::text is null or id < $2) and ($3::text is null or status = $3)
       and ($4::text is null or endpoint_id = $4) and ($5::text is null or event_id = $5)
     order by id desc limit $6`,
    [query.merchantId, query.startingAfter ?? null, query.status ?? null, query.endpointId ?? null, query.eventId ?? null, query.limit],
  );
  return rows;
}

export async function selectDelivery(db: Queryable, merchantId: string, id: string): Promise<DeliveryRow | undefined> {
  const { rows } = await db.query<DeliveryRow>({
    name: 'webhooks_select_delivery',
    text: `select ${DELIVERY_COLUMNS} from webhook_deliveries where merchant_id = $1 and id = $2`,
    values: [merchantId, id],
  });
  return rows[0];
}

/** The latest attempts of a delivery, newest first. */
export async function selectAttempts(db: Queryable, merchantId: string, deliveryId: string, limit: number): Promise<AttemptRow[]> {
  const { rows } = await db.query<AttemptRow>({
    name: 'webhooks_select_attempts',
    text: `select round, attempt, status_code, error, duration_ms, attempted_at from webhook_delivery_attempts
           where merchant_id = $1 and delivery_id = $2
           order by round desc, attempt desc limit $3`,
    values: [merchantId, deliveryId, limit],
  });
  return rows;
}

/**
 * Sends an event again to every enabled endpoint subscribed to its type: a finished delivery
 * (succeeded, dead or canceled) starts a new round, an endpoint without one gets one, and a
 * delivery still pending is left to finish. Returns the deliveries to run, with their round.
 */
export async function requeueEvent(
  db: Queryable,
  event: { merchantId: string; id: string; type: string },
): Promise<{ id: string; round: number }[]> {
  const { rows } = await db.query<{ id: string; round: number }>({
    name: 'webhooks_requeue_event',
    text: `with targets as (
             select id from webhook_endpoints
             where merchant_id = $1 and status = 'enabled' and ($3 = any (enabled_events) or '*' = any (enabled_events))),
           created as (
             insert into webhook_deliveries (merchant_id, id, endpoint_id, event_id, status, next_attempt_at, created_at, updated_at)
             select $1, webhook_delivery_id($2, targets.id), targets.id, $2, 'pending', now(), now(), now() from targets
             on conflict do nothing
             returning id, round),
           reset as (
             update webhook_deliveries delivery
             set status = 'pending', round = delivery.round + 1, attempts = 0, next_attempt_at = now(), updated_at = now()
             from targets
             where delivery.merchant_id = $1 and delivery.event_id = $2 and delivery.endpoint_id = targets.id
               and delivery.status <> 'pending'
             returning delivery.id, delivery.round)
           select id, round from created union all select id, round from reset`,
    values: [event.merchantId, event.id, event.type],
  });
  return rows;
}

/** Enables a disabled endpoint again; undefined when there is no such endpoint. Its canceled deliveries stay canceled. */
export async function enableEndpoint(db: Queryable, merchantId: string, id: string): Promise<EndpointRow | undefined> {
  const { rows } = await db.query<EndpointRow>({
    name: 'webhooks_enable_endpoint',
    text: `update webhook_endpoints set status = 'enabled', disabled_reason = null,
             updated_at = case when status = 'enabled' then updated_at else now() end
           where merchant_id = $1 and id = $2
           returning ${ENDPOINT_COLUMNS}`,
    values: [merchantId, id],
  });
  return rows[0];
}

/**
 * Deletes up to `batchSize` delivery attempts older than `retentionDays`; returns how many. The
 * deliveries themselves (their status and last attempt) stay.
 */
export async function deleteOldAttempts(db: Queryable, retentionDays: number, batchSize: number): Promise<number> {
  const { rowCount } = await db.query({
    name: 'webhooks_delete_old_attempts',
    text: `delete from webhook_delivery_attempts where ctid in (
             select ctid from webhook_delivery_attempts
             where attempted_at < now() - make_interval(days => $1)
             limit $2 for update skip locked)`,
    values: [retentionDays, batchSize],
  });
  return rowCount ?? 0;
}

/** Every endpoint's stored secrets, for resealing them under a new key. */
export async function selectAllSecrets(
  db: Queryable,
): Promise<Array<{ merchant_id: string; id: string; secret: string; previous_secret: string | null }>> {
  const { rows } = await db.query('select merchant_id, id, secret, previous_secret from webhook_endpoints order by merchant_id, id');
  return rows;
}

/** Replaces an endpoint's stored secrets if they are still what was read (a rotation in between wins). */
export async function replaceSecrets(
  db: Queryable,
  read: { merchant_id: string; id: string; secret: string; previous_secret: string | null },
  secret: string,
  previousSecret: string | null,
): Promise<boolean> {
  const { rowCount } = await db.query(
    `update webhook_endpoints set secret = $5, previous_secret = $6
     where merchant_id = $1 and id = $2 and secret = $3 and previous_secret is not distinct from $4`,
    [read.merchant_id, read.id, read.secret, read.previous_secret, secret, previousSecret],
  );
  return rowCount === 1;
}
