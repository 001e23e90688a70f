import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { key, setupTestContext } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { audit } from '../audit/service.js';
import type { PaymentProvider } from '../providers/service.js';

const t = await setupTestContext();

async function post(url: string, body: object, idempotencyKey = key(), app = t.app) {
  return app.inject({ method: 'POST', url, headers: t.auth({ 'idempotency-key': idempotencyKey }), payload: body });
}

async function get(url: string) {
  const response = await t.app.inject({ method: 'GET', url, headers: t.auth() });
  assert.equal(response.statusCode, 200, response.body);
  return response.json();
}

async function paid(amount: number): Promise<string> {
  const response = await post('/v1/payment_intents', { amount, currency: 'usd', payment_method: 'pm_card_visa', confirm: true });
  assert.equal(response.json().status, 'succeeded');
  return response.json().id;
}

function chargeOf(intentId: string) {
  return t.pool
    .query('select provider_reference from payment_intents where id = $1', [intentId])
    .then(({ rows }) => t.sim.simulator.charges.get(rows[0].provider_reference));
}

describe('a refund resumed after a crash', () => {
  test('finds its own attempt, even when another refund of the payment is also in flight', async () => {
    // The process "dies" at the provider call: the refund's first phase has committed, the call
    // never happens, and the key is left at refund_started for a retry to resume.
    let crash = true;
    const provider: PaymentProvider = {
      authorize: (request) => t.provider.authorize(request),
      capture: (request) => t.provider.capture(request),
      cancel: (request) => t.provider.cancel(request),
      retrieve: (idempotencyKey) => t.provider.retrieve(idempotencyKey),
      refund: (request) => (crash ? Promise.reject(new Error('crashed before the call')) : t.provider.refund(request)),
    };
    const app = await buildApp({ config: t.config, pool: t.pool, provider });
    after(() => app.close());
    const id = await paid(1000);
    const [first, second] = [key(), key()];
    for (const [refundKey, amount] of [
      [first, 100],
      [second, 200],
    ] as const) {
      const crashed = await post('/v1/refunds', { payment_intent: id, amount }, refundKey, app);
      assert.equal(crashed.statusCode, 500);
    }

    crash = false;
    const resumed = await post('/v1/refunds', { payment_intent: id, amount: 100 }, first, app);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.deepEqual([resumed.json().amount, resumed.json().status], [100, 'succeeded']);
    const other = await post('/v1/refunds', { payment_intent: id, amount: 200 }, second, app);
    assert.deepEqual([other.json().amount, other.json().status], [200, 'succeeded']);
    assert.equal((await chargeOf(id))?.amount_refunded, 300);
  });
});

describe('concurrent refunds of one payment', () => {
  test('each refund, with its own key, reaches the provider and succeeds', async () => {
    const id = await paid(1000);
    const responses = await Promise.all(Array.from({ length: 8 }, () => post('/v1/refunds', { payment_intent: id, amount: 100 })));
    assert.deepEqual(
      responses.map((response) => [response.statusCode, response.json().status]),
      Array.from({ length: 8 }, () => [200, 'succeeded']),
    );
    assert.deepEqual(
      (await get(`/v1/refunds?payment_intent=${id}`)).data.map((refund: { status: string }) => refund.status),
      Array.from({ length: 8 }, () => 'succeeded'),
    );
    assert.equal((await get(`/v1/payment_intents/${id}`)).amount_refunded, 800);
    assert.equal((await chargeOf(id))?.amount_refunded, 800);
  });

  test('together they never exceed what was received', async () => {
    const id = await paid(1000);
    const responses = await Promise.all(Array.from({ length: 6 }, () => post('/v1/refunds', { payment_intent: id, amount: 300 })));
    const outcomes = responses.map((response) => `${response.statusCode} ${response.json().status ?? response.json().error.code}`).sort();
    assert.deepEqual(outcomes, [
      '200 succeeded',
      '200 succeeded',
      '200 succeeded',
      '400 refund_exceeds_received',
      '400 refund_exceeds_received',
      '400 refund_exceeds_received',
    ]);
    assert.equal((await get(`/v1/payment_intents/${id}`)).amount_refunded, 900);
    assert.equal((await chargeOf(id))?.amount_refunded, 900);
  });

  test('the same key sent at once refunds once', async () => {
    const id = await paid(1000);
    const refundKey = key();
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => post('/v1/refunds', { payment_intent: id, amount: 250 }, refundKey)),
    );
    const succeeded = responses.filter((response) => response.statusCode === 200);
    assert.ok(succeeded.length >= 1);
    assert.equal(new Set(succeeded.map((response) => response.json().id)).size, 1);
    // The others were told the key is busy, and may retry.
    for (const response of responses.filter((r) => r.statusCode !== 200)) {
      assert.equal(response.json().error.code, 'idempotency_key_in_use');
    }
    assert.equal((await get(`/v1/payment_intents/${id}`)).amount_refunded, 250);
    assert.equal((await chargeOf(id))?.amount_refunded, 250);
  });

  test('the money invariants hold afterwards', async () => {
    assert.deepEqual((await audit(t.pool)).violations, []);
  });
});
