/**
 * Degradation without the cluster: what a node does when PostgreSQL or Redis goes away, or its
 * pool of database connections is used up, and that it recovers without a restart.
 * (test/faults/ does the same on a real failover.)
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { type AppDeps, buildApp } from '../src/app.js';
import { freePort } from '../src/cli/cluster/processes.js';
import { loadConfig } from '../src/config.js';
import { isDatabaseUnavailable } from '../src/platform/db/errors.js';
import { createPool } from '../src/platform/db/pool.js';
import { HttpProvider } from '../src/providers/http-provider.js';
import {
  createTestDatabase,
  createTestMerchant,
  key,
  startTestSimulator,
  TEST_ADMISSION_SECRET,
  TEST_PROVIDER_WEBHOOK_SECRET,
  TEST_TRAFFIC_LIMITS_OFF,
} from './helpers.js';
import { openTestRedis, redisSkip } from './redis.js';

const { pool, url } = await createTestDatabase();
const sim = await startTestSimulator({ webhookSecret: TEST_PROVIDER_WEBHOOK_SECRET });
const merchant = await createTestMerchant(pool);

async function build(deps: Partial<AppDeps>) {
  const config = loadConfig(
    {},
    {
      providerUrl: sim.url,
      apiKeyCacheTtlMs: 0,
      admissionSecret: TEST_ADMISSION_SECRET,
      providerWebhookSecret: TEST_PROVIDER_WEBHOOK_SECRET,
      ...TEST_TRAFFIC_LIMITS_OFF,
    },
  );
  const provider = new HttpProvider({ baseUrl: sim.url, timeoutMs: 1_000, breakerThreshold: 5, halfOpenMs: 1_000 });
  const app = await buildApp({ config, pool, provider, ...deps });
  after(() => app.close());
  return app;
}

const auth = (secret = merchant.secretKey) => ({ authorization: `Bearer ${secret}` });

describe('PostgreSQL going away', () => {
  test('a named prepared statement is prepared again on the connection that replaces a terminated one', async () => {
    const own = createPool({ connectionString: url, max: 1, statementTimeoutMs: 10_000 });
    after(() => own.end());
    const probe = { name: 'degradation_probe', text: 'select $1::int + 1 as n, pg_backend_pid() as pid', values: [41] };
    const first = await own.query(probe);
    assert.equal(first.rows[0].n, 42);
    // The backend dies under a running query, as on a failover or a restart.
    const running = own.query('select pg_sleep(30)').then(
      () => undefined,
      (error: unknown) => error,
    );
    await waitUntil(
      async () =>
        (await pool.query('select 1 from pg_stat_activity where pid = $1 and query like $2', [first.rows[0].pid, '%pg_sleep%']))
          .rowCount === 1,
    );
    await pool.query('select pg_terminate_backend($1)', [first.rows[0].pid]);
    const error = await running;
    assert.ok(error instanceof Error, 'the running query failed');
    assert.ok(isDatabaseUnavailable(error), `classified as unavailable (503), not a bug: ${(error as Error).message}`);
    // The pool drops the dead connection; the same named statement runs on a new backend.
    const again = await own.query(probe);
    assert.equal(again.rows[0].n, 42);
    assert.notEqual(again.rows[0].pid, first.rows[0].pid);
  });

  test('with the database unreachable, requests get 503 with Retry-After, never a 500, and /readyz says so', async () => {
    const port = await freePort();
    const dead = createPool({ connectionString: `postgres://postgres@127.0.0.1:${port}/nothing`, max: 2, statementTimeoutMs: 1_000 });
    after(() => dead.end());
    const app = await build({ pool: dead });
    const balance = await app.inject({ method: 'GET', url: '/v1/balance', headers: auth() });
    assert.equal(balance.statusCode, 503, balance.body);
    assert.equal(balance.json().error.code, 'service_unavailable');
    assert.equal(balance.headers['retry-after'], '2');
    const payment = await app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: { ...auth(), 'idempotency-key': key('dead') },
      payload: { amount: 1000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
    });
    assert.equal(payment.statusCode, 503, payment.body);
    const ready = await app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(ready.statusCode, 503);
    assert.match(ready.json().reason, /^database: /);
  });
});

describe('PostgreSQL saturated', () => {
  test('with every pooled connection taken, a request is 503 service_unavailable with Retry-After 1, and its retry succeeds once', async () => {
    // One connection, and a short wait for it: the saturation a surge makes, in miniature.
    const tiny = createPool({ connectionString: url, max: 1, statementTimeoutMs: 10_000, connectionTimeoutMs: 200 });
    after(() => tiny.end());
    const app = await build({ pool: tiny });
    const paymentKey = key('saturated');
    const pay = () =>
      app.inject({
        method: 'POST',
        url: '/v1/payment_intents',
        headers: { ...auth(), 'idempotency-key': paymentKey },
        payload: { amount: 1300, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
      });
    const busy = {
      error: { type: 'api_error', code: 'service_unavailable', message: 'The service is busy; retry shortly.' },
    };
    // The one connection, held as a long transaction would hold it.
    const held = await tiny.connect();
    try {
      const balance = await app.inject({ method: 'GET', url: '/v1/balance', headers: auth() });
      assert.equal(balance.statusCode, 503, balance.body);
      assert.equal(balance.headers['retry-after'], '1');
      assert.deepEqual(balance.json(), busy);
      const refused = await pay();
      assert.equal(refused.statusCode, 503, refused.body);
      assert.equal(refused.headers['retry-after'], '1');
      assert.deepEqual(refused.json(), busy);
    } finally {
      held.release();
    }
    // Nothing happened: the retry with the same key pays, once.
    const retried = await pay();
    assert.equal(retried.statusCode, 200, retried.body);
    assert.equal(retried.headers['idempotent-replayed'], undefined);
    assert.equal(retried.json().status, 'succeeded');
    const { rows } = await pool.query('select count(*)::int as intents from payment_intents where merchant_id = $1 and amount = 1300', [
      merchant.id,
    ]);
    assert.deepEqual(rows, [{ intents: 1 }]);
  });
});

describe('Redis going away', { skip: redisSkip }, () => {
  test('payments keep working; the waiting room refuses with waiting_room_unavailable; recovery needs no restart', async () => {
    const redis = await openTestRedis();
    const app = await build({ redis });
    const sale = await app.inject({
      method: 'POST',
      url: '/v1/sales',
      headers: { ...auth(), 'idempotency-key': key('sale') },
      payload: {
        name: 'Drop',
        currency: 'usd',
        opens_at: new Date(Date.now() - 60_000).toISOString(),
        per_buyer_limit: 2,
        hold_seconds: 60,
        max_shoppers: 100,
        admit_per_second: 100,
        items: [{ name: 'Cap', price: 2_000, stock: 5 }],
      },
    });
    assert.equal(sale.statusCode, 200, sale.body);
    const join = (buyer: string) =>
      app.inject({
        method: 'POST',
        url: `/v1/sales/${sale.json().id}/queue`,
        headers: auth(merchant.publishableKey),
        payload: { buyer_reference: buyer },
      });
    assert.equal((await join('before')).json().status, 'admitted');

    // disconnect() only half-closes the socket; the client is down once it says 'end'. Before
    // that, a request could still reach Redis, and connect() below would refuse to start.
    const ended = once(redis.client, 'end');
    redis.client.disconnect();
    await ended;
    const refused = await join('during');
    assert.equal(refused.statusCode, 503, refused.body);
    assert.equal(refused.json().error.code, 'waiting_room_unavailable');
    assert.ok(Number(refused.headers['retry-after']) > 0);
    const payment = await app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: { ...auth(), 'idempotency-key': key('no-redis') },
      payload: { amount: 1000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
    });
    assert.equal(payment.statusCode, 200, payment.body);
    assert.equal(payment.json().status, 'succeeded');

    await redis.client.connect();
    assert.equal((await join('after')).json().status, 'admitted');
  });
});

async function waitUntil(check: () => Promise<boolean>) {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('condition not met within 5 s');
}
