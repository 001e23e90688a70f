/**
 * Why a hold is refused, decided once for both ways of taking one: the single path
 * (holds.ts) and the batched path (hold-batches.ts). Each rule reads what its path has already
 * loaded and answers the refusal, or undefined when the request passes it. The answers (codes,
 * messages, the parameter named) are part of the API: both paths must give the same ones.
 */
import { ApiError } from '../platform/http/errors.js';
import { type HoldLine, holdAmountTooLarge, salePhase, totalQuantity } from './domain.js';

interface SaleForHold {
  opens_at: Date;
  closes_at: Date | null;
  currency: string;
  per_buyer_limit: number;
}

interface ItemForHold {
  id: string;
  name: string;
  price: number | string;
}

/** The sale is missing, not open yet, or closed. */
export function saleRefusal<S extends SaleForHold>(saleId: string, sale: S | undefined, now: Date): ApiError | undefined {
  if (!sale) return new ApiError('resource_missing', `No such sale: '${saleId}'`, 'sale');
  const phase = salePhase(sale, now);
  if (phase === 'scheduled') return new ApiError('sale_not_open', `The sale opens at ${sale.opens_at.toISOString()}.`);
  if (phase === 'closed') return new ApiError('sale_closed', 'The sale has closed.');
  return undefined;
}

export function admissionRefused(reason: string): ApiError {
  return new ApiError('admission_invalid', `Admission refused: ${reason}.`, 'admission_token');
}

export const TOKEN_ALREADY_USED = 'the admission token was already used';

/**
 * A line names an item the sale does not have, or asks for more than `unitsLeft` says is left;
 * then the amount of the whole hold, which becomes one payment, must fit one.
 */
export function linesRefusal<I extends ItemForHold>(
  currency: string,
  lines: HoldLine[],
  items: Map<string, I>,
  unitsLeft: (item: I) => number,
): ApiError | undefined {
  for (const line of lines) {
    const item = items.get(line.item_id);
    if (!item) return new ApiError('parameter_invalid', `No item '${line.item_id}' in this sale.`, 'items');
    if (unitsLeft(item) < line.quantity) return soldOut(item, line);
  }
  const tooLarge = holdAmountTooLarge(currency, holdAmount(lines, items));
  return tooLarge ? new ApiError('amount_too_large', tooLarge, 'items') : undefined;
}

/** What the hold's lines cost at the items' prices. */
export function holdAmount<I extends ItemForHold>(lines: HoldLine[], items: Map<string, I>): number {
  return lines.reduce((sum, line) => sum + Number(items.get(line.item_id)?.price ?? 0) * line.quantity, 0);
}

export function soldOut(item: { id: string; name: string }, line: HoldLine): ApiError {
  return new ApiError('sold_out', `Item '${item.id}' (${item.name}) has fewer than ${line.quantity} left.`, 'items');
}

/** The buyer already holds `already` units; these lines would take them past the sale's limit. */
export function buyerLimitRefusal(sale: SaleForHold, already: number, lines: HoldLine[]): ApiError | undefined {
  if (already + totalQuantity(lines) <= sale.per_buyer_limit) return undefined;
  return new ApiError(
    'buyer_limit_exceeded',
    `A buyer may hold at most ${sale.per_buyer_limit} units in this sale; this buyer has ${already}.`,
    'items',
  );
}
