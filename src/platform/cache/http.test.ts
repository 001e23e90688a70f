import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { createHttpServer } from '../http/server.js';
import { createMetrics } from '../observability/metrics.js';
import { createMemoryCache } from './cache.js';
import { cachePolicy, ifNoneMatchMatches, maxAgeSeconds, sendCached } from './http.js';

describe('If-None-Match', () => {
  const etag = '"abc"';
  const cases: Array<[header: string | string[] | undefined, matches: boolean]> = [
    [undefined, false],
    ['"abc"', true],
    ['W/"abc"', true],
    ['"xyz", "abc"', true],
    [['"xyz"', '"abc"'], true],
    ['*', true],
    ['"xyz"', false],
    ['abc', false],
    ['', false],
  ];
  for (const [header, matches] of cases) {
    test(`${JSON.stringify(header)} ${matches ? 'matches' : 'does not match'}`, () => {
      assert.equal(ifNoneMatchMatches(header, etag), matches);
    });
  }

  test('max-age is the staleness bound in whole seconds, rounded down', () => {
    assert.equal(maxAgeSeconds(1_000), 1);
    assert.equal(maxAgeSeconds(2_999), 2);
    assert.equal(maxAgeSeconds(999), 0);
  });
});

describe('sendCached', async () => {
  const app = await createHttpServer({
    logger: false,
    bodyLimitBytes: 1024,
    metrics: createMetrics({ defaultMetrics: false }),
    version: 'test',
  });
  const cache = createMemoryCache<{ name: string }>({ name: 'pages', staleMs: 1_000, log: { warn() {} }, registry: new Registry() });
  let loads = 0;
  app.get('/v1/pages/:id', async (request, reply) => {
    const { id } = request.params as { id: string };
    const cached = await cache.get(id, async () => {
      loads += 1;
      return { name: `page ${id}` };
    });
    return sendCached(request, reply, cached, cachePolicy({ staleMs: cache.staleMs }));
  });
  after(() => app.close());

  test('a read carries a strong ETag and public Cache-Control; a matching If-None-Match gets 304', async () => {
    const first = await app.inject({ method: 'GET', url: '/v1/pages/1' });
    assert.equal(first.statusCode, 200);
    assert.deepEqual(first.json(), { name: 'page 1' });
    assert.match(first.headers['content-type'] as string, /^application\/json/);
    assert.equal(first.headers['cache-control'], 'public, max-age=1');
    const etag = first.headers.etag as string;
    assert.match(etag, /^"[^"]+"$/);

    const again = await app.inject({ method: 'GET', url: '/v1/pages/1', headers: { 'if-none-match': etag } });
    assert.equal(again.statusCode, 304);
    assert.equal(again.body, '');
    assert.equal(again.headers.etag, etag);
    assert.equal(again.headers['cache-control'], 'public, max-age=1');

    const other = await app.inject({ method: 'GET', url: '/v1/pages/2', headers: { 'if-none-match': etag } });
    assert.equal(other.statusCode, 200);
    assert.notEqual(other.headers.etag, etag);
    assert.equal(loads, 2);
  });
});
