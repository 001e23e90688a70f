/**
 * The surge path end to end: a sale, its waiting room, holds, orders and payments, through the
 * API as buyers and merchants use it, with the worker's jobs stepped directly.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { reconcileAttempt } from '../src/payments/reconciliation.js';
import { HttpProvider } from '../src/providers/http-provider.js';
import { convertPaidHold, expireHold } from '../src/sales/holds.js';
import {
  key,
  setupTestContext,
  TEST_ADMISSION_SECRET,
  TEST_PROVIDER_WEBHOOK_SECRET,
  TEST_TRAFFIC_LIMITS_OFF,
  type TestContext,
} from './helpers.js';
import { openTestRedis, redisSkip, testKeyPrefix } from './redis.js';

const t = await setupTestContext({ simulator: { timeoutHoldMs: 1_000 }, config: { providerTimeoutMs: 300 } });
const publishable = () => ({ authorization: `Bearer ${t.merchant.publishableKey}` });
const LATER = () => new Date(Date.now() + 24 * 3_600_000);

async function createSale(ctx: TestContext, stock = 10) {
  const response = await ctx.app.inject({
    method: 'POST',
    url: '/v1/sales',
    headers: ctx.auth({ 'idempotency-key': key('sale') }),
    payload: {
      name: 'Spring release',
      currency: 'thb',
      opens_at: new Date(Date.now() - 60_000).toISOString(),
      per_buyer_limit: 4,
      hold_seconds: 60,
      max_shoppers: 1000,
      admit_per_second: 1000,
      items: [{ name: 'Ticket', price: 150_000, stock }],
    },
  });
  assert.equal(response.statusCode, 200, response.body);
  return { id: response.json().id as string, itemId: response.json().items[0].id as string };
}

/** Joins the line and returns the admission token (the sale admits everyone at once). */
async function admit(saleId: string, buyer: string): Promise<string> {
  const joined = await t.app.inject({
    method: 'POST',
    url: `/v1/sales/${saleId}/queue`,
    headers: publishable(),
    payload: { buyer_reference: buyer },
  });
  assert.equal(joined.json().status, 'admitted', joined.body);
  return joined.json().admission_token;
}

async function hold(sale: { id: string; itemId: string }, buyer: string, quantity = 2) {
  const token = await admit(sale.id, buyer);
  const response = await t.app.inject({
    method: 'POST',
    url: '/v1/holds',
    headers: { ...publishable(), 'idempotency-key': key('hold') },
    payload: { sale: sale.id, buyer_reference: buyer, admission_token: token, items: [{ item: sale.itemId, quantity }] },
  });
  assert.equal(response.statusCode, 200, response.body);
  return response.json();
}

async function order(holdId: string) {
  const response = await t.app.inject({
    method: 'POST',
    url: '/v1/orders',
    headers: t.auth({ 'idempotency-key': key('order') }),
    payload: { hold: holdId },
  });
  assert.equal(response.statusCode, 200, response.body);
  return response.json();
}

async function confirm(intentId: string, paymentMethod: string) {
  return t.app.inject({
    method: 'POST',
    url: `/v1/payment_intents/${intentId}/confirm`,
    headers: t.auth({ 'idempotency-key': key('confirm') }),
    payload: { payment_method: paymentMethod },
  });
}

async function stock(saleId: string) {
  const response = await t.app.inject({ method: 'GET', url: `/v1/sales/${saleId}`, headers: t.auth() });
  // The public read is cached for up to a second; the database is the truth for these checks.
  const { rows } = await t.pool.query('select stock_available, stock_held, stock_sold from items where sale_id = $1', [saleId]);
  assert.equal(response.statusCode, 200);
  return rows[0] as { stock_available: number; stock_held: number; stock_sold: number };
}

async function orderStatus(orderId: string) {
  const response = await t.app.inject({ method: 'GET', url: `/v1/orders/${orderId}`, headers: t.auth() });
  return response.json().status as string;
}

describe('surge checkout', () => {
  test('queue, hold, order and pay: the order is paid once and its units sold', async () => {
    const sale = await createSale(t);
    const held = await hold(sale, 'buyer-paid');
    assert.equal(held.amount, 300_000);
    assert.deepEqual(await stock(sale.id), { stock_available: 8, stock_held: 2, stock_sold: 0 });
    const placed = await order(held.id);
    assert.equal(placed.status, 'awaiting_payment');
    const paid = await confirm(placed.payment_intent, 'pm_card_visa');
    assert.equal(paid.json().status, 'succeeded');
    assert.equal(await orderStatus(placed.id), 'paid');
    assert.deepEqual(await stock(sale.id), { stock_available: 8, stock_held: 0, stock_sold: 2 });
    // The provider's webhooks arriving late complete nothing twice.
    for (const event of t.sim.simulator.webhooksSent) await t.sim.simulator.sendWebhook(event);
    assert.deepEqual(await stock(sale.id), { stock_available: 8, stock_held: 0, stock_sold: 2 });
  });

  test('a declined payment leaves the order payable until the hold expires', async () => {
    const sale = await createSale(t);
    const placed = await order((await hold(sale, 'buyer-declined')).id);
    const declined = await confirm(placed.payment_intent, 'pm_card_declined');
    assert.equal(declined.statusCode, 402);
    assert.equal(await orderStatus(placed.id), 'awaiting_payment');
    const paid = await confirm(placed.payment_intent, 'pm_card_visa');
    assert.equal(paid.json().status, 'succeeded');
    assert.equal(await orderStatus(placed.id), 'paid');
  });

  test('an expired hold returns its stock and its unpaid order can no longer be paid', async () => {
    const sale = await createSale(t);
    const held = await hold(sale, 'buyer-expired', 3);
    const placed = await order(held.id);
    assert.equal(await expireHold(t.pool, { merchant_id: t.merchant.id, hold_id: held.id }, LATER()), 'released');
    assert.deepEqual(await stock(sale.id), { stock_available: 10, stock_held: 0, stock_sold: 0 });
    assert.equal(await orderStatus(placed.id), 'expired');
    const late = await confirm(placed.payment_intent, 'pm_card_visa');
    assert.equal(late.statusCode, 409);
    assert.equal(late.json().error.code, 'payment_intent_unexpected_state');
  });

  test('a hold is extended while its payment is processing, and sold when it succeeds', async () => {
    const sale = await createSale(t);
    const held = await hold(sale, 'buyer-slow');
    const placed = await order(held.id);
    const pending = await confirm(placed.payment_intent, 'pm_card_timeout');
    assert.equal(pending.json().status, 'processing');
    assert.equal(await expireHold(t.pool, { merchant_id: t.merchant.id, hold_id: held.id }, LATER()), 'extended');
    assert.deepEqual(await stock(sale.id), { stock_available: 8, stock_held: 2, stock_sold: 0 });
    const { rows } = await t.pool.query(
      `select merchant_id, id from payment_attempts where payment_intent_id = $1 and status = 'unknown'`,
      [placed.payment_intent],
    );
    const options = { baseDelayMs: 10, maxDelayMs: 10, maxAttempts: 3, staleAfterMs: 1_000 };
    assert.equal(
      await reconcileAttempt(
        { pool: t.pool, provider: t.provider, options, onPaymentSucceeded: convertPaidHold },
        { merchant_id: rows[0].merchant_id, attempt_id: rows[0].id, round: 1 },
      ),
      'settled',
    );
    assert.equal(await orderStatus(placed.id), 'paid');
    assert.deepEqual(await stock(sale.id), { stock_available: 8, stock_held: 0, stock_sold: 2 });
  });

  test('a released hold returns its stock; a replayed admission token is refused', async () => {
    const sale = await createSale(t);
    const token = await admit(sale.id, 'buyer-release');
    const place = () =>
      t.app.inject({
        method: 'POST',
        url: '/v1/holds',
        headers: publishable(),
        payload: { sale: sale.id, buyer_reference: 'buyer-release', admission_token: token, items: [{ item: sale.itemId, quantity: 1 }] },
      });
    const held = await place();
    assert.equal(held.statusCode, 200);
    assert.equal((await place()).json().error.code, 'admission_invalid');
    const released = await t.app.inject({ method: 'DELETE', url: `/v1/holds/${held.json().id}`, headers: publishable() });
    assert.equal(released.json().status, 'released', released.body);
    assert.deepEqual(await stock(sale.id), { stock_available: 10, stock_held: 0, stock_sold: 0 });
  });

  test('sold out names the item; the public read carries an ETag and answers 304', async () => {
    // Two buyers admitted for two units; the first takes both, so the database refuses the second.
    const sale = await createSale(t, 2);
    const first = await admit(sale.id, 'buyer-first');
    const second = await admit(sale.id, 'buyer-second');
    const place = (buyer: string, token: string, quantity: number) =>
      t.app.inject({
        method: 'POST',
        url: '/v1/holds',
        headers: publishable(),
        payload: { sale: sale.id, buyer_reference: buyer, admission_token: token, items: [{ item: sale.itemId, quantity }] },
      });
    assert.equal((await place('buyer-first', first, 2)).statusCode, 200);
    const late = await place('buyer-second', second, 1);
    assert.equal(late.statusCode, 409);
    assert.equal(late.json().error.code, 'sold_out');
    assert.match(late.json().error.message, new RegExp(sale.itemId));
    const read = await t.app.inject({ method: 'GET', url: `/v1/sales/${sale.id}`, headers: publishable() });
    assert.equal(read.statusCode, 200);
    assert.ok(read.headers.etag);
    assert.match(String(read.headers['cache-control']), /public, max-age=\d+/);
    const again = await t.app.inject({
      method: 'GET',
      url: `/v1/sales/${sale.id}`,
      headers: { ...publishable(), 'if-none-match': String(read.headers.etag) },
    });
    assert.equal(again.statusCode, 304);
  });

  test('a sale change made on one API node is seen by another at once, through Redis', { skip: redisSkip }, async () => {
    const prefix = testKeyPrefix();
    // A minute's staleness bound: only the pub/sub invalidation can explain seeing the change.
    const config = loadConfig(
      {},
      {
        providerUrl: t.sim.url,
        providerWebhookSecret: TEST_PROVIDER_WEBHOOK_SECRET,
        admissionSecret: TEST_ADMISSION_SECRET,
        apiKeyCacheTtlMs: 0,
        cacheStaleMs: 60_000,
        ...TEST_TRAFFIC_LIMITS_OFF,
      },
    );
    const node = async () => {
      const provider = new HttpProvider({ baseUrl: t.sim.url, timeoutMs: 1_000, breakerThreshold: 5, halfOpenMs: 1_000 });
      const app = await buildApp({ config, pool: t.pool, provider, redis: await openTestRedis(prefix) });
      return app;
    };
    const [a, b] = [await node(), await node()];
    try {
      const sale = await createSale(t);
      const read = async () => (await b.inject({ method: 'GET', url: `/v1/sales/${sale.id}`, headers: publishable() })).json().name;
      assert.equal(await read(), 'Spring release');
      const renamed = await a.inject({
        method: 'PATCH',
        url: `/v1/sales/${sale.id}`,
        headers: t.auth({ 'idempotency-key': key('patch') }),
        payload: { name: 'Spring release (extra date)' },
      });
      assert.equal(renamed.statusCode, 200, renamed.body);
      const deadline = Date.now() + 10_000;
      while ((await read()) !== 'Spring release (extra date)') {
        assert.ok(Date.now() < deadline, 'node B still serves the old sale');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } finally {
      await a.close();
      await b.close();
    }
  });
});
