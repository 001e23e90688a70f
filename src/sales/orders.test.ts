/**
 * Orders that confirm their payment (`confirm: true` with a `payment_method`): paid in one
 * request, in batches (where the order batch writes the confirm's first phase, and the confirm
 * batcher's start is not used) and with batching off (the order alone, then the confirm's
 * general path under the derived key); replays identical; a declined card answered as the
 * confirm answers it and retried on the PaymentIntent; bad input refused; and an order batch's
 * confirm that a crash interrupted, resumed by the order's retry and charged once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { key, setupTestContext } from '../../test/helpers.js';
import { saleFlow } from '../../test/sale-flow.js';
import { audit } from '../audit/service.js';
import { fingerprint } from '../platform/idempotency/service.js';
import { OrderCreationBatcher } from './order-batches.js';
import { confirmContext } from './orders.js';
import { toApiOrder } from './service.js';

const t = await setupTestContext();
const flow = saleFlow(t.app, t.merchant);
const sale = await flow.createSale([{ name: 'Hot item', price: 2500, stock: 1_000 }]);
const itemId = sale.itemIds[0] as string;
const lines = [{ item: itemId, quantity: 1 }];

function order(payload: Record<string, unknown>, idempotencyKey = key('order')) {
  return t.app.inject({ method: 'POST', url: '/v1/orders', headers: t.auth({ 'idempotency-key': idempotencyKey }), payload });
}

const countOf = async (sql: string, values: unknown[]) => (await t.pool.query<{ n: number }>(sql, values)).rows[0]?.n;

/** The intent's authorize attempts, captures posted to the ledger, and succeeded events: each must be 1 for a paid order. */
async function chargesOf(intentId: string) {
  const values = [t.merchant.id, intentId];
  return {
    attempts: await countOf(
      `select count(*)::int as n from payment_attempts where merchant_id = $1 and payment_intent_id = $2 and operation = 'authorize' and status = 'succeeded'`,
      values,
    ),
    captures: await countOf(
      `select count(*)::int as n from ledger_transactions where merchant_id = $1 and payment_intent_id = $2 and kind = 'capture'`,
      values,
    ),
    succeeded: await countOf(
      `select count(*)::int as n from events where merchant_id = $1 and object_id = $2 and type = 'payment_intent.succeeded'`,
      values,
    ),
  };
}

/** How many confirms the confirm batcher's start phase has carried so far. */
async function confirmStarts(): Promise<number> {
  const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
  return Number(/^floodgate_confirm_batch_size_sum\{phase="start"\} (\S+)$/m.exec(text)?.[1] ?? 0);
}

describe('orders that confirm', () => {
  test('one request orders and pays; the answer shows the order paid; a replay is identical', async () => {
    const hold = await flow.hold(sale.id, key('buyer'), lines);
    const orderKey = key('order');
    const first = await order({ hold, payment_method: 'pm_card_visa', confirm: true }, orderKey);
    assert.equal(first.statusCode, 200, first.body);
    const body = first.json();
    assert.equal(body.object, 'order');
    assert.equal(body.status, 'paid');
    assert.equal(typeof body.paid_at, 'number');
    assert.equal(body.payment_intent_object.id, body.payment_intent);
    assert.equal(body.payment_intent_object.status, 'succeeded');
    assert.equal(body.payment_intent_object.amount_received, 2500);

    const retrieved = await t.app.inject({ method: 'GET', url: `/v1/orders/${body.id}`, headers: t.auth() });
    const { payment_intent_object: _intent, ...asOrder } = body;
    assert.deepEqual(retrieved.json(), asOrder, 'the answer is the order as it is stored');

    const replay = await order({ hold, payment_method: 'pm_card_visa', confirm: true }, orderKey);
    assert.equal(replay.statusCode, 200);
    assert.deepEqual(replay.json(), body, 'a replay answers exactly the same');
    assert.deepEqual(await chargesOf(body.payment_intent), { attempts: 1, captures: 1, succeeded: 1 });
    assert.equal(
      await countOf(`select count(*)::int as n from holds where merchant_id = $1 and id = $2 and status = 'converted'`, [
        t.merchant.id,
        hold,
      ]),
      1,
    );
  });

  test('concurrent orders that confirm are paid through the order batch, with no confirm start of their own', async () => {
    const holds = await Promise.all(Array.from({ length: 24 }, () => flow.hold(sale.id, key('crowd'), lines)));
    const startsBefore = await confirmStarts();
    const answers = await Promise.all(holds.map((hold) => order({ hold, payment_method: 'pm_card_visa', confirm: true })));
    for (const answer of answers) assert.equal(answer.statusCode, 200, answer.body);
    assert.deepEqual(
      answers.map((answer) => [answer.json().hold, answer.json().status, answer.json().payment_intent_object.status]),
      holds.map((hold) => [hold, 'paid', 'succeeded']),
    );
    assert.equal(await confirmStarts(), startsBefore, 'each order batch wrote its confirms’ first phase itself');
    for (const answer of answers) {
      assert.deepEqual(await chargesOf(answer.json().payment_intent), { attempts: 1, captures: 1, succeeded: 1 });
    }
    // The created event shows the intent as created, awaiting its confirmation.
    const created = await t.pool.query<{ status: string; payment_method: string }>(
      `select data->'object'->>'status' as status, data->'object'->>'payment_method' as payment_method from events
       where merchant_id = $1 and object_id = $2 and type = 'payment_intent.created'`,
      [t.merchant.id, answers[0]?.json().payment_intent],
    );
    assert.deepEqual(created.rows, [{ status: 'requires_confirmation', payment_method: 'pm_card_visa' }]);
    assert.deepEqual((await audit(t.pool)).violations, []);
  });

  test('a declined card answers 402 as a confirm does; the order waits, and confirming its PaymentIntent again pays it', async () => {
    const hold = await flow.hold(sale.id, key('buyer'), lines);
    const orderKey = key('order');
    const declined = await order({ hold, payment_method: 'pm_card_declined', confirm: true }, orderKey);
    assert.equal(declined.statusCode, 402, declined.body);
    assert.equal(declined.json().error.code, 'card_declined');
    const replay = await order({ hold, payment_method: 'pm_card_declined', confirm: true }, orderKey);
    assert.deepEqual([replay.statusCode, replay.json()], [402, declined.json()], 'the refusal replays');

    const listed = await t.app.inject({ method: 'GET', url: `/v1/orders?sale=${sale.id}&limit=100`, headers: t.auth() });
    const waiting = listed.json().data.find((row: { hold: string }) => row.hold === hold);
    assert.equal(waiting?.status, 'awaiting_payment');
    const retried = await t.app.inject({
      method: 'POST',
      url: `/v1/payment_intents/${waiting.payment_intent}/confirm`,
      headers: t.auth({ 'idempotency-key': key('confirm') }),
      payload: { payment_method: 'pm_card_visa' },
    });
    assert.equal(retried.json().status, 'succeeded', retried.body);
    const paid = await t.app.inject({ method: 'GET', url: `/v1/orders/${waiting.id}`, headers: t.auth() });
    assert.equal(paid.json().status, 'paid');
    assert.deepEqual(await chargesOf(waiting.payment_intent), { attempts: 1, captures: 1, succeeded: 1 });
  });

  test('bad input is refused with what to fix, and writes nothing', async () => {
    const hold = await flow.hold(sale.id, key('buyer'), lines);
    const cases: Array<[Record<string, unknown>, number, string, string]> = [
      [{ hold, confirm: true }, 400, 'parameter_missing', 'payment_method'],
      [{ hold, payment_method: 'pm_card_visa' }, 400, 'parameter_invalid', 'payment_method'],
      [{ hold, payment_method: 'pm_card_visa', confirm: 'yes' }, 400, 'parameter_invalid', 'confirm'],
      [{ hold, payment_method: '', confirm: true }, 400, 'parameter_invalid', 'payment_method'],
    ];
    for (const [payload, status, code, param] of cases) {
      const answer = await order(payload);
      assert.equal(answer.statusCode, status, `${JSON.stringify(payload)}: ${answer.body}`);
      assert.equal(answer.json().error.code, code, answer.body);
      assert.match(answer.json().error.param ?? answer.json().error.message, new RegExp(param), answer.body);
    }
    assert.equal(await countOf('select count(*)::int as n from orders where merchant_id = $1 and hold_id = $2', [t.merchant.id, hold]), 0);
  });

  test('a confirm an order batch started and a crash interrupted is resumed by the order’s retry, and charged once', async () => {
    const hold = await flow.hold(sale.id, key('buyer'), lines);
    const orderKey = key('order');
    const payload = { hold, payment_method: 'pm_card_visa', confirm: true };
    // What an order batch writes before the provider call, left as a process that died there
    // leaves it: the order's key finished, the confirm's key held at authorization_started, the
    // intent processing and its attempt started. The simulator never saw the call.
    const batcher = new OrderCreationBatcher({ pool: t.pool, ttlHours: 24, windowMs: 0, batchMax: 10, maxRunning: 1, view: toApiOrder });
    const orderCtx = {
      merchantId: t.merchant.id,
      keyKind: 'secret' as const,
      idempotencyKey: orderKey,
      method: 'POST',
      path: '/v1/orders',
      fingerprint: fingerprint('POST', '/v1/orders', payload),
    };
    const written = await batcher.submit({
      merchantId: t.merchant.id,
      keyKind: 'secret',
      key: orderKey,
      fingerprint: orderCtx.fingerprint,
      method: 'POST',
      path: '/v1/orders',
      holdId: hold,
      confirm: { paymentMethod: 'pm_card_visa', context: (intentId) => confirmContext(orderCtx, intentId, 'pm_card_visa') },
    });
    assert.equal(written.kind, 'created');
    assert.ok(written.kind === 'created' && written.confirm, 'the batch started the confirm');
    const intentId = written.confirm.started.intent.id;
    const confirmKey = confirmContext(orderCtx, intentId, 'pm_card_visa').idempotencyKey;
    const keyRow = await t.pool.query(
      `select recovery_point, resource_id, locked_at is not null as locked from idempotency_keys
       where merchant_id = $1 and idempotency_key = $2`,
      [t.merchant.id, confirmKey],
    );
    assert.deepEqual(keyRow.rows, [{ recovery_point: 'authorization_started', resource_id: intentId, locked: true }]);
    // The dead process's lock times out.
    await t.pool.query(
      `update idempotency_keys set locked_at = now() - interval '1 hour' where merchant_id = $1 and idempotency_key = $2`,
      [t.merchant.id, confirmKey],
    );

    const retried = await order(payload, orderKey);
    assert.equal(retried.statusCode, 200, retried.body);
    assert.equal(retried.json().status, 'paid');
    assert.equal(retried.json().payment_intent_object.status, 'succeeded');
    assert.deepEqual(await chargesOf(intentId), { attempts: 1, captures: 1, succeeded: 1 });
    const again = await order(payload, orderKey);
    assert.deepEqual(again.json(), retried.json(), 'and replays from then on');
    assert.deepEqual((await audit(t.pool)).violations, []);
  });
});

describe('orders that confirm, with no batches (every request on its general path)', async () => {
  const alone = await setupTestContext({ config: { orderBatchMax: 1, confirmBatchMax: 1 } });
  const aloneFlow = saleFlow(alone.app, alone.merchant);
  const aloneSale = await aloneFlow.createSale([{ name: 'Seat', price: 1200, stock: 10 }]);
  const aloneLines = [{ item: aloneSale.itemIds[0] as string, quantity: 1 }];
  const post = (payload: Record<string, unknown>, idempotencyKey: string) =>
    alone.app.inject({ method: 'POST', url: '/v1/orders', headers: alone.auth({ 'idempotency-key': idempotencyKey }), payload });

  test('the order, then the confirm under the derived key: paid, replayed identically, declined as a confirm is', async () => {
    const hold = await aloneFlow.hold(aloneSale.id, key('buyer'), aloneLines);
    const orderKey = key('order');
    const paid = await post({ hold, payment_method: 'pm_card_visa', confirm: true }, orderKey);
    assert.equal(paid.statusCode, 200, paid.body);
    assert.deepEqual([paid.json().status, paid.json().payment_intent_object.status], ['paid', 'succeeded']);
    assert.deepEqual((await post({ hold, payment_method: 'pm_card_visa', confirm: true }, orderKey)).json(), paid.json());
    const derived = await alone.pool.query(
      `select request_path, recovery_point, response_status from idempotency_keys where merchant_id = $1 and idempotency_key = $2`,
      [alone.merchant.id, `${orderKey} confirm`],
    );
    assert.deepEqual(derived.rows, [
      { request_path: `/v1/payment_intents/${paid.json().payment_intent}/confirm`, recovery_point: 'finished', response_status: 200 },
    ]);

    const other = await aloneFlow.hold(aloneSale.id, key('buyer'), aloneLines);
    const declined = await post({ hold: other, payment_method: 'pm_card_declined', confirm: true }, key('order'));
    assert.equal(declined.statusCode, 402, declined.body);
    assert.equal(declined.json().error.code, 'card_declined');
    assert.deepEqual((await audit(alone.pool)).violations, []);
  });
});
