/** The refund statements of payments and their row type, re-exported from sql.ts. */
import type { Queryable } from '../platform/db/pool.js';

export interface RefundRow {
  merchant_id: string;
  id: string;
  payment_intent_id: string;
  amount: number;
  currency: string;
  status: 'pending' | 'succeeded' | 'failed';
  reason: string | null;
  metadata: Record<string, string>;
  failure_reason: string | null;
  created_at: Date;
  updated_at: Date;
}

const REFUND_COLUMNS = `merchant_id, id, payment_intent_id, amount, currency, status, reason, metadata, failure_reason,
  created_at, updated_at`;

export async function insertRefund(
  db: Queryable,
  refund: {
    merchantId: string;
    id: string;
    paymentIntentId: string;
    amount: number;
    currency: string;
    reason: string | null;
    metadata: Record<string, string>;
  },
): Promise<RefundRow> {
  const { rows } = await db.query<RefundRow>({
    name: 'payments_insert_refund',
    text: `insert into refunds (merchant_id, id, payment_intent_id, amount, currency, status, reason, metadata,
             created_at, updated_at)
           values ($1, $2, $3, $4, $5, 'pending', $6, $7, now(), now())
           returning ${REFUND_COLUMNS}`,
    values: [
      refund.merchantId,
      refund.id,
      refund.paymentIntentId,
      refund.amount,
      refund.currency,
      refund.reason,
      JSON.stringify(refund.metadata),
    ],
  });
  return rows[0] as RefundRow;
}

export async function selectRefund(db: Queryable, merchantId: string, id: string): Promise<RefundRow | undefined> {
  const { rows } = await db.query<RefundRow>({
    name: 'payments_select_refund',
    text: `select ${REFUND_COLUMNS} from refunds where merchant_id = $1 and id = $2`,
    values: [merchantId, id],
  });
  return rows[0];
}

export async function selectRefunds(
  db: Queryable,
  query: { merchantId: string; limit: number; startingAfter?: string; paymentIntentId?: string },
): Promise<RefundRow[]> {
  const { rows } = await db.query<RefundRow>(
    `select ${REFUND_COLUMNS} from refunds
     where merchant_id = $1 and ($2::text is null or id < $2) and ($3::text is null or payment_intent_id = $3)
     order by id desc limit $4`,
    [query.merchantId, query.startingAfter ?? null, query.paymentIntentId ?? null, query.limit],
  );
  return rows;
}

/** Settles a pending refund; refused (undefined) when it was already settled. */
export async function settleRefund(
  db: Queryable,
  merchantId: string,
  id: string,
  status: 'succeeded' | 'failed',
  failureReason: string | null,
): Promise<RefundRow | undefined> {
  const { rows } = await db.query<RefundRow>({
    name: 'payments_settle_refund',
    text: `update refunds set status = $3, failure_reason = $4, updated_at = now()
           where merchant_id = $1 and id = $2 and status = 'pending'
           returning ${REFUND_COLUMNS}`,
    values: [merchantId, id, status, failureReason],
  });
  return rows[0];
}

/** Reserves (positive delta) or releases (negative) refunded amount within what was received. */
export async function adjustAmountRefunded(db: Queryable, merchantId: string, id: string, delta: number): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'payments_adjust_amount_refunded',
    text: `update payment_intents set amount_refunded = amount_refunded + $3, updated_at = now()
           where merchant_id = $1 and id = $2 and amount_refunded + $3 between 0 and amount_received`,
    values: [merchantId, id, delta],
  });
  return rowCount === 1;
}
