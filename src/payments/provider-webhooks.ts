/**
 * Inbound webhooks from the provider: `POST /v1/providers/simulator/webhooks`. Authenticated
 * by signature (not an API key), refused outside a five-minute window against replays, and
 * deduplicated by the provider's event id in the same transaction that applies the outcome
 * through the completion command.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Pool } from '../platform/db/pool.js';
import { withTransaction } from '../platform/db/pool.js';
import { ApiError } from '../platform/http/errors.js';
import type { HttpServer } from '../platform/http/server.js';
import { operationFromRecorded, type RecordedResponse } from '../providers/service.js';
import type { AttemptsInFlight } from './attempts-in-flight.js';
import { completeAttempt, outcomeFromOperation } from './completion.js';
import { parseProviderKey } from './domain.js';
import type { CompletionDeps } from './hooks.js';
import * as sql from './sql.js';

export const PROVIDER_WEBHOOK_PATH = '/v1/providers/simulator/webhooks';
// Stripe's and Standard Webhooks' tolerance: long enough for clock skew and a retry, short
// enough that a captured request cannot be replayed later.
export const WEBHOOK_TOLERANCE_SECONDS = 300;
const PROVIDER = 'simulator';
// Reading again the attempt another node's request is completing: first after 10 ms, doubling
// up to a quarter of a second (a provider's answer and a completion batch take tens of ms).
const REQUEST_POLL_FIRST_MS = 10;
const REQUEST_POLL_MAX_MS = 250;
// The longest an event waits for the calling request: well inside a provider's own timeout for
// a webhook (the simulator's is 5 s), past which it would send the event again.
const REQUEST_WAIT_MAX_MS = 2_000;
// Events waiting at once on a node; past it an event completes the attempt at once (correct,
// only dearer), so a slow provider cannot fill the node's in-flight requests with waiting events.
const WAITING_EVENTS_MAX = 200;

/**
 * How long an event waits for the request that made the call: at most half the request's own
 * wait for the answer, so that when the provider's answer is late (a call about to time out)
 * the event, which carries that answer, applies it rather than waiting for the request to give
 * up on the call (which then answers with whatever its retrieve finds, or `processing`).
 */
export function requestWaitMs(providerTimeoutMs: number): number {
  return Math.min(REQUEST_WAIT_MAX_MS, Math.floor(providerTimeoutMs / 2));
}

interface ProviderEvent {
  id: string;
  type: string;
  idempotency_key: string;
  response: RecordedResponse;
}

export type SignatureCheck = { ok: true } | { ok: false; reason: string };

export function verifySignature(secret: string, header: string | undefined, body: string, nowSeconds: number): SignatureCheck {
  if (!header) return { ok: false, reason: 'missing simulator-signature header' };
  const parts = new Map(header.split(',').map((part) => part.split('=', 2) as [string, string]));
  const timestamp = Number(parts.get('t'));
  const signature = parts.get('v1') ?? '';
  if (!Number.isInteger(timestamp)) return { ok: false, reason: 'malformed signature header' };
  if (Math.abs(nowSeconds - timestamp) > WEBHOOK_TOLERANCE_SECONDS) return { ok: false, reason: 'timestamp outside the tolerance window' };
  const expected = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest();
  const given = Buffer.from(signature, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'signature does not match' };
  return { ok: true };
}

function parseEvent(body: string): ProviderEvent | undefined {
  try {
    const event = JSON.parse(body) as ProviderEvent;
    const valid =
      typeof event?.id === 'string' &&
      typeof event.idempotency_key === 'string' &&
      typeof event.response?.status === 'number' &&
      typeof event.response.body === 'object' &&
      event.response.body !== null &&
      (event.response.status !== 200 || isOperationBody(event.response.body));
    return valid ? event : undefined;
  } catch {
    return undefined;
  }
}

/** A success must carry a whole charge or refund: a signature proves the sender, not the shape. */
function isOperationBody(body: Record<string, unknown>): boolean {
  const amounts = (...names: string[]) => names.every((name) => Number.isSafeInteger(body[name]) && (body[name] as number) >= 0);
  if (typeof body.id !== 'string') return false;
  if (body.object === 'refund') return typeof body.charge === 'string' && amounts('amount');
  return (
    body.object === 'charge' &&
    ['authorized', 'captured', 'canceled'].includes(body.status as string) &&
    amounts('amount', 'amount_captured', 'amount_refunded')
  );
}

/** `already_settled`: whoever learned the outcome first applied it; the event is only recorded. */
export type WebhookResult = 'applied' | 'already_settled' | 'duplicate' | 'not_ours';

/** Applies one verified provider event, once. */
export interface ProviderWebhookDeps extends CompletionDeps {
  pool: Pool;
  secret: string | undefined;
  /** This node's requests' provider calls in flight (the same registry their CallDeps carry). */
  inFlight?: AttemptsInFlight;
  /**
   * How long after its attempt was written an event waits for the calling request to complete
   * it (requestWaitMs above). 0 or absent: the event completes the attempt at once.
   */
  requestWaitMs?: number;
  /** Bounds the events waiting at once (waitingSlots); unbounded when absent. */
  waiting?: WaitingSlots;
}

/** The events allowed to wait at once on a node. */
export interface WaitingSlots {
  /** True when the event may wait (and must give the slot back), false when it must not. */
  take(): boolean;
  give(): void;
}

export function waitingSlots(max = WAITING_EVENTS_MAX): WaitingSlots {
  let waiting = 0;
  return {
    take: () => {
      if (waiting >= max) return false;
      waiting += 1;
      return true;
    },
    give: () => {
      waiting -= 1;
    },
  };
}

export async function handleProviderEvent(
  deps: Pick<ProviderWebhookDeps, 'pool' | 'onPaymentSucceeded' | 'inFlight' | 'requestWaitMs' | 'waiting'>,
  event: ProviderEvent,
): Promise<WebhookResult> {
  const key = parseProviderKey(event.idempotency_key);
  if (!key) return 'not_ours';
  // Usually the request that made the call has already applied its answer when the provider's
  // event arrives. An attempt settled for good (succeeded or failed; `unknown` is still open)
  // would not change under the completion command (its settle is guarded), so the event is
  // only recorded, without locking the intent: a confirm completing a batch of payments never
  // waits behind webhooks that have nothing to apply. Settled attempts never reopen, so reading
  // the status without the lock cannot miss an outcome.
  const seen = await sql.selectAttempt(deps.pool, key.merchantId, key.attemptId);
  if (!seen || seen.provider_idempotency_key !== event.idempotency_key) return 'not_ours';
  let status = seen.status;
  // The event often comes while the request that made the call is still waiting for the same
  // answer or completing it (attempts-in-flight.ts): it waits for that, rather than racing it.
  if (status === 'started' && deps.requestWaitMs && (deps.waiting?.take() ?? true)) {
    try {
      status = (await awaitRequest(deps, key.merchantId, key.attemptId, deps.requestWaitMs)) ?? status;
    } finally {
      deps.waiting?.give();
    }
  }
  if (settledForGood(status)) {
    return (await sql.insertProviderEvent(deps.pool, key.merchantId, PROVIDER, event.id)) ? 'already_settled' : 'duplicate';
  }
  // The attempt is ours (its key never changes); completeAttempt reads it again under the lock.
  return withTransaction(deps.pool, async (client) => {
    if (!(await sql.insertProviderEvent(client, key.merchantId, PROVIDER, event.id))) return 'duplicate';
    await completeAttempt(client, deps, key.merchantId, key.attemptId, outcomeFromOperation(operationFromRecorded(event.response)));
    return 'applied';
  });
}

/**
 * Waits until the request that started the attempt's call has ended, for `waitMs` at most. This
 * node's own requests are known in memory (the wait counts from now); another node's (or a
 * worker's) are watched by reading the attempt again, at growing intervals, until `waitMs` after
 * the attempt was last written, by the database's clock. The usual wait is the provider's answer
 * and one completion batch, a few tens of milliseconds; a request that died, or one resumed after
 * a crash (it does not write the attempt again), leaves its attempt to this event once the bound
 * has passed. Yields the attempt's status as last read once the wait is over.
 */
async function awaitRequest(
  deps: Pick<ProviderWebhookDeps, 'pool' | 'inFlight'>,
  merchantId: string,
  attemptId: string,
  waitMs: number,
): Promise<sql.AttemptRow['status'] | undefined> {
  if (deps.inFlight?.has(merchantId, attemptId)) {
    await deps.inFlight.ended(merchantId, attemptId, waitMs);
    return (await sql.selectAttempt(deps.pool, merchantId, attemptId))?.status;
  }
  let pause = REQUEST_POLL_FIRST_MS;
  for (;;) {
    const attempt = await sql.selectAttemptRequestWait(deps.pool, merchantId, attemptId, waitMs);
    if (!attempt || attempt.remaining_ms <= 0) return attempt?.status;
    await sleep(Math.min(pause, attempt.remaining_ms));
    pause = Math.min(pause * 2, REQUEST_POLL_MAX_MS);
  }
}

function settledForGood(status: sql.AttemptRow['status']): boolean {
  return status === 'succeeded' || status === 'failed';
}

export function registerProviderWebhookRoutes(app: HttpServer, deps: ProviderWebhookDeps): void {
  const handlerDeps = { ...deps, waiting: deps.waiting ?? waitingSlots() };
  app.register(async (scope) => {
    // The signature covers the exact bytes sent, so this route reads the body as text.
    scope.removeContentTypeParser('application/json');
    scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => done(null, body));
    scope.post(PROVIDER_WEBHOOK_PATH, { schema: { hide: true } }, async (request) => {
      if (!deps.secret)
        throw new ApiError('signature_invalid', 'Provider webhooks are not configured: set FLOODGATE_PROVIDER_WEBHOOK_SECRET.');
      const body = typeof request.body === 'string' ? request.body : '';
      const header = request.headers['simulator-signature'];
      const check = verifySignature(deps.secret, Array.isArray(header) ? header[0] : header, body, Math.floor(Date.now() / 1000));
      if (!check.ok) throw new ApiError('signature_invalid', `Webhook refused: ${check.reason}.`);
      const event = parseEvent(body);
      if (!event) throw new ApiError('body_invalid_json', 'The webhook body is not a provider event.');
      return { received: true, result: await handleProviderEvent(handlerDeps, event) };
    });
  });
}
