/**
 * Pure rules of sales, holds and orders. Stock of an item is four counters that always add up:
 * available + held + sold = total. A hold moves units available → held; its expiry or release
 * moves them back; payment moves them held → sold. Nothing else changes stock.
 */

import { isCurrency, maxAmount } from '../money/currency.js';

// Four tickets per buyer is the common default of ticketing systems; a sale may set 1–100.
export const PER_BUYER_LIMIT_DEFAULT = 4;
// Ten minutes to pay is what buyers are used to; a sale may set 30 s to 1 h.
export const HOLD_SECONDS_DEFAULT = 600;
// A sale's items are listed in one response and held in one transaction: keep both small.
export const ITEMS_PER_SALE_MAX = 50;
export const LINES_PER_HOLD_MAX = 10;
// Far above any real release, far below the integer column's range.
export const STOCK_MAX = 10_000_000;

// Waiting-room defaults: 20 admissions a second and 200 shoppers at once suit one API node's
// checkout; buyers who stop polling for 30 s lose their place (browsers poll every ~10 s).
export const ADMIT_PER_SECOND_DEFAULT = 20;
export const MAX_SHOPPERS_DEFAULT = 200;
export const GRACE_SECONDS_DEFAULT = 30;

export type HoldStatus = 'active' | 'released' | 'expired' | 'converted';
export type OrderStatus = 'awaiting_payment' | 'paid' | 'expired';

export interface HoldLine {
  item_id: string;
  quantity: number;
}

/** Lines merged per item and sorted by item id: rows are always locked in the same order. */
export function normalizeLines(lines: readonly HoldLine[]): HoldLine[] {
  const byItem = new Map<string, number>();
  for (const line of lines) byItem.set(line.item_id, (byItem.get(line.item_id) ?? 0) + line.quantity);
  return [...byItem.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([item_id, quantity]) => ({ item_id, quantity }));
}

export function totalQuantity(lines: readonly HoldLine[]): number {
  return lines.reduce((sum, line) => sum + line.quantity, 0);
}

export type SalePhase = 'scheduled' | 'open' | 'closed';

export function salePhase(sale: { opens_at: Date; closes_at: Date | null }, now: Date): SalePhase {
  if (now < sale.opens_at) return 'scheduled';
  if (sale.closes_at && now >= sale.closes_at) return 'closed';
  return 'open';
}

/**
 * A hold becomes one payment, so it may not cost more than one payment may be: the reason the
 * hold is refused, or null when its amount fits. Both the single and the batched path ask here.
 */
export function holdAmountTooLarge(currency: string, amount: number): string | null {
  const largest = isCurrency(currency) ? maxAmount(currency) : 0;
  if (amount <= largest) return null;
  return `These items cost ${amount} ${currency} minor units together; one payment is at most ${largest}. Hold fewer units.`;
}
