import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildTestApp, createTestDatabase, createTestMerchant, key, startTestSimulator } from '../../test/helpers.js';
import { audit } from '../audit/service.js';
import type { HttpServer } from '../platform/http/server.js';
import { HttpProvider } from './http-provider.js';
import { ProviderSimulator } from './simulator/server.js';

const { pool } = await createTestDatabase();

/** A URL nothing listens on: calls to it are refused before anything is sent. */
async function closedPortUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}`;
}

/** A fresh merchant (so balances are this test's own) and calls with its key, to `app` unless `via` says otherwise. */
async function apiFor(app: HttpServer) {
  const merchant = await createTestMerchant(pool);
  const headers = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${merchant.secretKey}`, ...extra });
  return {
    merchant,
    post(url: string, body: object, idempotencyKey = key(), via = app) {
      return via.inject({ method: 'POST', url, headers: headers({ 'idempotency-key': idempotencyKey }), payload: body });
    },
    async get(url: string, via = app) {
      const response = await via.inject({ method: 'GET', url, headers: headers() });
      assert.equal(response.statusCode, 200, response.body);
      return response.json();
    },
  };
}

async function attemptsOf(intentId: string) {
  const { rows } = await pool.query(
    'select operation, status, error_code from payment_attempts where payment_intent_id = $1 order by created_at, id',
    [intentId],
  );
  return rows;
}

function assertUnavailable(response: { statusCode: number; headers: Record<string, unknown>; json(): { error: { code: string } } }) {
  assert.equal(response.statusCode, 503);
  assert.equal(response.json().error.code, 'provider_unavailable');
  assert.match(String(response.headers['retry-after']), /^[1-9][0-9]*$/);
}

describe('provider down', () => {
  test('confirm answers 503 at once, leaves the intent retryable, and the same key charges once after recovery', async () => {
    const simulator = new ProviderSimulator();
    // A long timeout: the answer must come from the refused connection, not from waiting.
    const down = await buildTestApp(pool, await closedPortUrl(), { providerTimeoutMs: 60_000 });
    const api = await apiFor(down.app);
    const created = (await api.post('/v1/payment_intents', { amount: 1234, currency: 'usd', payment_method: 'pm_card_visa' })).json();
    const confirmKey = key();

    const refused = await api.post(`/v1/payment_intents/${created.id}/confirm`, {}, confirmKey);
    assertUnavailable(refused);
    assert.equal((await api.get(`/v1/payment_intents/${created.id}`)).status, 'requires_confirmation');
    assert.deepEqual(await attemptsOf(created.id), [{ operation: 'authorize', status: 'failed', error_code: 'provider_unavailable' }]);

    const back = await startTestSimulator({}, simulator);
    const up = await buildTestApp(pool, back.url);
    const retried = await api.post(`/v1/payment_intents/${created.id}/confirm`, {}, confirmKey, up.app);
    assert.equal(retried.statusCode, 200, retried.body);
    assert.equal(retried.headers['idempotent-replayed'], undefined);
    assert.equal(retried.json().status, 'succeeded');
    assert.equal(retried.json().amount_received, 1234);

    const replayed = await api.post(`/v1/payment_intents/${created.id}/confirm`, {}, confirmKey, up.app);
    assert.equal(replayed.headers['idempotent-replayed'], 'true');
    assert.deepEqual(replayed.json(), retried.json());
    assert.deepEqual(
      [...simulator.charges.values()].map((charge) => [charge.amount, charge.amount_captured]),
      [[1234, 1234]],
    );
    assert.deepEqual(
      (await attemptsOf(created.id)).map((attempt) => attempt.status),
      ['failed', 'succeeded'],
    );
    assert.deepEqual((await api.get('/v1/balance', up.app)).available, [{ currency: 'usd', amount: 1234 }]);
  });

  test('create-and-confirm while down keeps the intent, and the retry confirms that same intent', async () => {
    const simulator = new ProviderSimulator();
    const down = await buildTestApp(pool, await closedPortUrl());
    const api = await apiFor(down.app);
    const body = { amount: 800, currency: 'eur', payment_method: 'pm_card_visa', confirm: true };
    const createKey = key();

    assertUnavailable(await api.post('/v1/payment_intents', body, createKey));
    const stranded = (await api.get('/v1/payment_intents')).data;
    assert.deepEqual(
      stranded.map((intent: { status: string }) => intent.status),
      ['requires_confirmation'],
    );

    const back = await startTestSimulator({}, simulator);
    const up = await buildTestApp(pool, back.url);
    const retried = await api.post('/v1/payment_intents', body, createKey, up.app);
    assert.equal(retried.statusCode, 200, retried.body);
    assert.equal(retried.json().id, stranded[0].id);
    assert.equal(retried.json().status, 'succeeded');
    assert.equal((await api.get('/v1/payment_intents', up.app)).data.length, 1);
    assert.equal(simulator.charges.size, 1);
  });

  test('a refund while down fails, releases its reserved amount, and the same key refunds once after recovery', async () => {
    const simulator = new ProviderSimulator();
    const first = await startTestSimulator({}, simulator);
    const before = await buildTestApp(pool, first.url);
    const api = await apiFor(before.app);
    const paid = (
      await api.post('/v1/payment_intents', { amount: 2000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true })
    ).json();
    assert.equal(paid.status, 'succeeded');
    await first.close();

    const refundKey = key();
    const refused = await api.post('/v1/refunds', { payment_intent: paid.id, amount: 500 }, refundKey);
    assertUnavailable(refused);
    const [failed] = (await api.get(`/v1/refunds?payment_intent=${paid.id}`)).data;
    assert.equal(failed.status, 'failed');
    assert.equal(failed.failure_reason, 'provider_unavailable');
    assert.equal((await api.get(`/v1/payment_intents/${paid.id}`)).amount_refunded, 0);

    const back = await startTestSimulator({}, simulator);
    const after = await buildTestApp(pool, back.url);
    const retried = await api.post('/v1/refunds', { payment_intent: paid.id, amount: 500 }, refundKey, after.app);
    assert.equal(retried.statusCode, 200, retried.body);
    assert.equal(retried.json().status, 'succeeded');
    assert.notEqual(retried.json().id, failed.id);
    assert.equal((await api.get(`/v1/payment_intents/${paid.id}`, after.app)).amount_refunded, 500);
    assert.deepEqual(
      [...simulator.charges.values()].map((charge) => charge.amount_refunded),
      [500],
    );
    assert.deepEqual((await api.get('/v1/balance', after.app)).available, [{ currency: 'usd', amount: 1500 }]);
    const again = await api.post('/v1/refunds', { payment_intent: paid.id, amount: 500 }, refundKey, after.app);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(simulator.charges.values().next().value?.amount_refunded, 500);
  });
});

function authorizeWith(provider: HttpProvider) {
  return provider.authorize({ idempotencyKey: key('pk'), amount: 100, currency: 'usd', paymentMethod: 'pm_card_visa', capture: true });
}

describe('circuit breaker', () => {
  test(`opens after the threshold: later calls fail fast with 503 and reach no provider`, async () => {
    const sim = await startTestSimulator({ errorRate: 1 });
    const halfOpenMs = 60_000;
    const { app, provider } = await buildTestApp(pool, sim.url, { providerBreakerThreshold: 2, providerBreakerHalfOpenMs: halfOpenMs });
    const api = await apiFor(app);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      ids.push((await api.post('/v1/payment_intents', { amount: 100 + i, currency: 'usd', payment_method: 'pm_card_visa' })).json().id);
    }
    for (const id of ids.slice(0, 2)) await api.post(`/v1/payment_intents/${id}/confirm`, {});
    assert.equal(sim.requests, 2);
    assert.equal(provider.breakerState, 'open');

    // The provider is healthy again, but the breaker does not ask it until the half-open delay.
    sim.simulator.errorRate = 0;
    for (const id of ids.slice(2)) {
      const response = await api.post(`/v1/payment_intents/${id}/confirm`, {});
      assertUnavailable(response);
      assert.equal(response.headers['retry-after'], String(halfOpenMs / 1000));
      assert.equal((await api.get(`/v1/payment_intents/${id}`)).status, 'requires_confirmation');
    }
    assert.equal(sim.requests, 2);
    assert.equal(sim.simulator.charges.size, 0);
  });

  test('a burst of failures among successes leaves it closed; failing more than half of the window opens it', async () => {
    const sim = await startTestSimulator();
    const provider = new HttpProvider({ baseUrl: sim.url, timeoutMs: 5_000, breakerThreshold: 5, breakerWindow: 20, halfOpenMs: 60_000 });
    const calls = async (count: number) => {
      const kinds = [];
      for (let i = 0; i < count; i++) kinds.push((await authorizeWith(provider)).kind);
      return kinds;
    };
    assert.deepEqual(new Set(await calls(14)), new Set(['succeeded']));
    // A surge's charges that fail on their own end together: six in a row, 6 of the last 20.
    sim.simulator.errorRate = 1;
    assert.deepEqual(new Set(await calls(6)), new Set(['unknown']));
    assert.equal(provider.breakerState, 'closed');
    // The provider keeps failing: the 11th failure of the last 20 opens it; the next call sends nothing.
    assert.deepEqual(new Set(await calls(4)), new Set(['unknown']));
    assert.equal(provider.breakerState, 'closed');
    assert.equal((await authorizeWith(provider)).kind, 'unknown');
    assert.equal(provider.breakerState, 'open');
    const sent = sim.requests;
    assert.equal((await authorizeWith(provider)).kind, 'unavailable');
    assert.equal(sim.requests, sent);
  });

  test('half-opens after the delay: one trial call at a time, closing once a trial succeeds', async () => {
    const sim = await startTestSimulator({ errorRate: 1 });
    const provider = new HttpProvider({ baseUrl: sim.url, timeoutMs: 5_000, breakerThreshold: 2, halfOpenMs: 200 });
    /** One call, and how many requests it put on the wire. */
    const call = async () => {
      const before = sim.requests;
      const outcome = await authorizeWith(provider);
      return { outcome, sent: sim.requests - before };
    };
    /** Calls until one reaches the provider; every call before it must fail fast. */
    const untilSent = async () => {
      for (let tries = 0; tries < 1_000; tries++) {
        const result = await call();
        if (result.sent > 0) return result;
        assert.equal(result.outcome.kind, 'unavailable');
        assert.equal(result.outcome.kind === 'unavailable' && result.outcome.reason, 'circuit breaker open');
        await sleep(10);
      }
      assert.fail('the breaker never let a trial call through');
    };

    for (let i = 0; i < 2; i++) assert.deepEqual(await call(), { outcome: { kind: 'unknown', reason: 'provider answered 503' }, sent: 1 });
    assert.equal(provider.breakerState, 'open');

    const failedTrial = await untilSent();
    assert.equal(failedTrial.sent, 1);
    assert.equal(failedTrial.outcome.kind, 'unknown');
    assert.equal(provider.breakerState, 'open', 'a failed trial opens the breaker again');

    sim.simulator.errorRate = 0;
    const goodTrial = await untilSent();
    assert.equal(goodTrial.sent, 1);
    assert.equal(goodTrial.outcome.kind, 'succeeded');
    assert.equal(provider.breakerState, 'closed');
    assert.equal((await call()).sent, 1);
  });
});

async function postCharge(url: string, idempotencyKey: string, body: object, path = '/v1/charges') {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> & { id: string } };
}

const visaCharge = { amount: 500, currency: 'usd', payment_method: 'pm_card_visa', capture: true };

describe('simulator', () => {
  test('the same key sent 20 times at once creates one charge, and one refund', async () => {
    const sim = await startTestSimulator();
    const chargeKey = key('sim');
    const charges = await Promise.all(Array.from({ length: 20 }, () => postCharge(sim.url, chargeKey, visaCharge)));
    assert.deepEqual(new Set(charges.map((c) => c.status)), new Set([200]));
    assert.equal(new Set(charges.map((c) => c.body.id)).size, 1);
    assert.equal(sim.simulator.charges.size, 1);
    assert.equal(sim.simulator.chargesByKey.get(chargeKey), 1);

    const chargeId = charges[0]?.body.id as string;
    const refundKey = key('sim');
    const refunds = await Promise.all(
      Array.from({ length: 20 }, () => postCharge(sim.url, refundKey, { amount: 200 }, `/v1/charges/${chargeId}/refunds`)),
    );
    assert.equal(new Set(refunds.map((r) => `${r.status} ${r.body.id}`)).size, 1);
    // Distinct keys are distinct refunds, but never beyond what was captured: 300 is left.
    const more = await Promise.all(
      Array.from({ length: 20 }, () => postCharge(sim.url, key('sim'), { amount: 100 }, `/v1/charges/${chargeId}/refunds`)),
    );
    assert.equal(more.filter((r) => r.status === 200).length, 3);
    assert.equal(sim.simulator.charges.get(chargeId)?.amount_refunded, 500);
  });

  test('error rate 1.0 answers 503 before recording anything; our side reports the outcome unknown and finds nothing by key', async () => {
    const sim = await startTestSimulator({ errorRate: 1 });
    const chargeKey = key('sim');
    const direct = await postCharge(sim.url, chargeKey, visaCharge);
    assert.equal(direct.status, 503);
    assert.deepEqual(direct.body, { error: { code: 'simulated_outage', message: 'Simulated provider error.' } });
    assert.equal(sim.simulator.operations.size, 0);
    assert.equal(sim.simulator.charges.size, 0);

    // A 503 does not promise that nothing happened, so our side does not claim it either.
    const { app, provider } = await buildTestApp(pool, sim.url);
    assert.deepEqual(await authorizeWith(provider), { kind: 'unknown', reason: 'provider answered 503' });
    assert.deepEqual(await provider.retrieve(chargeKey), { kind: 'succeeded', value: null });

    const api = await apiFor(app);
    const created = await api.post('/v1/payment_intents', { amount: 300, currency: 'usd', payment_method: 'pm_card_visa', confirm: true });
    assert.equal(created.statusCode, 200, created.body);
    assert.equal(created.json().status, 'processing');
    assert.equal(created.json().amount_received, 0);
    assert.deepEqual(await attemptsOf(created.json().id), [{ operation: 'authorize', status: 'unknown', error_code: 'outcome_unknown' }]);
    assert.equal(sim.simulator.charges.size, 0);
  });

  test('latency beyond our timeout gives an unknown outcome, counted by the breaker; resolved later by key', async () => {
    const sim = await startTestSimulator({ latencyMs: 400 });
    const provider = new HttpProvider({ baseUrl: sim.url, timeoutMs: 50, breakerThreshold: 2, halfOpenMs: 60_000 });
    const idempotencyKey = key('slow');
    const request = { idempotencyKey, amount: 700, currency: 'usd', paymentMethod: 'pm_card_visa', capture: true };
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(await provider.authorize(request), { kind: 'unknown', reason: 'provider timed out after 50 ms' });
    }
    // A provider that does not answer in time costs each call its whole timeout: after the
    // threshold the breaker opens and calls fail fast, sending nothing.
    assert.equal(provider.breakerState, 'open');
    const requestsBefore = sim.requests;
    const fast = await provider.authorize(request);
    assert.equal(fast.kind, 'unavailable');
    assert.equal(fast.kind === 'unavailable' && fast.reason, 'circuit breaker open');
    assert.equal(sim.requests, requestsBefore, 'no call reached the provider');

    // Whether the abandoned requests were recorded is the provider's business; retrying the
    // same key once it is fast again charges exactly once either way.
    sim.simulator.latencyMs = 0;
    const patient = new HttpProvider({ baseUrl: sim.url, timeoutMs: 5_000, breakerThreshold: 2, halfOpenMs: 60_000 });
    const retried = await patient.authorize(request);
    assert.ok(retried.kind === 'succeeded', JSON.stringify(retried));
    assert.equal(retried.value.amountCaptured, 700);
    const found = await patient.retrieve(idempotencyKey);
    assert.equal(found.kind === 'succeeded' && found.value?.kind === 'charge' && found.value.charge.reference, retried.value.reference);
    assert.equal(sim.simulator.chargesByKey.get(idempotencyKey), 1);
  });
});

test('after every fault above, the money invariants hold', async () => {
  assert.deepEqual((await audit(pool)).violations, []);
});
