import type { Queryable } from '../platform/db/pool.js';
import type { LedgerEntry, PostingKind } from './domain.js';

/**
 * Writes a ledger transaction and its entries in one statement. Returns false when the
 * posting already exists (a capture is posted once per payment, a refund once per refund).
 */
export async function insertPosting(
  db: Queryable,
  posting: {
    merchantId: string;
    transactionId: string;
    currency: string;
    kind: PostingKind;
    paymentIntentId: string;
    refundId: string | null;
    entries: readonly LedgerEntry[];
  },
): Promise<boolean> {
  const { rows } = await db.query({
    name: 'ledger_insert_posting',
    text: `with tx as (
             insert into ledger_transactions (merchant_id, id, currency, kind, payment_intent_id, refund_id)
             values ($1, $2, $3, $4, $5, $6)
             on conflict do nothing
             returning merchant_id, id, currency)
           insert into ledger_entries (merchant_id, transaction_id, entry_no, account, currency, amount)
           select tx.merchant_id, tx.id, e.ordinality, e.account, tx.currency, e.amount
           from tx, unnest($7::text[], $8::bigint[]) with ordinality as e(account, amount)
           returning 1`,
    values: [
      posting.merchantId,
      posting.transactionId,
      posting.currency,
      posting.kind,
      posting.paymentIntentId,
      posting.refundId,
      posting.entries.map((entry) => entry.account),
      posting.entries.map((entry) => entry.amount),
    ],
  });
  return rows.length > 0;
}

export interface BalanceRow {
  currency: string;
  amount: number;
}

/** The merchant's balance per currency: the credit balance of merchant_balance. */
export async function selectBalances(db: Queryable, merchantId: string): Promise<BalanceRow[]> {
  const { rows } = await db.query<BalanceRow>(
    `select currency, (-sum(amount))::bigint as amount from ledger_entries
     where merchant_id = $1 and account = 'merchant_balance'
     group by currency order by currency`,
    [merchantId],
  );
  return rows;
}
