/**
 * Redis for tests: the machine's Redis (FLOODGATE_TEST_REDIS_URL, else 127.0.0.1:6379), each
 * test under its own key prefix, its keys deleted after. Redis is never flushed.
 *
 * Where Redis does not answer, Redis tests are skipped with a message, except with CI=true: CI
 * must run them, so there a missing Redis fails the test file that needs it.
 *
 *   describe('...', { skip: redisSkip }, () => { ... });
 *   const redis = await openTestRedis();     // inside a test or a before()
 */
import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import { Redis } from 'ioredis';
import { openRedis, type RedisConnections } from '../src/platform/redis/client.js';

export const TEST_REDIS_URL = process.env.FLOODGATE_TEST_REDIS_URL || 'redis://127.0.0.1:6379';

// Deleting a test's keys: SCAN a page at a time, and stop after this many pages.
const CLEANUP_PAGE_KEYS = 500;
const CLEANUP_PAGES_MAX = 1_000;

const silent = { warn() {}, info() {} };

async function reachable(): Promise<boolean> {
  const probe = new Redis(TEST_REDIS_URL, { lazyConnect: true, connectTimeout: 1_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => {});
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/**
 * For node:test's `skip` option: false when Redis answers, else why the tests are skipped. With
 * CI=true an unreachable Redis throws instead, so the run fails rather than skipping quietly.
 */
export function redisSkipReason(answers: boolean, env: NodeJS.ProcessEnv = process.env): string | false {
  if (answers) return false;
  const where = new URL(TEST_REDIS_URL).host;
  if (env.CI === 'true')
    throw new Error(`Redis is not reachable at ${where} (FLOODGATE_TEST_REDIS_URL): with CI=true Redis tests must run`);
  return `skipped: Redis not reachable at ${where} (set FLOODGATE_TEST_REDIS_URL)`;
}

export const redisSkip: string | false = redisSkipReason(await reachable());
if (redisSkip) console.log(`# ${redisSkip}`);

/** A fresh key prefix, unique to this call. */
export function testKeyPrefix(): string {
  return `floodgate_test_${randomBytes(6).toString('hex')}:`;
}

/**
 * Connections under a fresh prefix (or the one given, to make a second "node" on the same
 * keys). The keys under the prefix are deleted and the connections closed when the file's
 * tests end.
 */
export async function openTestRedis(keyPrefix = testKeyPrefix()): Promise<RedisConnections> {
  const redis = await openRedis({ url: TEST_REDIS_URL, keyPrefix, log: silent });
  after(async () => {
    await redis.close();
    await deleteKeys(keyPrefix);
  });
  return redis;
}

/** Deletes every key under prefix, with a plain client: SCAN patterns are not prefixed. */
export async function deleteKeys(keyPrefix: string): Promise<void> {
  const admin = new Redis(TEST_REDIS_URL);
  try {
    let cursor = '0';
    for (let page = 0; page < CLEANUP_PAGES_MAX; page++) {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', CLEANUP_PAGE_KEYS);
      if (keys.length > 0) await admin.unlink(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
  } finally {
    admin.disconnect();
  }
}
