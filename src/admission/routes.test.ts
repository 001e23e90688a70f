import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createTestMerchant, setupTestContext } from '../../test/helpers.js';

const t = await setupTestContext();

interface SaleOptions {
  maxShoppers?: number;
  opensAt?: Date;
  closesAt?: Date;
}

/** A real sale, created through the API, with one item of 10 units. */
async function openSale(options: SaleOptions = {}): Promise<{ id: string; itemId: string }> {
  const response = await t.app.inject({
    method: 'POST',
    url: '/v1/sales',
    headers: t.auth(),
    payload: {
      name: 'Release',
      currency: 'usd',
      opens_at: (options.opensAt ?? new Date(Date.now() - 60_000)).toISOString(),
      closes_at: options.closesAt ? options.closesAt.toISOString() : null,
      max_shoppers: options.maxShoppers ?? 10,
      admit_per_second: 1,
      items: [{ name: 'Ticket', price: 1000, stock: 10 }],
    },
  });
  assert.equal(response.statusCode, 200, response.body);
  return { id: response.json().id, itemId: response.json().items[0].id };
}

const publishable = () => ({ authorization: `Bearer ${t.merchant.publishableKey}` });

function join(saleId: string, body: unknown, headers: Record<string, string> = publishable()) {
  return t.app.inject({ method: 'POST', url: `/v1/sales/${saleId}/queue`, headers, payload: body as object });
}

function poll(saleId: string, ticket: string, headers: Record<string, string> = publishable()) {
  return t.app.inject({ method: 'GET', url: `/v1/sales/${saleId}/queue/${ticket}`, headers });
}

/** A ticket without its wait estimate, which moves with the clock between two reads. */
const withoutWait = (body: unknown) => ({ ...(body as Record<string, unknown>), estimated_wait_seconds: undefined });

describe('waiting room routes', () => {
  test('a publishable key joins and polls; Retry-After says when to poll again', async () => {
    const sale = await openSale({ maxShoppers: 1 });
    const first = await join(sale.id, { buyer_reference: 'cust_1' });
    assert.equal(first.statusCode, 200);
    assert.equal(first.json().status, 'admitted');
    assert.match(first.json().admission_token, /^adm_/);
    assert.equal(first.headers['retry-after'], undefined, 'an admitted buyer has nothing to poll for');
    assert.equal(first.headers['cache-control'], 'no-store');

    const second = await join(sale.id, { buyer_reference: 'cust_2' });
    assert.deepEqual(second.json(), {
      object: 'queue_ticket',
      ticket: second.json().ticket,
      sale: sale.id,
      status: 'waiting',
      position: 1,
      estimated_wait_seconds: 1,
      // Whole seconds: the one shopper slot is taken, and at one a second position 1 is due in a second.
      retry_after_ms: 1000,
    });
    assert.equal(second.headers['retry-after'], '1');
    const again = await join(sale.id, { buyer_reference: 'cust_2' });
    assert.equal(again.json().ticket, second.json().ticket, 'the same buyer gets the same ticket');

    const polled = await poll(sale.id, second.json().ticket);
    assert.equal(polled.statusCode, 200);
    assert.deepEqual(withoutWait(polled.json()), withoutWait(second.json()));
    assert.ok(Number(polled.headers['retry-after']) >= 1);

    // The token admits its buyer to a hold, once.
    const hold = (token: string) =>
      t.app.inject({
        method: 'POST',
        url: '/v1/holds',
        headers: publishable(),
        payload: { sale: sale.id, buyer_reference: 'cust_1', admission_token: token, items: [{ item: sale.itemId, quantity: 1 }] },
      });
    const held = await hold(first.json().admission_token);
    assert.equal(held.statusCode, 200, held.body);
    assert.equal(held.json().status, 'active');
    const replayed = await hold(first.json().admission_token);
    assert.equal(replayed.statusCode, 403);
    assert.equal(replayed.json().error.code, 'admission_invalid');
  });

  test('a secret key is accepted too: a merchant server may queue on a buyer’s behalf', async () => {
    const sale = await openSale({ maxShoppers: 0 });
    const joined = await join(sale.id, { buyer_reference: 'server-side' }, t.auth());
    assert.equal(joined.statusCode, 200, joined.body);
    // Position 1 of a sale admitting one a second: due in a second, so told in whole seconds.
    const waiting = {
      object: 'queue_ticket',
      ticket: joined.json().ticket,
      sale: sale.id,
      status: 'waiting',
      position: 1,
      retry_after_ms: 1000,
    };
    assert.match(joined.json().ticket, /^qt_/);
    assert.deepEqual(withoutWait(joined.json()), withoutWait(waiting));
    const polled = await poll(sale.id, joined.json().ticket, t.auth());
    assert.equal(polled.statusCode, 200, polled.body);
    assert.deepEqual(withoutWait(polled.json()), withoutWait(waiting));
  });

  test('other routes still refuse a publishable key, and every route needs a key', async () => {
    const intents = await t.app.inject({ method: 'GET', url: '/v1/payment_intents', headers: publishable() });
    assert.equal(intents.statusCode, 403);
    assert.equal(intents.json().error.code, 'secret_key_required');
    const sale = await openSale();
    const anonymous = await join(sale.id, { buyer_reference: 'x' }, {});
    assert.equal(anonymous.statusCode, 401);
    assert.equal(anonymous.json().error.code, 'api_key_missing');
  });

  test('bad input is a 400 naming the parameter', async () => {
    const sale = await openSale();
    const cases: Array<[body: unknown, code: string]> = [
      [{}, 'parameter_missing'],
      [undefined, 'parameter_missing'],
      [{ buyer_reference: '' }, 'parameter_invalid'],
      [{ buyer_reference: 'x'.repeat(201) }, 'parameter_invalid'],
      [{ buyer_reference: 42 }, 'parameter_invalid'],
      [{ buyer_reference: 'ok', priority: 'me first' }, 'parameter_unknown'],
    ];
    for (const [body, code] of cases) {
      const response = await join(sale.id, body);
      assert.equal(response.statusCode, 400, JSON.stringify(body));
      assert.equal(response.json().error.code, code, JSON.stringify(body));
      assert.equal(response.json().error.param, code === 'parameter_unknown' ? 'priority' : 'buyer_reference');
    }
  });

  test('unknown sales, other merchants’ sales and unknown tickets are 404', async () => {
    const other = await createTestMerchant(t.pool);
    const sale = await openSale();
    const joined = await join(sale.id, { buyer_reference: 'b' });
    const responses = [
      [await join('sale_missing', { buyer_reference: 'b' }), 'id'],
      [await join(sale.id, { buyer_reference: 'b' }, { authorization: `Bearer ${other.publishableKey}` }), 'id'],
      [await poll(sale.id, joined.json().ticket, { authorization: `Bearer ${other.publishableKey}` }), 'id'],
      [await join('bad{id}', { buyer_reference: 'b' }), 'id'],
      [await poll(sale.id, 'qt_0000000000000000000000'), 'ticket'],
      [await poll(sale.id, 'not-a-ticket'), 'ticket'],
    ] as const;
    for (const [response, param] of responses) {
      assert.equal(response.statusCode, 404, response.body);
      assert.equal(response.json().error.code, 'resource_missing');
      assert.equal(response.json().error.param, param);
    }
  });

  test('before opening: no position yet, and Retry-After points at the opening', async () => {
    const sale = await openSale({ opensAt: new Date(Date.now() + 120_000) });
    const joined = await join(sale.id, { buyer_reference: 'early' });
    assert.deepEqual([joined.json().status, joined.json().position], ['waiting', null]);
    assert.ok(joined.json().estimated_wait_seconds >= 119);
    assert.ok(Number(joined.headers['retry-after']) >= 119);
  });

  test('the routes are in the OpenAPI document', async () => {
    const doc = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    assert.ok(doc.paths['/v1/sales/{id}/queue']?.post);
    assert.ok(doc.paths['/v1/sales/{id}/queue/{ticket}']?.get);
  });

  test('a closed sale answers closed, with no ticket and no Retry-After', async () => {
    const sale = await openSale({ closesAt: new Date(Date.now() - 1) });
    const joined = await join(sale.id, { buyer_reference: 'late' });
    assert.equal(joined.statusCode, 200);
    assert.deepEqual([joined.json().status, joined.json().ticket], ['closed', null]);
    assert.equal(joined.headers['retry-after'], undefined);
  });
});
