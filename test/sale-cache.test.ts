/**
 * One cache of sales: the public sale page and the waiting room read the same copy, so a change
 * to a sale reaches the line at once, however long the cache may otherwise keep it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { key, setupTestContext } from './helpers.js';

// Far longer than the test: only an invalidation can make the line see a change in time.
const t = await setupTestContext({ config: { cacheStaleMs: 120_000 } });
const publishable = () => ({ authorization: `Bearer ${t.merchant.publishableKey}` });

describe('the waiting room reads sales through the one sale cache', () => {
  test('a sale paused with max_shoppers 0 admits as soon as a PATCH raises it', async () => {
    const created = await t.app.inject({
      method: 'POST',
      url: '/v1/sales',
      headers: t.auth({ 'idempotency-key': key('sale') }),
      payload: {
        name: 'Paused at first',
        currency: 'usd',
        opens_at: new Date(Date.now() - 60_000).toISOString(),
        max_shoppers: 0,
        admit_per_second: 1000,
        items: [{ name: 'Ticket', price: 1000, stock: 5 }],
      },
    });
    assert.equal(created.statusCode, 200, created.body);
    const saleId = created.json().id as string;

    // Both readers fill the cache with the paused sale.
    const page = await t.app.inject({ method: 'GET', url: `/v1/sales/${saleId}`, headers: publishable() });
    assert.equal(page.json().waiting_room.max_shoppers, 0);
    const untouched = { total: 5, available: 5, held: 0, sold: 0 };
    assert.deepEqual(page.json().items[0].stock, untouched);
    const joined = await t.app.inject({
      method: 'POST',
      url: `/v1/sales/${saleId}/queue`,
      headers: publishable(),
      payload: { buyer_reference: 'buyer-1' },
    });
    assert.equal(joined.statusCode, 200, joined.body);
    assert.equal(joined.json().status, 'waiting', 'a paused line admits no one');

    const patched = await t.app.inject({
      method: 'PATCH',
      url: `/v1/sales/${saleId}`,
      headers: t.auth({ 'idempotency-key': key('patch') }),
      payload: { max_shoppers: 10 },
    });
    assert.equal(patched.statusCode, 200, patched.body);

    const polled = await t.app.inject({
      method: 'GET',
      url: `/v1/sales/${saleId}/queue/${joined.json().ticket}`,
      headers: publishable(),
    });
    assert.equal(polled.statusCode, 200, polled.body);
    assert.equal(polled.json().status, 'admitted', 'the line saw the change the sale page sees');
    const pageAfter = await t.app.inject({ method: 'GET', url: `/v1/sales/${saleId}`, headers: publishable() });
    assert.equal(pageAfter.json().waiting_room.max_shoppers, 10);
    // Admitted, not yet holding: the stock is as it was.
    assert.deepEqual(pageAfter.json().items[0].stock, untouched);
  });
});
