/**
 * Idempotency keys belong to whoever may use them. A publishable key sits in every buyer's
 * browser, so what it sends must never take a key name from the merchant's server: keys are
 * scoped by the kind of API key, and a request refused authorization stores no key at all.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createSaleThroughApi, key, setupTestContext } from './helpers.js';

const t = await setupTestContext();
const publishable = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${t.merchant.publishableKey}`, ...extra });
const payment = { amount: 2000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true };

async function createSale() {
  return createSaleThroughApi(t, {
    name: 'Scoped keys',
    opens_at: new Date(Date.now() - 60_000).toISOString(),
    max_shoppers: 1000,
    admit_per_second: 1000,
    items: [{ name: 'Ticket', price: 1000, stock: 1 }],
  });
}

async function keyRows(idempotencyKey: string) {
  const { rows } = await t.pool.query<{ key_kind: string; response_status: number | null }>(
    'select key_kind, response_status from idempotency_keys where merchant_id = $1 and idempotency_key = $2 order by key_kind',
    [t.merchant.id, idempotencyKey],
  );
  return rows;
}

function payWith(idempotencyKey: string) {
  return t.app.inject({
    method: 'POST',
    url: '/v1/payment_intents',
    headers: t.auth({ 'idempotency-key': idempotencyKey }),
    payload: payment,
  });
}

describe('a publishable key cannot squat the merchant’s idempotency keys', () => {
  test('a hold refused admission (403) stores no key; the merchant’s payment with that key then succeeds', async () => {
    const sale = await createSale();
    const squatted = key('order-1001');
    const refused = await t.app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: publishable({ 'idempotency-key': squatted }),
      payload: { sale: sale.id, buyer_reference: 'mallory', admission_token: 'not-a-token', items: [{ item: sale.itemId, quantity: 1 }] },
    });
    assert.equal(refused.statusCode, 403, refused.body);
    assert.equal(refused.json().error.code, 'admission_invalid');
    assert.deepEqual(await keyRows(squatted), [], 'a request refused authorization leaves no key behind');

    const paid = await payWith(squatted);
    assert.equal(paid.statusCode, 200, paid.body);
    assert.equal(paid.json().status, 'succeeded');
  });

  test('a hold that was admitted keeps its key in the publishable scope, apart from the merchant’s', async () => {
    const sale = await createSale();
    const joined = await t.app.inject({
      method: 'POST',
      url: `/v1/sales/${sale.id}/queue`,
      headers: publishable(),
      payload: { buyer_reference: 'buyer-1' },
    });
    assert.equal(joined.json().status, 'admitted', joined.body);
    const shared = key('order-1002');
    const held = await t.app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: publishable({ 'idempotency-key': shared }),
      payload: {
        sale: sale.id,
        buyer_reference: 'buyer-1',
        admission_token: joined.json().admission_token,
        items: [{ item: sale.itemId, quantity: 1 }],
      },
    });
    assert.equal(held.statusCode, 200, held.body);

    const paid = await payWith(shared);
    assert.equal(paid.statusCode, 200, paid.body);
    assert.equal(paid.headers['idempotent-replayed'], undefined, 'the payment ran; it did not meet the hold’s key');
    assert.deepEqual(await keyRows(shared), [
      { key_kind: 'publishable', response_status: 200 },
      { key_kind: 'secret', response_status: 200 },
    ]);

    // Each scope still replays its own request.
    const replayedHold = await t.app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: publishable({ 'idempotency-key': shared }),
      payload: {
        sale: sale.id,
        buyer_reference: 'buyer-1',
        admission_token: joined.json().admission_token,
        items: [{ item: sale.itemId, quantity: 1 }],
      },
    });
    assert.equal(replayedHold.headers['idempotent-replayed'], 'true');
    assert.equal(replayedHold.json().id, held.json().id);
    const replayedPayment = await payWith(shared);
    assert.equal(replayedPayment.headers['idempotent-replayed'], 'true');
    assert.equal(replayedPayment.json().id, paid.json().id);
  });
});
