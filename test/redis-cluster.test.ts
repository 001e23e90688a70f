/**
 * Shared state on a real 3-master Redis Cluster (started and stopped by this file): REDIS_URL as
 * redis+cluster://, the two-level cache and its pub/sub invalidation across nodes, rate limits
 * summed across nodes, and the waiting room whose per-sale keys share one hash slot — for sales
 * whose slots land on every master. Then the whole surge path through two API nodes on it.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Cluster } from 'ioredis';
import { Registry } from 'prom-client';
import { RedisQueueStore } from '../src/admission/redis-store.js';
import { WaitingRoom } from '../src/admission/service.js';
import { buildApp } from '../src/app.js';
import { loadConfig, maskUrl, parseRedisTarget } from '../src/config.js';
import { createRedisCache } from '../src/platform/cache/cache.js';
import { createLimiter } from '../src/platform/http/rate-limit.js';
import { openRedis, type RedisConnections } from '../src/platform/redis/client.js';
import { HttpProvider } from '../src/providers/http-provider.js';
import {
  createTestDatabase,
  createTestMerchant,
  startTestSimulator,
  TEST_ADMISSION_SECRET,
  TEST_PROVIDER_WEBHOOK_SECRET,
  TEST_TRAFFIC_LIMITS_OFF,
} from './helpers.js';
import { testKeyPrefix } from './redis.js';
import { redisClusterSkip, startRedisCluster } from './redis-cluster.js';
import { saleFlow } from './sale-flow.js';

const silent = { warn() {}, info() {} };
const skip = redisClusterSkip();
const cluster = skip ? undefined : await startRedisCluster({ masters: 3 });
if (cluster) after(() => cluster.stop());

async function connect(prefix: string): Promise<RedisConnections> {
  const redis = await openRedis({ url: (cluster as NonNullable<typeof cluster>).url, keyPrefix: prefix, log: silent });
  after(() => redis.close());
  return redis;
}

describe('REDIS_URL naming a cluster', () => {
  test('redis+cluster:// and FLOODGATE_REDIS_CLUSTER_NODES parse to the seed nodes; bad ones are refused', () => {
    assert.deepEqual(parseRedisTarget('redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001'), {
      kind: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '::1', port: 7001 },
      ],
      username: 'u',
      password: 'p@ss',
      tls: false,
    });
    assert.equal(loadConfig({ FLOODGATE_REDIS_CLUSTER_NODES: 'a:1,b:2' }).redisUrl, 'redis+cluster://a:1,b:2');
    assert.equal(maskUrl('rediss+cluster://:secret@a:1,b:2'), 'rediss+cluster://:*****@a:1,b:2');
    assert.throws(() => loadConfig({ REDIS_URL: 'redis+cluster://a:1,b' }), /REDIS_URL names a cluster node "b" that is not host:port/);
    assert.throws(
      () => loadConfig({ REDIS_URL: 'redis://a:1', FLOODGATE_REDIS_CLUSTER_NODES: 'a:1' }),
      /FLOODGATE_REDIS_CLUSTER_NODES names a Redis Cluster; REDIS_URL must then be unset/,
    );
    assert.throws(() => loadConfig({ FLOODGATE_REPLICA_URLS: 'postgres://r1/db,http://r2' }), /FLOODGATE_REPLICA_URLS entry 2/);
  });
});

describe('shared state on a 3-master Redis Cluster', { skip }, () => {
  test('the connections are cluster clients and answer', async () => {
    const redis = await connect(testKeyPrefix());
    assert.equal(redis.mode, 'cluster');
    assert.ok(redis.client instanceof Cluster);
    await redis.ping();
  });

  test('cache: node B reads node A’s copy, and A’s invalidation reaches B over pub/sub', async () => {
    const prefix = testKeyPrefix();
    const make = async () =>
      createRedisCache<{ n: number }>({
        name: 'sales',
        staleMs: 60_000,
        log: silent,
        registry: new Registry(),
        redis: await connect(prefix),
      });
    const a = await make();
    const b = await make();
    let value = 1;
    const load = async () => ({ n: value });
    // Keys on every master: the copies and messages of each must work.
    const keys = Array.from({ length: 12 }, (_, i) => `sale-${i}`);
    for (const key of keys) assert.equal((await a.get(key, load)).level, 'miss');
    for (const key of keys) assert.equal((await b.get(key, load)).level, 'l2');
    value = 2;
    for (const key of keys) await a.invalidate(key);
    const deadline = Date.now() + 5_000;
    for (const key of keys) {
      let seen = await b.get(key, load);
      while (seen.value.n !== 2 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        seen = await b.get(key, load);
      }
      assert.equal(seen.value.n, 2, `${key} invalidated on B`);
    }
    await a.close();
    await b.close();
  });

  test('rate limits are counted once across nodes', async () => {
    const prefix = testKeyPrefix();
    const limiter = async () =>
      createLimiter({ name: 'key', points: 5, windowSeconds: 60, log: silent, registry: new Registry(), redis: await connect(prefix) });
    const a = await limiter();
    const b = await limiter();
    const decisions = [];
    for (let i = 0; i < 8; i++) decisions.push(await (i % 2 ? b : a).consume('client-1'));
    assert.deepEqual(
      decisions.map((d) => d.allowed),
      [true, true, true, true, true, false, false, false],
    );
  });

  test('waiting room: join, admit and claim for sales on every master; each script’s keys share one slot', async () => {
    const prefix = testKeyPrefix();
    const rooms = [await connect(prefix), await connect(prefix)].map(
      (redis) =>
        new WaitingRoom(new RedisQueueStore(redis.client, prefix), {
          secret: TEST_ADMISSION_SECRET,
          tokenTtlSeconds: 300,
          shoppingMaxSeconds: 1_800,
          pollMaxSeconds: 60,
        }),
    );
    const masters = new Set<number>();
    for (let s = 0; s < 12; s++) {
      const sale = {
        id: `sale_cluster${s}`,
        opensAt: new Date(Date.now() - 1_000),
        closesAt: null,
        admitPerSecond: 1_000,
        maxShoppers: 100,
        graceSeconds: 30,
        remainingStock: async () => 100,
      };
      masters.add((await (cluster as NonNullable<typeof cluster>).masterOf(`${prefix}queue:{${sale.id}}:q`)).port);
      const joined = await rooms[0]!.join(sale, 'buyer-1');
      assert.equal(joined.status, 'admitted', JSON.stringify(joined));
      // The other node sees the same line.
      const polled = await rooms[1]!.poll(sale, joined.ticket as string);
      assert.equal(polled?.status, 'admitted');
      const token = joined.admissionToken as string;
      assert.equal((await rooms[1]!.consumeAdmission(token, sale.id, 'buyer-1')).kind, 'ok');
      assert.equal((await rooms[0]!.consumeAdmission(token, sale.id, 'buyer-1')).kind, 'replayed');
      assert.equal(await rooms[0]!.releaseAdmission(sale.id, joined.ticket as string), true);
    }
    assert.equal(masters.size, 3, 'the sales’ slots are spread over all three masters');
  });

  test('the surge path through two API nodes on the cluster: every order paid once, stock conserved', async () => {
    const { pool } = await createTestDatabase();
    const sim = await startTestSimulator({ webhookSecret: TEST_PROVIDER_WEBHOOK_SECRET });
    const prefix = testKeyPrefix();
    const config = loadConfig(
      { REDIS_URL: (cluster as NonNullable<typeof cluster>).url },
      {
        providerUrl: sim.url,
        admissionSecret: TEST_ADMISSION_SECRET,
        providerWebhookSecret: TEST_PROVIDER_WEBHOOK_SECRET,
        ...TEST_TRAFFIC_LIMITS_OFF,
      },
    );
    const provider = new HttpProvider({ baseUrl: sim.url, timeoutMs: 1_000, breakerThreshold: 5, halfOpenMs: 1_000 });
    const nodes = [];
    for (let i = 0; i < 2; i++) {
      const app = await buildApp({ config, pool, provider, redis: await connect(prefix) });
      after(() => app.close());
      nodes.push(app);
    }
    const merchant = await createTestMerchant(pool);
    const flows = nodes.map((app) => saleFlow(app, merchant));
    const sale = await flows[0]!.createSale([{ name: 'Ticket', price: 1000, stock: 20 }]);
    for (let b = 0; b < 10; b++) await flows[b % 2]!.buy(sale.id, `buyer-${b}`, [{ item: sale.itemIds[0] as string, quantity: 2 }]);
    const { rows } = await pool.query('select stock_available, stock_held, stock_sold from items where sale_id = $1', [sale.id]);
    assert.deepEqual(rows[0], { stock_available: 0, stock_held: 0, stock_sold: 20 });
    const paid = await pool.query(`select count(*)::int as n from orders where sale_id = $1 and status = 'paid'`, [sale.id]);
    assert.equal(paid.rows[0].n, 10);
  });
});
