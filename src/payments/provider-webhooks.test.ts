/**
 * Inbound provider webhooks: `POST /v1/providers/simulator/webhooks`. The simulator records its
 * events but sends none (it has a secret, no URL), so each test delivers them itself, signed
 * or not: a signed event is applied through the completion command once; anything unsigned,
 * mis-signed, stale or malformed is refused and changes nothing; an event that is not ours is
 * acknowledged and ignored. API keys play no part on this route.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { crashing } from '../../test/crash.js';
import { buildTestApp, key, MANY_TIMEOUTS, setupTestContext, shortTimeoutApp, TEST_PROVIDER_WEBHOOK_SECRET } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import type { HttpServer } from '../platform/http/server.js';
import { signSimulatorWebhook } from '../providers/simulator/server.js';
import { PROVIDER_WEBHOOK_PATH, verifySignature, WEBHOOK_TOLERANCE_SECONDS } from './provider-webhooks.js';

const t = await setupTestContext();
// Only pm_card_timeout confirms go through this app: they are meant to time out.
const timingOut = await shortTimeoutApp(t, MANY_TIMEOUTS);
const sim = t.sim.simulator;
const AMOUNT = 4500;

const nowSeconds = () => Math.floor(Date.now() / 1000);

function deliver(body: string, headers: Record<string, string> = {}, app: HttpServer = t.app) {
  return app.inject({
    method: 'POST',
    url: PROVIDER_WEBHOOK_PATH,
    headers: { 'content-type': 'application/json', ...headers },
    payload: body,
  });
}

/** Delivers `body` signed as the simulator signs, at `timestamp`. */
function deliverSigned(body: string, options: { timestamp?: number; secret?: string; headers?: Record<string, string> } = {}) {
  const signature = signSimulatorWebhook(options.secret ?? TEST_PROVIDER_WEBHOOK_SECRET, options.timestamp ?? nowSeconds(), body);
  return deliver(body, { 'simulator-signature': signature, ...options.headers });
}

async function post(url: string, payload: object, app: HttpServer = t.app) {
  return app.inject({ method: 'POST', url, headers: t.auth({ 'idempotency-key': key() }), payload });
}

async function snapshot(intentId: string) {
  const { rows } = await t.pool.query(
    `select p.status, p.amount_received, p.last_payment_error, p.payment_method,
            (select array_agg(a.status || ':' || coalesce(a.error_code, '') order by a.id) from payment_attempts a
               where a.merchant_id = p.merchant_id and a.payment_intent_id = p.id) as attempts,
            (select count(*)::int from ledger_transactions l where l.merchant_id = p.merchant_id and l.payment_intent_id = p.id) as postings,
            (select array_agg(e.type order by e.id) from events e where e.merchant_id = p.merchant_id and e.object_id = p.id) as events,
            (select count(*)::int from provider_events) as provider_events
     from payment_intents p where p.merchant_id = $1 and p.id = $2`,
    [t.merchant.id, intentId],
  );
  assert.equal(rows.length, 1);
  return rows[0];
}

/** The webhooks the simulator recorded (and did not send) for the intent's attempts. */
async function webhooksFor(intentId: string) {
  const { rows } = await t.pool.query<{ provider_idempotency_key: string }>(
    'select provider_idempotency_key from payment_attempts where merchant_id = $1 and payment_intent_id = $2',
    [t.merchant.id, intentId],
  );
  const keys = new Set(rows.map((row) => row.provider_idempotency_key));
  return sim.webhooksSent.filter((event) => keys.has(event.idempotency_key));
}

/** A payment whose confirm timed out: processing, and the provider's charge.succeeded event recorded, undelivered. */
async function timedOutPayment() {
  const created = await post(
    '/v1/payment_intents',
    { amount: AMOUNT, currency: 'usd', payment_method: 'pm_card_timeout', confirm: true },
    timingOut,
  );
  assert.equal(created.json().status, 'processing');
  const intentId = created.json().id as string;
  const events = await webhooksFor(intentId);
  assert.deepEqual(
    events.map((event) => event.type),
    ['charge.succeeded'],
  );
  return { intentId, body: JSON.stringify(events[0]) };
}

function assertRefused(response: { statusCode: number; json(): { error: { code: string; message: string } } }, reason: RegExp) {
  assert.equal(response.statusCode, 401);
  assert.equal(response.json().error.code, 'signature_invalid');
  assert.match(response.json().error.message, reason);
}

describe('a signed provider webhook', () => {
  test('settles the payment a timed-out confirm left processing, once per event id', async () => {
    const { intentId, body } = await timedOutPayment();
    const before = await snapshot(intentId);
    assert.deepEqual(before.attempts, ['unknown:outcome_unknown']);

    const applied = await deliverSigned(body);
    assert.equal(applied.statusCode, 200, applied.body);
    assert.deepEqual(applied.json(), { received: true, result: 'applied' });
    const after = await snapshot(intentId);
    assert.equal(after.status, 'succeeded');
    assert.equal(after.amount_received, AMOUNT);
    assert.deepEqual(after.attempts, ['succeeded:']);
    assert.equal(after.postings, 1);
    assert.deepEqual(after.events, ['payment_intent.created', 'payment_intent.succeeded']);
    assert.equal(after.provider_events, before.provider_events + 1);

    // The provider sends the same event again (a new signature, the same event id).
    const again = await deliverSigned(body, { timestamp: nowSeconds() - 60 });
    assert.equal(again.statusCode, 200);
    assert.deepEqual(again.json(), { received: true, result: 'duplicate' });
    assert.deepEqual(await snapshot(intentId), after);
  });

  test('an event for an attempt the confirm already settled is recorded once, without waiting on the intent', async () => {
    const confirmed = await post('/v1/payment_intents', { amount: AMOUNT, currency: 'usd', payment_method: 'pm_card_visa', confirm: true });
    assert.equal(confirmed.json().status, 'succeeded', confirmed.body);
    const intentId = confirmed.json().id as string;
    const events = await webhooksFor(intentId);
    assert.deepEqual(
      events.map((event) => event.type),
      ['charge.succeeded'],
    );
    const body = JSON.stringify(events[0]);
    const before = await snapshot(intentId);
    // Another transaction holds the intent's row lock (a confirm completing it, say): the event
    // has nothing to apply, so it must not wait for that lock.
    const holder = await t.pool.connect();
    try {
      await holder.query('begin');
      await holder.query('select id from payment_intents where merchant_id = $1 and id = $2 for update', [t.merchant.id, intentId]);
      let timer: NodeJS.Timeout | undefined;
      const blocked = new Promise<'blocked'>((resolve) => {
        timer = setTimeout(() => resolve('blocked'), 10_000);
      });
      const answer = await Promise.race([deliverSigned(body), blocked]);
      clearTimeout(timer);
      assert.notEqual(answer, 'blocked', "the event waited on the intent's lock");
      if (answer === 'blocked') return;
      assert.equal(answer.statusCode, 200, answer.body);
      assert.deepEqual(answer.json(), { received: true, result: 'already_settled' });
    } finally {
      await holder.query('rollback');
      holder.release();
    }
    const after = await snapshot(intentId);
    assert.deepEqual(after, { ...before, provider_events: before.provider_events + 1 }, 'only the event is recorded');
    const again = await deliverSigned(body, { timestamp: nowSeconds() - 60 });
    assert.deepEqual(again.json(), { received: true, result: 'duplicate' });
    assert.deepEqual(await snapshot(intentId), after);
  });

  test('a declined charge moves the intent back to requires_payment_method with last_payment_error', async () => {
    const created = await post('/v1/payment_intents', { amount: AMOUNT, currency: 'usd', payment_method: 'pm_card_declined' });
    const intentId = created.json().id as string;
    // The confirm's process dies once the provider has declined, before it records the answer.
    const crash = crashing(t.pool, t.provider, { afterProviderCall: 'authorize' });
    const dying = await buildApp({ config: t.config, pool: crash.pool, provider: crash.provider });
    const died = await dying.inject({
      method: 'POST',
      url: `/v1/payment_intents/${intentId}/confirm`,
      headers: t.auth({ 'idempotency-key': key() }),
    });
    await dying.close();
    assert.equal(died.statusCode, 500);
    assert.equal((await snapshot(intentId)).status, 'processing');
    const events = await webhooksFor(intentId);
    assert.deepEqual(
      events.map((event) => [event.type, event.response.status]),
      [['charge.failed', 402]],
    );

    const applied = await deliverSigned(JSON.stringify(events[0]));
    assert.deepEqual(applied.json(), { received: true, result: 'applied' });
    const after = await snapshot(intentId);
    assert.equal(after.status, 'requires_payment_method');
    assert.equal(after.payment_method, null);
    assert.deepEqual(after.last_payment_error, {
      type: 'card_error',
      code: 'card_declined',
      decline_code: 'card_declined',
      message: 'The card was declined.',
    });
    assert.deepEqual(after.attempts, ['failed:card_declined']);
    assert.equal(after.postings, 0);
    assert.deepEqual(after.events, ['payment_intent.created', 'payment_intent.payment_failed']);
  });

  test('an event that is not ours is acknowledged as not_ours and changes nothing', async () => {
    const { intentId, body } = await timedOutPayment();
    const event = JSON.parse(body);
    const before = await snapshot(intentId);
    const [, merchantId, attemptId] = event.idempotency_key.split('.');
    const otherMerchant = 'mch_0000000000000000000000';
    for (const idempotencyKey of [
      'another-system-7d1f2a',
      `floodgate.${merchantId}.pa_00000000000000000000`,
      `floodgate.${otherMerchant}.${attemptId}`,
      `${event.idempotency_key}.suffix`,
    ]) {
      const foreign = JSON.stringify({ ...event, id: `sevt_${key('foreign')}`, idempotency_key: idempotencyKey });
      for (let delivery = 0; delivery < 2; delivery++) {
        const response = await deliverSigned(foreign);
        assert.equal(response.statusCode, 200, idempotencyKey);
        assert.deepEqual(response.json(), { received: true, result: 'not_ours' }, idempotencyKey);
      }
    }
    assert.deepEqual(await snapshot(intentId), before);

    // An attempt stored under another key (as one from before the key format would be) is not
    // settled by an event that merely names its id.
    await t.pool.query(`update payment_attempts set provider_idempotency_key = 'legacy_' || id where merchant_id = $1 and id = $2`, [
      merchantId,
      attemptId,
    ]);
    assert.deepEqual((await deliverSigned(body)).json(), { received: true, result: 'not_ours' });
    assert.deepEqual(await snapshot(intentId), before);
  });
});

describe('refused provider webhooks', () => {
  test('a wrong, tampered, missing or malformed signature is 401 and changes nothing', async () => {
    const { intentId, body } = await timedOutPayment();
    const before = await snapshot(intentId);
    assertRefused(await deliverSigned(body, { secret: 'another_secret_0123456789abcdef0123456789' }), /does not match/);
    const tampered = body.replace(`"status":200`, `"status":200 `);
    assert.notEqual(tampered, body);
    const signature = signSimulatorWebhook(TEST_PROVIDER_WEBHOOK_SECRET, nowSeconds(), body);
    assertRefused(await deliver(tampered, { 'simulator-signature': signature }), /does not match/);
    assertRefused(await deliver(body), /missing simulator-signature/);
    for (const header of [
      '',
      'garbage',
      `v1=${signature.split('v1=')[1]}`,
      `t=abc,${signature.split(',')[1]}`,
      signature.split(',')[0] as string,
    ]) {
      assert.equal((await deliver(body, { 'simulator-signature': header })).statusCode, 401, header);
    }
    assert.deepEqual(await snapshot(intentId), before);
    assert.deepEqual((await deliverSigned(body)).json(), { received: true, result: 'applied' }, 'the genuine event still applies');
  });

  test(`a timestamp more than ${WEBHOOK_TOLERANCE_SECONDS} s old or ahead is 401; within the window it applies`, async () => {
    const { intentId, body } = await timedOutPayment();
    const before = await snapshot(intentId);
    // Over HTTP the route reads the wall clock, so these stay a minute clear of the bound: a
    // second that ticks between signing and verifying cannot move them across it.
    assertRefused(await deliverSigned(body, { timestamp: nowSeconds() - WEBHOOK_TOLERANCE_SECONDS - 60 }), /tolerance/);
    assertRefused(await deliverSigned(body, { timestamp: nowSeconds() - 3_600 }), /tolerance/);
    assertRefused(await deliverSigned(body, { timestamp: nowSeconds() + WEBHOOK_TOLERANCE_SECONDS + 60 }), /tolerance/);
    assert.deepEqual(await snapshot(intentId), before);
    const late = await deliverSigned(body, { timestamp: nowSeconds() - WEBHOOK_TOLERANCE_SECONDS + 60 });
    assert.deepEqual(late.json(), { received: true, result: 'applied' });
  });

  test('the tolerance bound is exact: a fixed now accepts ±tolerance and refuses one second more', () => {
    const now = 1_900_000_000;
    const body = '{"id":"sevt_fixed"}';
    const check = (timestamp: number) =>
      verifySignature(TEST_PROVIDER_WEBHOOK_SECRET, signSimulatorWebhook(TEST_PROVIDER_WEBHOOK_SECRET, timestamp, body), body, now);
    const outside = { ok: false, reason: 'timestamp outside the tolerance window' };
    assert.deepEqual(check(now), { ok: true });
    assert.deepEqual(check(now - WEBHOOK_TOLERANCE_SECONDS), { ok: true });
    assert.deepEqual(check(now + WEBHOOK_TOLERANCE_SECONDS), { ok: true });
    assert.deepEqual(check(now - WEBHOOK_TOLERANCE_SECONDS - 1), outside);
    assert.deepEqual(check(now + WEBHOOK_TOLERANCE_SECONDS + 1), outside);
  });

  test('without a configured secret every webhook is refused', async () => {
    const { app } = await buildTestApp(t.pool, t.sim.url, { providerWebhookSecret: undefined });
    const { intentId, body } = await timedOutPayment();
    const before = await snapshot(intentId);
    const signature = signSimulatorWebhook(TEST_PROVIDER_WEBHOOK_SECRET, nowSeconds(), body);
    assertRefused(await deliver(body, { 'simulator-signature': signature }, app), /FLOODGATE_PROVIDER_WEBHOOK_SECRET/);
    assertRefused(await deliver(body, {}, app), /not configured/);
    assert.deepEqual(await snapshot(intentId), before);
  });

  test('a correctly signed body that is not a provider event is 400', async () => {
    const { intentId, body } = await timedOutPayment();
    const before = await snapshot(intentId);
    const event = JSON.parse(body);
    for (const malformed of [
      'not json',
      '{"id": "sevt_1"',
      'null',
      '[]',
      '"text"',
      JSON.stringify({ ...event, id: 42 }),
      JSON.stringify({ ...event, idempotency_key: undefined }),
      JSON.stringify({ ...event, response: { status: '200', body: event.response.body } }),
      JSON.stringify({ ...event, response: { status: 200, body: null } }),
      JSON.stringify({ ...event, response: { status: 200, body: 'charged' } }),
      JSON.stringify({ ...event, response: undefined }),
      // Signed, but a success without a whole charge: the shape is checked, not only the sender.
      JSON.stringify({ ...event, response: { status: 200, body: {} } }),
      JSON.stringify({ ...event, response: { status: 200, body: { ...event.response.body, status: 'paid' } } }),
      JSON.stringify({ ...event, response: { status: 200, body: { ...event.response.body, amount_captured: -1 } } }),
    ]) {
      const response = await deliverSigned(malformed);
      assert.equal(response.statusCode, 400, malformed);
      assert.equal(response.json().error.code, 'body_invalid_json', malformed);
    }
    assert.deepEqual(await snapshot(intentId), before);
  });
});

describe('provider webhooks and API keys', () => {
  test('need no API key, ignore one, and an API key alone does not authenticate them', async () => {
    const { intentId, body } = await timedOutPayment();
    const before = await snapshot(intentId);
    const apiKey = { authorization: `Bearer ${t.merchant.secretKey}` };
    assertRefused(await deliver(body, apiKey), /missing simulator-signature/);
    const wrong = signSimulatorWebhook('another_secret_0123456789abcdef0123456789', nowSeconds(), body);
    assertRefused(await deliver(body, { ...apiKey, 'simulator-signature': wrong }), /does not match/);
    assert.deepEqual(await snapshot(intentId), before);

    // A revoked-looking key on a correctly signed webhook is not even looked at.
    const applied = await deliverSigned(body, { headers: { authorization: 'Bearer sk_test_not_a_real_key' } });
    assert.equal(applied.statusCode, 200, applied.body);
    assert.deepEqual(applied.json(), { received: true, result: 'applied' });
    assert.equal((await snapshot(intentId)).status, 'succeeded');
  });
});
