import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { key, setupTestContext, shortTimeoutApp } from '../../test/helpers.js';

const t = await setupTestContext();
// Only pm_card_timeout confirms go through this app: they are meant to time out.
const timingOut = await shortTimeoutApp(t);

async function post(url: string, body: unknown, idempotencyKey = key(), app = t.app) {
  return app.inject({ method: 'POST', url, headers: t.auth({ 'idempotency-key': idempotencyKey }), payload: body as object });
}

describe('payment intents', () => {
  test('create then confirm with pm_card_visa succeeds and posts to the ledger', async () => {
    const created = await post('/v1/payment_intents', { amount: 1500, currency: 'thb' });
    assert.equal(created.statusCode, 200);
    const intent = created.json();
    assert.match(intent.id, /^pi_/);
    assert.equal(intent.status, 'requires_payment_method');

    const confirmed = await post(`/v1/payment_intents/${intent.id}/confirm`, { payment_method: 'pm_card_visa' });
    assert.equal(confirmed.statusCode, 200);
    assert.equal(confirmed.json().status, 'succeeded');
    assert.equal(confirmed.json().amount_received, 1500);

    const balance = await t.app.inject({ method: 'GET', url: '/v1/balance', headers: t.auth() });
    assert.deepEqual(balance.json().available, [{ currency: 'thb', amount: 1500 }]);
  });

  test('manual capture of part of the amount releases the remainder', async () => {
    const created = await post('/v1/payment_intents', {
      amount: 1000,
      currency: 'usd',
      capture_method: 'manual',
      payment_method: 'pm_card_visa',
      confirm: true,
    });
    assert.equal(created.json().status, 'requires_capture');
    assert.equal(created.json().amount_capturable, 1000);
    const captured = await post(`/v1/payment_intents/${created.json().id}/capture`, { amount_to_capture: 600 });
    assert.equal(captured.statusCode, 200);
    assert.equal(captured.json().status, 'succeeded');
    assert.equal(captured.json().amount_received, 600);
    assert.equal(captured.json().amount_capturable, 0);
  });

  test('a declined card returns the intent to requires_payment_method with last_payment_error', async () => {
    const created = await post('/v1/payment_intents', {
      amount: 500,
      currency: 'eur',
      payment_method: 'pm_card_insufficient_funds',
      confirm: true,
    });
    assert.equal(created.statusCode, 402);
    const error = created.json().error;
    assert.equal(error.code, 'card_declined');
    assert.equal(error.decline_code, 'insufficient_funds');
    assert.equal(error.payment_intent.status, 'requires_payment_method');
    assert.equal(error.payment_intent.last_payment_error.decline_code, 'insufficient_funds');
    // The intent stays payable with another card.
    const retried = await post(`/v1/payment_intents/${error.payment_intent.id}/confirm`, { payment_method: 'pm_card_visa' });
    assert.equal(retried.json().status, 'succeeded');
  });

  test('a replay returns the stored response with Idempotent-Replayed', async () => {
    const k = key();
    const first = await post('/v1/payment_intents', { amount: 700, currency: 'jpy' }, k);
    const second = await post('/v1/payment_intents', { amount: 700, currency: 'jpy' }, k);
    assert.equal(second.statusCode, 200);
    assert.equal(second.headers['idempotent-replayed'], 'true');
    assert.deepEqual(second.json(), first.json());
    const other = await post('/v1/payment_intents', { amount: 701, currency: 'jpy' }, k);
    assert.equal(other.statusCode, 422);
    assert.equal(other.json().error.code, 'idempotency_key_reused');
  });

  test('refunds: partials up to the amount received, never more', async () => {
    const paid = await post('/v1/payment_intents', { amount: 1000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true });
    const id = paid.json().id;
    const first = await post('/v1/refunds', { payment_intent: id, amount: 400 });
    assert.equal(first.statusCode, 200);
    assert.equal(first.json().status, 'succeeded');
    const tooMuch = await post('/v1/refunds', { payment_intent: id, amount: 601 });
    assert.equal(tooMuch.statusCode, 400);
    assert.equal(tooMuch.json().error.code, 'refund_exceeds_received');
    assert.equal(tooMuch.json().error.param, 'amount');
    const rest = await post('/v1/refunds', { payment_intent: id });
    assert.equal(rest.json().amount, 600);
    const again = await post('/v1/refunds', { payment_intent: id, amount: 1 });
    assert.equal(again.json().error.code, 'charge_already_refunded');
    const intent = await t.app.inject({ method: 'GET', url: `/v1/payment_intents/${id}`, headers: t.auth() });
    assert.equal(intent.json().amount_refunded, 1000);
  });

  test('cancel releases an authorization; a canceled intent cannot be confirmed', async () => {
    const authorized = await post('/v1/payment_intents', {
      amount: 300,
      currency: 'usd',
      capture_method: 'manual',
      payment_method: 'pm_card_visa',
      confirm: true,
    });
    const id = authorized.json().id;
    const canceled = await post(`/v1/payment_intents/${id}/cancel`, { cancellation_reason: 'requested_by_customer' });
    assert.equal(canceled.json().status, 'canceled');
    assert.equal(canceled.json().cancellation_reason, 'requested_by_customer');
    const confirm = await post(`/v1/payment_intents/${id}/confirm`, { payment_method: 'pm_card_visa' });
    assert.equal(confirm.statusCode, 409);
    assert.equal(confirm.json().error.code, 'payment_intent_unexpected_state');
  });

  test('pm_card_timeout leaves the intent processing with the attempt unknown', async () => {
    const created = await post(
      '/v1/payment_intents',
      { amount: 900, currency: 'usd', payment_method: 'pm_card_timeout', confirm: true },
      key(),
      timingOut,
    );
    assert.equal(created.statusCode, 200);
    assert.equal(created.json().status, 'processing');
    const { rows } = await t.pool.query('select status from payment_attempts where payment_intent_id = $1', [created.json().id]);
    assert.deepEqual(rows, [{ status: 'unknown' }]);
  });

  test('confirm, capture and cancel need no body: their parameters are all optional', async () => {
    const bare = (url: string) => t.app.inject({ method: 'POST', url, headers: t.auth({ 'idempotency-key': key() }) });
    const created = await post('/v1/payment_intents', {
      amount: 800,
      currency: 'usd',
      capture_method: 'manual',
      payment_method: 'pm_card_visa',
    });
    const id = created.json().id;
    const confirmed = await bare(`/v1/payment_intents/${id}/confirm`);
    assert.equal(confirmed.statusCode, 200, confirmed.body);
    assert.equal(confirmed.json().status, 'requires_capture');
    const captured = await bare(`/v1/payment_intents/${id}/capture`);
    assert.equal(captured.statusCode, 200, captured.body);
    assert.equal(captured.json().amount_received, 800);
    const other = await post('/v1/payment_intents', { amount: 300, currency: 'usd' });
    const canceled = await bare(`/v1/payment_intents/${other.json().id}/cancel`);
    assert.equal(canceled.statusCode, 200, canceled.body);
    assert.equal(canceled.json().status, 'canceled');
  });
});
