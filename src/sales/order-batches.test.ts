/**
 * Coalesced order creation: every answer of the single path, per request, inside batches (own
 * key, own order and intent, replay, a key reused, two keys for one hold, holds that ended),
 * two nodes writing orders of one sale at once, and a batch whose statement fails falling back
 * to one transaction per request.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { insertOpenSale } from '../../test/fixtures/sales.js';
import { createTestDatabase, createTestMerchant } from '../../test/helpers.js';
import { audit } from '../audit/service.js';
import { createPool, type Pool } from '../platform/db/pool.js';
import type { Reply } from '../platform/http/reply.js';
import { fingerprint } from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import { OrderCreationBatcher } from './order-batches.js';
import { createOrder } from './orders.js';
import { createHold, releaseHold, type SalesDeps, toApiOrder } from './service.js';

const { url } = await createTestDatabase();
const pools = [0, 1].map(() => createPool({ connectionString: url, max: 10, statementTimeoutMs: 30_000 }));
after(() => Promise.all(pools.map((pool) => pool.end())));
const pool = pools[0] as Pool;
const merchant = await createTestMerchant(pool);
const IDEMPOTENCY = { ttlHours: 24, lockTimeoutMs: 60_000 };

/** A node: its own pool and order batcher (holds alone). Every admission token is good. */
function node(nodePool: Pool, sizes: number[] = []): SalesDeps {
  return {
    pool: nodePool,
    idempotency: IDEMPOTENCY,
    checkAdmission: (token) => ({ ok: true, ticketId: token, expiresAtMs: Date.now() + 60_000 }),
    confirmAdmission: async () => undefined,
    releaseAdmission: async () => undefined,
    orderBatcher: new OrderCreationBatcher({
      pool: nodePool,
      ttlHours: IDEMPOTENCY.ttlHours,
      windowMs: 0,
      batchMax: 100,
      maxRunning: 2,
      view: toApiOrder,
      onBatch: (size) => sizes.push(size),
    }),
  };
}

const nodes = pools.map((nodePool) => node(nodePool));
const first = nodes[0] as SalesDeps;

function context(path: string, params: unknown, idempotencyKey: string, keyKind: 'secret' | 'publishable' = 'secret') {
  return { merchantId: merchant.id, keyKind, idempotencyKey, method: 'POST', path, fingerprint: fingerprint('POST', path, params) };
}

/** `count` active holds of one unit each on a fresh sale. */
async function holds(count: number): Promise<string[]> {
  const { sale, item } = await insertOpenSale(pool, merchant.id, { stock: count, perBuyerLimit: 4 });
  return Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const params = {
        sale: sale.id,
        buyer_reference: `buyer-${index}`,
        admission_token: newId('qt'),
        items: [{ item: item.id, quantity: 1 }],
      };
      const reply = await createHold(first, context('/v1/holds', params, newId('key'), 'publishable'), params);
      assert.equal(reply.status, 200, JSON.stringify(reply.body));
      return (reply.body as { id: string }).id;
    }),
  );
}

function order(deps: SalesDeps, hold: string, idempotencyKey = newId('key')): Promise<Reply> {
  const params = { hold };
  return createOrder(deps, context('/v1/orders', params, idempotencyKey), params);
}

type OrderBody = { id: string; hold: string; payment_intent: string; status: string; payment_intent_object?: { id: string } };
const body = (reply: Reply) => reply.body as OrderBody;
const code = (reply: Reply) => (reply.body as { error?: { code: string } }).error?.code;
const count = async (sql: string, values: unknown[]) => (await pool.query<{ n: number }>(sql, values)).rows[0]?.n;

describe('coalesced orders', () => {
  test('concurrent orders from two nodes share batches; each has its own order, intent, event and replay', async () => {
    const sizes: number[] = [];
    const racing = pools.map((nodePool) => node(nodePool, sizes));
    const holdIds = await holds(40);
    const keys = holdIds.map(() => newId('key'));
    const replies = await Promise.all(holdIds.map((hold, index) => order(racing[index % 2] as SalesDeps, hold, keys[index])));
    assert.ok(
      sizes.some((size) => size > 1),
      `orders arriving together share a batch (sizes ${sizes.join(',')})`,
    );
    for (const [index, reply] of replies.entries()) {
      assert.equal(reply.status, 200, JSON.stringify(reply.body));
      assert.equal(body(reply).hold, holdIds[index]);
      assert.equal(body(reply).status, 'awaiting_payment');
      assert.equal(body(reply).payment_intent_object?.id, body(reply).payment_intent);
    }
    const orderIds = replies.map((reply) => body(reply).id);
    const intentIds = replies.map((reply) => body(reply).payment_intent);
    assert.equal(await count('select count(*)::int as n from orders where id = any($1)', [orderIds]), 40);
    assert.equal(
      await count(
        `select count(*)::int as n from payment_intents p join orders o on o.merchant_id = p.merchant_id and o.payment_intent_id = p.id
         where p.id = any($1) and p.status = 'requires_payment_method' and p.amount = o.amount and p.metadata->>'order_id' = o.id`,
        [intentIds],
      ),
      40,
    );
    assert.equal(
      await count("select count(*)::int as n from events where object_id = any($1) and type = 'payment_intent.created' and sequence = 1", [
        intentIds,
      ]),
      40,
    );
    // What a retry with the same key gets: the stored answer, byte for byte the same.
    const replays = await Promise.all(holdIds.map((hold, index) => order(first, hold, keys[index])));
    for (const [index, replay] of replays.entries()) {
      assert.equal(replay.replayed, true);
      assert.deepEqual(replay.body, JSON.parse(JSON.stringify(replies[index]?.body)));
    }
    assert.deepEqual((await audit(pool)).violations, []);
  });

  test('one key twice in a batch places one order; a second key for the hold gets that order, as alone', async () => {
    const [hold] = (await holds(1)) as [string];
    const idempotencyKey = newId('key');
    const [a, b, c] = await Promise.all([order(first, hold, idempotencyKey), order(first, hold, idempotencyKey), order(first, hold)]);
    assert.equal(a?.status, 200);
    // The copy runs alone after the batch and replays it (or finds its key in use while written).
    if (b?.status === 200) assert.deepEqual([b.replayed, b.body], [true, JSON.parse(JSON.stringify(a?.body))]);
    else assert.equal(code(b as Reply), 'idempotency_key_in_use');
    assert.equal(c?.status, 200, JSON.stringify(c?.body));
    assert.equal(body(c as Reply).id, body(a as Reply).id, 'the hold has one order');
    assert.equal(await count('select count(*)::int as n from orders where hold_id = $1', [hold]), 1);
    assert.equal(await count("select count(*)::int as n from payment_intents where metadata->>'hold_id' = $1", [hold]), 1);
  });

  test('a key reused for another hold is refused; ended and missing holds are answered in the same batch as good ones', async () => {
    const [good, released, other] = (await holds(3)) as [string, string, string];
    const reused = newId('key');
    assert.equal((await order(first, other, reused)).status, 200);
    const release = await releaseHold(first, merchant.id, released);
    assert.equal(release.status, 200, JSON.stringify(release.body));
    const [ok, ended, missing, mismatch] = await Promise.all([
      order(first, good),
      order(first, released),
      order(first, 'hold_missing'),
      order(first, good, reused),
    ]);
    assert.equal(ok?.status, 200);
    assert.equal(code(ended as Reply), 'hold_not_active');
    assert.equal(code(missing as Reply), 'resource_missing');
    assert.equal(mismatch?.status, 422);
    assert.equal(await count('select count(*)::int as n from orders where hold_id = $1', [released]), 0);
  });

  test('a batch whose statement fails writes nothing, and its requests are answered alone', async () => {
    const holdIds = await holds(3);
    // No request has another kind of key; here it stands for any row the database refuses.
    const params = { hold: holdIds[2] as string };
    const bad = createOrder(first, { ...context('/v1/orders', params, newId('key')), keyKind: 'bogus' as 'secret' }, params);
    const results = await Promise.allSettled([order(first, holdIds[0] as string), order(first, holdIds[1] as string), bad]);
    assert.equal(results[0]?.status === 'fulfilled' && results[0].value.status, 200);
    assert.equal(results[1]?.status === 'fulfilled' && results[1].value.status, 200);
    assert.equal(results[2]?.status, 'rejected', 'the bad request meets its own error');
    assert.equal(await count('select count(*)::int as n from orders where hold_id = $1', [holdIds[2]]), 0);
  });
});
