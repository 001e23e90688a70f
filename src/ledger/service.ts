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

export async function balance(db: Queryable, merchantId: string) {
  const rows = await sql.selectBalances(db, merchantId);
  return {
    object: 'balance' as const,
    available: rows.map((row) => ({ currency: row.currency, amount: row.amount })),
  };
}
