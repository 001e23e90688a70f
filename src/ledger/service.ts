import assert from 'node:assert/strict';
import type { Queryable } from '../platform/db/pool.js';
import { newId } from '../platform/ids.js';
import { entriesFor, isBalanced, type PostingKind } from './domain.js';
import * as sql from './sql.js';

/**
 * Posts a capture or refund. Call it inside the transaction that changes the payment's state,
 * so money movement and state change commit together.
 */
export async function post(
  db: Queryable,
  posting: { merchantId: string; kind: PostingKind; currency: string; amount: number; paymentIntentId: string; refundId?: string },
): Promise<boolean> {
  assert.ok(Number.isSafeInteger(posting.amount) && posting.amount > 0, 'ledger amounts are positive integers');
  const entries = entriesFor(posting.kind, posting.amount);
  assert.ok(isBalanced(entries));
  return sql.insertPosting(db, {
    merchantId: posting.merchantId,
    transactionId: newId('ltx'),
    currency: posting.currency,
    kind: posting.kind,
    paymentIntentId: posting.paymentIntentId,
    refundId: posting.refundId ?? null,
    entries,
  });
}

/** SQL expressions for a batch's postings of one kind, one per row of `from`. */
export interface PostingColumns {
  merchantId: string;
  transactionId: string;
  currency: string;
  paymentIntentId: string;
  amount: string;
  from: string;
  /** Placeholders for the two arrays of postingShape(kind): accounts (text[]) and signs (int[]). */
  accounts: string;
  signs: string;
}

/**
 * The shape of a posting of `kind` for one minor unit: its accounts and signs. A batch statement
 * multiplies the signs by each posting's amount, so the double-entry rules stay in domain.ts.
 */
export function postingShape(kind: PostingKind): { kind: PostingKind; accounts: string[]; signs: number[] } {
  const entries = entriesFor(kind, 1);
  assert.ok(isBalanced(entries));
  return { kind, accounts: entries.map((entry) => entry.account), signs: entries.map((entry) => entry.amount) };
}

/**
 * CTEs named `ledger_tx` and `ledger_entry` posting a batch of captures (post for many, in the
 * caller's statement). As post's, a payment already posted is skipped, and the database's
 * deferred checks refuse an unbalanced transaction or one without entries at the commit.
 * Amounts must be positive integers: the caller checks them with isPostableAmount.
 */
export function capturePostingsCte(c: PostingColumns): string {
  return `ledger_tx as (
             insert into ledger_transactions (merchant_id, id, currency, kind, payment_intent_id, refund_id)
             select ${c.merchantId}, ${c.transactionId}, ${c.currency}, 'capture', ${c.paymentIntentId}, null
             from ${c.from}
             on conflict do nothing
             returning merchant_id, id, currency),
           ledger_entry as (
             insert into ledger_entries (merchant_id, transaction_id, entry_no, account, currency, amount)
             select t.merchant_id, t.id, e.n, e.account, t.currency, e.sign * ${c.amount}
             from ledger_tx t join ${c.from} on ${c.transactionId} = t.id and ${c.merchantId} = t.merchant_id
               cross join unnest(${c.accounts}::text[], ${c.signs}::int[]) with ordinality as e(account, sign, n)
             returning 1)`;
}

export function isPostableAmount(amount: number): boolean {
  return Number.isSafeInteger(amount) && amount > 0;
}

export async function balance(db: Queryable, merchantId: string) {
  const rows = await sql.selectBalances(db, merchantId);
  return {
    object: 'balance' as const,
    available: rows.map((row) => ({ currency: row.currency, amount: row.amount })),
  };
}
