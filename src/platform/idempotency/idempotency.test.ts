/**
 * Idempotency keys under concurrency and reuse: many requests racing with one key do the work
 * once, and every one of them gets either the one answer or a 409 to retry.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { key, setupTestContext } from '../../../test/helpers.js';
import { createMerchant } from '../../merchants/service.js';
import { canonicalJson, fingerprint, isValidKey } from './service.js';

const t = await setupTestContext();
const sim = t.sim.simulator;
const RACERS = 50;

async function newMerchant() {
  const created = await createMerchant(t.pool, `Idempotency ${key('m')}`);
  return {
    id: created.merchant.id,
    auth: (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${created.secret_key}`, ...extra }),
  };
}

async function countRows(table: string, merchantId: string): Promise<number> {
  const { rows } = await t.pool.query<{ n: number }>(`select count(*)::int as n from ${table} where merchant_id = $1`, [merchantId]);
  return rows[0]?.n ?? -1;
}

/**
 * Every response is the one 200 (sent once without and otherwise with Idempotent-Replayed) or a
 * 409 idempotency_key_in_use. Returns the 200 body.
 */
function assertOneAnswer(responses: LightMyRequestResponse[]): Record<string, unknown> {
  const ok = responses.filter((response) => response.statusCode === 200);
  const refused = responses.filter((response) => response.statusCode !== 200);
  for (const response of refused) {
    assert.equal(response.statusCode, 409, response.body);
    assert.equal(response.json().error.code, 'idempotency_key_in_use');
  }
  const first = ok.filter((response) => response.headers['idempotent-replayed'] === undefined);
  assert.equal(first.length, 1, 'exactly one response did the work');
  const body = first[0]?.json();
  for (const response of ok) {
    assert.deepEqual(response.json(), body);
    if (response !== first[0]) assert.equal(response.headers['idempotent-replayed'], 'true');
  }
  return body;
}

describe('one idempotency key, many concurrent requests', () => {
  test(`${RACERS} concurrent create-and-confirm requests charge once`, async () => {
    const m = await newMerchant();
    const k = key('race');
    const chargesBefore = sim.charges.size;
    const payload = { amount: 4200, currency: 'eur', payment_method: 'pm_card_visa', confirm: true };
    const responses = await Promise.all(
      Array.from({ length: RACERS }, () =>
        t.app.inject({ method: 'POST', url: '/v1/payment_intents', headers: m.auth({ 'idempotency-key': k }), payload }),
      ),
    );
    const body = assertOneAnswer(responses);
    assert.equal(body.status, 'succeeded');

    assert.equal(await countRows('payment_intents', m.id), 1);
    assert.equal(await countRows('payment_attempts', m.id), 1);
    assert.equal(await countRows('ledger_transactions', m.id), 1);
    assert.equal(await countRows('events', m.id), 2, 'payment_intent.created and payment_intent.succeeded, once each');
    const { rows } = await t.pool.query<{ provider_idempotency_key: string }>(
      'select provider_idempotency_key from payment_attempts where merchant_id = $1',
      [m.id],
    );
    assert.equal(sim.chargesByKey.get(rows[0]?.provider_idempotency_key ?? ''), 1);
    assert.equal(sim.charges.size, chargesBefore + 1);

    // Once the work is done, every retry replays it.
    const later = await t.app.inject({ method: 'POST', url: '/v1/payment_intents', headers: m.auth({ 'idempotency-key': k }), payload });
    assert.equal(later.headers['idempotent-replayed'], 'true');
    assert.deepEqual(later.json(), body);
  });

  test(`${RACERS} concurrent unconfirmed creates (the one-statement path) make one intent`, async () => {
    const m = await newMerchant();
    const k = key('race');
    const payload = { amount: 990, currency: 'jpy', metadata: { order: '77' } };
    const responses = await Promise.all(
      Array.from({ length: RACERS }, () =>
        t.app.inject({ method: 'POST', url: '/v1/payment_intents', headers: m.auth({ 'idempotency-key': k }), payload }),
      ),
    );
    const body = assertOneAnswer(responses);
    assert.equal(body.status, 'requires_payment_method');
    assert.equal(await countRows('payment_intents', m.id), 1);
    assert.equal(await countRows('events', m.id), 1);
    assert.equal(await countRows('idempotency_keys', m.id), 1);
  });

  test('concurrent requests with one key but different bodies: one runs, the others are refused', async () => {
    const m = await newMerchant();
    const k = key('race');
    const responses = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        t.app.inject({
          method: 'POST',
          url: '/v1/payment_intents',
          headers: m.auth({ 'idempotency-key': k }),
          payload: { amount: 100 + i, currency: 'usd' },
        }),
      ),
    );
    const created = responses.filter((response) => response.statusCode === 200);
    assert.equal(created.length, 1);
    for (const response of responses) {
      if (response.statusCode === 200) continue;
      assert.ok([409, 422].includes(response.statusCode), response.body);
      assert.match(response.json().error.code, /^idempotency_key_(in_use|reused)$/);
    }
    assert.equal(await countRows('payment_intents', m.id), 1);
  });
});

describe('idempotency key scope and reuse', () => {
  test('keys are scoped to the merchant: the same key does separate work for two merchants', async () => {
    const [a, b] = [await newMerchant(), await newMerchant()];
    const k = key('shared');
    const payload = { amount: 500, currency: 'usd' };
    const first = await t.app.inject({ method: 'POST', url: '/v1/payment_intents', headers: a.auth({ 'idempotency-key': k }), payload });
    const second = await t.app.inject({ method: 'POST', url: '/v1/payment_intents', headers: b.auth({ 'idempotency-key': k }), payload });
    assert.equal(first.statusCode, 200);
    assert.equal(second.statusCode, 200);
    assert.equal(second.headers['idempotent-replayed'], undefined, "b did not get a's answer");
    assert.notEqual(second.json().id, first.json().id);
    assert.equal(await countRows('payment_intents', a.id), 1);
    assert.equal(await countRows('payment_intents', b.id), 1);
  });

  test('the same key on another endpoint is refused with 422, and nothing is done', async () => {
    const m = await newMerchant();
    const k = key('reuse');
    const created = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: m.auth({ 'idempotency-key': k }),
      payload: { amount: 800, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
    });
    assert.equal(created.statusCode, 200);
    const refund = await t.app.inject({
      method: 'POST',
      url: '/v1/refunds',
      headers: m.auth({ 'idempotency-key': k }),
      payload: { payment_intent: created.json().id },
    });
    assert.equal(refund.statusCode, 422);
    assert.equal(refund.json().error.code, 'idempotency_key_reused');
    assert.equal(await countRows('refunds', m.id), 0);
  });

  test('a body with its fields in another order is the same request', async () => {
    const m = await newMerchant();
    const k = key('order');
    const send = (payload: string) =>
      t.app.inject({
        method: 'POST',
        url: '/v1/payment_intents',
        headers: m.auth({ 'idempotency-key': k, 'content-type': 'application/json' }),
        payload,
      });
    const first = await send('{"amount": 300, "currency": "usd", "metadata": {"a": "1", "b": "2"}}');
    const second = await send('{"metadata": {"b": "2", "a": "1"}, "currency": "usd", "amount": 300}');
    assert.equal(second.statusCode, 200);
    assert.equal(second.headers['idempotent-replayed'], 'true');
    assert.deepEqual(second.json(), first.json());
  });

  test('requests without a key are never deduplicated', async () => {
    const m = await newMerchant();
    for (let i = 0; i < 2; i++) {
      const response = await t.app.inject({
        method: 'POST',
        url: '/v1/payment_intents',
        headers: m.auth(),
        payload: { amount: 100, currency: 'usd' },
      });
      assert.equal(response.statusCode, 200);
    }
    assert.equal(await countRows('payment_intents', m.id), 2);
  });
});

describe('fingerprints and key syntax', () => {
  test('canonicalJson sorts object keys at every depth and keeps array order', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [2, 1], c: null } }), '{"a":{"c":null,"d":[2,1]},"b":1}');
    assert.equal(canonicalJson({ a: undefined, b: 'x' }), '{"b":"x"}');
  });

  test('the fingerprint covers method, path and body', () => {
    const base = fingerprint('POST', '/v1/payment_intents', { amount: 1 });
    assert.ok(base.equals(fingerprint('POST', '/v1/payment_intents', { amount: 1 })));
    assert.ok(!base.equals(fingerprint('POST', '/v1/refunds', { amount: 1 })));
    assert.ok(!base.equals(fingerprint('PUT', '/v1/payment_intents', { amount: 1 })));
    assert.ok(!base.equals(fingerprint('POST', '/v1/payment_intents', { amount: 2 })));
    assert.ok(!base.equals(fingerprint('POST', '/v1/payment_intents', { amount: '1' })));
  });

  test('keys are 1 to 255 printable ASCII characters without spaces', () => {
    assert.ok(isValidKey('a'));
    assert.ok(isValidKey('x'.repeat(255)));
    assert.ok(isValidKey('0b7c2f8e-6a1d-4a8e-9f3e-2d7c1b5a9e44'));
    assert.ok(!isValidKey(''));
    assert.ok(!isValidKey('x'.repeat(256)));
    assert.ok(!isValidKey('has space'));
    assert.ok(!isValidKey('tab\there'));
    assert.ok(!isValidKey('ümlaut'));
  });
});
