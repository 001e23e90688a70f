/**
 * Webhook use cases: managing endpoints, listing deliveries and redelivering an event. POSTs
 * run under their idempotency key like every other POST. Delivering (the jobs) is delivery.ts.
 */
import type { Config } from '../config.js';
import * as events from '../events/service.js';
import type { Sealer } from '../platform/crypto/sealed.js';
import type { Pool } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import { ApiError } from '../platform/http/errors.js';
import { page } from '../platform/http/pagination.js';
import { errorReply, ok, type Reply } from '../platform/http/reply.js';
import type { IdempotencyOptions } from '../platform/idempotency/service.js';
import { singlePhase } from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import { addJob } from '../platform/jobs/queue.js';
import { ENDPOINTS_PER_MERCHANT_MAX, newSecret, type RetrySchedule, toApiDelivery, toApiEndpoint } from './domain.js';
import * as sql from './sql.js';

/** The task that makes one attempt of one delivery: retries, redeliveries, and jobs queued before migrations/011. */
export const DELIVER_TASK = 'deliver_webhook';
/** The task that makes the first attempt of a batch of deliveries; the fan-out trigger (migrations/011) names it too. */
export const DELIVER_BATCH_TASK = 'deliver_webhooks';
// The most deliveries one batch job names: the fan-out trigger's chunk (migrations/011). A
// batch is read in one query and recorded in one statement, so their arrays stay this small,
// and its requests all start at once.
export const DELIVERIES_PER_BATCH_MAX = 100;

export interface WebhookSettings extends RetrySchedule {
  timeoutMs: number;
  allowPrivate: boolean;
  attemptRetentionDays: number;
  /** FLOODGATE_SECRETS_KEYS: seal and open the endpoints' signing secrets. */
  secretsKeys: string | undefined;
}

export function webhookSettings(config: Config): WebhookSettings {
  return {
    timeoutMs: config.webhookTimeoutMs,
    retryBaseMs: config.webhookRetryBaseMs,
    retryMaxMs: config.webhookRetryMaxMs,
    maxAttempts: config.webhookMaxAttempts,
    allowPrivate: config.webhookAllowPrivate,
    attemptRetentionDays: config.webhookAttemptRetentionDays,
    secretsKeys: config.secretsKeys,
  };
}

export interface WebhookDeps {
  pool: Pool;
  idempotency: IdempotencyOptions;
  /** Seals signing secrets before they are stored, in the endpoint table and in stored responses. */
  sealer: Sealer;
}

// A delivery's own page shows at most this many attempts: every attempt of a few rounds.
const ATTEMPTS_SHOWN_MAX = 100;

const missingEndpoint = (id: string) => new ApiError('resource_missing', `No such webhook_endpoint: '${id}'`, 'id');

export interface CreateEndpointParams {
  url: string;
  enabled_events: string[];
  description?: string;
}

/** Creates an endpoint; its secret is in this response and never again. The URL is checked by the caller. */
export function createEndpoint(deps: WebhookDeps, ctx: RequestContext, params: CreateEndpointParams): Promise<Reply> {
  return singlePhase(deps, ctx, async (client) => {
    const secret = newSecret();
    const row = await sql.insertEndpoint(
      client,
      {
        merchantId: ctx.merchantId,
        id: newId('we'),
        url: params.url,
        enabledEvents: params.enabled_events,
        description: params.description ?? null,
        secret: deps.sealer.seal(secret),
      },
      ENDPOINTS_PER_MERCHANT_MAX,
    );
    if (!row) {
      return errorReply(
        new ApiError(
          'webhook_endpoint_limit_reached',
          `An account has at most ${ENDPOINTS_PER_MERCHANT_MAX} webhook endpoints; delete one first.`,
        ),
      );
    }
    return ok(withSealedSecret(row, deps.sealer.seal(secret)));
  }).then((reply) => revealSecret(reply, deps.sealer));
}

/**
 * The response of create and rotate, as stored with the idempotency key: the secret in it is
 * sealed like the endpoint's own, so the stored response holds it in clear no more than the
 * endpoint table does. revealSecret opens it for the answer, first or replayed.
 */
function withSealedSecret(row: sql.EndpointRow, sealed: string) {
  return { ...toApiEndpoint(row), [SEALED_SECRET_FIELD]: sealed };
}

const SEALED_SECRET_FIELD = 'secret_sealed';

function revealSecret(reply: Reply, sealer: Sealer): Reply {
  const body = reply.body as Record<string, unknown> | null;
  const sealed = body?.[SEALED_SECRET_FIELD];
  if (typeof sealed !== 'string') return reply;
  const { [SEALED_SECRET_FIELD]: _sealed, ...endpoint } = body as Record<string, unknown>;
  return { ...reply, body: { ...endpoint, secret: sealer.open(sealed) } };
}

/**
 * Replaces an endpoint's secret; the new one is in this response and never again. The old one
 * keeps signing for `overlapSeconds` (0: stops at once), so receivers can switch without a gap.
 */
export function rotateSecret(deps: WebhookDeps, ctx: RequestContext, id: string, overlapSeconds: number): Promise<Reply> {
  return singlePhase(deps, ctx, async (client) => {
    const sealed = deps.sealer.seal(newSecret());
    const previousExpiresAt = overlapSeconds > 0 ? new Date(Date.now() + overlapSeconds * 1000) : null;
    const row = await sql.rotateSecret(client, ctx.merchantId, id, sealed, previousExpiresAt);
    return row ? ok(withSealedSecret(row, sealed)) : errorReply(missingEndpoint(id));
  }).then((reply) => revealSecret(reply, deps.sealer));
}

/**
 * Enables an endpoint again, such as one a 410 Gone disabled once the receiver is back. The
 * deliveries canceled then stay canceled; send their events again with redeliver.
 */
export function enableEndpoint(deps: WebhookDeps, ctx: RequestContext, id: string): Promise<Reply> {
  return singlePhase(deps, ctx, async (client) => {
    const row = await sql.enableEndpoint(client, ctx.merchantId, id);
    return row ? ok(toApiEndpoint(row)) : errorReply(missingEndpoint(id));
  });
}

// Small enough that one delete holds its locks briefly; a run stops after a bounded number of
// batches so that one job does not occupy a worker, and the next run goes on.
const PRUNE_BATCH_MAX = 1_000;
const PRUNE_BATCHES_PER_RUN_MAX = 100;

/** Deletes delivery attempts older than the retention; returns how many. */
export async function pruneAttempts(pool: Pool, retentionDays: number): Promise<number> {
  let deleted = 0;
  for (let batch = 0; batch < PRUNE_BATCHES_PER_RUN_MAX; batch++) {
    const count = await sql.deleteOldAttempts(pool, retentionDays, PRUNE_BATCH_MAX);
    deleted += count;
    if (count < PRUNE_BATCH_MAX) break;
  }
  return deleted;
}

/**
 * Seals again, with the first of FLOODGATE_SECRETS_KEYS, every endpoint secret that is sealed
 * with another key or not at all (stored before sealing existed): the step of a key rotation
 * after which the old key can be dropped. Returns how many endpoints changed.
 */
export async function resealSecrets(pool: Pool, sealer: Sealer): Promise<number> {
  let changed = 0;
  for (const row of await sql.selectAllSecrets(pool)) {
    const stale = (value: string | null) => value !== null && !sealer.isCurrent(value);
    if (!stale(row.secret) && !stale(row.previous_secret)) continue;
    const reseal = (value: string | null) => (value === null || !stale(value) ? value : sealer.seal(sealer.open(value)));
    if (await sql.replaceSecrets(pool, row, reseal(row.secret) as string, reseal(row.previous_secret))) changed += 1;
  }
  return changed;
}

export async function retrieveEndpoint(pool: Pool, merchantId: string, id: string) {
  const row = await sql.selectEndpoint(pool, merchantId, id);
  if (!row) throw missingEndpoint(id);
  return toApiEndpoint(row);
}

export async function listEndpoints(pool: Pool, merchantId: string, limit: number, startingAfter?: string) {
  const rows = await sql.selectEndpoints(pool, merchantId, limit + 1, startingAfter);
  return page(
    rows.map((row) => toApiEndpoint(row)),
    limit,
    '/v1/webhook_endpoints',
  );
}

export async function deleteEndpoint(pool: Pool, merchantId: string, id: string) {
  if (!(await sql.deleteEndpoint(pool, merchantId, id))) throw missingEndpoint(id);
  return { id, object: 'webhook_endpoint' as const, deleted: true as const };
}

export async function listDeliveries(
  pool: Pool,
  query: { merchantId: string; limit: number; startingAfter?: string; status?: string; endpointId?: string; eventId?: string },
) {
  const rows = await sql.selectDeliveries(pool, { ...query, limit: query.limit + 1 });
  return page(rows.map(toApiDelivery), query.limit, '/v1/webhook_deliveries');
}

export async function retrieveDelivery(pool: Pool, merchantId: string, id: string) {
  const row = await sql.selectDelivery(pool, merchantId, id);
  if (!row) throw new ApiError('resource_missing', `No such webhook_delivery: '${id}'`, 'id');
  const attempts = await sql.selectAttempts(pool, merchantId, id, ATTEMPTS_SHOWN_MAX);
  return {
    ...toApiDelivery(row),
    attempt_log: attempts.map((attempt) => ({
      round: attempt.round,
      attempt: attempt.attempt,
      attempted_at: Math.floor(attempt.attempted_at.getTime() / 1000),
      status_code: attempt.status_code,
      error: attempt.error,
      duration_ms: attempt.duration_ms,
    })),
  };
}

/**
 * Sends an event again to the merchant's enabled endpoints subscribed to its type (see
 * sql.requeueEvent), each delivery with a fresh set of attempts. Answers with the event's
 * deliveries.
 */
export function redeliverEvent(deps: WebhookDeps, ctx: RequestContext, eventId: string): Promise<Reply> {
  return singlePhase(deps, ctx, async (client) => {
    const event = await events.retrieve(client, ctx.merchantId, eventId);
    if (!event) return errorReply(new ApiError('resource_missing', `No such event: '${eventId}'`, 'id'));
    const queued = await sql.requeueEvent(client, { merchantId: ctx.merchantId, id: event.id, type: event.type });
    for (const delivery of queued) {
      await addJob(client, DELIVER_TASK, { merchant_id: ctx.merchantId, delivery_id: delivery.id, round: delivery.round, attempt: 1 });
    }
    const rows = await sql.selectDeliveries(client, { merchantId: ctx.merchantId, limit: ENDPOINTS_PER_MERCHANT_MAX + 1, eventId });
    return ok(page(rows.map(toApiDelivery), ENDPOINTS_PER_MERCHANT_MAX, '/v1/webhook_deliveries'));
  });
}
