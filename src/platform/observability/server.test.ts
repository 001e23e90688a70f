import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { startMetricsServer } from './server.js';

test('the worker’s health listener: /livez answers, /readyz says whether its check passes and why not, other paths are 404', async () => {
  let failing: string | undefined;
  const server = await startMetricsServer({
    registry: new Registry(),
    host: '127.0.0.1',
    port: 0,
    ready: async () => {
      if (failing) throw new Error(failing);
    },
  });
  try {
    assert.equal((await fetch(`${server.url}/livez`)).status, 200);
    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready' });
    failing = 'the database does not answer';
    const notReady = await fetch(`${server.url}/readyz`);
    assert.equal(notReady.status, 503);
    assert.deepEqual(await notReady.json(), { status: 'not_ready', reason: 'the database does not answer' });
    // Alive all the same: a database outage is no reason to restart the process.
    assert.equal((await fetch(`${server.url}/livez`)).status, 200);
    assert.equal((await fetch(`${server.url}/metrics`)).status, 200);
    assert.equal((await fetch(`${server.url}/v1/payment_intents`)).status, 404);
  } finally {
    await server.close();
  }
});
