/**
 * Test wiring for the waiting room: each backend (memory, and Redis when it answers at
 * FLOODGATE_TEST_REDIS_URL, else 127.0.0.1:6379; with CI=true a missing Redis fails), a fresh key prefix per room whose keys are deleted when the file's tests end,
 * and sales whose clock and stock the test drives. Only test files import this.
 */
import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import { Redis } from 'ioredis';
import { redisSkipReason, TEST_REDIS_URL } from '../../test/redis.js';
import type { SaleForQueue } from './domain.js';
import { MemoryQueueStore } from './memory-store.js';
import { RedisQueueStore } from './redis-store.js';
import { WaitingRoom, type WaitingRoomOptions } from './service.js';
import type { QueueStore } from './store.js';

export const TEST_ADMISSION_SECRET = 'test_admission_secret_0123456789abcdef';
export const TOKEN_TTL_SECONDS = 300;
export const SHOPPING_MAX_SECONDS = 1_800;

// A fixed instant, so the tests never depend on the wall clock.
export const T0 = Date.UTC(2030, 0, 1, 10, 0, 0);
export const at = (seconds: number) => new Date(T0 + seconds * 1000);

async function connect(): Promise<Redis | undefined> {
  const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, connectTimeout: 1_000, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    await redis.connect();
    await redis.ping();
    return redis;
  } catch {
    redis.disconnect();
    return undefined;
  }
}

const clients: Redis[] = [];
const prefixes: string[] = [];

/** Another connection, as another API node would have. */
export async function redisClient(): Promise<Redis> {
  const client = await connect();
  if (!client) throw new Error('Redis went away during the tests');
  clients.push(client);
  return client;
}

export const redis = await connect();
if (redis) clients.push(redis);
export const REDIS_SKIP = redisSkipReason(redis !== undefined);

after(async () => {
  const main = clients[0];
  // Bounded: a test creates a few dozen keys per prefix.
  for (const prefix of prefixes) {
    let cursor = '0';
    for (let round = 0; round < 1_000; round++) {
      const [next, keys] = (await main?.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1_000)) ?? ['0', []];
      if (keys.length > 0) await main?.del(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
  }
  for (const client of clients) client.disconnect();
});

export function newKeyPrefix(): string {
  const prefix = `floodgate_test_${randomBytes(6).toString('hex')}:`;
  prefixes.push(prefix);
  return prefix;
}

export interface Backend {
  name: string;
  skip: string | false;
  /** A new, empty store; `shared` makes more stores over the same state (more API nodes). */
  store(): { store: QueueStore; prefix?: string; shared(): Promise<QueueStore> };
}

export const BACKENDS: Backend[] = [
  {
    name: 'memory',
    skip: false,
    store() {
      const store = new MemoryQueueStore();
      return { store, shared: async () => store };
    },
  },
  {
    name: 'Redis',
    skip: REDIS_SKIP,
    store() {
      const prefix = newKeyPrefix();
      return {
        store: new RedisQueueStore(redis as Redis, prefix),
        prefix,
        shared: async () => new RedisQueueStore(await redisClient(), prefix),
      };
    },
  },
];

export function roomOn(store: QueueStore, options: Partial<WaitingRoomOptions> = {}): WaitingRoom {
  return new WaitingRoom(store, {
    secret: TEST_ADMISSION_SECRET,
    tokenTtlSeconds: TOKEN_TTL_SECONDS,
    shoppingMaxSeconds: SHOPPING_MAX_SECONDS,
    ...options,
  });
}

export type TestSale = SaleForQueue & { stock: number };

/** A sale opening at T0 unless told otherwise; set `stock` to change what remainingStock() says. */
export function testSale(overrides: Partial<TestSale> = {}): TestSale {
  const sale: TestSale = {
    id: `sale_${randomBytes(6).toString('hex')}`,
    opensAt: new Date(T0),
    closesAt: null,
    admitPerSecond: 10,
    maxShoppers: 100,
    graceSeconds: 30,
    stock: 1_000,
    remainingStock: () => sale.stock,
    ...overrides,
  };
  return sale;
}
