/**
 * Outbound webhooks: pure rules. No I/O here.
 *
 * A delivery is one event on its way to one endpoint:
 *
 *   pending ──2xx──▶ succeeded
 *   pending ──other status, timeout, connection error──▶ pending (next attempt after a backoff)
 *   pending ──that was the last attempt──▶ dead
 *   pending ──410 Gone (the endpoint is disabled)──▶ canceled
 *   succeeded | dead | canceled ──redeliver──▶ pending (a new round of attempts)
 *
 * Messages follow Standard Webhooks (https://www.standardwebhooks.com): `webhook-id`,
 * `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`, so any receiver can
 * verify them with an off-the-shelf library.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { DeliveryRow, DeliveryStatus, EndpointRow } from './sql.js';

export { DELIVERY_STATUSES, type DeliveryStatus } from './sql.js';

/** Subscribes an endpoint to every event type, including those added later. */
export const ALL_EVENTS = '*';

export const SECRET_PREFIX = 'whsec_';
// Standard Webhooks asks for 24 to 64 bytes; 32 bytes is the HMAC-SHA256 block's full strength.
const SECRET_BYTES = 32;

// A rotation's old secret keeps signing for a day by default, long enough for a receiver to
// deploy the new one; at most a week, so a leaked secret cannot be kept alive by rotating.
export const ROTATION_OVERLAP_SECONDS_DEFAULT = 86_400;
export const ROTATION_OVERLAP_SECONDS_MAX = 7 * 86_400;

// Every event fans out to each enabled endpoint in the transaction that records it; Stripe's
// limit of 16 keeps that cost small and is what integrators expect.
export const ENDPOINTS_PER_MERCHANT_MAX = 16;

// A URL longer than this is not a webhook receiver; it is also the column's check.
export const URL_LENGTH_MAX = 2048;

export function newSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(SECRET_BYTES).toString('base64')}`;
}

/**
 * The `webhook-signature` header: one `v1,<signature>` per secret, space-separated, so during a
 * rotation a receiver holding either the old or the new secret finds a match.
 */
export function signatureHeader(secrets: readonly string[], messageId: string, timestampSeconds: number, body: string): string {
  return secrets
    .map((secret) => {
      const key = Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64');
      const signature = createHmac('sha256', key).update(`${messageId}.${timestampSeconds}.${body}`).digest('base64');
      return `v1,${signature}`;
    })
    .join(' ');
}

export interface RetrySchedule {
  retryBaseMs: number;
  retryMaxMs: number;
  maxAttempts: number;
}

/**
 * Exponential backoff with full jitter: after failed attempt n (1-based) the next one waits a
 * random time between 0 and min(max, base * 2^(n-1)). With the defaults (base 30 s, max 8 h,
 * 19 attempts) the caps are 30 s, 1 m, 2 m, 4 m, 8 m, 16 m, 32 m, 64 m, 128 m, 256 m, then
 * 8 h eight times: 72.5 hours in all. A delivery is therefore dead at most about three days
 * after its first attempt (a day and a half on average), and the jitter spreads the retries of
 * many deliveries that failed together, so a receiver coming back up is not hit by all at once.
 */
export function retryCapMs(failedAttempt: number, schedule: RetrySchedule): number {
  const exponent = Math.min(failedAttempt - 1, 40);
  return Math.min(schedule.retryMaxMs, schedule.retryBaseMs * 2 ** exponent);
}

export function retryDelayMs(failedAttempt: number, schedule: RetrySchedule, random: () => number = Math.random): number {
  return Math.floor(random() * retryCapMs(failedAttempt, schedule));
}

/** The longest time from a delivery's first attempt to its last: the sum of the caps. */
export function scheduleSpanMs(schedule: RetrySchedule): number {
  let total = 0;
  for (let attempt = 1; attempt < schedule.maxAttempts; attempt++) total += retryCapMs(attempt, schedule);
  return total;
}

/** What one HTTP attempt came to. */
export type AttemptResult =
  | { kind: 'response'; statusCode: number; durationMs: number }
  | { kind: 'error'; error: string; timedOut: boolean; durationMs: number };

export type AttemptOutcome = 'succeeded' | 'endpoint_disabled' | 'retry_scheduled' | 'dead';

/**
 * 2xx is success. 410 Gone means the receiver asks us to stop: the endpoint is disabled.
 * Anything else, redirects included (they are never followed), is retried until the attempts
 * run out.
 */
export function outcomeOf(result: AttemptResult, attempt: number, maxAttempts: number): AttemptOutcome {
  if (result.kind === 'response' && result.statusCode >= 200 && result.statusCode < 300) return 'succeeded';
  if (result.kind === 'response' && result.statusCode === 410) return 'endpoint_disabled';
  return attempt >= maxAttempts ? 'dead' : 'retry_scheduled';
}

export function statusAfter(outcome: AttemptOutcome): DeliveryStatus {
  switch (outcome) {
    case 'succeeded':
      return 'succeeded';
    case 'endpoint_disabled':
      return 'canceled';
    case 'retry_scheduled':
      return 'pending';
    case 'dead':
      return 'dead';
  }
}

/** The latency histogram's label: the status class, or why there was no status. */
export function resultLabel(result: AttemptResult): string {
  if (result.kind === 'error') return result.timedOut ? 'timeout' : 'error';
  return `${Math.floor(result.statusCode / 100)}xx`;
}

const unix = (date: Date | null) => (date ? Math.floor(date.getTime() / 1000) : null);

export function toApiEndpoint(row: EndpointRow, secret?: string) {
  return {
    id: row.id,
    object: 'webhook_endpoint' as const,
    url: row.url,
    enabled_events: row.enabled_events,
    description: row.description,
    status: row.status,
    disabled_reason: row.disabled_reason,
    // While a rotation overlaps, the previous secret also signs until this time.
    previous_secret_expires_at: unix(row.previous_secret_expires_at),
    created: unix(row.created_at) as number,
    ...(secret === undefined ? {} : { secret }),
  };
}

export function toApiDelivery(row: DeliveryRow) {
  return {
    id: row.id,
    object: 'webhook_delivery' as const,
    endpoint: row.endpoint_id,
    event: row.event_id,
    status: row.status,
    round: row.round,
    attempts: row.attempts,
    next_attempt_at: row.status === 'pending' ? unix(row.next_attempt_at) : null,
    last_attempt: row.last_attempt_at
      ? {
          attempted_at: unix(row.last_attempt_at) as number,
          status_code: row.last_status_code,
          error: row.last_error,
          duration_ms: row.last_duration_ms as number,
        }
      : null,
    created: unix(row.created_at) as number,
  };
}
