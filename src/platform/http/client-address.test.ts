/**
 * The raw request's client address (what a fast lane counts a rate limit against) must be the
 * one Fastify's request.ip gives the pipeline, for every kind of trustProxy setting.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createMetrics } from '../observability/metrics.js';
import { clientAddress, type TrustProxy, trustFunction } from './client-address.js';
import { createHttpServer } from './server.js';

async function addressesSeen(trustProxy: TrustProxy, forwardedFor: string | undefined) {
  const metrics = createMetrics({ defaultMetrics: false });
  const app = await createHttpServer({ logger: false, bodyLimitBytes: 1024, metrics, version: 'test', trustProxy });
  const ofRaw = clientAddress(trustFunction(trustProxy));
  app.get('/address', async (request) => ({ fastify: request.ip, raw: ofRaw(request.raw) }));
  after(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(address && typeof address === 'object');
  const response = await fetch(`http://127.0.0.1:${address.port}/address`, {
    headers: forwardedFor ? { 'x-forwarded-for': forwardedFor } : {},
  });
  return (await response.json()) as { fastify: string; raw: string };
}

test('the raw request gives the address Fastify gives, whatever trustProxy says', async () => {
  const cases: Array<[TrustProxy, string | undefined, string]> = [
    // No proxy trusted: the peer, whatever the header claims.
    [false, '203.0.113.9', '127.0.0.1'],
    // The peer is a trusted proxy: the address it forwarded.
    ['127.0.0.1', '203.0.113.9', '203.0.113.9'],
    ['10.0.0.0/8,loopback', '198.51.100.4, 203.0.113.9', '203.0.113.9'],
    // A proxy not in the list: its own address.
    ['10.0.0.0/8', '203.0.113.9', '127.0.0.1'],
    // One hop trusted: the nearest forwarded address, not what the client put before it.
    [1, '192.0.2.66, 203.0.113.9', '203.0.113.9'],
    [2, '192.0.2.66, 203.0.113.9', '192.0.2.66'],
    ['127.0.0.1', undefined, '127.0.0.1'],
  ];
  for (const [trustProxy, forwardedFor, expected] of cases) {
    const seen = await addressesSeen(trustProxy, forwardedFor);
    const label = `trustProxy ${JSON.stringify(trustProxy)}, X-Forwarded-For ${forwardedFor}`;
    assert.equal(seen.fastify, expected, label);
    assert.equal(seen.raw, seen.fastify, label);
  }
});
