/**
 * The reports against the primary (no replica configured here; test/faults/replica-reports.test.ts
 * runs them on a real streaming replica): what they count, what they refuse, and that each
 * says where it was read.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createTestMerchant, key, setupTestContext } from '../../test/helpers.js';
import { saleFlow } from '../../test/sale-flow.js';
import { csvField, reportRange } from './domain.js';

const t = await setupTestContext();
const flow = saleFlow(t.app, t.merchant);
const today = new Date().toISOString().slice(0, 10);

async function get(url: string, merchantKey = t.merchant.secretKey) {
  return t.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${merchantKey}` } });
}

describe('payments report', () => {
  test('totals by day, status and currency, from the primary when no replica is configured', async () => {
    const merchant = await createTestMerchant(t.pool);
    const auth = { authorization: `Bearer ${merchant.secretKey}` };
    const pay = async (amount: number, currency: string, paymentMethod: string) =>
      t.app.inject({
        method: 'POST',
        url: '/v1/payment_intents',
        headers: { ...auth, 'idempotency-key': key('pi') },
        payload: { amount, currency, payment_method: paymentMethod, confirm: true },
      });
    await pay(1000, 'usd', 'pm_card_visa');
    await pay(2500, 'usd', 'pm_card_visa');
    await pay(700, 'eur', 'pm_card_visa');
    await pay(300, 'usd', 'pm_card_declined');

    const response = await get(`/v1/reports/payments?from=${today}&to=${today}`, merchant.secretKey);
    assert.equal(response.statusCode, 200, response.body);
    const body = response.json();
    assert.deepEqual(body.data, [
      { day: today, status: 'requires_payment_method', currency: 'usd', count: 1, amount: 300, amount_received: 0, amount_refunded: 0 },
      { day: today, status: 'succeeded', currency: 'eur', count: 1, amount: 700, amount_received: 700, amount_refunded: 0 },
      { day: today, status: 'succeeded', currency: 'usd', count: 2, amount: 3500, amount_received: 3500, amount_refunded: 0 },
    ]);
    assert.equal(body.source.served_by, 'primary');
    assert.equal(body.source.fallback_reason, 'no_replica_configured');
    assert.equal(body.source.lag_ms, 0);
    assert.equal(response.headers['floodgate-read-source'], 'primary');
    assert.equal(response.headers['floodgate-read-fallback'], 'no_replica_configured');

    // Another merchant's report does not see these payments.
    const other = await get(`/v1/reports/payments?from=${today}&to=${today}`);
    assert.ok(other.json().data.every((row: { currency: string }) => row.currency !== 'eur'));
  });

  test('a bad range is a 400 naming the parameter', async () => {
    const cases: Array<[string, string]> = [
      ['?from=2026-02-30', 'from'],
      ['?to=yesterday', 'to'],
      ['?from=2026-05-02&to=2026-05-01', 'from'],
      ['?from=2024-01-01&to=2026-01-01', 'from'],
      ['?since=2026-01-01', 'since'],
    ];
    for (const [query, param] of cases) {
      const response = await get(`/v1/reports/payments${query}`);
      assert.equal(response.statusCode, 400, `${query}: ${response.body}`);
      assert.equal(response.json().error.code.startsWith('parameter_'), true, response.body);
      if (param !== 'since') assert.equal(response.json().error.param, param, response.body);
    }
  });
});

describe('sale report and export', () => {
  test('sold, held and revenue per item, orders by status, and the CSV export', async () => {
    const sale = await flow.createSale([
      { name: 'Ticket', price: 5000, stock: 10 },
      { name: 'Shirt', price: 2000, stock: 5 },
    ]);
    const [ticket, shirt] = sale.itemIds as [string, string];
    const first = await flow.buy(sale.id, 'buyer-1', [{ item: ticket, quantity: 2 }]);
    await flow.buy(sale.id, 'buyer-2', [
      { item: ticket, quantity: 1 },
      { item: shirt, quantity: 3 },
    ]);
    // Ordered but not paid: held, counted as awaiting payment, no revenue.
    await flow.buy(sale.id, '=cmd|evil', [{ item: shirt, quantity: 1 }], false);

    const response = await get(`/v1/reports/sales/${sale.id}`);
    assert.equal(response.statusCode, 200, response.body);
    const report = response.json();
    assert.deepEqual(
      report.items.map((item: Record<string, unknown>) => [item.name, item.stock, item.units_paid, item.revenue]),
      [
        ['Ticket', { total: 10, available: 7, held: 0, sold: 3 }, 3, 15_000],
        ['Shirt', { total: 5, available: 1, held: 1, sold: 3 }, 3, 6_000],
      ],
    );
    assert.equal(report.revenue, 21_000);
    assert.deepEqual(report.orders_by_status, [
      { status: 'awaiting_payment', count: 1, amount: 2000 },
      { status: 'paid', count: 2, amount: 21_000 },
    ]);
    assert.equal(report.source.served_by, 'primary');

    const csv = await get(`/v1/reports/sales/${sale.id}/orders.csv`);
    assert.equal(csv.statusCode, 200, csv.body);
    assert.match(String(csv.headers['content-type']), /^text\/csv/);
    assert.equal(csv.headers['floodgate-read-source'], 'primary');
    const lines = csv.body.trimEnd().split('\r\n');
    assert.equal(lines[0], 'order,created,status,amount,currency,payment_intent,hold,buyer_reference,paid_at');
    assert.equal(lines.length, 4);
    assert.ok(lines[1]?.startsWith(`${first.orderId},`));
    assert.match(lines[1] ?? '', /,paid,10000,usd,pi_\w+,hold_\w+,buyer-1,\d{4}-/);
    // A buyer reference that a spreadsheet would run as a formula is defused.
    assert.match(lines[3] ?? '', /,awaiting_payment,2000,usd,pi_\w+,hold_\w+,'=cmd\|evil,$/);
  });

  test("an unknown sale, or another merchant's, is a 404 for the report and the export", async () => {
    const sale = await flow.createSale([{ name: 'Ticket', price: 100, stock: 1 }]);
    const other = await createTestMerchant(t.pool);
    for (const url of [`/v1/reports/sales/${sale.id}`, `/v1/reports/sales/${sale.id}/orders.csv`]) {
      const response = await get(url, other.secretKey);
      assert.equal(response.statusCode, 404, response.body);
      assert.equal(response.json().error.code, 'resource_missing');
    }
    // A malformed id is answered like an unknown one, as every retrieve does.
    const malformed = await get('/v1/reports/sales/not-a-sale');
    assert.equal(malformed.statusCode, 404, malformed.body);
  });

  test('a publishable key may not read reports', async () => {
    const response = await get('/v1/reports/payments', t.merchant.publishableKey);
    assert.equal(response.statusCode, 403);
  });

  test('an export larger than one page streams every order once, in order', async () => {
    const sale = await flow.createSale([{ name: 'Sticker', price: 100, stock: 2_000 }]);
    // Orders straight in SQL: 1,200 buyers through the API would take longer than the point needs.
    await t.pool.query(
      `with h as (
         insert into holds (merchant_id, id, sale_id, buyer_reference, status, amount, currency, expires_at)
         select $1, 'hold_' || lpad(n::text, 22, '0'), $2, 'bulk-' || n, 'converted', 100, 'usd', now() + interval '1 hour'
         from generate_series(1, 1200) n returning id),
       p as (
         insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, created_at, updated_at)
         select $1, 'pi_' || lpad(n::text, 22, '0'), 100, 'usd', 'succeeded', 'automatic', now(), now()
         from generate_series(1, 1200) n returning id)
       insert into orders (merchant_id, id, sale_id, hold_id, payment_intent_id, amount, currency, status, paid_at)
       select $1, 'ord_' || lpad(n::text, 22, '0'), $2, 'hold_' || lpad(n::text, 22, '0'), 'pi_' || lpad(n::text, 22, '0'),
              100, 'usd', 'paid', now()
       from generate_series(1, 1200) n`,
      [t.merchant.id, sale.id],
    );
    const csv = await get(`/v1/reports/sales/${sale.id}/orders.csv`);
    assert.equal(csv.statusCode, 200);
    const ids = csv.body
      .trimEnd()
      .split('\r\n')
      .slice(1)
      .map((line) => line.split(',')[0]);
    assert.equal(ids.length, 1200);
    assert.equal(new Set(ids).size, 1200);
    assert.deepEqual(ids, [...ids].sort());
  });
});

describe('report rules', () => {
  test('the default range is the 30 days up to today; dates must be real', () => {
    const now = new Date('2026-03-01T12:00:00Z');
    assert.deepEqual(reportRange({}, now), {
      ok: true,
      from: '2026-01-31',
      to: '2026-03-01',
      fromAt: new Date('2026-01-31T00:00:00Z'),
      toBefore: new Date('2026-03-02T00:00:00Z'),
    });
    assert.equal(reportRange({ from: '2026-02-29' }, now).ok, false);
    assert.equal(reportRange({ from: '2024-02-29', to: '2025-02-28' }, now).ok, true);
  });

  test('CSV fields are quoted when needed and never start a formula', () => {
    assert.equal(csvField('plain'), 'plain');
    assert.equal(csvField('a,b'), '"a,b"');
    assert.equal(csvField('say "hi"'), '"say ""hi"""');
    assert.equal(csvField('+1'), "'+1");
    assert.equal(csvField('@SUM(A1)'), "'@SUM(A1)");
    assert.equal(csvField(-5), '-5');
    assert.equal(csvField(null), '');
  });
});
