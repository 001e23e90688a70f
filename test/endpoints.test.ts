/**
 * The surge path's read endpoints and refusals, through the API: listing sales and orders,
 * reading a hold, a sale's create and patch validation, the codes a buyer meets (a sale not yet
 * open or closed, a hold that ended or whose payment is in flight, an unknown route), and
 * isolation: one merchant never sees another's sales, holds or orders.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createTestMerchant, key, setupTestContext, shortTimeoutApp, type TestMerchant } from './helpers.js';

const t = await setupTestContext();
const other = await createTestMerchant(t.pool);
const timingOut = await shortTimeoutApp(t);
const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });
const publishable = (m: TestMerchant = t.merchant) => bearer(m.publishableKey);

function saleBody(overrides: Record<string, unknown> = {}) {
  return {
    name: 'Autumn release',
    currency: 'usd',
    opens_at: new Date(Date.now() - 60_000).toISOString(),
    per_buyer_limit: 4,
    hold_seconds: 600,
    max_shoppers: 1000,
    admit_per_second: 1000,
    items: [{ name: 'Ticket', price: 1200, stock: 5 }],
    ...overrides,
  };
}

async function createSale(overrides: Record<string, unknown> = {}) {
  const response = await t.app.inject({
    method: 'POST',
    url: '/v1/sales',
    headers: t.auth({ 'idempotency-key': key('sale') }),
    payload: saleBody(overrides),
  });
  assert.equal(response.statusCode, 200, response.body);
  return response.json() as { id: string; items: Array<{ id: string }> };
}

async function joinQueue(saleId: string, buyer: string) {
  return t.app.inject({ method: 'POST', url: `/v1/sales/${saleId}/queue`, headers: publishable(), payload: { buyer_reference: buyer } });
}

async function placeHold(sale: { id: string; items: Array<{ id: string }> }, buyer: string, quantity = 1) {
  const joined = await joinQueue(sale.id, buyer);
  assert.equal(joined.json().status, 'admitted', joined.body);
  const held = await t.app.inject({
    method: 'POST',
    url: '/v1/holds',
    headers: { ...publishable(), 'idempotency-key': key('hold') },
    payload: {
      sale: sale.id,
      buyer_reference: buyer,
      admission_token: joined.json().admission_token,
      items: [{ item: sale.items[0]?.id, quantity }],
    },
  });
  assert.equal(held.statusCode, 200, held.body);
  return held.json() as { id: string; status: string; amount: number };
}

async function placeOrder(holdId: string) {
  const placed = await t.app.inject({
    method: 'POST',
    url: '/v1/orders',
    headers: t.auth({ 'idempotency-key': key('order') }),
    payload: { hold: holdId },
  });
  assert.equal(placed.statusCode, 200, placed.body);
  return placed.json() as { id: string; payment_intent: string; status: string };
}

function assertError(
  response: { statusCode: number; json(): { error: { code: string; param?: string } } },
  status: number,
  code: string,
  param?: string,
) {
  assert.equal(response.statusCode, status, JSON.stringify(response.json()));
  assert.equal(response.json().error.code, code);
  if (param !== undefined) assert.equal(response.json().error.param, param);
}

describe('sales: list, validation, isolation', () => {
  test('GET /v1/sales lists this merchant’s sales, newest first, with their items; another merchant sees none of them', async () => {
    const first = await createSale({ name: 'First' });
    const second = await createSale({ name: 'Second' });
    const listed = await t.app.inject({ method: 'GET', url: '/v1/sales?limit=2', headers: t.auth() });
    assert.equal(listed.statusCode, 200, listed.body);
    const page = listed.json();
    assert.deepEqual(
      page.data.map((sale: { id: string; name: string }) => [sale.id, sale.name]),
      [
        [second.id, 'Second'],
        [first.id, 'First'],
      ],
    );
    assert.deepEqual(
      page.data[0].items.map((item: { name: string; price: number; stock: unknown }) => [item.name, item.price, item.stock]),
      [['Ticket', 1200, { available: 5, held: 0, sold: 0, total: 5 }]],
    );
    const theirs = await t.app.inject({ method: 'GET', url: '/v1/sales', headers: bearer(other.secretKey) });
    assert.deepEqual(theirs.json().data, []);
    assertError(await t.app.inject({ method: 'GET', url: `/v1/sales/${first.id}`, headers: publishable(other) }), 404, 'resource_missing');
    const patched = await t.app.inject({
      method: 'PATCH',
      url: `/v1/sales/${first.id}`,
      headers: { ...bearer(other.secretKey), 'idempotency-key': key('patch') },
      payload: { name: 'Taken over' },
    });
    assertError(patched, 404, 'resource_missing');
  });

  test('a sale that closes before it opens, or with no items, is 400 naming the parameter; so is a bad patch', async () => {
    const post = (payload: Record<string, unknown>) =>
      t.app.inject({ method: 'POST', url: '/v1/sales', headers: t.auth({ 'idempotency-key': key('sale') }), payload });
    const opens = new Date(Date.now() + 3_600_000);
    assertError(
      await post(saleBody({ opens_at: opens.toISOString(), closes_at: new Date(opens.getTime() - 1).toISOString() })),
      400,
      'parameter_invalid',
      'closes_at',
    );
    assertError(await post(saleBody({ items: [] })), 400, 'parameter_invalid', 'items');
    assertError(await post(saleBody({ currency: 'US' })), 400, 'parameter_invalid', 'currency');
    const sale = await createSale();
    const patch = (payload: Record<string, unknown>) =>
      t.app.inject({ method: 'PATCH', url: `/v1/sales/${sale.id}`, headers: t.auth({ 'idempotency-key': key('patch') }), payload });
    assertError(await patch({ stock: 3 }), 400, 'parameter_unknown', 'stock');
    assertError(
      await patch({ opens_at: opens.toISOString(), closes_at: new Date(opens.getTime() - 1).toISOString() }),
      400,
      'parameter_invalid',
      'closes_at',
    );
    const renamed = await patch({ name: 'Renamed', per_buyer_limit: 2 });
    assert.equal(renamed.statusCode, 200, renamed.body);
    assert.deepEqual([renamed.json().name, renamed.json().per_buyer_limit], ['Renamed', 2]);
  });

  test('a hold on a sale moved back to not-yet-open is 409 sale_not_open; on a closed sale 409 sale_closed', async () => {
    const sale = await createSale();
    const hold = async (buyer: string, token: string) =>
      t.app.inject({
        method: 'POST',
        url: '/v1/holds',
        headers: { ...publishable(), 'idempotency-key': key('hold') },
        payload: { sale: sale.id, buyer_reference: buyer, admission_token: token, items: [{ item: sale.items[0]?.id, quantity: 1 }] },
      });
    const early = (await joinQueue(sale.id, 'early')).json().admission_token as string;
    const late = (await joinQueue(sale.id, 'late')).json().admission_token as string;
    const patch = (payload: Record<string, unknown>) =>
      t.app.inject({ method: 'PATCH', url: `/v1/sales/${sale.id}`, headers: t.auth({ 'idempotency-key': key('patch') }), payload });
    const opensAt = new Date(Date.now() + 3_600_000);
    assert.equal((await patch({ opens_at: opensAt.toISOString() })).statusCode, 200);
    const notOpen = await hold('early', early);
    assertError(notOpen, 409, 'sale_not_open');
    assert.equal(notOpen.json().error.message, `The sale opens at ${opensAt.toISOString()}.`);
    const reopened = await patch({
      opens_at: new Date(Date.now() - 7_200_000).toISOString(),
      closes_at: new Date(Date.now() - 3_600_000).toISOString(),
    });
    assert.equal(reopened.statusCode, 200, reopened.body);
    const closed = await hold('late', late);
    assertError(closed, 409, 'sale_closed');
    assert.equal(closed.json().error.message, 'The sale has closed.');
    const { rows } = await t.pool.query('select stock_available, stock_held from items where sale_id = $1', [sale.id]);
    assert.deepEqual(rows, [{ stock_available: 5, stock_held: 0 }], 'neither refusal took stock');
  });

  test('the line of a sale not yet open waits without a place to be admitted to', async () => {
    const later = await createSale({ opens_at: new Date(Date.now() + 3_600_000).toISOString() });
    const early = await joinQueue(later.id, 'early-bird');
    assert.equal(early.statusCode, 200, early.body);
    assert.deepEqual([early.json().status, early.json().admission_token], ['waiting', undefined]);
  });
});

describe('holds and orders: reads, refusals, isolation', () => {
  test('GET /v1/holds/:id shows the hold and its lines to its merchant only', async () => {
    const sale = await createSale();
    const held = await placeHold(sale, 'reader', 2);
    const read = await t.app.inject({ method: 'GET', url: `/v1/holds/${held.id}`, headers: publishable() });
    assert.equal(read.statusCode, 200, read.body);
    assert.deepEqual([read.json().id, read.json().status, read.json().amount], [held.id, 'active', 2400]);
    assert.deepEqual(read.json(), held);
    assertError(await t.app.inject({ method: 'GET', url: `/v1/holds/${held.id}`, headers: publishable(other) }), 404, 'resource_missing');
    assertError(
      await t.app.inject({ method: 'DELETE', url: `/v1/holds/${held.id}`, headers: publishable(other) }),
      404,
      'resource_missing',
    );
    // Nor can it turn the hold into an order of its own, or hold this sale's stock with a
    // token this sale's line handed out.
    const theirOrder = await t.app.inject({
      method: 'POST',
      url: '/v1/orders',
      headers: { ...bearer(other.secretKey), 'idempotency-key': key('order') },
      payload: { hold: held.id },
    });
    assertError(theirOrder, 404, 'resource_missing', 'hold');
    assert.equal(theirOrder.json().error.message, `No such hold: '${held.id}'`);
    const admitted = await joinQueue(sale.id, 'borrowed-token');
    const theirHold = await t.app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: { ...publishable(other), 'idempotency-key': key('hold') },
      payload: {
        sale: sale.id,
        buyer_reference: 'borrowed-token',
        admission_token: admitted.json().admission_token,
        items: [{ item: sale.items[0]?.id, quantity: 1 }],
      },
    });
    assertError(theirHold, 404, 'resource_missing', 'sale');
    const { rows } = await t.pool.query('select stock_available, stock_held from items where sale_id = $1', [sale.id]);
    assert.deepEqual(rows, [{ stock_available: 3, stock_held: 2 }], 'only the merchant’s own hold took stock');
    const still = await t.app.inject({ method: 'GET', url: `/v1/holds/${held.id}`, headers: publishable() });
    assert.equal(still.json().status, 'active');
  });

  test('releasing a hold twice is 409 hold_not_active; releasing one whose payment is in flight is 409 hold_payment_in_progress', async () => {
    const sale = await createSale();
    const released = await placeHold(sale, 'twice');
    const first = await t.app.inject({ method: 'DELETE', url: `/v1/holds/${released.id}`, headers: publishable() });
    assert.equal(first.json().status, 'released', first.body);
    const again = await t.app.inject({ method: 'DELETE', url: `/v1/holds/${released.id}`, headers: publishable() });
    assertError(again, 409, 'hold_not_active');
    assert.equal(again.json().error.message, 'This hold has already ended.');
    const ordered = await t.app.inject({
      method: 'POST',
      url: '/v1/orders',
      headers: t.auth({ 'idempotency-key': key('order') }),
      payload: { hold: released.id },
    });
    assertError(ordered, 409, 'hold_not_active', 'hold');
    assert.equal(ordered.json().error.message, 'This hold has ended; place a new hold.');

    const paying = await placeHold(sale, 'paying');
    const order = await placeOrder(paying.id);
    const pending = await timingOut.inject({
      method: 'POST',
      url: `/v1/payment_intents/${order.payment_intent}/confirm`,
      headers: t.auth({ 'idempotency-key': key('confirm') }),
      payload: { payment_method: 'pm_card_timeout' },
    });
    assert.equal(pending.json().status, 'processing', pending.body);
    const inFlight = await t.app.inject({ method: 'DELETE', url: `/v1/holds/${paying.id}`, headers: publishable() });
    assertError(inFlight, 409, 'hold_payment_in_progress');
    assert.equal(inFlight.json().error.message, "The hold's payment is in progress; it cannot be released now.");
  });

  test('GET /v1/orders lists this merchant’s orders (by sale too); another merchant sees none and cannot read one', async () => {
    const sale = await createSale();
    const otherSale = await createSale();
    const a = await placeOrder((await placeHold(sale, 'lister-a')).id);
    const b = await placeOrder((await placeHold(otherSale, 'lister-b')).id);
    const all = await t.app.inject({ method: 'GET', url: '/v1/orders?limit=2', headers: t.auth() });
    assert.equal(all.statusCode, 200, all.body);
    assert.deepEqual(
      all.json().data.map((order: { id: string; status: string }) => [order.id, order.status]),
      [
        [b.id, 'awaiting_payment'],
        [a.id, 'awaiting_payment'],
      ],
    );
    const bySale = await t.app.inject({ method: 'GET', url: `/v1/orders?sale=${sale.id}`, headers: t.auth() });
    assert.deepEqual(
      bySale.json().data.map((order: { id: string }) => order.id),
      [a.id],
    );
    assert.deepEqual((await t.app.inject({ method: 'GET', url: '/v1/orders', headers: bearer(other.secretKey) })).json().data, []);
    assertError(
      await t.app.inject({ method: 'GET', url: `/v1/orders/${a.id}`, headers: bearer(other.secretKey) }),
      404,
      'resource_missing',
    );
  });

  test('an unknown route is 404 route_not_found naming it', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/v1/nothing_here?x=1', headers: t.auth() });
    assert.equal(response.statusCode, 404);
    assert.deepEqual(response.json(), {
      error: { type: 'invalid_request_error', code: 'route_not_found', message: 'No route GET /v1/nothing_here; see /docs.' },
    });
  });
});
