/**
 * Double-entry rules. Signed amounts: a debit is positive, a credit negative, and every
 * transaction sums to zero. Two accounts per merchant and currency:
 *
 *   provider_clearing  (asset)     money the provider holds for us
 *   merchant_balance   (liability) what we owe the merchant; its balance is credit-normal
 *
 * A capture debits provider_clearing and credits merchant_balance; a refund reverses that.
 */
export type LedgerAccount = 'provider_clearing' | 'merchant_balance';
export type PostingKind = 'capture' | 'refund';

export interface LedgerEntry {
  account: LedgerAccount;
  amount: number;
}

export function entriesFor(kind: PostingKind, amount: number): LedgerEntry[] {
  const sign = kind === 'capture' ? 1 : -1;
  return [
    { account: 'provider_clearing', amount: sign * amount },
    { account: 'merchant_balance', amount: -sign * amount },
  ];
}

export function isBalanced(entries: readonly LedgerEntry[]): boolean {
  return entries.length >= 2 && entries.reduce((sum, entry) => sum + entry.amount, 0) === 0;
}
