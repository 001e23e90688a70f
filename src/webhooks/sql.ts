/**
 * The queries of webhooks. The fan-out of a new event to its deliveries is the trigger in
 * migrations/002_webhooks.sql, so that every writer of events gets it in its own transaction.
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

/** The delivery, its endpoint and its event, in one round trip: a delivery job's first read. */
export async function selectDeliveryTarget(db: Queryable, merchantId: string, deliveryId: string): Promise<DeliveryTarget | undefined> {
  const { rows } = await db.query<
    Omit<DeliveryTarget, 'event'> & {
      event_type: string | null;
      event_object_id: string;
      event_sequence: number;
      event_data: EventRow['data'];
      event_created_at: Date;
    }
  >({
    name: 'webhooks_select_delivery_target',
    text: `select d.status, d.round, d.attempts, d.event_id, d.endpoint_id, e.url, e.status as endpoint_status,
             array_remove(array[e.secret,
               case when e.previous_secret_expires_at > now() then e.previous_secret end], null) as secrets,
             ev.type as event_type, ev.object_id as event_object_id, ev.sequence as event_sequence, ev.data as event_data,
             ev.created_at as event_created_at
           from webhook_deliveries d
           join webhook_endpoints e on e.merchant_id = d.merchant_id and e.id = d.endpoint_id
           left join events ev on ev.merchant_id = d.merchant_id and ev.id = d.event_id
           where d.merchant_id = $1 and d.id = $2`,
    values: [merchantId, deliveryId],
  });
  const row = rows[0];
  if (!row) return undefined;
  const { event_type, event_object_id, event_sequence, event_data, event_created_at, ...target } = row;
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
  return { ...target, event };
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

/**
 * Records attempt `attempt` of round `round` and moves the delivery to `status`, only if the
 * delivery is still pending and waiting for exactly this attempt: a job run twice (its worker
 * died after sending) or overtaken by a redelivery records nothing. True when recorded.
 */
export async function recordAttempt(db: Queryable, attempt: AttemptRecord): Promise<boolean> {
  const { rows } = await db.query<{ recorded: boolean }>({
    name: 'webhooks_record_attempt',
    text: `with delivery as (
             update webhook_deliveries
             set status = $5, attempts = $4, next_attempt_at = $6, last_attempt_at = $10, last_status_code = $7,
                 last_error = $8, last_duration_ms = $9, updated_at = now()
             where merchant_id = $1 and id = $2 and status = 'pending' and round = $3 and attempts = $4 - 1
             returning 1),
           logged as (
             insert into webhook_delivery_attempts (merchant_id, delivery_id, round, attempt, status_code, error, duration_ms, attempted_at)
             select $1, $2, $3, $4, $7, $8, $9, $10 from delivery
             returning 1)
           select exists (select 1 from logged) as recorded`,
    values: [
      attempt.merchantId,
      attempt.deliveryId,
      attempt.round,
      attempt.attempt,
      attempt.status,
      attempt.nextAttemptAt,
      attempt.statusCode,
      attempt.error,
      attempt.durationMs,
      attempt.attemptedAt,
    ],
  });
  return rows[0]?.recorded === true;
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
