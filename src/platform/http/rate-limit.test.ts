import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { openTestRedis, redisSkip } from '../../../test/redis.js';
import { createMetrics } from '../observability/metrics.js';
import type { RedisConnections } from '../redis/client.js';
import { clientAddress, trustFunction } from './client-address.js';
import { clientBucket, createLimiter, createRateLimit, type RateLimitOptions } from './rate-limit.js';
import { createHttpServer } from './server.js';

const silent = { warn() {} };
// Long enough that no window ends during a test, so counts are exact.
const WINDOW_SECONDS = 60;

/** A server with the /v1 limits and a stand-in for authentication: `Bearer <key id>`. */
async function limitedServer(options: Partial<RateLimitOptions> & { trustProxy?: string }) {
  const metrics = createMetrics({ defaultMetrics: false });
  const app = await createHttpServer({ logger: false, bodyLimitBytes: 1024, metrics, version: 'test', trustProxy: options.trustProxy });
  const limits = createRateLimit({
    keyPoints: 0,
    ipPoints: 0,
    windowSeconds: WINDOW_SECONDS,
    log: silent,
    registry: metrics.registry,
    clientAddress: clientAddress(trustFunction(options.trustProxy)),
    ...options,
  });
  app.addHook('onRequest', limits.byIp);
  app.addHook('onRequest', async (request) => {
    const match = /^Bearer (\w+)$/.exec(request.headers.authorization ?? '');
    if (match) request.principal = { merchantId: 'mch_test', keyId: match[1] as string, keyKind: 'secret' };
  });
  app.addHook('onRequest', limits.byKey);
  app.get('/v1/thing', async () => ({ ok: true }));
  for (const path of ['/livez', '/readyz', '/metrics']) app.get(path, async () => ({ ok: true }));
  after(() => app.close());
  return { app, registry: metrics.registry };
}

function assertRefused(response: { statusCode: number; headers: Record<string, unknown>; json(): { error: { code: string } } }) {
  assert.equal(response.statusCode, 429);
  assert.equal(response.json().error.code, 'rate_limited');
  const retryAfter = Number(response.headers['retry-after']);
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= WINDOW_SECONDS, `Retry-After ${retryAfter}`);
  assert.equal(response.headers['ratelimit-remaining'], '0');
  assert.ok(Number(response.headers['ratelimit-reset']) >= 1);
}

const BACKENDS: Array<{ name: string; skip: string | false; redis: () => Promise<RedisConnections | undefined> }> = [
  { name: 'memory', skip: false, redis: async () => undefined },
  { name: 'redis', skip: redisSkip, redis: () => openTestRedis() },
];

for (const backend of BACKENDS) {
  describe(`rate limits, ${backend.name}`, { skip: backend.skip }, () => {
    test('a limiter allows its points in a window, then refuses until the window ends', async () => {
      const limiter = createLimiter({
        name: 'test',
        points: 3,
        windowSeconds: WINDOW_SECONDS,
        log: silent,
        registry: new Registry(),
        redis: await backend.redis(),
      });
      const decisions = [];
      for (let i = 0; i < 4; i++) decisions.push(await limiter.consume('buyer_1'));
      assert.deepEqual(
        decisions.map((d) => [d.allowed, d.limit, d.remaining]),
        [
          [true, 3, 2],
          [true, 3, 1],
          [true, 3, 0],
          [false, 3, 0],
        ],
      );
      assert.ok(decisions[3]!.resetSeconds >= 1 && decisions[3]!.resetSeconds <= WINDOW_SECONDS);
      assert.equal((await limiter.consume('buyer_2')).allowed, true);
    });

    test('per client address: 429 with Retry-After and RateLimit-* past the limit; other addresses unaffected', async () => {
      const { app } = await limitedServer({ ipPoints: 3, redis: await backend.redis() });
      const from = (remoteAddress: string) => app.inject({ method: 'GET', url: '/v1/thing', remoteAddress });
      for (const remaining of ['2', '1', '0']) {
        const allowed = await from('198.51.100.7');
        assert.equal(allowed.statusCode, 200);
        assert.equal(allowed.headers['ratelimit-limit'], '3');
        assert.equal(allowed.headers['ratelimit-remaining'], remaining);
        assert.ok(Number(allowed.headers['ratelimit-reset']) >= 1);
      }
      assertRefused(await from('198.51.100.7'));
      assert.equal((await from('198.51.100.8')).statusCode, 200);
    });

    test('per API key: 429 past the limit whatever the address; other keys unaffected', async () => {
      const { app, registry } = await limitedServer({ keyPoints: 2, ipPoints: 100, redis: await backend.redis() });
      const as = (key: string, remoteAddress: string) =>
        app.inject({ method: 'GET', url: '/v1/thing', remoteAddress, headers: { authorization: `Bearer ${key}` } });
      const first = await as('key_a', '198.51.100.1');
      // The headers describe the limit nearest exhaustion: the key's, not the address's.
      assert.equal(first.headers['ratelimit-limit'], '2');
      assert.equal(first.headers['ratelimit-remaining'], '1');
      assert.equal((await as('key_a', '198.51.100.2')).statusCode, 200);
      assertRefused(await as('key_a', '198.51.100.3'));
      assert.equal((await as('key_b', '198.51.100.3')).statusCode, 200);
      const refused = (await registry.getSingleMetricAsString('floodgate_rate_limited_total')).trim();
      assert.match(refused, /floodgate_rate_limited_total\{limit="key"\} 1$/m);
    });

    test('a percent-encoded path to a /v1 route is limited like the plain one', async () => {
      const { app } = await limitedServer({ ipPoints: 1, redis: await backend.redis() });
      assert.equal((await app.inject({ method: 'GET', url: '/%761/thing' })).statusCode, 200);
      assertRefused(await app.inject({ method: 'GET', url: '/%761/thing' }));
    });

    test('health checks and metrics are never limited', async () => {
      const { app } = await limitedServer({ ipPoints: 1, keyPoints: 1, redis: await backend.redis() });
      for (let i = 0; i < 5; i++) {
        for (const url of ['/livez', '/readyz', '/metrics']) {
          const response = await app.inject({ method: 'GET', url, headers: { authorization: 'Bearer key_a' } });
          assert.equal(response.statusCode, 200, url);
          assert.equal(response.headers['ratelimit-limit'], undefined);
        }
      }
    });
  });
}

describe('client address', () => {
  test('X-Forwarded-For counts only from a trusted proxy', async () => {
    const trusted = await limitedServer({ ipPoints: 1, trustProxy: '127.0.0.1' });
    const via = (app: typeof trusted.app, client: string) =>
      app.inject({ method: 'GET', url: '/v1/thing', remoteAddress: '127.0.0.1', headers: { 'x-forwarded-for': client } });
    assert.equal((await via(trusted.app, '203.0.113.1')).statusCode, 200);
    assert.equal((await via(trusted.app, '203.0.113.2')).statusCode, 200);
    assert.equal((await via(trusted.app, '203.0.113.1')).statusCode, 429);

    // Not trusted: the header is ignored, and every request counts against the proxy itself.
    const untrusted = await limitedServer({ ipPoints: 1 });
    assert.equal((await via(untrusted.app, '203.0.113.1')).statusCode, 200);
    assert.equal((await via(untrusted.app, '203.0.113.2')).statusCode, 429);
  });

  test('IPv4 counts per address, IPv6 per /64', () => {
    assert.equal(clientBucket('198.51.100.7'), '198.51.100.7');
    assert.equal(clientBucket('::ffff:198.51.100.7'), '198.51.100.7');
    assert.equal(clientBucket('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(clientBucket('2001:db8:1:2::9'), '2001:db8:1:2::/64');
    assert.equal(clientBucket('2001:0db8::1'), '2001:db8:0:0::/64');
    assert.equal(clientBucket('::1'), '0:0:0:0::/64');
    assert.equal(clientBucket('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(clientBucket('64:ff9b::198.51.100.7'), '64:ff9b:0:0::/64');
  });
});

describe('rate limits when Redis fails', { skip: redisSkip }, () => {
  test('decisions fall back to this process, still limiting, and say so', async () => {
    const registry = new Registry();
    const redis = await openTestRedis();
    let warnings = 0;
    const limiter = createLimiter({
      name: 'ip',
      points: 2,
      windowSeconds: WINDOW_SECONDS,
      registry,
      redis,
      log: {
        warn: () => {
          warnings += 1;
        },
      },
    });
    assert.equal((await limiter.consume('198.51.100.1')).allowed, true);
    redis.client.disconnect();
    // Redis counted one; the fallback starts from nothing, so this node allows two more.
    const decisions = [];
    for (let i = 0; i < 3; i++) decisions.push((await limiter.consume('198.51.100.1')).allowed);
    assert.deepEqual(decisions, [true, true, false]);
    assert.equal(warnings, 1);
    assert.match(await registry.getSingleMetricAsString('floodgate_rate_limit_fallbacks_total'), /\{limit="ip"\} 3$/m);
  });
});
