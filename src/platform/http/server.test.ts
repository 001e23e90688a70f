import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import { createMetrics } from '../observability/metrics.js';
import { createHttpServer } from './server.js';

test('a keep-alive request still running when the server closes is answered with Connection: close, and close finishes', {
  timeout: 30_000,
}, async () => {
  const app = await createHttpServer({
    logger: false,
    bodyLimitBytes: 1024,
    metrics: createMetrics({ defaultMetrics: false }),
    version: 'test',
  });
  let release: () => void = () => {};
  let started: () => void = () => {};
  const running = new Promise<void>((resolve) => {
    started = resolve;
  });
  app.get('/held', () => {
    started();
    return new Promise((resolve) => {
      release = () => resolve({ ok: true });
    });
  });
  // The held request finishes once closing has begun (hooks run in the order they were added).
  app.addHook('preClose', async () => release());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(address && typeof address === 'object');
  // A client that keeps its connections, as undici (the simulator's webhooks) and balancers do.
  const agent = new Agent({ keepAlive: true });
  try {
    let socket: Socket | undefined;
    const answered = new Promise<{ status: number | undefined; connection: string | undefined; body: string }>((resolve, reject) => {
      const call = request({ host: '127.0.0.1', port: address.port, path: '/held', agent }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          body += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode, connection: response.headers.connection, body }));
      });
      call.on('socket', (s) => {
        socket = s;
      });
      call.on('error', reject);
      call.end();
    });
    await running;
    const closed = app.close();
    const response = await answered;
    assert.equal(response.status, 200);
    assert.deepEqual(JSON.parse(response.body), { ok: true });
    assert.equal(response.connection, 'close');
    assert.ok(socket);
    const clientSocket = socket;
    // The server ends the connection: the client's socket closes without the client closing it.
    if (!clientSocket.destroyed) await new Promise((resolve) => clientSocket.once('close', resolve));
    await closed;
    assert.equal(app.server.listening, false);
  } finally {
    agent.destroy();
  }
});
