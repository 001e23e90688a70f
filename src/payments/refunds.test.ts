import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { committedRecoveryPoint, crashing } from '../../test/crash.js';
import { key, setupTestContext, shortTimeoutApp } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { audit } from '../audit/service.js';
import { PROVIDER_WEBHOOK_PATH } from './provider-webhooks.js';
import { reconcileAttempt } from './reconciliation.js';

// Listening, so the simulator's webhooks can be delivered when a test says so (see below).
const t = await setupTestContext({ listen: true });
t.sim.simulator.webhookUrl = undefined;
// Only refunds of pm_card_refund_timeout payments go through this app: they are meant to time out.
const timingOut = await shortTimeoutApp(t);
// A node that resumes a key at once: the crashed process's lock counts as timed out.
const resumer = await buildApp({ config: { ...t.config, idempotencyLockTimeoutMs: 0 }, pool: t.pool, provider: t.provider });
after(() => resumer.close());
const RECONCILE = { baseDelayMs: 1, maxDelayMs: 1, maxAttempts: 1, staleAfterMs: 0 };

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
    // Each refund's process dies once its first phase (refund_started) has committed: the call
    // to the (real, HTTP) simulator never happens, and the key stays locked at refund_started.
    const id = await paid(1000);
    const [first, second] = [key(), key()];
    for (const [refundKey, amount] of [
      [first, 100],
      [second, 200],
    ] as const) {
      const crash = crashing(t.pool, t.provider, { afterCommitOf: committedRecoveryPoint('refund_started') });
      const dying = await buildApp({ config: t.config, pool: crash.pool, provider: crash.provider });
      await post('/v1/refunds', { payment_intent: id, amount }, refundKey, dying);
      await dying.close();
      assert.equal(crash.died, true, 'the process died after refund_started committed');
    }
    assert.equal((await chargeOf(id))?.amount_refunded, 0, 'the provider has heard of neither refund');
    // While the dead process's lock holds, a retry is told the key is busy.
    const busy = await post('/v1/refunds', { payment_intent: id, amount: 100 }, first);
    assert.deepEqual([busy.statusCode, busy.json().error.code], [409, 'idempotency_key_in_use']);

    // Once the lock has timed out (this node's timeout is 0), retries resume at refund_started.
    const resumed = await post('/v1/refunds', { payment_intent: id, amount: 100 }, first, resumer);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.deepEqual([resumed.json().amount, resumed.json().status], [100, 'succeeded']);
    const other = await post('/v1/refunds', { payment_intent: id, amount: 200 }, second, resumer);
    assert.deepEqual([other.json().amount, other.json().status], [200, 'succeeded']);
    assert.equal((await chargeOf(id))?.amount_refunded, 300);
    const { rows } = await t.pool.query('select count(*)::int as n from refunds where merchant_id = $1 and payment_intent_id = $2', [
      t.merchant.id,
      id,
    ]);
    assert.equal(rows[0].n, 2, 'resuming made no third refund');
  });
});

describe('a refund whose outcome is unknown', () => {
  /** Paid with pm_card_refund_timeout: the simulator holds every refund's answer past our timeout. */
  async function refundTimingOut(amount: number) {
    const created = await post('/v1/payment_intents', { amount, currency: 'usd', payment_method: 'pm_card_refund_timeout', confirm: true });
    assert.equal(created.json().status, 'succeeded', created.body);
    const id = created.json().id as string;
    const refundKey = key('refund');
    const pending = await post('/v1/refunds', { payment_intent: id, amount }, refundKey, timingOut);
    assert.equal(pending.statusCode, 200, pending.body);
    assert.equal(pending.json().status, 'pending');
    const { rows } = await t.pool.query<{ merchant_id: string; id: string; status: string; provider_idempotency_key: string }>(
      `select merchant_id, id, status, provider_idempotency_key from payment_attempts
       where merchant_id = $1 and payment_intent_id = $2 and operation = 'refund'`,
      [t.merchant.id, id],
    );
    assert.deepEqual(
      rows.map((row) => row.status),
      ['unknown'],
    );
    const attempt = rows[0] as (typeof rows)[number];
    const { rows: jobs } = await t.pool.query('select task_identifier from graphile_worker.jobs where key = $1', [
      `reconcile:${attempt.id}`,
    ]);
    assert.deepEqual(jobs, [{ task_identifier: 'reconcile_attempt' }], 'reconciliation is queued with the unknown outcome');
    assert.equal((await chargeOf(id))?.amount_refunded, amount, 'the provider did refund');
    return { id, refundKey, refundId: pending.json().id as string, attempt, amount };
  }

  test('stays pending until the reconciler settles it; a retry replays its first answer and refunds nothing more', async () => {
    const { id, refundKey, refundId, attempt, amount } = await refundTimingOut(600);
    assert.equal((await get(`/v1/payment_intents/${id}`)).amount_refunded, 600, 'a pending refund counts against the payment');
    const settled = await reconcileAttempt(
      { pool: t.pool, provider: t.provider, options: RECONCILE, onPaymentSucceeded: async () => {} },
      { merchant_id: attempt.merchant_id, attempt_id: attempt.id, round: 1 },
    );
    assert.equal(settled, 'settled');
    assert.deepEqual([(await get(`/v1/refunds/${refundId}`)).status, (await get(`/v1/refunds/${refundId}`)).amount], ['succeeded', 600]);
    const retried = await post('/v1/refunds', { payment_intent: id, amount }, refundKey);
    assert.equal(retried.statusCode, 200, retried.body);
    assert.deepEqual([retried.json().id, retried.json().status], [refundId, 'pending'], 'the stored answer is replayed as first given');
    assert.equal(retried.headers['idempotent-replayed'], 'true');
    assert.equal((await chargeOf(id))?.amount_refunded, 600, 'refunded once');
  });

  test("is settled by the provider's webhook; a retry with a new key after it is refused for lack of room", async () => {
    const { id, refundId, attempt } = await refundTimingOut(400);
    const events = t.sim.simulator.webhooksSent.filter((event) => event.idempotency_key === attempt.provider_idempotency_key);
    assert.deepEqual(
      events.map((event) => event.type),
      ['refund.succeeded'],
    );
    t.sim.simulator.webhookUrl = `${t.url}${PROVIDER_WEBHOOK_PATH}`;
    try {
      assert.equal(await t.sim.simulator.sendWebhook(events[0] as (typeof events)[number]), 200);
    } finally {
      t.sim.simulator.webhookUrl = undefined;
    }
    assert.equal((await get(`/v1/refunds/${refundId}`)).status, 'succeeded');
    // The reconciler, coming after the webhook, finds nothing left to do.
    const late = await reconcileAttempt(
      { pool: t.pool, provider: t.provider, options: RECONCILE, onPaymentSucceeded: async () => {} },
      { merchant_id: attempt.merchant_id, attempt_id: attempt.id, round: 1 },
    );
    assert.equal(late, 'already_settled');
    const again = await post('/v1/refunds', { payment_intent: id, amount: 1 });
    assert.deepEqual([again.statusCode, again.json().error.code], [400, 'charge_already_refunded']);
    assert.equal((await chargeOf(id))?.amount_refunded, 400);
  });
});

describe('the provider refuses a capture or a cancel', () => {
  async function authorized(paymentMethod: string) {
    const created = await post('/v1/payment_intents', {
      amount: 2500,
      currency: 'usd',
      capture_method: 'manual',
      payment_method: paymentMethod,
      confirm: true,
    });
    assert.equal(created.json().status, 'requires_capture', created.body);
    return created.json().id as string;
  }

  for (const [action, paymentMethod] of [
    ['capture', 'pm_card_capture_declined'],
    ['cancel', 'pm_card_cancel_declined'],
  ] as const) {
    test(`${action}: 402 provider_declined, the authorization still held and ${action} still possible`, async () => {
      const id = await authorized(paymentMethod);
      const refused = await post(`/v1/payment_intents/${id}/${action}`, {});
      assert.equal(refused.statusCode, 402, refused.body);
      assert.equal(refused.json().error.code, 'provider_declined');
      assert.match(refused.json().error.message, new RegExp(`The provider refused the ${action}`));
      const intent = await get(`/v1/payment_intents/${id}`);
      assert.deepEqual([intent.status, intent.amount_capturable, intent.amount_received], ['requires_capture', 2500, 0]);
      assert.equal((await chargeOf(id))?.status, 'authorized');
      const { rows } = await t.pool.query(
        `select operation, status, error_code from payment_attempts where merchant_id = $1 and payment_intent_id = $2 order by created_at`,
        [t.merchant.id, id],
      );
      assert.deepEqual(rows, [
        { operation: 'authorize', status: 'succeeded', error_code: null },
        { operation: action, status: 'failed', error_code: `${action}_declined` },
      ]);
    });
  }
});

describe('confirm without a payment method', () => {
  test('is 400 parameter_missing naming payment_method, and the intent is unchanged', async () => {
    const created = await post('/v1/payment_intents', { amount: 300, currency: 'usd' });
    const id = created.json().id as string;
    const confirmed = await post(`/v1/payment_intents/${id}/confirm`, {});
    assert.equal(confirmed.statusCode, 400, confirmed.body);
    assert.deepEqual([confirmed.json().error.code, confirmed.json().error.param], ['parameter_missing', 'payment_method']);
    assert.equal((await get(`/v1/payment_intents/${id}`)).status, 'requires_payment_method');
    const withOne = await post(`/v1/payment_intents/${id}/confirm`, { payment_method: 'pm_card_visa' });
    assert.equal(withOne.json().status, 'succeeded');
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
