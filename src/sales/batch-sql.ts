/**
 * The statements of a batch of holds (hold-batches.ts): each one carries every request of the
 * batch, so a batch costs the same round trips and one commit whatever its size: begin,
 * openBatch and lockStock together, then writeHolds with the commit (the pool pipelines: two
 * round trips; and a credit of returns when some wait).
 */
import { selectByScopedIds } from '../platform/db/by-ids.js';
import type { Queryable } from '../platform/db/pool.js';
import { existingKeysSql, type FinishedKeys, finishedKeysCte } from '../platform/idempotency/sql.js';
import { insertJobsSql, removeJobsCtes } from '../platform/jobs/queue.js';
import type { HoldLine } from './domain.js';
import { type AllocatableItem, HOLD_COLUMNS, type HoldRow, lockItemsForAllocationSql, SALE_COLUMNS, type SaleRow } from './sql.js';

/**
 * A batch's first statement: the sale, which of the batch's keys exist already (their requests
 * go down the single path), and every buyer's advisory lock (the single path's lockBuyer, the
 * same key), taken in one sorted order so two batches sharing buyers cannot deadlock. Buyers
 * before items, as the single path. Locking a buyer whose request turns out not to be the
 * batch's (its key exists, the sale is closed) only makes a concurrent request of theirs wait
 * for this commit. Always one row: the sale's columns are null when there is no such sale.
 */
export async function openBatch(
  db: Queryable,
  batch: { merchantId: string; keyKind: string; saleId: string; keys: string[]; buyers: string[] },
): Promise<{ sale: SaleRow | undefined; existingKeys: Set<string> }> {
  const { rows } = await db.query<SaleRow & { existing_keys: string[]; buyers_locked: number }>({
    name: 'sales_batch_open',
    text: `with buyer_locks as (
             select pg_advisory_xact_lock(h) from (
               select distinct hashtextextended($1 || '/' || $2 || '/' || b, 0) as h from unnest($5::text[]) as b order by h) ordered)
           select ${SALE_COLUMNS},
                  array(${existingKeysSql('$1', '$3', '$4')}) as existing_keys,
                  -- Read so that the locks are taken: an unread WITH query never runs.
                  (select count(*)::int from buyer_locks) as buyers_locked
           from (values (1)) as one (x) left join sales on sales.merchant_id = $1 and sales.id = $2`,
    values: [batch.merchantId, batch.saleId, batch.keyKind, batch.keys, batch.buyers],
  });
  const {
    existing_keys: existingKeys,
    buyers_locked: _locked,
    ...sale
  } = rows[0] as SaleRow & { existing_keys: string[]; buyers_locked: number };
  return { sale: sale.id === null ? undefined : sale, existingKeys: new Set(existingKeys) };
}

/**
 * A batch's second statement, under the buyers' locks (openBatch's, taken by an earlier
 * statement: sent in the same round trip, run before this one, so this one's snapshot holds
 * every hold their earlier holders committed): units
 * each buyer holds or bought in the sale (the per-buyer limit), which of these waiting-room
 * tickets a hold already used, and the items, locked in id order, with what each has free
 * (sql.ts lockItemsForAllocation). The item rows come back as they are after their locks are
 * granted, whatever the statement's snapshot.
 *
 * Buyers and tickets are probed one at a time (a lateral subquery per element, each hold's
 * lines by their key), as existingKeysSql probes keys: written as `= any($n)` with a join, a
 * plan made while holds was nearly empty (a new deployment's first sale, the bench's truncated
 * tables) scanned holds and hold_lines whole, and was kept while a surge grew them: each batch
 * then read every hold of the sale. A probe of a unique key says `limit 1` (convertPaidHolds):
 * without it PostgreSQL flattens the subquery into a plain join, which it may plan as a hash
 * join over the whole table again.
 */
export async function lockStock(
  db: Queryable,
  batch: { merchantId: string; saleId: string; buyers: string[]; tickets: string[]; itemIds: string[] },
): Promise<{ held: Map<string, number>; usedTickets: Set<string>; items: Map<string, AllocatableItem> }> {
  type Row = { kind: 'buyer' | 'ticket' | 'item'; key: string; quantity: number; returned: number; name: string; price: number };
  const { rows } = await db.query<Row>({
    name: 'sales_batch_lock_stock',
    text: `with items as (${lockItemsForAllocationSql('$1', '$2', '$5')})
           select 'item' as kind, id as key, unallocated as quantity, returned, name, price from items
           union all
           select 'buyer', b.buyer, q.quantity, null, null, null
           from unnest($3::text[]) as b(buyer)
           cross join lateral (
             select sum((select sum(l.quantity) from hold_lines l where l.merchant_id = h.merchant_id and l.hold_id = h.id))::int as quantity
             from holds h
             where h.merchant_id = $1 and h.sale_id = $2 and h.buyer_reference = b.buyer and h.status in ('active', 'converted')) q
           where q.quantity is not null
           union all
           select 'ticket', t.ticket, 0, null, null, null
           from unnest($4::text[]) as t(ticket)
           cross join lateral (
             select 1 from holds where merchant_id = $1 and sale_id = $2 and admission_ticket = t.ticket limit 1) used`,
    values: [batch.merchantId, batch.saleId, batch.buyers, batch.tickets, batch.itemIds],
  });
  const held = new Map<string, number>();
  const usedTickets = new Set<string>();
  const items = new Map<string, AllocatableItem>();
  for (const row of rows) {
    if (row.kind === 'buyer') held.set(row.key, row.quantity);
    else if (row.kind === 'ticket') usedTickets.add(row.key);
    else items.set(row.key, { id: row.key, name: row.name, price: row.price, unallocated: row.quantity, returned: row.returned });
  }
  return { held, usedTickets, items };
}

export interface NewHold {
  id: string;
  buyer_reference: string;
  admission_ticket: string | null;
  amount: number;
  lines: HoldLine[];
}

/**
 * Everything a batch writes once its holds are decided, in one statement: the allocation of
 * each item's total, the holds and their lines, one expiry job per hold and every request's
 * finished key with its answer.
 *
 * The expiry jobs go straight into graphile-worker's job table (platform/jobs/queue.ts
 * insertJobsSql), not through its add_jobs: for
 * these jobs add_jobs' other work is void and was half of this statement's time (the bench's
 * hold phases: 73–78 against 101–111 µs of PostgreSQL CPU per hold). Its update of locked jobs
 * with the same key finds none (each key names a hold this statement creates) and, planned
 * while the job table was near empty (a quiet service's, before the sale), it scanned the whole
 * table on every batch; and its NOTIFY wakes workers for jobs due a hold's lifetime later (they
 * poll for due jobs) while serializing every commit that sends one. hold-batches.test.ts runs
 * such a job through graphile-worker. The task's row is added when the schema is migrated
 * (migrateJobs, DIRECTLY_WRITTEN_TASKS); a database without it (migrated by an older version)
 * fails its first batch on the missing task_id, which sends its requests down the single path,
 * whose add_job adds it.
 *
 * Its round trips are the hot item's row lock's hold time, so it is one, and it goes out with
 * the COMMIT (withTransactionEndingIn). So it refuses a wrong batch itself instead of leaving a
 * count to check: an allocation past an item's total fails its check constraint, a line of a
 * missing item its foreign key, and the transaction then rolls back. Returns how many items were allocated, for the caller's sanity
 * check (the items were locked and counted by lockStock).
 */
export async function writeHolds(
  db: Queryable,
  batch: {
    merchantId: string;
    saleId: string;
    currency: string;
    expiresAt: Date;
    createdAt: Date;
    taken: Map<string, number>;
    holds: NewHold[];
    expiryTask: string;
    keys: FinishedKeys;
  },
): Promise<number> {
  const lines = batch.holds.flatMap((hold) => hold.lines.map((line) => ({ hold: hold.id, ...line })));
  const keys = finishedKeysCte(batch.keys, 16);
  const { rows } = await db.query<{ allocated: number }>({
    name: 'sales_batch_write_holds',
    text: `with allocation as (
             update sale_items i set stock_allocated = i.stock_allocated + t.quantity
             from unnest($2::text[], $3::int[]) as t(id, quantity)
             -- No guard here: sale_items_allocated_within_total refuses an over-allocation.
             where i.merchant_id = $1 and i.id = t.id
             returning 1),
           held as (
             insert into holds (merchant_id, id, sale_id, buyer_reference, status, amount, currency, expires_at, admission_ticket, created_at)
             select $1, h.id, $4, h.buyer, 'active', h.amount, $5, $6, h.ticket, $7
             from unnest($8::text[], $9::text[], $10::bigint[], $11::text[]) as h(id, buyer, amount, ticket)
             returning 1),
           lines as (
             insert into hold_lines (merchant_id, hold_id, item_id, quantity)
             select $1, l.hold, l.item, l.quantity from unnest($12::text[], $13::text[], $14::int[]) as l(hold, item, quantity)
             returning 1),
           -- graphile-worker's own rows, as its add_jobs writes them (see above).
           expiry as (
             ${insertJobsSql({
               task: '$15::text',
               payload: "json_build_object('merchant_id', $1::text, 'hold_id', h)",
               runAt: '$6::timestamptz',
               key: "'expire_hold:' || h",
               from: 'from unnest($8::text[]) as h',
             })}
             returning 1),
           ${keys.cte}
           select (select count(*)::int from allocation) as allocated`,
    values: [
      batch.merchantId,
      [...batch.taken.keys()],
      [...batch.taken.values()],
      batch.saleId,
      batch.currency,
      batch.expiresAt,
      batch.createdAt,
      batch.holds.map((hold) => hold.id),
      batch.holds.map((hold) => hold.buyer_reference),
      batch.holds.map((hold) => hold.amount),
      batch.holds.map((hold) => hold.admission_ticket),
      lines.map((line) => line.hold),
      lines.map((line) => line.item_id),
      lines.map((line) => line.quantity),
      batch.expiryTask,
      ...keys.values,
    ],
  });
  return rows[0]?.allocated ?? 0;
}

/**
 * The holds of a batch of orders (order-batches.ts), by scopedKey, read without a lock: the
 * batch's write re-checks each under its row lock.
 */
export function selectHoldsByIds(db: Queryable, merchantIds: string[], holdIds: string[]): Promise<Map<string, HoldRow>> {
  return selectByScopedIds(db, { name: 'sales_batch_select_holds', table: 'holds', columns: HOLD_COLUMNS }, merchantIds, holdIds);
}

/**
 * The payment-succeeded reaction for a batch of paid intents (holds.ts convertPaidHold for
 * many): marks their orders paid, converts their holds, removes their expiry jobs and adds one
 * admission-release job per sale for the converted holds' tickets. Yields how many orders were
 * paid and how many holds converted: the caller refuses a paid order whose hold had left.
 *
 * graphile-worker's rows are written here directly, as writeHolds writes the expiry jobs, not
 * through its functions: remove_job ran once per hold, each call a statement of its own plus a
 * NOTIFY, and add_jobs did its void work per batch (see writeHolds): the statement took half
 * the time without them in the bench's checkouts (0.87 against 1.77 ms a call). A NOTIFY also
 * serializes the commits that send one (PostgreSQL takes one global lock for them), and the
 * completion is the checkout's only such commit: without it the release jobs wait for the workers' next poll (at most
 * FLOODGATE_JOB_POLL_INTERVAL_MS, a second by default) to free slots that are freed on a timer
 * anyway if they are not.
 *
 * An expiry job is removed as remove_job removes it (queue.ts removeJobsCtes): deleted unless a
 * worker has it now; one running loses its key and its retries (it then finds its hold
 * converted and does nothing).
 * The release is one job per sale and batch, without a key (releasing a ticket is idempotent,
 * and a ticket's hold converts once): a job per ticket cost the worker a job's overhead per
 * checkout. The task's row is added when the schema is migrated; without it the batch fails
 * and its requests complete on the general path, whose add_job adds it (as writeHolds').
 *
 * Orders and expiry jobs are probed by key, one lateral subquery per element: a plan made while
 * the tables were nearly empty (a new sale, the bench's truncated tables) would otherwise scan
 * them whole on every batch as they grow (see lockStock).
 */
export async function convertPaidHolds(
  db: Queryable,
  releaseTask: string,
  intents: { merchantId: string; id: string }[],
): Promise<{ paid: number; converted: number }> {
  const { rows } = await db.query<{ paid: number; converted: number }>({
    name: 'sales_batch_convert_paid_holds',
    text: `with awaiting as (
             select o.merchant_id, o.id
             from unnest($1::text[], $2::text[]) as r(merchant_id, intent_id)
             cross join lateral (
               select merchant_id, id from orders
               where merchant_id = r.merchant_id and payment_intent_id = r.intent_id and status = 'awaiting_payment'
               limit 1) o),
           paid as (
             update orders o set status = 'paid', paid_at = now(), updated_at = now()
             from awaiting a
             where o.merchant_id = a.merchant_id and o.id = a.id and o.status = 'awaiting_payment'
             returning o.merchant_id, o.hold_id),
           converted as (
             update holds h set status = 'converted', updated_at = now()
             from paid p
             where h.merchant_id = p.merchant_id and h.id = p.hold_id and h.status = 'active'
             returning h.id, h.sale_id, h.admission_ticket),
           ${removeJobsCtes('unscheduled', "select 'expire_hold:' || c.id as key from converted c")},
           released as (
             ${insertJobsSql({
               task: '$3::text',
               payload: "json_build_object('sale_id', c.sale_id, 'tickets', json_agg(c.admission_ticket))",
               runAt: 'now()',
               from: 'from converted c where c.admission_ticket is not null group by c.sale_id',
             })}
             returning 1)
           -- Each modifying WITH query runs whether or not it is read.
           select (select count(*)::int from paid) as paid, (select count(*)::int from converted) as converted`,
    values: [intents.map((intent) => intent.merchantId), intents.map((intent) => intent.id), releaseTask],
  });
  const row = rows[0];
  return { paid: row?.paid ?? 0, converted: row?.converted ?? 0 };
}
