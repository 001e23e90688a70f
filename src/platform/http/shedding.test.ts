import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { createMetrics } from '../observability/metrics.js';
import { createHttpServer } from './server.js';
import { CHECKOUT_HEADROOM, createShedder, type DelaySource, eventLoopDelaySource } from './shedding.js';

const EXEMPT = ['/livez', '/readyz', '/metrics'];
// Held requests reach the shedder's hook within a few event-loop turns; this only bounds a
// failing test.
const WAIT_DEADLINE_MS = 5_000;

/** A delay source the test sets by hand. */
function fakeDelay(): DelaySource & { ms: number } {
  return {
    ms: 0,
    takeMs() {
      return this.ms;
    },
    close() {},
  };
}

async function shedServer(options: {
  inFlightMax: number;
  eventLoopDelayMaxMs: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
}) {
  const metrics = createMetrics({ defaultMetrics: false });
  const delay = fakeDelay();
  const shedder = createShedder({ ...options, registry: metrics.registry, delaySource: delay });
  const app = await createHttpServer({
    logger: false,
    bodyLimitBytes: 1024,
    metrics,
    version: 'test',
    headersTimeoutMs: options.headersTimeoutMs,
    requestTimeoutMs: options.requestTimeoutMs,
  });
  app.addHook('onRequest', shedder.onRequest);
  app.addHook('preValidation', shedder.onBodyRead);
  // Requests to /v1/held wait until the test releases them.
  const held: Array<() => void> = [];
  app.get('/v1/held', () => new Promise((resolve) => held.push(() => resolve({ ok: true }))));
  app.get('/v1/quick', async () => ({ ok: true }));
  // The crowd's kind of request (a waiting-room poll): shed first.
  app.get('/v1/line', { config: { shedding: 'line' } }, async () => ({ ok: true }));
  app.post('/v1/echo', async (request) => ({ echo: request.body }));
  for (const path of EXEMPT) app.get(path, async () => ({ ok: true }));
  after(() => app.close());
  return { app, shedder, delay, held, registry: metrics.registry };
}

function assertShed(response: { statusCode: number; headers: Record<string, unknown>; json(): { error: { code: string } } }) {
  assert.equal(response.statusCode, 503);
  assert.equal(response.json().error.code, 'overloaded');
  const retryAfter = Number(response.headers['retry-after']);
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 3, `Retry-After ${retryAfter}`);
}

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_DEADLINE_MS;
  while (!condition() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 1));
  assert.ok(condition(), 'condition not reached before the deadline');
}

describe('load shedding', () => {
  test('event-loop delay over the limit: the line gets 503 with Retry-After; checkout only past twice the limit; both return when it falls', async () => {
    const { app, shedder, delay, registry } = await shedServer({ inFlightMax: 100, eventLoopDelayMaxMs: 100 });
    assert.equal((await app.inject({ url: '/v1/line' })).statusCode, 200);
    assert.equal((await app.inject({ url: '/v1/quick' })).statusCode, 200);

    delay.ms = 150;
    shedder.runOnce();
    assertShed(await app.inject({ url: '/v1/line' }));
    assert.equal((await app.inject({ url: '/v1/quick' })).statusCode, 200, 'checkout keeps its headroom');
    for (const url of EXEMPT) assert.equal((await app.inject({ url })).statusCode, 200, url);

    delay.ms = 100 * CHECKOUT_HEADROOM + 1;
    shedder.runOnce();
    assertShed(await app.inject({ url: '/v1/quick' }));
    assertShed(await app.inject({ url: '/v1/unknown-route' }));
    for (const url of EXEMPT) assert.equal((await app.inject({ url })).statusCode, 200, url);

    delay.ms = 20;
    shedder.runOnce();
    assert.equal((await app.inject({ url: '/v1/line' })).statusCode, 200);
    assert.equal((await app.inject({ url: '/v1/quick' })).statusCode, 200);

    const text = await registry.metrics();
    assert.match(text, /floodgate_http_shed_total\{reason="event_loop_delay",priority="line"\} 1/);
    assert.match(text, /floodgate_http_shed_total\{reason="event_loop_delay",priority="checkout"\} 2/);
    assert.match(text, /floodgate_event_loop_delay_seconds 0.02/);
  });

  test('in-flight requests at the limit: the line gets 503, checkout is served up to twice the limit; health is always served', async () => {
    const { app, shedder, held, registry } = await shedServer({ inFlightMax: 3, eventLoopDelayMaxMs: 100 });
    const pending = Array.from({ length: 3 }, () => app.inject({ url: '/v1/held' }));
    await waitFor(() => held.length === 3);
    assert.equal(shedder.inFlight, 3);
    assert.match(await registry.metrics(), /floodgate_http_in_flight_requests 3/);

    assertShed(await app.inject({ url: '/v1/line' }));
    assert.equal((await app.inject({ url: '/v1/quick' })).statusCode, 200);
    pending.push(...Array.from({ length: 3 }, () => app.inject({ url: '/v1/held' })));
    await waitFor(() => held.length === 6);
    assertShed(await app.inject({ url: '/v1/quick' }));
    for (const url of EXEMPT) assert.equal((await app.inject({ url })).statusCode, 200, url);

    for (const release of held) release();
    assert.deepEqual(
      (await Promise.all(pending)).map((response) => response.statusCode),
      [200, 200, 200, 200, 200, 200],
    );
    await waitFor(() => shedder.inFlight === 0);
    assert.equal((await app.inject({ url: '/v1/line' })).statusCode, 200);
    const text = await registry.metrics();
    assert.match(text, /floodgate_http_shed_total\{reason="in_flight",priority="line"\} 1/);
    assert.match(text, /floodgate_http_shed_total\{reason="in_flight",priority="checkout"\} 1/);
  });

  test('the event-loop monitor reads 0 before any sample, a delay after the loop was blocked, and resets on each read', async () => {
    const source = eventLoopDelaySource();
    try {
      assert.equal(source.takeMs(), 0, 'no sample yet');
      // Let the monitor's timer start, block the loop for a while, then let the timer fire late.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const blockedUntil = performance.now() + 300;
      while (performance.now() < blockedUntil) {
        // busy: nothing else runs on this thread meanwhile
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      const delayed = source.takeMs();
      assert.ok(delayed > 0, `a blocked loop reads as delayed (${delayed} ms)`);
      assert.equal(source.takeMs(), 0, 'each read resets the samples');
    } finally {
      source.close();
    }
  });
});

/** A client that sends `text` and then nothing, and records what the server did with it. */
function silentClient(port: number, text: string) {
  const socket: Socket = connect(port, '127.0.0.1');
  let received = '';
  socket.on('data', (chunk) => {
    received += chunk.toString();
  });
  socket.on('error', () => {});
  socket.write(text);
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(received)));
  return { socket, closed };
}

describe('slow requests', () => {
  test('clients that send headers and a few body bytes then go silent neither shed others nor stay forever', {
    timeout: 20_000,
  }, async () => {
    // Short timeouts so the test sees them act; the defaults are 10 s and 30 s.
    const { app, shedder } = await shedServer({ inFlightMax: 5, eventLoopDelayMaxMs: 100, headersTimeoutMs: 300, requestTimeoutMs: 600 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    assert.ok(address && typeof address === 'object');
    const partialBody = 'POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a"';
    const silent = Array.from({ length: 5 }, () => silentClient(address.port, partialBody));
    // And one that never finishes its headers.
    const halfHeaders = silentClient(address.port, 'GET /v1/quick HTTP/1.1\r\nHost: x\r\n');
    await new Promise((resolve) => setTimeout(resolve, 50));

    // Five bodies still arriving take no in-flight place: a real request is served.
    assert.equal(shedder.inFlight, 0);
    const served = await fetch(`http://127.0.0.1:${address.port}/v1/quick`);
    assert.equal(served.status, 200, await served.text());
    const posted = await fetch(`http://127.0.0.1:${address.port}/v1/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"b":1}',
    });
    assert.deepEqual(await posted.json(), { echo: { b: 1 } });

    // The server ends each silent request with 408 and closes its connection.
    for (const answer of await Promise.all(silent.map((client) => client.closed))) assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(await halfHeaders.closed, /^HTTP\/1\.1 408 /);
    assert.equal(shedder.inFlight, 0);
  });
});
