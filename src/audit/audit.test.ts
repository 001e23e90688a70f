import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createTestDatabase, key, setupTestContext } from '../../test/helpers.js';
import type { Client, Queryable } from '../platform/db/pool.js';
import { withTransaction } from '../platform/db/pool.js';
import { newId } from '../platform/ids.js';
import { takeHold } from '../sales/holds.js';
import { audit, formatReport } from './service.js';
import { CHECKS } from './sql.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const database = await createTestDatabase();
const t = await setupTestContext({ pool: database.pool });
const merchantId = t.merchant.id;

async function post(url: string, body: unknown) {
  const response = await t.app.inject({ method: 'POST', url, headers: t.auth({ 'idempotency-key': key() }), payload: body as object });
  assert.ok(response.statusCode < 300, `${url}: ${response.statusCode} ${response.body}`);
  return response.json();
}

// A little real traffic, so the checks run over rows the application itself wrote.
const refunded = await post('/v1/payment_intents', { amount: 1000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true });
const refund = await post('/v1/refunds', { payment_intent: refunded.id, amount: 400 });
const authorized = await post('/v1/payment_intents', {
  amount: 1000,
  currency: 'eur',
  capture_method: 'manual',
  payment_method: 'pm_card_visa',
  confirm: true,
});
const partlyCaptured = await post(`/v1/payment_intents/${authorized.id}/capture`, { amount_to_capture: 600 });
const abandoned = await post('/v1/payment_intents', { amount: 500, currency: 'usd' });
await post(`/v1/payment_intents/${abandoned.id}/cancel`, { cancellation_reason: 'abandoned' });
assert.equal(partlyCaptured.amount_received, 600);

// A sale with one hold paid for and one still active: the stock checks' rows.
const sale = await post('/v1/sales', {
  name: 'Audit release',
  currency: 'usd',
  opens_at: new Date(Date.now() - 60_000).toISOString(),
  items: [{ name: 'Seat', price: 2_500, stock: 10 }],
});
const saleItem = sale.items[0].id as string;
const placeHold = (buyer: string) =>
  withTransaction(t.pool, (client) =>
    takeHold(client, { merchantId, saleId: sale.id, buyerReference: buyer, lines: [{ item_id: saleItem, quantity: 2 }], now: new Date() }),
  );
const paidHold = await placeHold('audit-paid');
const activeHold = await placeHold('audit-active');
assert.ok(paidHold.kind === 'created' && activeHold.kind === 'created');
const paidOrder = await post('/v1/orders', { hold: paidHold.hold.id });
await post(`/v1/payment_intents/${paidOrder.payment_intent}/confirm`, { payment_method: 'pm_card_visa' });
assert.equal(refund.status, 'succeeded');

/** The violations audit finds after `corrupt` runs, seen inside its transaction and rolled back after. */
async function violationsAfter(corrupt: (client: Client) => Promise<unknown>): Promise<string[]> {
  const client = await t.pool.connect();
  try {
    await client.query('begin');
    await corrupt(client);
    const report = await audit(client);
    return report.violations.map((v) => `${v.check} ${v.object_id}`).sort();
  } finally {
    await client.query('rollback');
    client.release();
  }
}

const tripped = new Set<string>();
function expectViolations(found: string[], expected: string[]) {
  assert.deepEqual(found, [...expected].sort());
  for (const violation of found) tripped.add(violation.split(' ')[0] as string);
}

const setIntent = (client: Queryable, id: string, assignment: string) =>
  client.query(`update payment_intents set ${assignment} where merchant_id = $1 and id = $2`, [merchantId, id]);

const insertRefund = (client: Client, intentId: string, amount: number, status: string) =>
  client
    .query(
      `insert into refunds (merchant_id, id, payment_intent_id, amount, currency, status, created_at, updated_at)
       values ($1, $2, $3, $4, 'usd', $5, now(), now()) returning id`,
      [merchantId, newId('re'), intentId, amount, status],
    )
    .then(({ rows }) => rows[0].id as string);

describe('audit checks', () => {
  test('the application wrote a clean database: every check passes', async () => {
    const report = await audit(t.pool);
    assert.deepEqual(report.violations, []);
    assert.deepEqual(report.checks, Object.keys(CHECKS));
    assert.equal(formatReport(report), `audit: ${report.checks.length} checks passed, no violations`);
  });

  test('amount_received bumped without a capture posting', async () => {
    const found = await violationsAfter((c) => setIntent(c, partlyCaptured.id, 'amount_received = amount_received + 100'));
    expectViolations(found, [`captured_differs_from_ledger ${partlyCaptured.id}`]);
  });

  test('a ledger transaction without entries, and one whose entries do not sum to zero', async () => {
    let empty = '';
    let lopsided = '';
    const found = await violationsAfter(async (client) => {
      empty = newId('ltx');
      lopsided = newId('ltx');
      await client.query(
        `insert into ledger_transactions (merchant_id, id, currency, kind, payment_intent_id, refund_id)
         values ($1, $2, 'usd', 'refund', $3, 're_nonexistent'), ($1, $4, 'usd', 'capture', 'pi_nonexistent', null)`,
        [merchantId, empty, refunded.id, lopsided],
      );
      // Seen before COMMIT, where the deferred balance trigger would refuse it.
      await client.query(
        `insert into ledger_entries (merchant_id, transaction_id, entry_no, account, currency, amount)
         values ($1, $2, 1, 'provider_clearing', 'usd', 100), ($1, $2, 2, 'merchant_balance', 'usd', -99)`,
        [merchantId, lopsided],
      );
    });
    expectViolations(found, [`ledger_transaction_unbalanced ${empty}`, `ledger_transaction_unbalanced ${lopsided}`]);
  });

  test('a refund marked succeeded that was never posted', async () => {
    let ghost = '';
    const found = await violationsAfter(async (client) => {
      ghost = await insertRefund(client, refunded.id, 100, 'succeeded');
      await setIntent(client, refunded.id, 'amount_refunded = amount_refunded + 100');
    });
    expectViolations(found, [`refunded_differs_from_ledger ${ghost}`]);
  });

  test('a posted refund set back to pending', async () => {
    const found = await violationsAfter((c) => c.query(`update refunds set status = 'pending' where id = $1`, [refund.id]));
    expectViolations(found, [`refunded_differs_from_ledger ${refund.id}`]);
  });

  test('amount_refunded that does not match the refunds', async () => {
    const found = await violationsAfter((c) => setIntent(c, refunded.id, 'amount_refunded = amount_refunded + 1'));
    expectViolations(found, [`refunded_differs_from_refunds ${refunded.id}`]);
  });

  test('a refund row that exceeds what was captured', async () => {
    // 600 is left to refund; a pending 700 exceeds it. The schema keeps amount_refunded within
    // amount_received, so the intent's amount_refunded cannot follow and that check trips too.
    const found = await violationsAfter((c) => insertRefund(c, refunded.id, 700, 'pending'));
    expectViolations(found, [`refunded_beyond_captured ${refunded.id}`, `refunded_differs_from_refunds ${refunded.id}`]);
  });

  test('status succeeded with nothing received, and a canceled intent still capturable', async () => {
    expectViolations(await violationsAfter((c) => setIntent(c, abandoned.id, `status = 'succeeded'`)), [
      `status_inconsistent_with_amounts ${abandoned.id}`,
    ]);
    expectViolations(await violationsAfter((c) => setIntent(c, abandoned.id, 'amount_capturable = 500')), [
      `status_inconsistent_with_amounts ${abandoned.id}`,
    ]);
  });

  test('a refunded payment moved out of succeeded', async () => {
    const found = await violationsAfter((c) => setIntent(c, refunded.id, `status = 'requires_capture'`));
    expectViolations(found, [`refund_on_unsucceeded_payment ${refund.id}`, `status_inconsistent_with_amounts ${refunded.id}`]);
  });

  test('a unit allocated without a hold, a paid hold counted as held, a live hold returned', async () => {
    const taken = await violationsAfter((c) =>
      c.query('update sale_items set stock_allocated = stock_allocated + 1 where id = $1', [saleItem]),
    );
    expectViolations(taken, [`stock_differs_from_holds ${saleItem}`]);
    const returned = await violationsAfter((c) =>
      c.query(
        'insert into stock_returns (merchant_id, hold_id, item_id, quantity) select merchant_id, hold_id, item_id, quantity from hold_lines where hold_id = $1',
        [activeHold.kind === 'created' ? activeHold.hold.id : ''],
      ),
    );
    expectViolations(returned, [
      `stock_differs_from_holds ${saleItem}`,
      `stock_returned_by_live_hold ${activeHold.kind === 'created' ? activeHold.hold.id : ''}`,
    ]);
    const unsold = await violationsAfter((c) =>
      c.query(`update holds set status = 'active' where merchant_id = $1 and id = $2`, [merchantId, paidOrder.hold]),
    );
    // Allocated units are held or sold alike: the counter still agrees, the order does not.
    expectViolations(unsold, [`paid_order_without_sold_hold ${paidOrder.id}`]);
  });

  test('every check was tripped by one of the corruptions above', () => {
    assert.deepEqual([...tripped].sort(), Object.keys(CHECKS).sort());
  });
});

function runCli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', ...args],
      { cwd: ROOT, env: { PATH: process.env.PATH, DATABASE_URL: database.url } },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stdout, stderr }),
    );
  });
}

describe('floodgate audit', () => {
  test('exits 0 on a clean database', async () => {
    const result = await runCli('audit');
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), `audit: ${Object.keys(CHECKS).length} checks passed, no violations`);
  });

  test('exits 1 and lists each violation readably', async () => {
    await setIntent(t.pool, partlyCaptured.id, 'amount_received = amount_received + 100');
    await t.pool.query(`update refunds set status = 'pending' where id = $1`, [refund.id]);

    const result = await runCli('audit');
    assert.equal(result.code, 1, result.stderr);
    const lines = result.stdout.trim().split('\n');
    assert.equal(lines[0], 'audit: 2 violation(s)');
    assert.deepEqual(lines.slice(1).sort(), [
      `  captured_differs_from_ledger  merchant ${merchantId}  ${partlyCaptured.id}: amount_received 700 but capture postings 600`,
      `  refunded_differs_from_ledger  merchant ${merchantId}  ${refund.id}: refund pending of 400 but refund postings 400`,
    ]);

    const json = await runCli('audit', '--json');
    assert.equal(json.code, 1, json.stderr);
    const report = JSON.parse(json.stdout);
    assert.deepEqual(report.violations.map((v: { check: string }) => v.check).sort(), [
      'captured_differs_from_ledger',
      'refunded_differs_from_ledger',
    ]);
  });
});
