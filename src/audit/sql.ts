/**
 * The invariant checks. Each query returns one row per violation, with the ids an operator
 * needs to look into it.
 */
import type { Queryable } from '../platform/db/pool.js';

export interface Violation {
  check: string;
  merchant_id: string;
  object_id: string;
  detail: string;
}

export const CHECKS: Record<string, string> = {
  ledger_transaction_unbalanced: `
    select t.merchant_id, t.id as object_id,
           'entries sum to ' || coalesce(sum(e.amount), 0) || ' over ' || count(e.*) || ' entries' as detail
    from ledger_transactions t
    left join ledger_entries e on e.merchant_id = t.merchant_id and e.transaction_id = t.id
    group by t.merchant_id, t.id
    having coalesce(sum(e.amount), 0) <> 0 or count(e.*) < 2`,

  captured_differs_from_ledger: `
    select p.merchant_id, p.id as object_id,
           'amount_received ' || p.amount_received || ' but capture postings ' || coalesce(l.posted, 0) as detail
    from payment_intents p
    left join (
      select t.merchant_id, t.payment_intent_id, sum(e.amount) as posted
      from ledger_transactions t
      join ledger_entries e on e.merchant_id = t.merchant_id and e.transaction_id = t.id and e.account = 'provider_clearing'
      where t.kind = 'capture'
      group by t.merchant_id, t.payment_intent_id
    ) l on l.merchant_id = p.merchant_id and l.payment_intent_id = p.id
    where p.amount_received <> coalesce(l.posted, 0)`,

  refunded_differs_from_ledger: `
    select r.merchant_id, r.id as object_id,
           'refund ' || r.status || ' of ' || r.amount || ' but refund postings ' || coalesce(l.posted, 0) as detail
    from refunds r
    left join (
      select t.merchant_id, t.refund_id, -sum(e.amount) as posted
      from ledger_transactions t
      join ledger_entries e on e.merchant_id = t.merchant_id and e.transaction_id = t.id and e.account = 'provider_clearing'
      where t.kind = 'refund'
      group by t.merchant_id, t.refund_id
    ) l on l.merchant_id = r.merchant_id and l.refund_id = r.id
    where coalesce(l.posted, 0) <> case when r.status = 'succeeded' then r.amount else 0 end`,

  refunded_differs_from_refunds: `
    select p.merchant_id, p.id as object_id,
           'amount_refunded ' || p.amount_refunded || ' but pending and succeeded refunds total ' || coalesce(r.total, 0) as detail
    from payment_intents p
    left join (
      select merchant_id, payment_intent_id, sum(amount) as total from refunds
      where status in ('pending', 'succeeded') group by merchant_id, payment_intent_id
    ) r on r.merchant_id = p.merchant_id and r.payment_intent_id = p.id
    where p.amount_refunded <> coalesce(r.total, 0)`,

  refunded_beyond_captured: `
    select p.merchant_id, p.id as object_id,
           'refunds total ' || sum(r.amount) || ' but only ' || p.amount_received || ' was received' as detail
    from payment_intents p
    join refunds r on r.merchant_id = p.merchant_id and r.payment_intent_id = p.id and r.status <> 'failed'
    group by p.merchant_id, p.id, p.amount_received
    having sum(r.amount) > p.amount_received`,

  status_inconsistent_with_amounts: `
    select merchant_id, id as object_id,
           'status ' || status || ' with amount_received ' || amount_received || ', amount_capturable ' || amount_capturable as detail
    from payment_intents
    where (status = 'succeeded') <> (amount_received > 0)
       or (status <> 'requires_capture' and status <> 'processing' and amount_capturable <> 0)
       or amount_received > amount`,

  refund_on_unsucceeded_payment: `
    select r.merchant_id, r.id as object_id, 'refund of a payment in status ' || p.status as detail
    from refunds r join payment_intents p on p.merchant_id = r.merchant_id and p.id = r.payment_intent_id
    where p.status <> 'succeeded'`,

  // Stock: an item's allocation counter against its hold rows. Allocated units are the lines of
  // active holds (held), of converted holds (sold) and of ended holds whose return is not yet
  // credited; a returned line must belong to a hold that ended. A unit lost or counted twice by
  // any path (a batch, a crash, a conversion, a return) shows here.
  stock_differs_from_holds: `
    select i.merchant_id, i.id as object_id,
           'allocated ' || i.stock_allocated || ' of ' || i.stock_total || ' but active holds ' || coalesce(h.held, 0) ||
           ', paid holds ' || coalesce(h.sold, 0) || ', returns waiting ' || coalesce(r.returned, 0) as detail
    from sale_items i
    left join (
      select l.merchant_id, l.item_id,
             sum(l.quantity) filter (where h.status = 'active') as held,
             sum(l.quantity) filter (where h.status = 'converted') as sold
      from hold_lines l join holds h on h.merchant_id = l.merchant_id and h.id = l.hold_id
      group by l.merchant_id, l.item_id
    ) h on h.merchant_id = i.merchant_id and h.item_id = i.id
    left join (
      select merchant_id, item_id, sum(quantity) as returned from stock_returns group by merchant_id, item_id
    ) r on r.merchant_id = i.merchant_id and r.item_id = i.id
    where i.stock_allocated <> coalesce(h.held, 0) + coalesce(h.sold, 0) + coalesce(r.returned, 0)`,

  stock_returned_by_live_hold: `
    select r.merchant_id, r.hold_id as object_id, 'a return waits for a hold that is ' || h.status as detail
    from stock_returns r join holds h on h.merchant_id = r.merchant_id and h.id = r.hold_id
    where h.status in ('active', 'converted')`,

  paid_order_without_sold_hold: `
    select o.merchant_id, o.id as object_id, 'order ' || o.status || ' but its hold is ' || h.status as detail
    from orders o join holds h on h.merchant_id = o.merchant_id and h.id = o.hold_id
    where (o.status = 'paid') <> (h.status = 'converted')`,
};

export async function runCheck(db: Queryable, check: string): Promise<Violation[]> {
  const sql = CHECKS[check];
  if (!sql) throw new Error(`no such check ${check}`);
  const { rows } = await db.query<Omit<Violation, 'check'>>(sql);
  return rows.map((row) => ({ check, ...row }));
}
