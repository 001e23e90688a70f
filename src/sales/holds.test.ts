/**
 * Stock under concurrency: thousands of buyers racing for a few units never take more than
 * exists, and stock is conserved through holds, expiries, releases and payments.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { createTestDatabase, createTestMerchant } from '../../test/helpers.js';
import { createIntentInTransaction } from '../payments/service.js';
import { createPool, withTransaction } from '../platform/db/pool.js';
import { newId } from '../platform/ids.js';
import { convertPaidHold, endHold, expireHold, takeHold } from './holds.js';
import * as sql from './sql.js';

const { url } = await createTestDatabase();
// Thousands of transactions queue for 20 connections here, longer than a request would wait.
const pool = createPool({ connectionString: url, max: 20, statementTimeoutMs: 30_000, connectionTimeoutMs: 300_000 });
after(() => pool.end());
const merchant = await createTestMerchant(pool);

async function createSale(stock: number, perBuyerLimit = 4) {
  const sale = await sql.insertSale(pool, {
    merchant_id: merchant.id,
    id: newId('sale'),
    name: 'Release',
    currency: 'usd',
    opens_at: new Date(Date.now() - 60_000),
    closes_at: null,
    per_buyer_limit: perBuyerLimit,
    hold_seconds: 60,
    admit_per_second: 20,
    max_shoppers: 200,
    grace_seconds: 30,
  });
  const item = await sql.insertItem(pool, {
    merchant_id: merchant.id,
    id: newId('item'),
    sale_id: sale.id,
    name: 'Ticket',
    price: 5000,
    stock_total: stock,
  });
  return { sale, item };
}

async function stockOf(itemId: string) {
  const { rows } = await pool.query<sql.ItemRow>('select * from items where merchant_id = $1 and id = $2', [merchant.id, itemId]);
  return rows[0] as sql.ItemRow;
}

/**
 * What the completion command does for an order whose payment succeeded, for an active hold:
 * the order (made here if the hold has none) is marked paid and the hold's units sold. Holds
 * that already ended are left alone, as the real flow never pays them (their intent is canceled).
 */
async function pay(client: import('../platform/db/pool.js').Client, holdId: string) {
  const hold = await sql.selectHold(client, merchant.id, holdId, true);
  if (hold?.status !== 'active') return;
  let order = await sql.selectOrderByHold(client, merchant.id, holdId);
  if (!order) {
    const intent = await createIntentInTransaction(client, merchant.id, {
      amount: hold.amount,
      currency: hold.currency,
      description: 'test',
      metadata: {},
    });
    order = await sql.insertOrder(client, {
      merchant_id: merchant.id,
      id: newId('ord'),
      sale_id: hold.sale_id,
      hold_id: hold.id,
      payment_intent_id: intent.id,
      amount: hold.amount,
      currency: hold.currency,
    });
  }
  await convertPaidHold(client, { merchant_id: merchant.id, id: order.payment_intent_id });
  // A second completion of the same payment changes nothing.
  await convertPaidHold(client, { merchant_id: merchant.id, id: order.payment_intent_id });
}

describe('holds', () => {
  test('5,000 concurrent hold attempts on an item with stock 100 hold exactly 100', async () => {
    const { sale, item } = await createSale(100);
    const attempts = Array.from({ length: 5_000 }, (_, index) =>
      withTransaction(pool, (client) =>
        takeHold(client, {
          merchantId: merchant.id,
          saleId: sale.id,
          buyerReference: `buyer-${index}`,
          lines: [{ item_id: item.id, quantity: 1 }],
          now: new Date(),
        }),
      ),
    );
    const results = await Promise.all(attempts);
    const created = results.filter((result) => result.kind === 'created');
    const soldOut = results.filter((result) => result.kind === 'refused' && result.error.code === 'sold_out');
    assert.equal(created.length, 100);
    assert.equal(soldOut.length, 4_900);
    const stock = await stockOf(item.id);
    assert.equal(stock.stock_available, 0);
    assert.equal(stock.stock_held, 100);
    const { rows } = await pool.query(
      'select coalesce(sum(quantity), 0)::int as held from hold_lines where merchant_id = $1 and item_id = $2',
      [merchant.id, item.id],
    );
    assert.equal(rows[0].held, 100);
  });

  test('the per-buyer limit holds under concurrency', async () => {
    const { sale, item } = await createSale(100, 3);
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        withTransaction(pool, (client) =>
          takeHold(client, {
            merchantId: merchant.id,
            saleId: sale.id,
            buyerReference: 'greedy',
            lines: [{ item_id: item.id, quantity: 1 }],
            now: new Date(),
          }),
        ),
      ),
    );
    assert.equal(results.filter((result) => result.kind === 'created').length, 3);
    assert.ok(
      results
        .filter((result) => result.kind === 'refused')
        .every((result) => result.kind === 'refused' && result.error.code === 'buyer_limit_exceeded'),
    );
  });

  test('a sold-out line undoes the lines before it', async () => {
    const { sale, item } = await createSale(10);
    const scarce = await sql.insertItem(pool, {
      merchant_id: merchant.id,
      id: newId('item'),
      sale_id: sale.id,
      name: 'VIP',
      price: 9000,
      stock_total: 1,
    });
    const result = await withTransaction(pool, (client) =>
      takeHold(client, {
        merchantId: merchant.id,
        saleId: sale.id,
        buyerReference: 'both',
        lines: [
          { item_id: item.id, quantity: 2 },
          { item_id: scarce.id, quantity: 2 },
        ],
        now: new Date(),
      }),
    );
    assert.equal(result.kind, 'refused');
    assert.equal(result.kind === 'refused' && result.error.code, 'sold_out');
    assert.equal((await stockOf(item.id)).stock_available, 10);
    assert.equal((await stockOf(scarce.id)).stock_available, 1);
  });

  test('random hold, expire, release and pay sequences conserve stock', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({ op: fc.constantFrom('hold', 'expire', 'release', 'pay'), quantity: fc.integer({ min: 1, max: 3 }), pick: fc.nat() }),
          {
            maxLength: 25,
          },
        ),
        async (steps) => {
          const { sale, item } = await createSale(8, 100);
          const holds: string[] = [];
          for (const step of steps) {
            if (step.op === 'hold') {
              const result = await withTransaction(pool, (client) =>
                takeHold(client, {
                  merchantId: merchant.id,
                  saleId: sale.id,
                  buyerReference: 'b',
                  lines: [{ item_id: item.id, quantity: step.quantity }],
                  now: new Date(),
                }),
              );
              if (result.kind === 'created') holds.push(result.hold.id);
            } else if (holds.length > 0) {
              const holdId = holds[step.pick % holds.length] as string;
              if (step.op === 'expire') {
                await expireHold(pool, { merchant_id: merchant.id, hold_id: holdId }, new Date(Date.now() + 3_600_000));
              } else if (step.op === 'release') {
                await withTransaction(pool, (client) => endHold(client, merchant.id, holdId, 'released'));
              } else {
                await withTransaction(pool, (client) => pay(client, holdId));
              }
            }
            const stock = await stockOf(item.id);
            const { rows } = await pool.query(
              `select coalesce(sum(l.quantity), 0)::int as held from hold_lines l join holds h on h.merchant_id = l.merchant_id and h.id = l.hold_id
               where l.merchant_id = $1 and l.item_id = $2 and h.status = 'active'`,
              [merchant.id, item.id],
            );
            const sold = await pool.query(
              `select coalesce(sum(l.quantity), 0)::int as sold from hold_lines l join holds h on h.merchant_id = l.merchant_id and h.id = l.hold_id
               where l.merchant_id = $1 and l.item_id = $2 and h.status = 'converted'`,
              [merchant.id, item.id],
            );
            assert.equal(stock.stock_available + stock.stock_held + stock.stock_sold, 8);
            assert.equal(stock.stock_held, rows[0].held);
            assert.equal(stock.stock_sold, sold.rows[0].sold);
            assert.ok(stock.stock_available >= 0);
          }
        },
      ),
      { numRuns: 25 },
    );
  });
});
