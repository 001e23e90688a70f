/**
 * Stock under concurrency: thousands of buyers racing for a few units never take more than
 * exists, and stock is conserved through holds, expiries, releases and payments. The property
 * keeps a model of the stock and of every hold, and checks each step's answer against it;
 * payments go through the real order and confirm calls (the completion command sells the
 * stock), against the simulator.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { insertOpenSale } from '../../test/fixtures/sales.js';
import { createTestDatabase, key, setupTestContext } from '../../test/helpers.js';
import { assertProperty } from '../../test/property.js';
import { maxAmount } from '../money/currency.js';
import { createPool, withTransaction } from '../platform/db/pool.js';
import { newId } from '../platform/ids.js';
import { endHold, expireHold, takeHold } from './holds.js';
import * as sql from './sql.js';

const { url } = await createTestDatabase();
// Thousands of transactions queue for 20 connections here, longer than a request would wait.
const pool = createPool({ connectionString: url, max: 20, statementTimeoutMs: 30_000, connectionTimeoutMs: 300_000 });
after(() => pool.end());
// The app on the same database, for paying holds the way buyers do (order, then confirm).
const t = await setupTestContext({ pool });
const merchant = t.merchant;

async function createSale(stock: number, perBuyerLimit = 4, price = 5000) {
  return insertOpenSale(pool, merchant.id, { stock, perBuyerLimit, price });
}

async function stockOf(itemId: string) {
  const { rows } = await pool.query<sql.ItemRow>('select * from items where merchant_id = $1 and id = $2', [merchant.id, itemId]);
  return rows[0] as sql.ItemRow;
}

describe('holds', () => {
  test('a hold that would cost more than one payment may is refused, and takes nothing', async () => {
    // The largest price a sale accepts, and a buyer limit that lets one buyer take 100 units.
    const { sale, item } = await createSale(100, 100, maxAmount('usd'));
    const take = (quantity: number) =>
      withTransaction(pool, (client) =>
        takeHold(client, {
          merchantId: merchant.id,
          saleId: sale.id,
          buyerReference: `buyer_${quantity}`,
          lines: [{ item_id: item.id, quantity }],
          now: new Date(),
        }),
      );
    const refused = await take(100);
    assert.equal(refused.kind, 'refused');
    assert.equal(refused.kind === 'refused' && refused.error.code, 'amount_too_large');
    assert.equal(refused.kind === 'refused' && refused.error.param, 'items');
    assert.equal((await stockOf(item.id)).stock_available, 100);
    const one = await take(1);
    assert.equal(one.kind, 'created');
    assert.equal(one.kind === 'created' && one.hold.amount, maxAmount('usd'));
  });

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
    // Both lines fit: the hold takes them both.
    const fits = await withTransaction(pool, (client) =>
      takeHold(client, {
        merchantId: merchant.id,
        saleId: sale.id,
        buyerReference: 'first',
        lines: [
          { item_id: item.id, quantity: 1 },
          { item_id: scarce.id, quantity: 1 },
        ],
        now: new Date(),
      }),
    );
    assert.equal(fits.kind, 'created');
    assert.equal(fits.kind === 'created' && fits.hold.amount, 5000 + 9000);
    assert.deepEqual(
      fits.kind === 'created' && fits.lines.map((line) => [line.item_id, line.quantity]).sort(),
      [
        [item.id, 1],
        [scarce.id, 1],
      ].sort(),
    );
    assert.equal((await stockOf(item.id)).stock_available, 9);
    assert.equal((await stockOf(scarce.id)).stock_available, 0);
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
    assert.equal((await stockOf(item.id)).stock_available, 9);
    assert.equal((await stockOf(scarce.id)).stock_available, 0);
  });

  test('random hold, expire, release and pay sequences answer as the model says and conserve stock', async () => {
    const step = fc.record({
      op: fc.constantFrom('hold', 'expire', 'release', 'pay'),
      quantity: fc.integer({ min: 1, max: 3 }),
      pick: fc.nat(),
    });
    await assertProperty('holds', fc.asyncProperty(fc.array(step, { maxLength: 25 }), runHoldSteps), PROPERTY_RUNS);
  });
});

const PROPERTY_STOCK = 8;
// Each run pays through the API; 25 runs of up to 25 steps stay within seconds. FC_RUNS overrides.
const PROPERTY_RUNS = 25;
type HoldStatus = 'active' | 'expired' | 'released' | 'converted';

/** One run: every step's answer is the model's, and after every step the database agrees with it. */
async function runHoldSteps(steps: Array<{ op: 'hold' | 'expire' | 'release' | 'pay'; quantity: number; pick: number }>) {
  const { sale, item } = await createSale(PROPERTY_STOCK, 100);
  const model = { available: PROPERTY_STOCK, held: 0, sold: 0 };
  const holds: Array<{ id: string; quantity: number; status: HoldStatus; ordered: boolean }> = [];
  const later = new Date(Date.now() + 3_600_000);
  for (const [index, step] of steps.entries()) {
    const where = `step ${index} ${JSON.stringify(step)}`;
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
      if (step.quantity <= model.available) {
        assert.equal(result.kind, 'created', where);
        if (result.kind !== 'created') return;
        assert.deepEqual([result.hold.status, result.hold.amount], ['active', 5000 * step.quantity], where);
        holds.push({ id: result.hold.id, quantity: step.quantity, status: 'active', ordered: false });
        model.available -= step.quantity;
        model.held += step.quantity;
      } else {
        assert.equal(result.kind === 'refused' && result.error.code, 'sold_out', where);
      }
    } else if (holds.length > 0) {
      const hold = holds[step.pick % holds.length] as (typeof holds)[number];
      const active = hold.status === 'active';
      if (step.op === 'expire' || step.op === 'release') {
        const result =
          step.op === 'expire'
            ? await expireHold(pool, { merchant_id: merchant.id, hold_id: hold.id }, later)
            : await withTransaction(pool, (client) => endHold(client, merchant.id, hold.id, 'released'));
        assert.equal(result, active ? 'released' : 'not_active', where);
        if (active && step.op === 'release') {
          const { rows } = await pool.query('select 1 from graphile_worker.jobs where key = $1', [`expire_hold:${hold.id}`]);
          assert.equal(rows.length, 0, `${where}: a released hold's expiry job is removed`);
        }
        if (active) {
          hold.status = step.op === 'expire' ? 'expired' : 'released';
          model.available += hold.quantity;
          model.held -= hold.quantity;
        }
      } else {
        await payThroughApi(hold, where);
        if (active) {
          hold.status = 'converted';
          model.held -= hold.quantity;
          model.sold += hold.quantity;
        }
        if (active) hold.ordered = true;
      }
    }
    const stock = await stockOf(item.id);
    assert.deepEqual(
      { available: stock.stock_available, held: stock.stock_held, sold: stock.stock_sold },
      model,
      `${where}: the item's stock is the model's`,
    );
    const { rows } = await pool.query<{ id: string; status: string }>(
      'select id, status from holds where merchant_id = $1 and sale_id = $2',
      [merchant.id, sale.id],
    );
    assert.deepEqual(
      new Map(rows.map((row) => [row.id, row.status])),
      new Map(holds.map((hold) => [hold.id, hold.status])),
      `${where}: every hold's status is the model's`,
    );
  }

  /** Places the hold's order and confirms its payment, as a buyer would; checks both answers. */
  async function payThroughApi(hold: (typeof holds)[number], where: string) {
    const placed = await t.app.inject({
      method: 'POST',
      url: '/v1/orders',
      headers: t.auth({ 'idempotency-key': key('order') }),
      payload: { hold: hold.id },
    });
    if (hold.status !== 'active' && !hold.ordered) {
      assert.equal(placed.statusCode, 409, `${where}: ${placed.body}`);
      assert.equal(placed.json().error.code, 'hold_not_active', where);
      return;
    }
    assert.equal(placed.statusCode, 200, `${where}: ${placed.body}`);
    const expectedOrder = hold.status === 'active' ? 'awaiting_payment' : hold.status === 'converted' ? 'paid' : 'expired';
    assert.equal(placed.json().status, expectedOrder, where);
    const confirmed = await t.app.inject({
      method: 'POST',
      url: `/v1/payment_intents/${placed.json().payment_intent}/confirm`,
      headers: t.auth({ 'idempotency-key': key('confirm') }),
      payload: { payment_method: 'pm_card_visa' },
    });
    if (hold.status === 'active') {
      assert.equal(confirmed.statusCode, 200, `${where}: ${confirmed.body}`);
      assert.equal(confirmed.json().status, 'succeeded', where);
    } else {
      // Paid already, or canceled when the hold ended: nothing more can be charged.
      assert.equal(confirmed.statusCode, 409, `${where}: ${confirmed.body}`);
      assert.equal(confirmed.json().error.code, 'payment_intent_unexpected_state', where);
    }
  }
}
