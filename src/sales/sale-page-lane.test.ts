/**
 * The sale page's fast lane (routes.ts, platform/http/fast-lane.ts): a cached read answered
 * before Fastify must be the answer the full pipeline gives, and everything else must still
 * take the pipeline.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createSaleThroughApi, createTestMerchant, setupTestContext, type TestContext } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { createKey, revokeKey } from '../merchants/service.js';
import { createShedder } from '../platform/http/shedding.js';
import { createMetrics } from '../platform/observability/metrics.js';

// Tests turn the API key cache off; the lane answers only for keys this node holds.
const KEYS_CACHED = { apiKeyCacheTtlMs: 60_000 };

const LANE_ANSWERS = /floodgate_http_fast_lane_answers_total\{route="\/v1\/sales\/:id"\} (\d+)/;

async function laneAnswers(t: TestContext): Promise<number> {
  const metrics = await t.app.inject({ method: 'GET', url: '/metrics' });
  return Number(LANE_ANSWERS.exec(metrics.body)?.[1] ?? 0);
}

/** Headers as a sorted list, without those that differ on every answer. */
function stableHeaders(headers: Record<string, unknown>): Array<[string, string]> {
  return Object.entries(headers)
    .filter(([name]) => !['date', 'x-request-id', 'connection', 'keep-alive'].includes(name))
    .map(([name, value]): [string, string] => [name, String(value)])
    .sort(([a], [b]) => a.localeCompare(b));
}

function headersOf(response: Response): Record<string, string> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  return headers;
}

/** The same request through Fastify's pipeline (inject never meets the lane) and over HTTP. */
async function bothWays(t: TestContext, url: string, headers: Record<string, string>) {
  const pipeline = await t.app.inject({ method: 'GET', url, headers });
  const before = await laneAnswers(t);
  const response = await fetch(`${t.url}${url}`, { headers });
  const body = await response.text();
  return {
    pipeline,
    http: { status: response.status, headers: headersOf(response), body },
    byLane: (await laneAnswers(t)) - before,
  };
}

function sale(t: TestContext) {
  return createSaleThroughApi(t, {
    name: 'Lane release',
    currency: 'thb',
    opens_at: new Date(Date.now() - 60_000).toISOString(),
    items: [{ name: 'Ticket', price: 150_000, stock: 10 }],
  });
}

describe('the sale page fast lane', () => {
  test('a cached sale page is answered by the lane with the bytes and headers of the pipeline, for either key', async () => {
    const t = await setupTestContext({ listen: true, config: KEYS_CACHED });
    const { id } = await sale(t);
    for (const key of [t.merchant.publishableKey, t.merchant.secretKey]) {
      const headers = { authorization: `Bearer ${key}` };
      const { pipeline, http, byLane } = await bothWays(t, `/v1/sales/${id}`, headers);
      assert.equal(byLane, 1, 'answered by the lane');
      assert.equal(http.status, pipeline.statusCode);
      assert.equal(http.body, pipeline.body);
      assert.deepEqual(stableHeaders(http.headers), stableHeaders(pipeline.headers));
      assert.match(http.headers['x-request-id'] ?? '', /^req_/);

      const etag = pipeline.headers.etag as string;
      const notModified = await bothWays(t, `/v1/sales/${id}`, { ...headers, 'if-none-match': etag });
      assert.equal(notModified.byLane, 1);
      assert.equal(notModified.http.status, 304);
      assert.equal(notModified.pipeline.statusCode, 304);
      assert.equal(notModified.http.body, '');
      assert.deepEqual(stableHeaders(notModified.http.headers), stableHeaders(notModified.pipeline.headers));
    }
  });

  test('what the lane cannot answer from memory takes the pipeline and gets its answer', async () => {
    const t = await setupTestContext({ listen: true, config: KEYS_CACHED });
    const { id } = await sale(t);
    const publishable = { authorization: `Bearer ${t.merchant.publishableKey}` };
    const other = await createTestMerchant(t.pool);
    const cases: Array<[string, Record<string, string>, number, string?]> = [
      // Not yet in this node's cache: the pipeline loads it.
      [`/v1/sales/${id}`, publishable, 200],
      ['/v1/sales/sale_0000000000000000000000', publishable, 404, 'resource_missing'],
      [`/v1/sales/${id}`, {}, 401, 'api_key_missing'],
      [`/v1/sales/${id}`, { authorization: 'Bearer pk_test_nonsense' }, 401, 'api_key_invalid'],
      [`/v1/sales/${id}`, { authorization: `Bearer ${other.publishableKey}` }, 404, 'resource_missing'],
      [`/v1/sales/${id}?expand=items`, publishable, 200],
      [`/v1/sales/${id.toUpperCase()}`, publishable, 404, 'resource_missing'],
    ];
    for (const [url, headers, status, code] of cases) {
      const response = await fetch(`${t.url}${url}`, { headers });
      const body = await response.json();
      assert.equal(response.status, status, `${url}: ${JSON.stringify(body)}`);
      if (code) assert.equal(body.error.code, code, url);
    }
    assert.equal(await laneAnswers(t), 0, 'the lane answered none of them');
    // The first read left the sale and the key in memory: now the lane answers.
    await (await fetch(`${t.url}/v1/sales/${id}`, { headers: publishable })).text();
    assert.equal(await laneAnswers(t), 1);
  });

  test('with rate limits on, the lane counts each read as the pipeline does, and leaves a refusal to the pipeline', async () => {
    // Thirty reads per address in a window far longer than the test; the key's limit is wider.
    const limits = { rateLimitWindowSeconds: 30, rateLimitIpPerSecond: 1, rateLimitKeyPerSecond: 1_000 };
    const t = await setupTestContext({ listen: true, config: { ...KEYS_CACHED, ...limits } });
    const { id } = await sale(t);
    const headers = { authorization: `Bearer ${t.merchant.publishableKey}` };
    // The pipeline loads the sale and the key into memory, and counts the first read.
    const first = await t.app.inject({ method: 'GET', url: `/v1/sales/${id}`, headers });
    assert.equal(first.statusCode, 200);
    assert.equal(first.headers['ratelimit-limit'], '30');
    assert.equal(first.headers['ratelimit-remaining'], '29');
    for (let remaining = 28; remaining >= 0; remaining--) {
      const response = await fetch(`${t.url}/v1/sales/${id}`, { headers });
      const body = await response.text();
      assert.equal(response.status, 200);
      assert.equal(body, first.body);
      const answered = headersOf(response);
      assert.equal(answered['ratelimit-remaining'], String(remaining), 'the lane counted the read against the address');
      const unlimited = (list: Array<[string, string]>) => list.filter(([name]) => !name.startsWith('ratelimit-'));
      assert.deepEqual(unlimited(stableHeaders(answered)), unlimited(stableHeaders(first.headers)));
      assert.equal(answered['ratelimit-limit'], '30');
      assert.ok(Number(answered['ratelimit-reset']) >= 1);
    }
    assert.equal(await laneAnswers(t), 29, "every read after the first was the lane's");
    const refused = await fetch(`${t.url}/v1/sales/${id}`, { headers });
    assert.equal(refused.status, 429);
    assert.equal((await refused.json()).error.code, 'rate_limited');
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    assert.equal(await laneAnswers(t), 29, 'the refusal came from the pipeline');
  });

  // The lane reuses its last lookup of a key and a sale for repeats of the same read
  // (FLOODGATE_SALE_READ_REUSE_MS): here for a whole minute, so only its other bounds can end it.
  const REUSED_FOR_A_MINUTE = { ...KEYS_CACHED, saleReadReuseMs: 60_000 };

  async function readName(t: TestContext, id: string, key: string): Promise<{ status: number; name?: string }> {
    const response = await fetch(`${t.url}/v1/sales/${id}`, { headers: { authorization: `Bearer ${key}` } });
    const body = await response.json();
    return { status: response.status, name: body.name };
  }

  test('a reused lookup still sees a change made on this node at once', async () => {
    const t = await setupTestContext({ listen: true, config: REUSED_FOR_A_MINUTE });
    const { id } = await sale(t);
    const key = t.merchant.publishableKey;
    assert.equal((await readName(t, id, key)).name, 'Lane release', 'the pipeline loads the sale');
    const before = await laneAnswers(t);
    assert.equal((await readName(t, id, key)).name, 'Lane release');
    assert.equal((await readName(t, id, key)).name, 'Lane release');
    assert.equal((await laneAnswers(t)) - before, 2, "both repeats were the lane's");
    const changed = await t.app.inject({
      method: 'PATCH',
      url: `/v1/sales/${id}`,
      headers: { authorization: `Bearer ${t.merchant.secretKey}` },
      payload: { name: 'Renamed release' },
    });
    assert.equal(changed.statusCode, 200, changed.body);
    assert.equal((await readName(t, id, key)).name, 'Renamed release', 'the invalidation ended the reuse');
    assert.equal((await readName(t, id, key)).name, 'Renamed release');
  });

  test("a reused lookup ends with the sale copy's freshness and with the key's trust", async () => {
    // Copies fresh for 200 ms, keys trusted for 60 s: the sale's bound ends the reuse.
    const stale = await setupTestContext({ listen: true, config: { ...REUSED_FOR_A_MINUTE, cacheStaleMs: 200 } });
    const { id } = await sale(stale);
    const key = stale.merchant.publishableKey;
    await readName(stale, id, key);
    const before = await laneAnswers(stale);
    assert.equal((await readName(stale, id, key)).name, 'Lane release');
    assert.equal((await laneAnswers(stale)) - before, 1, "the repeat was the lane's");
    // Changed behind the cache's back: no invalidation, only the copy's age can show it.
    await stale.pool.query(`update sales set name = 'Changed in the database' where id = $1`, [id]);
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal((await readName(stale, id, key)).name, 'Changed in the database', 'no read outlives its copy');

    // Keys trusted for 200 ms, copies fresh for 60 s: the key's bound ends the reuse.
    const revoked = await setupTestContext({
      listen: true,
      config: { ...REUSED_FOR_A_MINUTE, apiKeyCacheTtlMs: 200, cacheStaleMs: 60_000 },
    });
    const other = await sale(revoked);
    const created = await createKey(revoked.pool, revoked.merchant.id, 'publishable');
    assert.ok(created.kind === 'created');
    await readName(revoked, other.id, created.key);
    const answered = await laneAnswers(revoked);
    assert.equal((await readName(revoked, other.id, created.key)).status, 200);
    assert.equal((await laneAnswers(revoked)) - answered, 1, "the repeat was the lane's");
    await revokeKey(revoked.pool, created.keyId);
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal((await readName(revoked, other.id, created.key)).status, 401, 'a revoked key stops within the key cache TTL');
  });

  test('a node that would shed the line keeps the lane shut', async () => {
    // A node whose event loop lags sheds the line first: the lane must not serve past it.
    const t = await setupTestContext({ listen: true, config: KEYS_CACHED });
    const delay = {
      ms: 0,
      takeMs() {
        return this.ms;
      },
      close() {},
    };
    const metrics = createMetrics({ defaultMetrics: false });
    const shedder = createShedder({ eventLoopDelayMaxMs: 50, inFlightMax: 1_000, registry: metrics.registry, delaySource: delay });
    const app = await buildApp({ config: t.config, pool: t.pool, provider: t.provider, shedder, metrics });
    after(() => app.close());
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    assert.ok(address && typeof address === 'object');
    const { id } = await sale(t);
    const read = () =>
      fetch(`http://127.0.0.1:${address.port}/v1/sales/${id}`, { headers: { authorization: `Bearer ${t.merchant.publishableKey}` } });
    const first = await read();
    assert.equal(first.status, 200, 'the first read loads the sale through the pipeline');
    await first.text();
    const answeredByLane = async () => Number(LANE_ANSWERS.exec(await metrics.registry.metrics())?.[1] ?? 0);
    assert.ok((await (await read()).text()).length > 0);
    assert.equal(await answeredByLane(), 1, 'a calm node serves the cached read in the lane');
    delay.ms = 200;
    shedder.runOnce();
    const shed = await read();
    assert.equal(shed.status, 503);
    assert.equal((await shed.json()).error.code, 'overloaded');
    assert.equal(await answeredByLane(), 1, 'the lagging node left the read to the shedder');
  });
});
