/**
 * The serving roles an operator runs apart, as the real CLI in a child process: `floodgate api`
 * refuses to start without what API nodes share, and once started answers /readyz, takes a
 * payment and stops cleanly; `floodgate simulator` is a provider an API node can take payments
 * through, whose signed webhooks reach that node.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  buildTestApp,
  createTestDatabase,
  key,
  setupTestContext,
  TEST_ADMISSION_SECRET,
  TEST_PROVIDER_WEBHOOK_SECRET,
} from '../../test/helpers.js';
import { startFloodgate } from '../../test/processes.js';
import { waitUntil } from '../../test/receiver.js';
import { PROVIDER_WEBHOOK_PATH } from '../payments/provider-webhooks.js';

const db = await createTestDatabase();
const t = await setupTestContext({ pool: db.pool });

/** What every API node is given in a deployment: one database, one provider, shared secrets. */
const apiEnv = {
  DATABASE_URL: db.url,
  FLOODGATE_PROVIDER_URL: t.sim.url,
  FLOODGATE_ADMISSION_SECRET: TEST_ADMISSION_SECRET,
  FLOODGATE_PROVIDER_WEBHOOK_SECRET: TEST_PROVIDER_WEBHOOK_SECRET,
  FLOODGATE_HOST: '127.0.0.1',
  // No balancer in front to tell: stop at once on SIGTERM.
  FLOODGATE_SHUTDOWN_DRAIN_DELAY_MS: '0',
};

function pay(base: string, paymentMethod: string) {
  return fetch(`${base}/v1/payment_intents`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.merchant.secretKey}`, 'content-type': 'application/json', 'idempotency-key': key('pay') },
    body: JSON.stringify({ amount: 2100, currency: 'usd', payment_method: paymentMethod, confirm: true }),
  });
}

describe('floodgate api', () => {
  test('without a shared secret or the sealing key it exits 78 and names what to set', async () => {
    const refusals = await Promise.all([
      startFloodgate('api', { ...apiEnv, FLOODGATE_ADMISSION_SECRET: '' }).then(
        () => assert.fail('started without FLOODGATE_ADMISSION_SECRET'),
        (error: Error) => error.message,
      ),
      startFloodgate('api', { ...apiEnv, FLOODGATE_SECRETS_KEYS: '' }).then(
        () => assert.fail('started without FLOODGATE_SECRETS_KEYS'),
        (error: Error) => error.message,
      ),
    ]);
    assert.match(refusals[0], /exited with 78 before it listened/);
    assert.match(refusals[0], /floodgate api needs DATABASE_URL, FLOODGATE_PROVIDER_URL and FLOODGATE_ADMISSION_SECRET/);
    assert.match(refusals[1], /exited with 78 before it listened/);
    assert.match(refusals[1], /floodgate api needs FLOODGATE_SECRETS_KEYS/);
  });

  test('listens, answers /readyz, takes a payment through its provider, and exits 0 on SIGTERM', async () => {
    const api = await startFloodgate('api', apiEnv);
    const ready = await fetch(`${api.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready' });

    const paid = await pay(api.url, 'pm_card_visa');
    assert.equal(paid.status, 200);
    const intent = (await paid.json()) as { id: string; status: string; amount_received: number };
    assert.deepEqual([intent.status, intent.amount_received], ['succeeded', 2100]);
    const { rows } = await t.pool.query('select status from payment_intents where merchant_id = $1 and id = $2', [
      t.merchant.id,
      intent.id,
    ]);
    assert.deepEqual(rows, [{ status: 'succeeded' }], 'written to the database every node shares');

    await api.stop();
    assert.equal(api.child.exitCode, 0, api.output.join('\n'));
  });
});

describe('floodgate simulator', () => {
  test('an API node pointed at it takes payments and declines, and its signed webhooks reach that node', async () => {
    // The node listens first: the simulator is told where to send its webhooks.
    const node = await buildTestApp(t.pool, 'http://127.0.0.1:1');
    await node.app.listen({ host: '127.0.0.1', port: 0 });
    const address = node.app.server.address();
    assert.ok(address && typeof address === 'object');
    const nodeUrl = `http://127.0.0.1:${address.port}`;
    const simulator = await startFloodgate('simulator', {
      FLOODGATE_HOST: '127.0.0.1',
      FLOODGATE_SIMULATOR_WEBHOOK_URL: `${nodeUrl}${PROVIDER_WEBHOOK_PATH}`,
      FLOODGATE_PROVIDER_WEBHOOK_SECRET: TEST_PROVIDER_WEBHOOK_SECRET,
    });
    const health = await fetch(`${simulator.url}/healthz`);
    assert.deepEqual([health.status, await health.json()], [200, { ok: true }]);

    // An API node whose provider is the simulator process.
    const api = await buildTestApp(t.pool, simulator.url);
    const pay = (paymentMethod: string) =>
      api.app.inject({
        method: 'POST',
        url: '/v1/payment_intents',
        headers: t.auth({ 'idempotency-key': key('pay') }),
        payload: { amount: 3400, currency: 'eur', payment_method: paymentMethod, confirm: true },
      });
    const paid = await pay('pm_card_visa');
    assert.equal(paid.statusCode, 200, paid.body);
    assert.deepEqual([paid.json().status, paid.json().amount_received], ['succeeded', 3400]);
    const declined = await pay('pm_card_declined');
    assert.equal(declined.statusCode, 402, declined.body);
    assert.deepEqual([declined.json().error.type, declined.json().error.code], ['card_error', 'card_declined']);

    // The simulator reports the charge by webhook, signed with the shared secret: the node
    // verifies it and records the event against the payment's merchant.
    const events = async () =>
      (await t.pool.query<{ event_id: string }>('select event_id from provider_events where merchant_id = $1', [t.merchant.id])).rows;
    await waitUntil('the charge webhook is recorded', async () => (await events()).length >= 1, 60_000);

    await simulator.stop();
    assert.equal(simulator.child.exitCode, 0, simulator.output.join('\n'));
  });
});
