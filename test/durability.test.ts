/**
 * The durability contract (README, "Durability of holds"): a batch of holds commits without
 * waiting for its WAL flush, and an order only ever stands on a durable hold, because the
 * order's own commit is synchronous and flushes every WAL record before it — its hold's
 * included (the order's transaction reads the hold, so the hold committed first).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { key, setupTestContext } from './helpers.js';

const t = await setupTestContext();

async function lsn(name: 'insert' | 'flush'): Promise<bigint> {
  const { rows } = await t.pool.query(`select (pg_current_wal_${name}_lsn() - '0/0'::pg_lsn)::text as at`);
  return BigInt(rows[0].at);
}

describe('durability of holds and orders', () => {
  test('holds commit asynchronously; the order commit flushes the WAL that holds its hold', async () => {
    const { rows: settings } = await t.pool.query(`select current_setting('synchronous_commit') as value`);
    assert.equal(settings[0].value, 'on', 'orders and payments commit with the server default: synchronous');
    assert.equal(t.config.holdSynchronousCommit, false, 'holds commit asynchronously by default');

    const sale = await t.app.inject({
      method: 'POST',
      url: '/v1/sales',
      headers: t.auth({ 'idempotency-key': key('sale') }),
      payload: {
        name: 'Durable',
        currency: 'usd',
        opens_at: new Date(Date.now() - 60_000).toISOString(),
        max_shoppers: 10,
        admit_per_second: 100,
        items: [{ name: 'Seat', price: 1_000, stock: 5 }],
      },
    });
    const publishable = { authorization: `Bearer ${t.merchant.publishableKey}` };
    const joined = await t.app.inject({
      method: 'POST',
      url: `/v1/sales/${sale.json().id}/queue`,
      headers: publishable,
      payload: { buyer_reference: 'durable-buyer' },
    });
    const hold = await t.app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: { ...publishable, 'idempotency-key': key('hold') },
      payload: {
        sale: sale.json().id,
        buyer_reference: 'durable-buyer',
        admission_token: joined.json().admission_token,
        items: [{ item: sale.json().items[0].id, quantity: 1 }],
      },
    });
    assert.equal(hold.statusCode, 200, hold.body);
    // Everything the hold wrote, its commit record included, lies before this point of the WAL.
    const afterHold = await lsn('insert');
    const order = await t.app.inject({
      method: 'POST',
      url: '/v1/orders',
      headers: t.auth({ 'idempotency-key': key('order') }),
      payload: { hold: hold.json().id },
    });
    assert.equal(order.statusCode, 200, order.body);
    // The order's synchronous commit waited for the flush past its own record, so past the hold's.
    assert.ok((await lsn('flush')) >= afterHold, 'the WAL is flushed past the hold once its order is answered');
  });
});
