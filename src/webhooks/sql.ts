/**
 * The queries of webhooks. The fan-out of new events to their deliveries and delivery jobs is
 * the trigger of migrations/002_webhooks.sql (now as migrations/011_batched_deliveries.sql
 * defines it), so that every writer of events gets it in its own transaction.
 */
import type { Queryable } from '../platform/db/pool.js';

/** The values of webhook_deliveries.status (its check constraint in migrations/002_webhooks.sql). */
export const DELIVERY_STATUSES = ['pending', 'succeeded', 'dead', 'canceled'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];
/** The statuses that webhook_deliveries.undelivered repeats (migrations/013_hot_delivery_records.sql). */
const UNDELIVERED: ReadonlySet<string> = new Set<DeliveryStatus>(['dead', 'canceled']);

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

// An overlap that has ended reads as none, by the database's clock: the one that decides
// which secrets sign (delivery-sql.ts readAndRecord).
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
  // The deliveries given up (dead, canceled) are found through their own partial index; the
  // others by walking the primary key newest first (migrations/013_hot_delivery_records.sql).
  const byStatus = query.status && UNDELIVERED.has(query.status) ? 'undelivered = $3' : 'status = $3';
  const { rows } = await db.query<DeliveryRow>(
    `select ${DELIVERY_COLUMNS} from webhook_deliveries
     where merchant_id = $1 and ($2::text is null or id < $2) and ($3::text is null or ${byStatus})
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

/**
 * The latest attempts of a delivery, newest first: its last one, on the delivery itself, then
 * those it superseded, from the log (migrations/014_last_attempt_on_the_delivery.sql). A worker
 * from before 014 logged the last one too, with the same figures: `union` shows it once.
 */
export async function selectAttempts(db: Queryable, merchantId: string, deliveryId: string, limit: number): Promise<AttemptRow[]> {
  const { rows } = await db.query<AttemptRow>({
    name: 'webhooks_select_attempts',
    text: `select round, attempt, status_code, error, duration_ms, attempted_at from (
             select round, attempts as attempt, last_status_code as status_code, last_error as error,
               last_duration_ms as duration_ms, last_attempt_at as attempted_at
             from webhook_deliveries where merchant_id = $1 and id = $2 and attempts > 0
             union
             select round, attempt, status_code, error, duration_ms, attempted_at from webhook_delivery_attempts
             where merchant_id = $1 and delivery_id = $2) attempt
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
             returning delivery.id, delivery.round),
           -- The round a redelivery ends leaves its last attempt in the log (\`ended\` is the row
           -- as this statement's snapshot has it, before the reset).
           moved as (
             insert into webhook_delivery_attempts (merchant_id, delivery_id, round, attempt, status_code, error, duration_ms, attempted_at)
             select ended.merchant_id, ended.id, ended.round, ended.attempts, ended.last_status_code, ended.last_error,
               ended.last_duration_ms, ended.last_attempt_at
             from reset join webhook_deliveries ended on ended.merchant_id = $1 and ended.id = reset.id
             where ended.attempts > 0
             on conflict do nothing)
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
 * Deletes up to `batchSize` logged delivery attempts older than `retentionDays`; returns how
 * many. The deliveries themselves (their status and last attempt) stay.
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
