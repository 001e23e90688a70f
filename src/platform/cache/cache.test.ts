import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { openTestRedis, redisSkip, testKeyPrefix } from '../../../test/redis.js';
import type { RedisConnections } from '../redis/client.js';
import { type Cache, type CacheOptions, createMemoryCache, createRedisCache } from './cache.js';

const silent = { warn() {} };

// Long enough that only an invalidation, never the TTL, can explain a fresh value.
const STALE_LONG_MS = 60_000;
// Polls for something that should happen within the cache's bound stop after this; generous
// because a loaded CI machine is slow, and only reached when the test fails.
const POLL_DEADLINE_MS = 5_000;
const POLL_INTERVAL_MS = 10;

/** Calls get until accept(value) or the deadline; returns the last result. */
async function pollUntil<T>(get: () => T | Promise<T>, accept: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + POLL_DEADLINE_MS;
  let last = await get();
  while (!accept(last) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    last = await get();
  }
  return last;
}

/** A data source that counts its loads. */
function source<T>(initial: T) {
  const state = { value: initial, loads: 0 };
  return {
    state,
    load: async () => {
      state.loads += 1;
      return structuredClone(state.value);
    },
  };
}

type Make = (options: Omit<CacheOptions, 'log' | 'name' | 'registry'> & { registry?: Registry }) => Promise<Cache<unknown>>;

const BACKENDS: Array<{ name: string; skip: string | false; make: Make }> = [
  {
    name: 'memory',
    skip: false,
    make: async (options) => createMemoryCache({ name: 'test', log: silent, registry: new Registry(), ...options }),
  },
  {
    name: 'redis',
    skip: redisSkip,
    make: async (options) =>
      createRedisCache({ name: 'test', log: silent, registry: new Registry(), redis: await openTestRedis(), ...options }),
  },
];

for (const backend of BACKENDS) {
  describe(`cache, ${backend.name}`, { skip: backend.skip }, () => {
    test('a miss runs the loader; the next get is served from this node', async () => {
      const cache = await backend.make({ staleMs: STALE_LONG_MS });
      const data = source({ id: 'sale_1', available: 5 });
      const first = await cache.get('sale_1', data.load);
      assert.equal(first.level, 'miss');
      assert.deepEqual(first.value, { id: 'sale_1', available: 5 });
      assert.equal(first.json, '{"id":"sale_1","available":5}');
      const second = await cache.get('sale_1', data.load);
      assert.equal(second.level, 'l1');
      assert.deepEqual(second.value, first.value);
      assert.equal(second.etag, first.etag);
      assert.equal(data.state.loads, 1);
    });

    test('the ETag is a strong hash of the serialized value', async () => {
      const cache = await backend.make({ staleMs: STALE_LONG_MS });
      const a = await cache.get('a', async () => ({ n: 1 }));
      const b = await cache.get('b', async () => ({ n: 1 }));
      const c = await cache.get('c', async () => ({ n: 2 }));
      assert.match(a.etag, /^"[A-Za-z0-9_-]{43}"$/);
      assert.equal(a.etag, b.etag);
      assert.notEqual(a.etag, c.etag);
    });

    test('100 concurrent gets of a cold key run the loader once', async () => {
      const cache = await backend.make({ staleMs: STALE_LONG_MS });
      let release: () => void = () => {};
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let loads = 0;
      const loader = async () => {
        loads += 1;
        await gate;
        return { hot: true };
      };
      const gets = Array.from({ length: 100 }, () => cache.get('hot', loader));
      release();
      const results = await Promise.all(gets);
      assert.equal(loads, 1);
      assert.ok(results.every((result) => result.value !== null && result.etag === results[0]?.etag));
    });

    test('invalidate drops the value, and the next get loads the new one', async () => {
      const cache = await backend.make({ staleMs: STALE_LONG_MS });
      const data = source({ available: 5 });
      await cache.get('sale', data.load);
      data.state.value = { available: 4 };
      await cache.invalidate('sale');
      const after = await cache.get('sale', data.load);
      assert.equal(after.level, 'miss');
      assert.deepEqual(after.value, { available: 4 });
      assert.equal(data.state.loads, 2);
    });

    test('without any invalidation a copy lives no longer than staleMs', async () => {
      const cache = await backend.make({ staleMs: 50 });
      const data = source({ available: 5 });
      await cache.get('sale', data.load);
      data.state.value = { available: 0 };
      const seen = await pollUntil(
        () => cache.get('sale', data.load),
        (result) => (result.value as { available: number }).available === 0,
      );
      assert.deepEqual(seen.value, { available: 0 });
    });

    test('a load started before an invalidation is returned to its callers but kept nowhere', async () => {
      const cache = await backend.make({ staleMs: STALE_LONG_MS });
      let release: () => void = () => {};
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const pending = cache.get('sale', async () => {
        await gate;
        return { available: 5 };
      });
      await cache.invalidate('sale');
      release();
      assert.deepEqual((await pending).value, { available: 5 });
      const next = await cache.get('sale', async () => ({ available: 4 }));
      assert.equal(next.level, 'miss');
      assert.deepEqual(next.value, { available: 4 });
    });

    test('a loader that throws fails every waiting get and caches nothing', async () => {
      const cache = await backend.make({ staleMs: STALE_LONG_MS });
      const failing = async () => {
        throw new Error('database down');
      };
      const results = await Promise.allSettled([cache.get('k', failing), cache.get('k', failing)]);
      assert.deepEqual(
        results.map((result) => result.status),
        ['rejected', 'rejected'],
      );
      const next = await cache.get('k', async () => 'recovered');
      assert.equal(next.level, 'miss');
      assert.equal(next.value, 'recovered');
    });

    test('values come back as JSON, frozen, the same from every level', async () => {
      const cache = await backend.make({ staleMs: STALE_LONG_MS });
      const loaded = await cache.get('k', async () => ({ at: new Date(0), list: [1, { deep: true }], gone: undefined }));
      const held = await cache.get('k', async () => assert.fail('loaded twice'));
      for (const result of [loaded, held]) {
        assert.deepEqual(result.value, { at: '1970-01-01T00:00:00.000Z', list: [1, { deep: true }] });
        assert.ok(Object.isFrozen(result.value));
        assert.ok(Object.isFrozen((result.value as { list: unknown[] }).list[1]));
      }
      // null is a value like any other (a "not found" a caller chooses to cache).
      assert.equal((await cache.get('none', async () => null)).value, null);
    });

    test('a first-level hit comes back at once, the same answer every time; a miss as a promise', async () => {
      const cache = await backend.make({ staleMs: STALE_LONG_MS });
      const first = cache.get('k', async () => ({ n: 1 }));
      assert.ok(first instanceof Promise);
      const loaded = await first;
      const hit = cache.get('k', async () => assert.fail('loaded twice'));
      assert.ok(!(hit instanceof Promise));
      assert.equal(hit.level, 'l1');
      assert.equal(hit.etag, loaded.etag);
      assert.deepEqual(hit.value, { n: 1 });
      assert.equal(
        cache.get('k', async () => assert.fail('loaded twice')),
        hit,
      );
      await assert.rejects(async () => cache.get('', async () => 1), /a cache key is 1 to/);
    });

    test('hits and misses are counted per level', async () => {
      const registry = new Registry();
      const cache = await backend.make({ staleMs: STALE_LONG_MS, registry });
      await cache.get('k', async () => 1);
      await cache.get('k', async () => 1);
      const counts = await countsByLabels(registry);
      assert.equal(counts['test/l1/hit'], 1);
      assert.equal(counts['test/l1/miss'], 1);
      if (backend.name === 'redis') assert.equal(counts['test/l2/miss'], 1);
    });
  });
}

describe('two-level cache on two nodes sharing one Redis', { skip: redisSkip }, () => {
  /** Two nodes: each its own connections and subscriber, on the same keys. */
  async function twoNodes(staleMs: number) {
    const prefix = testKeyPrefix();
    const make = async (redis: RedisConnections) =>
      createRedisCache<{ available: number }>({ name: 'sales', staleMs, log: silent, registry: new Registry(), redis });
    const redisA = await openTestRedis(prefix);
    const redisB = await openTestRedis(prefix);
    return { a: await make(redisA), b: await make(redisB), redisA };
  }

  test('levels: the loading node reports miss then l1; the other node l2 then l1', async () => {
    const { a, b } = await twoNodes(STALE_LONG_MS);
    const data = source({ available: 5 });
    assert.equal((await a.get('sale', data.load)).level, 'miss');
    assert.equal((await a.get('sale', data.load)).level, 'l1');
    const fromRedis = await b.get('sale', data.load);
    assert.equal(fromRedis.level, 'l2');
    assert.deepEqual(fromRedis.value, { available: 5 });
    assert.equal((await b.get('sale', data.load)).level, 'l1');
    assert.equal(data.state.loads, 1);
  });

  test('an invalidation on node A reaches node B, which then returns the new value', async () => {
    const { a, b } = await twoNodes(STALE_LONG_MS);
    const data = source({ available: 5 });
    await a.get('sale', data.load);
    assert.equal((await b.get('sale', data.load)).level, 'l2');
    assert.equal((await b.get('sale', data.load)).level, 'l1');
    data.state.value = { available: 4 };
    await a.invalidate('sale');
    // The TTL is a minute, so only the published invalidation can make B load again.
    const seen = await pollUntil(
      () => b.get('sale', data.load),
      (result) => result.value.available === 4,
    );
    assert.deepEqual(seen.value, { available: 4 });
  });

  test('a lost invalidation message still ends with the TTL', async () => {
    const { a, b, redisA } = await twoNodes(100);
    const data = source({ available: 5 });
    await a.get('sale', data.load);
    await b.get('sale', data.load);
    data.state.value = { available: 0 };
    // What a lost message leaves behind: the shared copy gone, B never told.
    await redisA.client.del('cache:sales:sale');
    const seen = await pollUntil(
      () => b.get('sale', data.load),
      (result) => result.value.available === 0,
    );
    assert.deepEqual(seen.value, { available: 0 });
  });

  test('with Redis unreachable, gets load from the source and invalidate does not throw', async () => {
    const registry = new Registry();
    const redis = await openTestRedis();
    let warnings = 0;
    const cache = await createRedisCache<string>({
      name: 'sales',
      staleMs: STALE_LONG_MS,
      registry,
      redis,
      log: {
        warn: () => {
          warnings += 1;
        },
      },
    });
    redis.client.disconnect();
    const result = await cache.get('sale', async () => 'from the database');
    assert.equal(result.level, 'miss');
    assert.equal(result.value, 'from the database');
    await cache.invalidate('sale');
    assert.equal((await countsByLabels(registry))['sales/l2/error'], 1);
    assert.ok(warnings >= 1);
  });
});

async function countsByLabels(registry: Registry): Promise<Record<string, number>> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === 'floodgate_cache_requests_total');
  const counts: Record<string, number> = {};
  for (const value of (metric?.values ?? []) as Array<{ labels: Record<string, string>; value: number }>) {
    counts[`${value.labels.cache}/${value.labels.level}/${value.labels.outcome}`] = value.value;
  }
  return counts;
}

describe('cache staleness bound, with a clock the test steps', () => {
  // The node's own copy (L1): Redis' copy expires by Redis' clock, which no test can step; the
  // Redis backend's bound is checked above in real time.
  test('a copy serves up to staleMs after its load, and the next millisecond loads afresh', async () => {
    let clock = 1_000_000;
    const STALE_MS = 1_000;
    const cache = createMemoryCache<unknown>({ name: 'test', log: silent, registry: new Registry(), staleMs: STALE_MS, now: () => clock });
    const data = source({ available: 5 });
    assert.equal((await cache.get('bound', data.load)).level, 'miss');
    data.state.value = { available: 0 };
    clock += STALE_MS;
    const atBound = await cache.get('bound', data.load);
    assert.deepEqual([atBound.level, atBound.value], ['l1', { available: 5 }], 'at the bound the copy still serves');
    clock += 1;
    const past = await cache.get('bound', data.load);
    assert.deepEqual([past.level, past.value], ['miss', { available: 0 }], 'one ms past the bound the source is read again');
    assert.equal(data.state.loads, 2);
  });

  test('a slow load shortens its copy’s life by the load’s duration', async () => {
    let clock = 5_000_000;
    const STALE_MS = 1_000;
    const cache = createMemoryCache<unknown>({ name: 'test', log: silent, registry: new Registry(), staleMs: STALE_MS, now: () => clock });
    const data = source({ available: 7 });
    await cache.get('slow', async () => {
      clock += 400; // the source was read at the start; the copy must die 1,000 ms after that
      return data.load();
    });
    data.state.value = { available: 1 };
    clock += STALE_MS - 400;
    assert.deepEqual((await cache.get('slow', data.load)).value, { available: 7 });
    clock += 1;
    assert.deepEqual((await cache.get('slow', data.load)).value, { available: 1 });
  });
});
