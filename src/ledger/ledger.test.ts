import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createTestDatabase } from '../../test/helpers.js';
import { type Client, withTransaction } from '../platform/db/pool.js';
import { newId } from '../platform/ids.js';
import { entriesFor, isBalanced } from './domain.js';
import * as ledger from './service.js';

const { pool } = await createTestDatabase();

const merchant = 'mch_ledgertest';

/** Inserts a ledger transaction and the given entries by hand, as a buggy writer might. */
async function insertRaw(
  client: Client,
  entries: Array<{ account?: string; amount: number; currency?: string }>,
  tx: { id?: string; kind?: string; paymentIntentId?: string } = {},
) {
  const id = tx.id ?? newId('ltx');
  await client.query(
    `insert into ledger_transactions (merchant_id, id, currency, kind, payment_intent_id) values ($1, $2, 'usd', $3, $4)`,
    [merchant, id, tx.kind ?? 'capture', tx.paymentIntentId ?? newId('pi')],
  );
  let entryNo = 0;
  for (const entry of entries) {
    entryNo += 1;
    await client.query(
      `insert into ledger_entries (merchant_id, transaction_id, entry_no, account, currency, amount) values ($1, $2, $3, $4, $5, $6)`,
      [
        merchant,
        id,
        entryNo,
        entry.account ?? (entryNo === 1 ? 'provider_clearing' : 'merchant_balance'),
        entry.currency ?? 'usd',
        entry.amount,
      ],
    );
  }
  return id;
}

/** Runs fn in a transaction and returns the error COMMIT (or fn) raised, if any. */
async function commitError(fn: (client: Client) => Promise<unknown>): Promise<(Error & { code?: string }) | undefined> {
  try {
    await withTransaction(pool, fn);
    return undefined;
  } catch (error) {
    return error as Error & { code?: string };
  }
}

async function transactionExists(id: string): Promise<boolean> {
  const { rowCount } = await pool.query('select 1 from ledger_transactions where merchant_id = $1 and id = $2', [merchant, id]);
  return rowCount === 1;
}

describe('ledger domain', () => {
  test('a capture debits provider_clearing and credits merchant_balance', () => {
    assert.deepEqual(entriesFor('capture', 1250), [
      { account: 'provider_clearing', amount: 1250 },
      { account: 'merchant_balance', amount: -1250 },
    ]);
  });

  test('a refund is the mirror image of a capture', () => {
    assert.deepEqual(entriesFor('refund', 300), [
      { account: 'provider_clearing', amount: -300 },
      { account: 'merchant_balance', amount: 300 },
    ]);
  });

  test('the entries of every posting balance', () => {
    for (const kind of ['capture', 'refund'] as const) {
      for (const amount of [1, 99, 1_000_000, Number.MAX_SAFE_INTEGER])
        assert.ok(isBalanced(entriesFor(kind, amount)), `${kind} ${amount}`);
    }
  });

  test('isBalanced refuses a non-zero sum, a single entry and no entries', () => {
    assert.equal(
      isBalanced([
        { account: 'provider_clearing', amount: 100 },
        { account: 'merchant_balance', amount: -99 },
      ]),
      false,
    );
    assert.equal(isBalanced([{ account: 'provider_clearing', amount: 0 }]), false);
    assert.equal(isBalanced([]), false);
    assert.equal(
      isBalanced([
        { account: 'provider_clearing', amount: 70 },
        { account: 'provider_clearing', amount: 30 },
        { account: 'merchant_balance', amount: -100 },
      ]),
      true,
    );
  });
});

describe('ledger in the database', () => {
  test('a balanced transaction commits (the control for the refusals below)', async () => {
    let id = '';
    const error = await commitError(async (client) => {
      id = await insertRaw(client, [{ amount: 500 }, { amount: -500 }]);
    });
    assert.equal(error, undefined);
    assert.ok(await transactionExists(id));
  });

  test('COMMIT of an unbalanced transaction fails, and nothing of it remains', async () => {
    let id = '';
    const error = await commitError(async (client) => {
      id = await insertRaw(client, [{ amount: 500 }, { amount: -499 }]);
    });
    assert.equal(error?.code, '23514');
    assert.match(error?.message ?? '', /unbalanced \(sum 1, 2 entries/);
    assert.equal(await transactionExists(id), false);
  });

  test('the check waits for COMMIT: entries may be inserted one by one', async () => {
    // The first entry alone is unbalanced; the insert itself must not fail.
    const error = await commitError(async (client) => {
      const id = await insertRaw(client, [{ amount: 42 }]);
      await client.query(
        `insert into ledger_entries (merchant_id, transaction_id, entry_no, account, currency, amount)
         values ($1, $2, 2, 'merchant_balance', 'usd', -42)`,
        [merchant, id],
      );
    });
    assert.equal(error, undefined);
  });

  test('a single-entry transaction is refused at COMMIT', async () => {
    const error = await commitError((client) => insertRaw(client, [{ amount: 500 }]));
    assert.equal(error?.code, '23514');
    assert.match(error?.message ?? '', /1 entries/);
  });

  test('a transaction mixing currencies is refused even when the amounts cancel out', async () => {
    const error = await commitError((client) => insertRaw(client, [{ amount: 500 }, { amount: -500, currency: 'eur' }]));
    assert.equal(error?.code, '23514');
    assert.match(error?.message ?? '', /2 currencies/);
  });

  test('an entry appended later to a balanced transaction is refused', async () => {
    const id = await withTransaction(pool, (client) => insertRaw(client, [{ amount: 10 }, { amount: -10 }]));
    const error = await commitError((client) =>
      client.query(
        `insert into ledger_entries (merchant_id, transaction_id, entry_no, account, currency, amount)
         values ($1, $2, 3, 'merchant_balance', 'usd', 5)`,
        [merchant, id],
      ),
    );
    assert.equal(error?.code, '23514');
  });

  test('ledger entries are append-only: UPDATE and DELETE are refused', async () => {
    const id = await withTransaction(pool, (client) => insertRaw(client, [{ amount: 77 }, { amount: -77 }]));
    const update = await commitError((client) =>
      client.query('update ledger_entries set amount = amount * 2 where merchant_id = $1 and transaction_id = $2', [merchant, id]),
    );
    assert.equal(update?.code, '42501');
    assert.match(update?.message ?? '', /append-only/);
    const remove = await commitError((client) =>
      client.query('delete from ledger_entries where merchant_id = $1 and transaction_id = $2', [merchant, id]),
    );
    assert.equal(remove?.code, '42501');
    const { rows } = await pool.query(
      'select amount from ledger_entries where merchant_id = $1 and transaction_id = $2 order by entry_no',
      [merchant, id],
    );
    assert.deepEqual(
      rows.map((row) => row.amount),
      [77, -77],
    );
  });

  test('a ledger transaction with no entries is refused at COMMIT', async () => {
    let id = '';
    const error = await commitError(async (client) => {
      id = await insertRaw(client, []);
    });
    assert.equal(error?.code, '23514');
    assert.match(error?.message ?? '', /has no entries/);
    assert.equal(await transactionExists(id), false);
  });

  test('ledger transactions are append-only too, and TRUNCATE of either table is refused', async () => {
    const id = await withTransaction(pool, (client) => insertRaw(client, [{ amount: 31 }, { amount: -31 }]));
    const update = await commitError((client) =>
      client.query(`update ledger_transactions set kind = 'refund' where merchant_id = $1 and id = $2`, [merchant, id]),
    );
    assert.equal(update?.code, '42501');
    assert.match(update?.message ?? '', /ledger_transactions is append-only: UPDATE is refused/);
    for (const table of ['ledger_entries', 'ledger_transactions cascade', 'ledger_entries, ledger_transactions']) {
      const truncate = await commitError((client) => client.query(`truncate ${table}`));
      assert.equal(truncate?.code, '42501', table);
      assert.match(truncate?.message ?? '', /is append-only: TRUNCATE is refused/, table);
    }
    assert.equal(await transactionExists(id), true);
  });

  test('a second capture posting for the same payment is refused by the unique index', async () => {
    const paymentIntentId = newId('pi');
    await withTransaction(pool, (client) => insertRaw(client, [{ amount: 900 }, { amount: -900 }], { paymentIntentId }));
    const error = await commitError((client) => insertRaw(client, [{ amount: 900 }, { amount: -900 }], { paymentIntentId }));
    assert.equal(error?.code, '23505');
    assert.match(error?.message ?? '', /ledger_one_capture_per_payment/);
  });

  test('ledger.post is idempotent per payment and per refund, and the balance counts each once', async () => {
    const merchantId = `mch_${newId('x')}`;
    const paymentIntentId = newId('pi');
    const refundId = newId('re');
    const capture = { merchantId, kind: 'capture' as const, currency: 'eur', amount: 2_000, paymentIntentId };
    const refund = { merchantId, kind: 'refund' as const, currency: 'eur', amount: 700, paymentIntentId, refundId };
    const results = await withTransaction(pool, async (client) => [
      await ledger.post(client, capture),
      await ledger.post(client, capture),
      await ledger.post(client, refund),
      await ledger.post(client, refund),
    ]);
    assert.deepEqual(results, [true, false, true, false]);
    // A retry in a later transaction is ignored as well.
    assert.equal(await withTransaction(pool, (client) => ledger.post(client, { ...capture, amount: 1 })), false);
    assert.deepEqual(await ledger.balance(pool, merchantId), { object: 'balance', available: [{ currency: 'eur', amount: 1_300 }] });
  });

  test('ledger.post refuses amounts that are not positive integers', async () => {
    for (const amount of [0, -5, 1.5, Number.NaN]) {
      await assert.rejects(
        withTransaction(pool, (client) =>
          ledger.post(client, { merchantId: merchant, kind: 'capture', currency: 'usd', amount, paymentIntentId: newId('pi') }),
        ),
        /positive integers/,
        String(amount),
      );
    }
  });
});
