/**
 * The surge platform pieces as app.ts wires them: load shedding before everything, the
 * address limit before authentication, the key limit after it, /readyz reporting Redis (degraded, not unready).
 * Each piece is tested on its own beside its code; these check the order and the wiring.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type AppDeps, buildApp } from '../src/app.js';
import { type Config, loadConfig } from '../src/config.js';
import { createShedder } from '../src/platform/http/shedding.js';
import { createMetrics } from '../src/platform/observability/metrics.js';
import { HttpProvider } from '../src/providers/http-provider.js';
import {
  createTestDatabase,
  createTestMerchant,
  startTestSimulator,
  TEST_PROVIDER_WEBHOOK_SECRET,
  TEST_TRAFFIC_LIMITS_OFF,
} from './helpers.js';
import { openTestRedis, redisSkip, testKeyPrefix } from './redis.js';

const { pool } = await createTestDatabase();
const sim = await startTestSimulator({ webhookSecret: TEST_PROVIDER_WEBHOOK_SECRET });
const merchant = await createTestMerchant(pool);
const otherMerchant = await createTestMerchant(pool);

// 1 per second over 3 s: three requests per window, reached in a handful of requests, over a
// window far longer than those requests take.
const THREE_PER_WINDOW = { rateLimitWindowSeconds: 3 };

async function build(overrides: Partial<Config>, deps: Partial<AppDeps> = {}) {
  const config = loadConfig({}, { providerUrl: sim.url, apiKeyCacheTtlMs: 0, ...TEST_TRAFFIC_LIMITS_OFF, ...overrides });
  const provider = new HttpProvider({ baseUrl: sim.url, timeoutMs: 1_000, breakerThreshold: 5, halfOpenMs: 1_000 });
  const app = await buildApp({ config, pool, provider, ...deps });
  after(() => app.close());
  return app;
}

function get(app: Awaited<ReturnType<typeof build>>, url: string, key?: string) {
  return app.inject({ method: 'GET', url, headers: key ? { authorization: `Bearer ${key}` } : {} });
}

describe('rate limits in the app', () => {
  test('the address limit counts requests with bad keys too', async () => {
    const app = await build({ ...THREE_PER_WINDOW, rateLimitIpPerSecond: 1 });
    for (let i = 0; i < 3; i++) {
      const response = await get(app, '/v1/balance', 'sk_test_not_a_real_key');
      assert.equal(response.statusCode, 401);
      assert.equal(response.headers['ratelimit-limit'], '3');
    }
    const refused = await get(app, '/v1/balance', merchant.publishableKey);
    assert.equal(refused.statusCode, 429);
    assert.equal(refused.json().error.code, 'rate_limited');
    assert.ok(Number(refused.headers['retry-after']) >= 1);
    for (const url of ['/livez', '/readyz', '/metrics']) assert.equal((await get(app, url)).statusCode, 200, url);
  });

  test("a merchant's servers (secret key) are not held to the address limit; buyers and bad keys are", async () => {
    const app = await build({ ...THREE_PER_WINDOW, rateLimitIpPerSecond: 1 });
    // Sixty calls from one server address: far past the address limit of three per window.
    for (let i = 0; i < 60; i++) {
      const response = await get(app, '/v1/balance', merchant.secretKey);
      assert.equal(response.statusCode, 200, `call ${i + 1}: ${response.body}`);
    }
    // The same address without a valid secret key is one client of the address limit.
    const statuses = [];
    for (const key of [merchant.publishableKey, undefined, 'sk_test_not_a_real_key', merchant.publishableKey]) {
      statuses.push((await get(app, '/v1/sales/sale_none', key)).statusCode);
    }
    assert.deepEqual(statuses, [404, 401, 401, 429]);
    // The secret key is still governed by its own (key) limit, and still served.
    assert.equal((await get(app, '/v1/balance', merchant.secretKey)).statusCode, 200);
  });

  test('the provider-webhook route has a limit of its own, apart from the address limit', async () => {
    const app = await build({ ...THREE_PER_WINDOW, rateLimitIpPerSecond: 1, rateLimitProviderWebhookPerSecond: 2 });
    const webhook = () =>
      app.inject({ method: 'POST', url: '/v1/providers/simulator/webhooks', payload: {}, headers: { 'simulator-signature': 'bad' } });
    const statuses = [];
    for (let i = 0; i < 7; i++) statuses.push((await webhook()).statusCode);
    assert.deepEqual(
      statuses.slice(0, 6).filter((status) => status === 429),
      [],
      'six per window allowed',
    );
    assert.equal(statuses[6], 429);
    // None of them counted against the address's own limit.
    for (let i = 0; i < 3; i++) assert.equal((await get(app, '/v1/sales/sale_none', merchant.publishableKey)).statusCode, 404);
    assert.equal((await get(app, '/v1/sales/sale_none', merchant.publishableKey)).statusCode, 429);
  });

  test('the key limit runs on the authenticated key; another merchant is unaffected', async () => {
    const app = await build({ ...THREE_PER_WINDOW, rateLimitKeyPerSecond: 1 });
    for (let i = 0; i < 3; i++) assert.equal((await get(app, '/v1/balance', merchant.secretKey)).statusCode, 200);
    const refused = await get(app, '/v1/balance', merchant.secretKey);
    assert.equal(refused.statusCode, 429);
    assert.equal(refused.headers['ratelimit-remaining'], '0');
    assert.ok(Number(refused.headers['retry-after']) >= 1);
    assert.equal((await get(app, '/v1/balance', otherMerchant.secretKey)).statusCode, 200);
  });
});

describe('load shedding in the app', () => {
  test('an overloaded node refuses before authentication and still answers its health checks', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const delay = { ms: 0, takeMs: () => delay.ms, close() {} };
    const shedder = createShedder({ eventLoopDelayMaxMs: 100, inFlightMax: 1_000, registry: metrics.registry, delaySource: delay });
    const app = await build({}, { shedder, metrics });
    delay.ms = 500;
    shedder.runOnce();
    const refused = await get(app, '/v1/balance');
    assert.equal(refused.statusCode, 503);
    assert.equal(refused.json().error.code, 'overloaded');
    assert.ok(Number(refused.headers['retry-after']) >= 1);
    for (const url of ['/livez', '/readyz', '/metrics']) assert.equal((await get(app, url)).statusCode, 200, url);
    delay.ms = 0;
    shedder.runOnce();
    assert.equal((await get(app, '/v1/balance', merchant.secretKey)).statusCode, 200);
  });
  test('the line is shed first: its routes refuse at the limit while checkout and the merchant API are still served', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const delay = { ms: 0, takeMs: () => delay.ms, close() {} };
    const shedder = createShedder({ eventLoopDelayMaxMs: 100, inFlightMax: 1_000, registry: metrics.registry, delaySource: delay });
    const app = await build({}, { shedder, metrics });
    delay.ms = 150;
    shedder.runOnce();
    const line = [
      { method: 'GET', url: '/v1/sales/sale_0000000000000000000000' },
      { method: 'POST', url: '/v1/sales/sale_0000000000000000000000/queue' },
      { method: 'GET', url: '/v1/sales/sale_0000000000000000000000/queue/qt_0000000000000000000000' },
      { method: 'GET', url: '/s/sale_0000000000000000000000' },
      { method: 'GET', url: '/s/sale_0000000000000000000000/line' },
      { method: 'POST', url: '/s/sale_0000000000000000000000/join' },
    ] as const;
    for (const request of line) {
      const refused = await app.inject({ ...request, headers: { authorization: `Bearer ${merchant.publishableKey}` } });
      assert.equal(refused.statusCode, 503, `${request.method} ${request.url}`);
      assert.equal(refused.json().error.code, 'overloaded');
    }
    assert.equal((await get(app, '/v1/balance', merchant.secretKey)).statusCode, 200);
    // A hold is checkout: past the shedder, it fails on its (empty) body instead.
    const hold = await app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: { authorization: `Bearer ${merchant.publishableKey}`, 'idempotency-key': 'shed-first-hold' },
      payload: {},
    });
    assert.equal(hold.statusCode, 400, hold.body);
  });
});

describe('readiness', () => {
  test('an extra readiness check that fails makes /readyz 503 and names it', async () => {
    const app = await build(
      {},
      { readinessChecks: [{ name: 'waiting_room', check: async () => Promise.reject(new Error('not loaded')) }] },
    );
    const response = await get(app, '/readyz');
    assert.equal(response.statusCode, 503);
    assert.deepEqual(response.json(), { status: 'unavailable', reason: 'waiting_room: not loaded' });
  });
});

describe('the app with Redis', { skip: redisSkip }, () => {
  test('two nodes on one Redis share one address limit', async () => {
    const prefix = testKeyPrefix();
    const config = { ...THREE_PER_WINDOW, rateLimitIpPerSecond: 1 };
    const a = await build(config, { redis: await openTestRedis(prefix) });
    const b = await build(config, { redis: await openTestRedis(prefix) });
    const statuses = [];
    for (const node of [a, b, a, b]) statuses.push((await get(node, '/v1/balance')).statusCode);
    assert.deepEqual(statuses, [401, 401, 401, 429]);
  });

  test('/readyz pings Redis and reports it degraded, still ready, when it does not answer', async () => {
    const redis = await openTestRedis();
    const app = await build({}, { redis });
    assert.deepEqual((await get(app, '/readyz')).json(), { status: 'ready' });
    redis.client.disconnect();
    const response = await get(app, '/readyz');
    // Payments do not need Redis: a node without it stays in the balancer, and says why it is degraded.
    assert.equal(response.statusCode, 200);
    assert.match(response.json().degraded, /^redis: /);
  });
});
