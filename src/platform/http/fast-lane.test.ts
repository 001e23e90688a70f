import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { createMetrics } from '../observability/metrics.js';
import type { FastLane } from './fast-lane.js';
import { createHttpServer } from './server.js';

/** A server with one route, /thing, and lanes in front of it that the test controls. */
async function laneServer(lanes: FastLane[], open: () => boolean, logged: string[] = []) {
  const metrics = createMetrics({ defaultMetrics: false });
  const logger = pino({ level: 'info' }, { write: (line: string) => logged.push(line) });
  const app = await createHttpServer({ logger, bodyLimitBytes: 1024, metrics, version: 'test', fastLanes: { lanes, open } });
  app.get('/thing', async () => ({ from: 'pipeline' }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  after(() => app.close());
  const address = app.server.address();
  assert.ok(address && typeof address === 'object');
  return { url: `http://127.0.0.1:${address.port}`, registry: metrics.registry };
}

const fromLane: FastLane = (request) =>
  request.url === '/thing'
    ? { route: '/thing', status: 200, headers: { 'content-type': 'application/json', 'content-length': '15' }, body: '{"from":"lane"}' }
    : undefined;

test('a lane answers before the pipeline, with a request id, counted and timed under its route', async () => {
  const { url, registry } = await laneServer([fromLane], () => true);
  const response = await fetch(`${url}/thing`, { headers: { 'x-request-id': 'balancer-123' } });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { from: 'lane' });
  assert.equal(response.headers.get('x-request-id'), 'balancer-123');
  assert.equal(response.headers.get('content-length'), '15');
  const own = await fetch(`${url}/thing`);
  assert.match(own.headers.get('x-request-id') ?? '', /^req_[A-Za-z0-9_-]{12}$/);
  await own.text();
  const metrics = await registry.metrics();
  assert.match(metrics, /floodgate_http_fast_lane_answers_total\{route="\/thing"\} 2/);
  assert.match(metrics, /floodgate_http_request_duration_seconds_count\{method="GET",route="\/thing",status_class="2xx"\} 2/);
});

test('a closed gate, a lane that declines and a lane that throws all leave the request to the pipeline', async () => {
  let open = false;
  const logged: string[] = [];
  const throwing: FastLane = (request) => {
    if (request.url === '/thing' && request.headers['x-break'] === 'yes') throw new Error('lane bug');
    return undefined;
  };
  const { url, registry } = await laneServer([throwing, fromLane], () => open, logged);
  const closedGate = await fetch(`${url}/thing`);
  assert.deepEqual(await closedGate.json(), { from: 'pipeline' });
  open = true;
  const broken = await fetch(`${url}/thing`, { headers: { 'x-break': 'yes' } });
  assert.equal(broken.status, 200);
  assert.deepEqual(await broken.json(), { from: 'pipeline' });
  assert.ok(
    logged.some((line) => line.includes('fast lane failed')),
    'the lane failure is logged',
  );
  const declined = await fetch(`${url}/other`);
  assert.equal(declined.status, 404);
  assert.equal((await declined.json()).error.code, 'route_not_found');
  assert.doesNotMatch(await registry.metrics(), /floodgate_http_fast_lane_answers_total\{/);
});
