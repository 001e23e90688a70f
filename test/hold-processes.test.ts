/**
 * Batched holds across real API processes (`floodgate api`, as deployed) on one database and
 * one Redis: the race across two nodes, and a node killed (SIGKILL) with batches in flight.
 * Admission tokens are signed here with the nodes' shared secret, so every buyer is admitted
 * whatever the stock (the waiting room would admit only as many buyers as there are units).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type ApiServer, startApiServer } from '../bench/setup.js';
import { buyerDigest, deriveAdmissionKeys, signAdmissionToken } from '../src/admission/token.js';
import { audit } from '../src/audit/service.js';
import { newId } from '../src/platform/ids.js';
import { expireHold } from '../src/sales/holds.js';
import { createTestDatabase, createTestMerchant, startTestSimulator, TEST_PROVIDER_WEBHOOK_SECRET } from './helpers.js';
import { redisSkip, TEST_REDIS_URL, testKeyPrefix } from './redis.js';

// startApiServer's environment signs with this secret.
const ADMISSION_SECRET = 'bench_admission_secret_0123456789abcdef';
const keys = deriveAdmissionKeys(ADMISSION_SECRET);
const database = await createTestDatabase();
const merchant = await createTestMerchant(database.pool);
const sim = await startTestSimulator({ webhookSecret: TEST_PROVIDER_WEBHOOK_SECRET });
const redisPrefix = testKeyPrefix();
const env = {
  FLOODGATE_PROVIDER_URL: sim.url,
  FLOODGATE_PROVIDER_WEBHOOK_SECRET: TEST_PROVIDER_WEBHOOK_SECRET,
  FLOODGATE_SHED_IN_FLIGHT_MAX: '100000',
  FLOODGATE_SHED_EVENT_LOOP_DELAY_MS: '60000',
  ...(redisSkip ? {} : { REDIS_URL: TEST_REDIS_URL, FLOODGATE_REDIS_KEY_PREFIX: redisPrefix }),
};
if (redisSkip) console.log(`# hold-processes: ${redisSkip}; the nodes run without Redis (holds do not need it)`);
const nodes: ApiServer[] = [];
after(async () => {
  await Promise.all(nodes.map((node) => node.stop()));
});
const startNode = async () => {
  const node = await startApiServer({ databaseUrl: database.url, poolMax: 10, env });
  nodes.push(node);
  return node;
};

async function call(node: ApiServer, method: string, path: string, body?: unknown, key = merchant.secretKey) {
  const response = await fetch(`http://127.0.0.1:${node.port}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'idempotency-key': newId('key') },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: the tests read the API's JSON answers by field.
  return { status: response.status, body: (await response.json()) as Record<string, any> };
}

async function createSale(node: ApiServer, stock: number) {
  const sale = await call(node, 'POST', '/v1/sales', {
    name: 'Across nodes',
    currency: 'usd',
    opens_at: new Date(Date.now() - 60_000).toISOString(),
    per_buyer_limit: 4,
    hold_seconds: 60,
    items: [{ name: 'Seat', price: 1_000, stock }],
  });
  assert.equal(sale.status, 200, JSON.stringify(sale.body));
  return { id: sale.body.id as string, itemId: sale.body.items[0].id as string };
}

function hold(node: ApiServer, sale: { id: string; itemId: string }, buyer: string) {
  const token = signAdmissionToken(keys, {
    saleId: sale.id,
    ticketId: newId('qt'),
    buyerDigest: buyerDigest(keys, buyer),
    expiresAtMs: Date.now() + 300_000,
  });
  return call(
    node,
    'POST',
    '/v1/holds',
    { sale: sale.id, buyer_reference: buyer, admission_token: token, items: [{ item: sale.itemId, quantity: 1 }] },
    merchant.publishableKey,
  );
}

/** `count` requests, at most `concurrency` at once, spread over the nodes in turn. */
async function flood<T>(count: number, concurrency: number, send: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      results[index] = await send(index);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

describe('holds across API processes', () => {
  test('600 holds on stock 100 across two processes hold exactly 100', async () => {
    const [a, b] = [await startNode(), await startNode()];
    const sale = await createSale(a, 100);
    const replies = await flood(600, 60, (index) => hold(index % 2 ? a : b, sale, `buyer-${index}`));
    assert.equal(replies.filter((reply) => reply.status === 200).length, 100);
    assert.equal(replies.filter((reply) => reply.body.error?.code === 'sold_out').length, 500);
    const { rows } = await database.pool.query('select stock_available, stock_held, stock_sold from items where id = $1', [sale.itemId]);
    assert.deepEqual(rows[0], { stock_available: 0, stock_held: 100, stock_sold: 0 });
    assert.deepEqual((await audit(database.pool)).violations, []);
  });

  test('a node killed with batches in flight loses or doubles no stock; answered holds pay or expire', async () => {
    const survivor = nodes[0] ?? (await startNode());
    const victim = await startNode();
    const sale = await createSale(survivor, 10_000);
    const answered: string[] = [];
    const flight = flood(800, 80, async (index) => {
      const reply = await hold(index % 2 ? survivor : victim, sale, `crash-${index}`).catch(() => undefined);
      if (reply?.status === 200) answered.push(reply.body.id as string);
      return reply?.status;
    });
    // Kill it once it has answered some holds, so batches are surely in flight.
    const deadline = Date.now() + 60_000;
    while (answered.length < 50 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    process.kill(victim.pid, 'SIGKILL');
    await flight;
    assert.ok(answered.length >= 50, `holds were answered before the kill (${answered.length})`);
    // Every hold answered 200 exists: a killed API process takes nothing committed with it.
    const { rows } = await database.pool.query('select id from holds where id = any($1::text[])', [answered]);
    assert.equal(rows.length, answered.length);
    assert.deepEqual((await audit(database.pool)).violations, []);
    // Some answered holds are ordered and paid through the survivor; the rest expire.
    const paid = answered.slice(0, 5);
    for (const holdId of paid) {
      const order = await call(survivor, 'POST', '/v1/orders', { hold: holdId });
      assert.equal(order.status, 200, JSON.stringify(order.body));
      const confirm = await call(survivor, 'POST', `/v1/payment_intents/${order.body.payment_intent}/confirm`, {
        payment_method: 'pm_card_visa',
      });
      assert.equal(confirm.body.status, 'succeeded', JSON.stringify(confirm.body));
    }
    const { rows: active } = await database.pool.query(`select id from holds where sale_id = $1 and status = 'active'`, [sale.id]);
    for (const row of active) {
      await expireHold(database.pool, { merchant_id: merchant.id, hold_id: row.id }, new Date(Date.now() + 3_600_000));
    }
    const { rows: stock } = await database.pool.query('select stock_available, stock_held, stock_sold from items where id = $1', [
      sale.itemId,
    ]);
    assert.deepEqual(stock[0], { stock_available: 10_000 - paid.length, stock_held: 0, stock_sold: paid.length });
    assert.deepEqual((await audit(database.pool)).violations, []);
  });
});
