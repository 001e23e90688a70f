/**
 * Wiring for the webhook delivery tests: a worker running the webhook tasks against the test
 * database with a compressed retry schedule, and merchants with an endpoint aimed at a local
 * receiver.
 */
import { after } from 'node:test';
import { pino } from 'pino';
import { createMerchant } from '../src/merchants/service.js';
import type { Pool } from '../src/platform/db/pool.js';
import { startWorker, type Worker } from '../src/platform/jobs/runner.js';
import type { Metrics } from '../src/platform/observability/metrics.js';
import { webhookTasks } from '../src/webhooks/jobs.js';
import type { WebhookSettings } from '../src/webhooks/service.js';
import { key, type TestContext } from './helpers.js';

/** Retries within a second or two instead of three days; private addresses allowed (127.0.0.1). */
export const COMPRESSED: WebhookSettings = {
  timeoutMs: 2_000,
  retryBaseMs: 100,
  retryMaxMs: 400,
  maxAttempts: 8,
  allowPrivate: true,
  attemptRetentionDays: 30,
  // The development key, as the test apps use (FLOODGATE_SECRETS_KEYS unset).
  secretsKeys: undefined,
};

// Far longer than any job here runs (the 2 s timeout), short enough for a crash test to wait.
export const TEST_LOCK_TIMEOUT_MS = 3_000;

/**
 * A started worker is stopped by the first after() hook registered, so call this before
 * setupTestContext (whose hooks end the pool) and start the worker with the returned function.
 */
export function workerSlot() {
  let worker: Worker | undefined;
  after(async () => {
    await worker?.stop();
  });
  return async (pool: Pool, options: { settings?: WebhookSettings; metrics?: Metrics } = {}) => {
    worker = await startWorker({
      pool,
      tasks: webhookTasks({ pool, settings: options.settings ?? COMPRESSED, metrics: options.metrics }),
      concurrency: 4,
      lockTimeoutMs: TEST_LOCK_TIMEOUT_MS,
      pollIntervalMs: 50,
      metrics: options.metrics,
      log: pino({ level: 'silent' }),
    });
    return worker;
  };
}

/** A merchant of its own (so no other test's events reach its endpoint) with one endpoint. */
export async function merchantWithEndpoint(t: TestContext, url: string, enabledEvents: string[] = ['*']) {
  const created = await createMerchant(t.pool, 'Webhook merchant');
  const auth = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${created.secret_key}`, ...extra });
  const post = (path: string, body: unknown, idempotencyKey = key()) =>
    t.app.inject({ method: 'POST', url: path, headers: auth({ 'idempotency-key': idempotencyKey }), payload: body as object });
  const get = async (path: string) => (await t.app.inject({ method: 'GET', url: path, headers: auth() })).json();
  const endpoint = await post('/v1/webhook_endpoints', { url, enabled_events: enabledEvents });
  if (endpoint.statusCode !== 200) throw new Error(`endpoint not created: ${endpoint.body}`);
  const { id, secret } = endpoint.json() as { id: string; secret: string };
  return { merchantId: created.merchant.id, endpoint: { id, secret }, auth, post, get };
}

export type WebhookMerchant = Awaited<ReturnType<typeof merchantWithEndpoint>>;
