/**
 * Crash recovery on the surge path: POST /v1/sales, /v1/holds, /v1/orders and
 * /v1/webhook_endpoints, each killed in the middle of its phase (PostgreSQL rolls the phase
 * back; the key stays locked), then retried before the lock timeout (409) and after it (the
 * request completes once); and an order's confirm killed mid-phase after its first phase
 * committed, which the retry finishes with the order paid and its stock sold once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildApp } from '../src/app.js';
import type { Config } from '../src/config.js';
import type { Pool } from '../src/platform/db/pool.js';
import type { HttpServer } from '../src/platform/http/server.js';
import type { PaymentProvider } from '../src/providers/provider.js';
import { crashing, type Query } from './crash.js';
import { key } from './helpers.js';
import { type Merchant, setupRecovery } from './recovery.js';
import { openTestRedis, redisSkip, testKeyPrefix } from './redis.js';

// Orders on their single path (one order, one transaction, its key at `started` while it runs):
// a coalesced batch is one statement that commits whole or not at all, and its requests whose
// batch fails run this path (src/sales/order-batches.test.ts).
const r = await setupRecovery({ config: { webhookAllowPrivate: true, orderBatchMax: 1 } });
const { t } = r;

const atStatement = (pattern: RegExp) => (query: Query) => pattern.test(query.text ?? '') || pattern.test(query.name ?? '');

function saleRequest() {
  return {
    url: '/v1/sales',
    payload: {
      name: 'Crash release',
      currency: 'usd',
      opens_at: '2020-01-01T00:00:00.000Z',
      per_buyer_limit: 4,
      hold_seconds: 600,
      max_shoppers: 1000,
      admit_per_second: 1000,
      items: [{ name: 'Ticket', price: 2000, stock: 10 }],
    },
  };
}

async function rows(sql: string, values: unknown[]) {
  return (await t.pool.query(sql, values)).rows;
}

async function saleOf(m: Merchant) {
  const created = await r.post(t.app, m, saleRequest());
  assert.equal(created.statusCode, 200, created.body);
  return { id: created.json().id as string, itemId: created.json().items[0].id as string };
}

async function admitted(m: Merchant, saleId: string, buyer: string): Promise<string> {
  const joined = await t.app.inject({
    method: 'POST',
    url: `/v1/sales/${saleId}/queue`,
    headers: { authorization: `Bearer ${m.publishable as string}` },
    payload: { buyer_reference: buyer },
  });
  assert.equal(joined.json().status, 'admitted', joined.body);
  return joined.json().admission_token;
}

async function stockOf(saleId: string) {
  return rows('select stock_available, stock_held, stock_sold from items where sale_id = $1', [saleId]);
}

describe('surge path: a process dies mid-phase, a retry after the lock timeout completes once', () => {
  test('POST /v1/sales dies inserting its items: the retry creates the sale and its items once', async () => {
    const m = await r.newMerchant();
    const request = saleRequest();
    const idempotencyKey = await r.crash(m, request, { atQuery: atStatement(/insert into sale_items/) }, { recoveryPoint: 'started' });
    assert.deepEqual(await rows('select id from sales where merchant_id = $1', [m.id]), [], 'the dead phase rolled back whole');
    const resumed = await r.post(r.resumer, m, request, idempotencyKey);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.deepEqual(
      (await rows('select s.id, i.stock_total from sales s join items i on i.sale_id = s.id where s.merchant_id = $1', [m.id])).map(
        (row) => [row.id, row.stock_total],
      ),
      [[resumed.json().id, 10]],
    );
    const replay = await r.post(r.resumer, m, request, idempotencyKey);
    assert.deepEqual([replay.headers['idempotent-replayed'], replay.json()], ['true', resumed.json()]);
  });

  test('POST /v1/orders dies inserting the order: the retry places one order with one intent', async () => {
    const m = await r.newMerchant();
    const sale = await saleOf(m);
    const token = await admitted(m, sale.id, 'buyer-order');
    const held = await t.app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: { authorization: `Bearer ${m.publishable as string}`, 'idempotency-key': key('hold') },
      payload: { sale: sale.id, buyer_reference: 'buyer-order', admission_token: token, items: [{ item: sale.itemId, quantity: 2 }] },
    });
    assert.equal(held.statusCode, 200, held.body);
    const request = { url: '/v1/orders', payload: { hold: held.json().id } };
    const idempotencyKey = await r.crash(m, request, { atQuery: atStatement(/insert into orders/) }, { recoveryPoint: 'started' });
    assert.equal((await r.counts(m.id)).intents, 0, 'the intent made in the dead phase rolled back with it');
    const resumed = await r.post(r.resumer, m, request, idempotencyKey);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.equal(resumed.json().status, 'awaiting_payment');
    assert.equal((await r.counts(m.id)).intents, 1);
    assert.equal((await rows('select count(*)::int as n from orders where merchant_id = $1', [m.id]))[0].n, 1);
  });

  test('POST /v1/webhook_endpoints dies inserting the endpoint: the retry creates one endpoint', async () => {
    const m = await r.newMerchant();
    const request = { url: '/v1/webhook_endpoints', payload: { url: 'http://127.0.0.1:9/hooks', enabled_events: ['*'] } };
    const idempotencyKey = await r.crash(m, request, { atQuery: atStatement(/^webhooks_insert_endpoint$/) }, { recoveryPoint: 'started' });
    const resumed = await r.post(r.resumer, m, request, idempotencyKey);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.match(resumed.json().secret, /^whsec_/);
    assert.deepEqual(
      (await rows('select id from webhook_endpoints where merchant_id = $1', [m.id])).map((row) => row.id),
      [resumed.json().id],
    );
  });

  test("an order's confirm dies converting the hold, after the charge: the retry pays the order and sells its units once", async () => {
    const m = await r.newMerchant();
    const sale = await saleOf(m);
    const token = await admitted(m, sale.id, 'buyer-pay');
    const held = await t.app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: { authorization: `Bearer ${m.publishable as string}`, 'idempotency-key': key('hold') },
      payload: { sale: sale.id, buyer_reference: 'buyer-pay', admission_token: token, items: [{ item: sale.itemId, quantity: 3 }] },
    });
    const placed = await r.post(t.app, m, { url: '/v1/orders', payload: { hold: held.json().id } });
    assert.equal(placed.statusCode, 200, placed.body);
    const request = { url: `/v1/payment_intents/${placed.json().payment_intent}/confirm`, payload: { payment_method: 'pm_card_visa' } };
    // The first phase (the attempt) committed and the provider charged; the completion phase dies.
    const idempotencyKey = await r.crash(
      m,
      request,
      { atQuery: atStatement(/^sales_finish_hold$/) },
      { recoveryPoint: 'authorization_started' },
    );
    assert.deepEqual(await stockOf(sale.id), [{ stock_available: 7, stock_held: 3, stock_sold: 0 }]);
    const resumed = await r.post(r.resumer, m, request, idempotencyKey);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.equal(resumed.json().status, 'succeeded');
    const order = await t.app.inject({ method: 'GET', url: `/v1/orders/${placed.json().id}`, headers: m.auth() });
    assert.equal(order.json().status, 'paid');
    assert.deepEqual(await stockOf(sale.id), [{ stock_available: 7, stock_held: 0, stock_sold: 3 }]);
    const { rows: attempts } = await t.pool.query('select provider_idempotency_key from payment_attempts where merchant_id = $1', [m.id]);
    assert.equal(attempts.length, 1);
    assert.equal(t.sim.simulator.chargesByKey.get(attempts[0].provider_idempotency_key), 1, 'charged once');
    await r.assertAuditClean();
  });

  test('POST /v1/holds dies inserting the hold: the retry after the lock timeout takes the hold once', {
    skip: redisSkip,
  }, async () => {
    // The waiting room that issued the token must be the one the dying and the resuming node
    // check it against: API nodes share it through Redis.
    const prefix = testKeyPrefix();
    // The single path's recovery point (one hold, one transaction). A batch whose transaction
    // dies falls back to this path; real process deaths mid-batch are test/hold-processes.test.ts.
    const node = async (config: Config, pool: Pool, provider: PaymentProvider) =>
      buildApp({ config: { ...config, holdBatchMax: 1 }, pool, provider, redis: await openTestRedis(prefix) });
    const m = await r.newMerchant();
    const sale = await saleOf(m);
    const front = await node(t.config, t.pool, t.provider);
    const resumer = await node({ ...t.config, idempotencyLockTimeoutMs: 0 }, t.pool, t.provider);
    const buyer = { authorization: `Bearer ${m.publishable as string}` };
    const joined = await front.inject({
      method: 'POST',
      url: `/v1/sales/${sale.id}/queue`,
      headers: buyer,
      payload: { buyer_reference: 'buyer-hold' },
    });
    assert.equal(joined.json().status, 'admitted', joined.body);
    const payload = {
      sale: sale.id,
      buyer_reference: 'buyer-hold',
      admission_token: joined.json().admission_token,
      items: [{ item: sale.itemId, quantity: 2 }],
    };
    const idempotencyKey = key('hold');
    const send = (app: HttpServer) =>
      app.inject({ method: 'POST', url: '/v1/holds', headers: { ...buyer, 'idempotency-key': idempotencyKey }, payload });

    const crash = crashing(t.pool, t.provider, { atQuery: atStatement(/^sales_insert_hold$/) });
    const dying = await node(t.config, crash.pool, crash.provider);
    const died = await send(dying);
    await dying.close();
    assert.equal(crash.died, true, `the process died at the hold's insert (it answered ${died.statusCode} ${died.body})`);
    assert.deepEqual(await stockOf(sale.id), [{ stock_available: 10, stock_held: 0, stock_sold: 0 }], 'the dead phase rolled back');
    const early = await send(front);
    assert.deepEqual([early.statusCode, early.json().error.code], [409, 'idempotency_key_in_use']);

    const resumed = await send(resumer);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.equal(resumed.json().status, 'active');
    assert.deepEqual(await stockOf(sale.id), [{ stock_available: 8, stock_held: 2, stock_sold: 0 }]);
    await front.close();
    await resumer.close();
  });
});
