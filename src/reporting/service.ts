/**
 * The reports a merchant reads after a sale. Each runs in one read-only snapshot on the server
 * the read router picks (a replica close enough behind, else the primary), and says which one
 * it used and how fresh its data is.
 */
import type { ReadRouter, ReadSession, ReadTarget } from '../platform/db/replicas.js';
import { csvLine, type DateRange, EXPORT_PAGE_ROWS } from './domain.js';
import * as sql from './sql.js';

/** What every report says about where it was read. */
export function describeSource(target: ReadTarget) {
  return {
    served_by: target.source,
    replica: target.replica,
    lag_ms: target.lagMs,
    as_of: target.asOf.toISOString(),
    fallback_reason: target.fallbackReason,
  };
}

export type ReportSource = ReturnType<typeof describeSource>;

export async function paymentsReport(reads: ReadRouter, merchantId: string, range: Extract<DateRange, { ok: true }>) {
  const { value: rows, target } = await reads.read((db) => sql.selectPaymentTotals(db, merchantId, range.fromAt, range.toBefore));
  return {
    target,
    report: { object: 'report.payments' as const, from: range.from, to: range.to, data: rows, source: describeSource(target) },
  };
}

export async function saleReport(reads: ReadRouter, merchantId: string, saleId: string) {
  const { value, target } = await reads.read(async (db) => {
    const sale = await sql.selectSale(db, merchantId, saleId);
    if (!sale) return undefined;
    const items = await sql.selectItemSales(db, merchantId, saleId);
    const orders = await sql.selectOrdersByStatus(db, merchantId, saleId);
    return { sale, items, orders };
  });
  if (!value) return { target, report: undefined };
  const { sale, items, orders } = value;
  return {
    target,
    report: {
      object: 'report.sale' as const,
      sale: { id: sale.id, name: sale.name, currency: sale.currency, opens_at: sale.opens_at.toISOString() },
      items: items.map((item) => ({
        id: item.id,
        name: item.name,
        price: item.price,
        stock: { total: item.stock_total, available: item.stock_available, held: item.stock_held, sold: item.stock_sold },
        units_paid: item.units_paid,
        revenue: item.revenue,
      })),
      revenue: items.reduce((sum, item) => sum + item.revenue, 0),
      orders_by_status: orders,
      source: describeSource(target),
    },
  };
}

export const ORDER_EXPORT_COLUMNS = [
  'order',
  'created',
  'status',
  'amount',
  'currency',
  'payment_intent',
  'hold',
  'buyer_reference',
  'paid_at',
] as const;

/**
 * Opens the export of a sale's orders: undefined (and the session ended) when the sale is not
 * this merchant's; else the session's target and the CSV lines, read a page at a time within
 * the one snapshot. The session ends when the lines are exhausted or the consumer stops early.
 */
export async function openOrderExport(
  reads: ReadRouter,
  merchantId: string,
  saleId: string,
): Promise<{ target: ReadTarget; lines: AsyncGenerator<string> } | undefined> {
  const session = await reads.open();
  try {
    if (!(await sql.selectSale(session.db, merchantId, saleId))) {
      await session.end();
      return undefined;
    }
  } catch (error) {
    await session.end();
    throw error;
  }
  return { target: session.target, lines: exportLines(session, merchantId, saleId) };
}

async function* exportLines(session: ReadSession, merchantId: string, saleId: string): AsyncGenerator<string> {
  try {
    yield csvLine([...ORDER_EXPORT_COLUMNS]);
    let after = '';
    for (;;) {
      const rows = await sql.selectOrderExportPage(session.db, merchantId, saleId, after, EXPORT_PAGE_ROWS);
      if (rows.length === 0) break;
      yield rows
        .map((row) =>
          csvLine([
            row.id,
            row.created_at.toISOString(),
            row.status,
            row.amount,
            row.currency,
            row.payment_intent_id,
            row.hold_id,
            row.buyer_reference,
            row.paid_at ? row.paid_at.toISOString() : null,
          ]),
        )
        .join('');
      if (rows.length < EXPORT_PAGE_ROWS) break;
      after = (rows[rows.length - 1] as sql.OrderExportRow).id;
    }
  } finally {
    await session.end();
  }
}
