/**
 * The surge path end to end: a sale, its waiting room, holds, orders and payments, through the
 * API as buyers and merchants use it, with the worker's jobs stepped directly.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { completeAttempt } from '../src/payments/completion.js';
import { reconcileAttempt } from '../src/payments/reconciliation.js';
import { HttpProvider } from '../src/providers/http-provider.js';
import { convertPaidHold, expireHold } from '../src/sales/holds.js';
import {
  key,
  PROVIDER_TIMEOUT_MS,
  setupTestContext,
  shortTimeoutApp,
  TEST_ADMISSION_SECRET,
  TEST_PROVIDER_WEBHOOK_SECRET,
  TEST_TRAFFIC_LIMITS_OFF,
  type TestContext,
} from './helpers.js';
import { openTestRedis, redisSkip, testKeyPrefix } from './redis.js';

// The app listens so the provider's webhooks can reach it; the simulator records them and sends
// them only when a test points it at the app (webhookUrl), so no test is settled by surprise.
const t = await setupTestContext({ listen: true });
const webhookUrl = t.sim.simulator.webhookUrl;
t.sim.simulator.webhookUrl = undefined;
// Only pm_card_timeout confirms go through this app: they are meant to time out.
const timingOut = await shortTimeoutApp(t);
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

async function confirm(intentId: string, paymentMethod: string, app = t.app) {
  return app.inject({
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

/**
 * The public sale's stock, read once the copy the cache may hold (the line reads the sale into
 * it when a buyer joins) is older than the staleness bound: all the cache promises.
 */
async function publicStock(saleId: string) {
  await new Promise((resolve) => setTimeout(resolve, t.config.cacheStaleMs + 50));
  const read = await t.app.inject({ method: 'GET', url: `/v1/sales/${saleId}`, headers: publishable() });
  assert.equal(read.statusCode, 200, read.body);
  return read.json().items[0].stock;
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
    assert.deepEqual(await publicStock(sale.id), { total: 10, available: 8, held: 0, sold: 2 });
    // The provider's webhooks arriving late complete nothing twice: each is received and applied
    // (recorded) by the app, and neither the order nor the stock moves.
    const { rows: attempts } = await t.pool.query<{ provider_idempotency_key: string }>(
      'select provider_idempotency_key from payment_attempts where merchant_id = $1 and payment_intent_id = $2',
      [t.merchant.id, placed.payment_intent],
    );
    const keys = new Set(attempts.map((row) => row.provider_idempotency_key));
    const late = t.sim.simulator.webhooksSent.filter((event) => keys.has(event.idempotency_key));
    assert.deepEqual(
      late.map((event) => event.type),
      ['charge.succeeded'],
    );
    t.sim.simulator.webhookUrl = webhookUrl;
    try {
      for (const event of late) assert.equal(await t.sim.simulator.sendWebhook(event), 200);
      for (const event of late) assert.equal(await t.sim.simulator.sendWebhook(event), 200, 'a duplicate is acknowledged too');
    } finally {
      t.sim.simulator.webhookUrl = undefined;
    }
    const { rows: received } = await t.pool.query(
      'select count(*)::int as n from provider_events where merchant_id = $1 and event_id = any($2)',
      [t.merchant.id, late.map((event) => event.id)],
    );
    assert.equal(received[0].n, late.length, 'the app received and recorded every late webhook');
    assert.equal(await orderStatus(placed.id), 'paid');
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
    const pending = await confirm(placed.payment_intent, 'pm_card_timeout', timingOut);
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

  test('a hold expiring while its payment completes neither deadlocks nor expires: the payment wins', async () => {
    const sale = await createSale(t);
    const held = await hold(sale, 'buyer-race');
    const placed = await order(held.id);
    assert.equal((await confirm(placed.payment_intent, 'pm_card_timeout', timingOut)).json().status, 'processing');
    const { rows } = await t.pool.query(`select id, amount from payment_attempts where payment_intent_id = $1 and status = 'unknown'`, [
      placed.payment_intent,
    ]);
    // The completion (here: the provider's late answer) has locked the intent when the expiry
    // job starts; it then goes on to the order and the hold, as every completion does.
    const completion = await t.pool.connect();
    try {
      await completion.query('begin');
      await completion.query('select id from payment_intents where merchant_id = $1 and id = $2 for update', [
        t.merchant.id,
        placed.payment_intent,
      ]);
      let expiryDone = false;
      const expiry = expireHold(t.pool, { merchant_id: t.merchant.id, hold_id: held.id }, LATER()).finally(() => {
        expiryDone = true;
      });
      // Until the expiry has answered or waits on a lock (it must not: the payment is being
      // worked on, so the hold is extended without waiting for it).
      for (let round = 0; round < 500 && !expiryDone; round++) {
        const { rows: waiting } = await t.pool.query(
          `select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
        );
        if (waiting.length > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const charge = {
        reference: 'ch_race',
        status: 'captured' as const,
        amount: rows[0].amount,
        amountCaptured: rows[0].amount,
        amountRefunded: 0,
      };
      const completed = completeAttempt(completion, { onPaymentSucceeded: convertPaidHold }, t.merchant.id, rows[0].id, {
        kind: 'succeeded',
        value: charge,
      }).then(async (result) => {
        await completion.query('commit');
        return result;
      });
      const [expired, done] = await Promise.all([expiry, completed]);
      assert.equal(expired, 'extended');
      assert.equal(done.kind, 'intent');
    } catch (error) {
      await completion.query('rollback').catch(() => {});
      throw error;
    } finally {
      completion.release();
    }
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

  test("a publishable key never sees a hold's buyer_reference; the secret key does", async () => {
    const sale = await createSale(t);
    const placed = await hold(sale, 'buyer-credential-7f3a', 1);
    assert.equal(placed.buyer_reference, undefined, 'not in the create answer to the publishable key');
    const publicRead = await t.app.inject({ method: 'GET', url: `/v1/holds/${placed.id}`, headers: publishable() });
    assert.equal(publicRead.statusCode, 200);
    assert.equal(publicRead.json().buyer_reference, undefined);
    assert.doesNotMatch(publicRead.body, /buyer-credential-7f3a/);
    const merchantRead = await t.app.inject({ method: 'GET', url: `/v1/holds/${placed.id}`, headers: t.auth() });
    assert.equal(merchantRead.json().buyer_reference, 'buyer-credential-7f3a');
    const released = await t.app.inject({ method: 'DELETE', url: `/v1/holds/${placed.id}`, headers: publishable() });
    assert.equal(released.json().status, 'released', released.body);
    assert.doesNotMatch(released.body, /buyer-credential-7f3a/);
  });

  test('the sale page may be kept by a CDN per key (Vary: Authorization); a secret-key read only privately', async () => {
    const sale = await createSale(t);
    const publicRead = await t.app.inject({ method: 'GET', url: `/v1/sales/${sale.id}`, headers: publishable() });
    assert.match(String(publicRead.headers['cache-control']), /^public, max-age=\d+$/);
    assert.match(String(publicRead.headers.vary), /\bAuthorization\b/i);
    const untouched = { total: 10, available: 10, held: 0, sold: 0 };
    assert.deepEqual(publicRead.json().items[0].stock, untouched);
    const merchantRead = await t.app.inject({ method: 'GET', url: `/v1/sales/${sale.id}`, headers: t.auth() });
    assert.match(String(merchantRead.headers['cache-control']), /^private, max-age=\d+$/);
    assert.match(String(merchantRead.headers.vary), /\bAuthorization\b/i);
    assert.deepEqual(merchantRead.json().items[0].stock, untouched);
    const notModified = await t.app.inject({
      method: 'GET',
      url: `/v1/sales/${sale.id}`,
      headers: { ...publishable(), 'if-none-match': String(publicRead.headers.etag) },
    });
    assert.equal(notModified.statusCode, 304);
    assert.match(String(notModified.headers.vary), /\bAuthorization\b/i);
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
    assert.deepEqual(await publicStock(sale.id), { total: 2, available: 0, held: 2, sold: 0 });
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
      const provider = new HttpProvider({ baseUrl: t.sim.url, timeoutMs: PROVIDER_TIMEOUT_MS, breakerThreshold: 5, halfOpenMs: 1_000 });
      const app = await buildApp({ config, pool: t.pool, provider, redis: await openTestRedis(prefix) });
      return app;
    };
    const [a, b] = [await node(), await node()];
    try {
      const sale = await createSale(t);
      const read = async () => (await b.inject({ method: 'GET', url: `/v1/sales/${sale.id}`, headers: publishable() })).json();
      const first = await read();
      assert.deepEqual([first.name, first.items[0].stock], ['Spring release', { total: 10, available: 10, held: 0, sold: 0 }]);
      const renamed = await a.inject({
        method: 'PATCH',
        url: `/v1/sales/${sale.id}`,
        headers: t.auth({ 'idempotency-key': key('patch') }),
        payload: { name: 'Spring release (extra date)' },
      });
      assert.equal(renamed.statusCode, 200, renamed.body);
      const deadline = Date.now() + 10_000;
      while ((await read()).name !== 'Spring release (extra date)') {
        assert.ok(Date.now() < deadline, 'node B still serves the old sale');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } finally {
      await a.close();
      await b.close();
    }
  });
});
