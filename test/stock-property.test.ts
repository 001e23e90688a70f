/**
 * A property over two API nodes (two apps, each with its own pool and hold batcher, one
 * database): random concurrent holds of several quantities, releases, expiries, orders (some
 * confirming in the same request), payments, declines and replays. At every observation:
 * available + held + sold = total, sold = the lines of paid orders, nobody over the per-buyer
 * limit, every replay identical, and the audit clean.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { buyerDigest, deriveAdmissionKeys, signAdmissionToken } from '../src/admission/token.js';
import { audit } from '../src/audit/service.js';
import { createPool } from '../src/platform/db/pool.js';
import type { HttpServer } from '../src/platform/http/server.js';
import { newId } from '../src/platform/ids.js';
import { expireHold } from '../src/sales/holds.js';
import { buildTestApp, createSaleThroughApi, createTestDatabase, key, setupTestContext, TEST_ADMISSION_SECRET } from './helpers.js';

const database = await createTestDatabase();
const t = await setupTestContext({ pool: database.pool });
const secondPool = createPool({ connectionString: database.url, max: 10, statementTimeoutMs: 30_000 });
after(() => secondPool.end());
const nodeB = (await buildTestApp(secondPool, t.sim.url)).app;
const nodes: HttpServer[] = [t.app, nodeB];
const keys = deriveAdmissionKeys(TEST_ADMISSION_SECRET);
const STOCK = 8;
const LIMIT = 3;
const BUYERS = ['ann', 'bob', 'cy'];

type Step =
  | { op: 'hold'; node: number; buyer: number; quantity: number }
  | { op: 'replay'; pick: number }
  | { op: 'release' | 'expire'; pick: number }
  | { op: 'pay'; pick: number; card: 'pm_card_visa' | 'pm_card_declined'; oneRequest: boolean };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    op: fc.constant('hold' as const),
    node: fc.nat(1),
    buyer: fc.nat(BUYERS.length - 1),
    quantity: fc.integer({ min: 1, max: 3 }),
  }),
  fc.record({ op: fc.constant('replay' as const), pick: fc.nat() }),
  fc.record({ op: fc.constantFrom('release' as const, 'expire' as const), pick: fc.nat() }),
  fc.record({
    op: fc.constant('pay' as const),
    pick: fc.nat(),
    card: fc.constantFrom('pm_card_visa' as const, 'pm_card_declined' as const),
    // An order that confirms (confirm: true) or an order, then a confirm.
    oneRequest: fc.boolean(),
  }),
);

async function createSale() {
  return createSaleThroughApi(t, {
    name: 'Property',
    opens_at: new Date(Date.now() - 60_000).toISOString(),
    per_buyer_limit: LIMIT,
    items: [{ name: 'Seat', price: 1_000, stock: STOCK }],
  });
}

interface Sent {
  node: number;
  key: string;
  payload: Record<string, unknown>;
  status: number;
  body: string;
}

describe('stock across two nodes', () => {
  test('random concurrent holds, releases, expiries, orders, payments, declines and replays keep stock exact', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(step, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 8 }), async (rounds) => {
        const sale = await createSale();
        const sent: Sent[] = [];
        const holds = () => sent.filter((s) => s.status === 200).map((s) => JSON.parse(s.body).id as string);
        const run = async (s: Step) => {
          if (s.op === 'hold') {
            const buyer = BUYERS[s.buyer] as string;
            const token = signAdmissionToken(keys, {
              saleId: sale.id,
              ticketId: newId('qt'),
              buyerDigest: buyerDigest(keys, buyer),
              expiresAtMs: Date.now() + 300_000,
            });
            const payload = {
              sale: sale.id,
              buyer_reference: buyer,
              admission_token: token,
              items: [{ item: sale.itemId, quantity: s.quantity }],
            };
            const idempotencyKey = key('hold');
            const response = await (nodes[s.node] as HttpServer).inject({
              method: 'POST',
              url: '/v1/holds',
              headers: { authorization: `Bearer ${t.merchant.publishableKey}`, 'idempotency-key': idempotencyKey },
              payload,
            });
            assert.ok([200, 409].includes(response.statusCode), response.body);
            sent.push({ node: s.node, key: idempotencyKey, payload, status: response.statusCode, body: response.body });
            return;
          }
          if (s.op === 'replay') {
            const original = sent[s.pick % Math.max(1, sent.length)];
            if (!original) return;
            const response = await (nodes[1 - original.node] as HttpServer).inject({
              method: 'POST',
              url: '/v1/holds',
              headers: { authorization: `Bearer ${t.merchant.publishableKey}`, 'idempotency-key': original.key },
              payload: original.payload,
            });
            assert.equal(response.statusCode, original.status);
            assert.deepEqual(response.json(), JSON.parse(original.body), 'a replay answers what the first request answered');
            return;
          }
          const holdId = holds()[s.pick % Math.max(1, holds().length)];
          if (!holdId) return;
          if (s.op === 'release') {
            await t.app.inject({
              method: 'DELETE',
              url: `/v1/holds/${holdId}`,
              headers: { authorization: `Bearer ${t.merchant.publishableKey}` },
            });
          } else if (s.op === 'expire') {
            await expireHold(t.pool, { merchant_id: t.merchant.id, hold_id: holdId }, new Date(Date.now() + 3_600_000));
          } else if (s.op === 'pay') {
            const order = await nodeB.inject({
              method: 'POST',
              url: '/v1/orders',
              headers: t.auth({ 'idempotency-key': key('order') }),
              payload: s.oneRequest ? { hold: holdId, payment_method: s.card, confirm: true } : { hold: holdId },
            });
            if (order.statusCode !== 200 || s.oneRequest) return;
            await t.app.inject({
              method: 'POST',
              url: `/v1/payment_intents/${order.json().payment_intent}/confirm`,
              headers: t.auth({ 'idempotency-key': key('confirm') }),
              payload: { payment_method: s.card },
            });
          }
        };
        for (const round of rounds) {
          await Promise.all(round.map(run));
          const { rows } = await t.pool.query('select stock_total, stock_available, stock_held, stock_sold from items where id = $1', [
            sale.itemId,
          ]);
          const stock = rows[0];
          assert.equal(stock.stock_available + stock.stock_held + stock.stock_sold, stock.stock_total);
          assert.ok(stock.stock_available >= 0);
          const paid = await t.pool.query(
            `select coalesce(sum(l.quantity), 0)::int as sold from orders o join hold_lines l on l.merchant_id = o.merchant_id and l.hold_id = o.hold_id
             where o.sale_id = $1 and o.status = 'paid'`,
            [sale.id],
          );
          assert.equal(stock.stock_sold, paid.rows[0].sold, 'sold = the lines of paid orders');
          const perBuyer = await t.pool.query(
            `select h.buyer_reference, sum(l.quantity)::int as units from holds h join hold_lines l on l.merchant_id = h.merchant_id and l.hold_id = h.id
             where h.sale_id = $1 and h.status in ('active', 'converted') group by h.buyer_reference`,
            [sale.id],
          );
          for (const row of perBuyer.rows) assert.ok(row.units <= LIMIT, `${row.buyer_reference} holds ${row.units}`);
          assert.deepEqual((await audit(t.pool)).violations, []);
        }
      }),
      { numRuns: 10 },
    );
  });
});
