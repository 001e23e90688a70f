/**
 * The waiting room and holds together (issue 7, the sale's line): a paid or expired hold frees
 * its buyer's shopper slot exactly once, on every node; a refused hold, a crash before the
 * commit, or another merchant's request never spends a buyer's admission token.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RedisQueueStore } from '../src/admission/redis-store.js';
import type { WaitingRoom } from '../src/admission/service.js';
import { appWaitingRoom, buildApp, WAITING_ROOM_KEY_PREFIX } from '../src/app.js';
import type { Pool } from '../src/platform/db/pool.js';
import type { HttpServer } from '../src/platform/http/server.js';
import { fingerprint } from '../src/platform/idempotency/service.js';
import { expireHold, RELEASE_ADMISSION_TASK } from '../src/sales/holds.js';
import { salesTasks } from '../src/sales/jobs.js';
import { createHold } from '../src/sales/service.js';
import { createTestMerchant, key, setupTestContext } from './helpers.js';
import { openTestRedis, redisSkip, testKeyPrefix } from './redis.js';

const t = await setupTestContext();
const LATER = () => new Date(Date.now() + 24 * 3_600_000);

/** An API node with the given waiting room, as `floodgate start` builds it for its worker too. */
async function node(room: WaitingRoom): Promise<HttpServer> {
  return buildApp({ config: t.config, pool: t.pool, provider: t.provider, waitingRoom: room });
}

function line(app: HttpServer, publishableKey = t.merchant.publishableKey) {
  const headers = { authorization: `Bearer ${publishableKey}` };
  return {
    join: async (saleId: string, buyer: string) =>
      (await app.inject({ method: 'POST', url: `/v1/sales/${saleId}/queue`, headers, payload: { buyer_reference: buyer } })).json(),
    hold: (saleId: string, buyer: string, token: string, items: { item: string; quantity: number }[], idempotencyKey = key('hold')) =>
      app.inject({
        method: 'POST',
        url: '/v1/holds',
        headers: { ...headers, 'idempotency-key': idempotencyKey },
        payload: { sale: saleId, buyer_reference: buyer, admission_token: token, items },
      }),
  };
}

async function createSale(app: HttpServer, maxShoppers: number) {
  const response = await app.inject({
    method: 'POST',
    url: '/v1/sales',
    headers: t.auth({ 'idempotency-key': key('sale') }),
    payload: {
      name: 'One at a time',
      currency: 'usd',
      opens_at: new Date(Date.now() - 60_000).toISOString(),
      per_buyer_limit: 4,
      hold_seconds: 60,
      max_shoppers: maxShoppers,
      admit_per_second: 1000,
      items: [{ name: 'Seat', price: 5_000, stock: 10 }],
    },
  });
  assert.equal(response.statusCode, 200, response.body);
  return { id: response.json().id as string, itemId: response.json().items[0].id as string };
}

/** Runs the waiting release jobs as the worker would, and returns how many there were. */
async function runReleaseJobs(pool: Pool, releaseAdmission: (saleId: string, ticketId: string) => Promise<unknown>) {
  const { rows } = await pool.query<{ id: string; payload: unknown }>(
    `select j.id, j.payload from graphile_worker._private_jobs j join graphile_worker._private_tasks k on k.id = j.task_id
     where k.identifier = $1 and j.locked_at is null`,
    [RELEASE_ADMISSION_TASK],
  );
  const task = salesTasks({ pool, releaseAdmission })[RELEASE_ADMISSION_TASK];
  assert.ok(task);
  for (const row of rows) {
    await (task as (payload: unknown, helpers: never) => Promise<void>)(row.payload, undefined as never);
    await pool.query('select graphile_worker.complete_jobs(array[$1::bigint])', [row.id]);
  }
  return rows.length;
}

function forward<T extends object>(target: T, prop: string | symbol) {
  const value = Reflect.get(target, prop);
  return typeof value === 'function' ? value.bind(target) : value;
}

async function payFor(app: HttpServer, holdId: string) {
  const order = await app.inject({
    method: 'POST',
    url: '/v1/orders',
    headers: t.auth({ 'idempotency-key': key('order') }),
    payload: { hold: holdId },
  });
  assert.equal(order.statusCode, 200, order.body);
  const paid = await app.inject({
    method: 'POST',
    url: `/v1/payment_intents/${order.json().payment_intent}/confirm`,
    headers: t.auth({ 'idempotency-key': key('confirm') }),
    payload: { payment_method: 'pm_card_visa' },
  });
  assert.equal(paid.json().status, 'succeeded', paid.body);
}

/**
 * One slot: A is admitted and holds, B waits. When A's hold ends (`end`), its release job frees
 * the slot and B is admitted; running the job again frees nothing more, so C keeps waiting.
 */
async function slotFreedOnce(rooms: { a: WaitingRoom; b: WaitingRoom }, release: (s: string, t: string) => Promise<unknown>, end: string) {
  const [nodeA, nodeB] = [await node(rooms.a), await node(rooms.b)];
  try {
    const sale = await createSale(nodeA, 1);
    const [a, b] = [line(nodeA), line(nodeB)];
    const joinedA = await a.join(sale.id, 'buyer-a');
    assert.equal(joinedA.status, 'admitted');
    const held = await a.hold(sale.id, 'buyer-a', joinedA.admission_token, [{ item: sale.itemId, quantity: 1 }]);
    assert.equal(held.statusCode, 200, held.body);
    assert.equal((await b.join(sale.id, 'buyer-b')).status, 'waiting');
    if (end === 'paid') await payFor(nodeA, held.json().id);
    else assert.equal(await expireHold(t.pool, { merchant_id: t.merchant.id, hold_id: held.json().id }, LATER()), 'released');
    assert.equal(await runReleaseJobs(t.pool, release), 1, 'one release job per ended hold');
    assert.equal((await b.join(sale.id, 'buyer-b')).status, 'admitted', `B is admitted once A's hold is ${end}`);
    assert.equal((await a.join(sale.id, 'buyer-c')).status, 'waiting');
    // The same ticket released again (a retried job, a late expiry) frees no second slot.
    assert.equal(await release(sale.id, joinedA.ticket), false);
    assert.equal(await runReleaseJobs(t.pool, release), 0);
    assert.equal((await a.join(sale.id, 'buyer-c')).status, 'waiting');
  } finally {
    await nodeA.close();
    await nodeB.close();
  }
}

describe('shopper slots of holds that end', () => {
  for (const end of ['paid', 'expired']) {
    test(`a ${end} hold frees its slot, exactly once (one node, line in memory)`, async () => {
      const room = appWaitingRoom(t.config, undefined);
      await slotFreedOnce({ a: room, b: room }, (saleId, ticket) => room.releaseAdmission(saleId, ticket), end);
    });

    test(`a ${end} hold frees its slot, exactly once, for every node (two API nodes and a worker on Redis)`, {
      skip: redisSkip,
    }, async () => {
      const prefix = testKeyPrefix();
      const [redisA, redisB, redisWorker] = [await openTestRedis(prefix), await openTestRedis(prefix), await openTestRedis(prefix)];
      // The worker process has no waiting room of its own: it releases through the store, as `floodgate worker` does.
      const store = new RedisQueueStore(redisWorker.client, WAITING_ROOM_KEY_PREFIX);
      await slotFreedOnce(
        { a: appWaitingRoom(t.config, redisA), b: appWaitingRoom(t.config, redisB) },
        (saleId, ticket) => store.release(saleId, ticket),
        end,
      );
    });
  }
});

describe('admission tokens are spent only by a committed hold', () => {
  test('a refused hold (over the buyer limit, an unknown item) leaves the token usable and the slot the buyer’s', async () => {
    const room = appWaitingRoom(t.config, undefined);
    const app = await node(room);
    const sale = await createSale(app, 1);
    const buyer = line(app);
    const joined = await buyer.join(sale.id, 'buyer-refused');
    const overLimit = await buyer.hold(sale.id, 'buyer-refused', joined.admission_token, [{ item: sale.itemId, quantity: 5 }]);
    assert.equal(overLimit.json().error?.code, 'buyer_limit_exceeded', overLimit.body);
    const typo = await buyer.hold(sale.id, 'buyer-refused', joined.admission_token, [{ item: 'item_doesnotexist', quantity: 1 }]);
    assert.equal(typo.json().error?.code, 'parameter_invalid', typo.body);
    // Joining again still shows the buyer admitted, with a token.
    const again = await buyer.join(sale.id, 'buyer-refused');
    assert.equal(again.status, 'admitted');
    assert.ok(again.admission_token, 'the admitted buyer still has a token');
    const held = await buyer.hold(sale.id, 'buyer-refused', joined.admission_token, [{ item: sale.itemId, quantity: 2 }]);
    assert.equal(held.statusCode, 200, held.body);
    // Spent now: a second hold with it is refused, and the buyer is shopping.
    const twice = await buyer.hold(sale.id, 'buyer-refused', joined.admission_token, [{ item: sale.itemId, quantity: 1 }]);
    assert.equal(twice.statusCode, 403);
    assert.match(twice.json().error.message, /already used/);
    assert.equal((await buyer.join(sale.id, 'buyer-refused')).admission_token, undefined);
    await app.close();
  });

  test('a crash between checking the token and the commit leaves it usable: the retry holds', async () => {
    const room = appWaitingRoom(t.config, undefined);
    const app = await node(room);
    const sale = await createSale(app, 5);
    const joined = await line(app).join(sale.id, 'buyer-crash');
    const params = {
      sale: sale.id,
      buyer_reference: 'buyer-crash',
      admission_token: joined.admission_token as string,
      items: [{ item: sale.itemId, quantity: 1 }],
    };
    const ctx = {
      merchantId: t.merchant.id,
      keyKind: 'publishable' as const,
      idempotencyKey: key('crash'),
      method: 'POST',
      path: '/v1/holds',
      fingerprint: fingerprint('POST', '/v1/holds', params),
    };
    const deps = (pool: Pool) => ({
      pool,
      idempotency: { ttlHours: 24, lockTimeoutMs: 60_000 },
      checkAdmission: (token: string, saleId: string, buyer: string) => {
        const checked = room.checkAdmission(token, saleId, buyer);
        return checked.kind === 'ok' ? { ok: true as const, ...checked } : { ok: false as const, reason: checked.kind };
      },
      confirmAdmission: (saleId: string, ticketId: string, expiresAtMs: number) => room.confirmAdmission(saleId, ticketId, expiresAtMs),
      releaseAdmission: (saleId: string, ticketId: string) => room.releaseAdmission(saleId, ticketId),
    });
    // The connection dies as the hold is written: the transaction never commits.
    const dying = new Proxy(t.pool, {
      get(target, prop) {
        if (prop !== 'connect') return forward(target, prop);
        return async () => {
          const client = await target.connect();
          return new Proxy(client, {
            get(c, p) {
              if (p !== 'query') return forward(c, p);
              return (query: { name?: string }, values?: unknown[]) => {
                if (typeof query === 'object' && query.name === 'sales_insert_hold') return Promise.reject(new Error('connection lost'));
                return c.query(query as never, values as never);
              };
            },
          });
        };
      },
    });
    await assert.rejects(createHold(deps(dying), ctx, params), /connection lost/);
    const retried = await createHold(deps(t.pool), ctx, params);
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    await app.close();
  });

  test("another merchant's key with a buyer's sale and token gets 404 and spends nothing", async () => {
    const room = appWaitingRoom(t.config, undefined);
    const app = await node(room);
    const sale = await createSale(app, 5);
    const joined = await line(app).join(sale.id, 'buyer-victim');
    const other = await createTestMerchant(t.pool);
    const attack = await line(app, other.publishableKey).hold(sale.id, 'buyer-victim', joined.admission_token, [
      { item: sale.itemId, quantity: 1 },
    ]);
    assert.equal(attack.statusCode, 404, attack.body);
    const held = await line(app).hold(sale.id, 'buyer-victim', joined.admission_token, [{ item: sale.itemId, quantity: 1 }]);
    assert.equal(held.statusCode, 200, held.body);
    await app.close();
  });
});
