/**
 * Coalesced order creation. Every paying buyer of a surge turns a hold into an order, and the
 * order alone is a transaction of nine round trips (key, hold lock, order check, intent, its
 * event, order, stored answer, begin and commit): on these machines a round trip costs more
 * CPU than the rows it writes. So a node gathers the orders that arrive together, reads their
 * holds in one statement, and writes them in one more: every finished key with its answer,
 * every intent with its `payment_intent.created` event, every order, one commit.
 *
 * The write re-checks each hold under its row lock (the lock the expiry job takes): still
 * active, not past its expiry, no order yet, the amount read before. A request whose hold
 * fails a check, whose key exists (a retry, a reused key) or repeats one earlier in the batch
 * writes nothing here and runs alone on the single path, which answers it exactly as before
 * (the existing order, `hold_not_active`, a replay or a refusal). The unique index of one order
 * per hold is the last guard: an order that a concurrent single path wrote after our snapshot
 * fails the batch's statement, and then every request of the batch runs alone.
 *
 * An order that confirms (orders.ts) gets the confirm's first phase in the same statement, as
 * the confirm batcher's start would write it (payments/confirm-batch-sql.ts): the confirm's
 * key at `authorization_started`, the intent created with its payment method and moved to
 * processing, its authorize attempt. Its `payment_intent.created` event shows the intent as
 * created, awaiting confirmation. Should the confirm's key exist already (a client's key
 * reused after the order's expired), the intent is created unconfirmed and the request
 * confirms on the general path, which answers for that key.
 */
import { firstEventCte } from '../events/service.js';
import { type NewIntent, newIntentsCte, type Started, startedOfNewIntent, viewOfNewIntent } from '../payments/service.js';
import { scopedKey } from '../platform/db/by-ids.js';
import { GroupCommit } from '../platform/db/group-commit.js';
import { type KeyedWrite, keyedBatch } from '../platform/db/keyed-batches.js';
import { jsonbArray } from '../platform/db/params.js';
import { type Pool, type Queryable, withAutocommit } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import { finishedKeyCte, lockedKeysCte } from '../platform/idempotency/sql.js';
import { newId } from '../platform/ids.js';
import * as batchSql from './batch-sql.js';
import { orderOfHold, selectOrdersByIds } from './orders-sql.js';
import type * as sql from './sql.js';

export interface OrderRequest extends KeyedWrite {
  holdId: string;
  method: string;
  path: string;
  /** An order that confirms: its payment method, and the confirm's context for the intent's id. */
  confirm?: { paymentMethod: string; context: (intentId: string) => RequestContext };
}

/** An order's confirm whose first phase the batch wrote: the confirm's context and what it started. */
export interface StartedConfirm {
  context: RequestContext;
  started: Started;
}

/**
 * `created`: written by the batch with this answer, and for an order that confirms, `confirm`
 * when the batch wrote the confirm's first phase too; `single`: run it alone.
 */
export type OrderOutcome = { kind: 'created'; body: unknown; confirm?: StartedConfirm } | { kind: 'single' };

export interface OrderBatchOptions {
  pool: Pool;
  ttlHours: number;
  windowMs: number;
  batchMax: number;
  maxRunning: number;
  onBatch?: (size: number) => void;
  /** The API's view of an order (sales/service.ts), kept out of here to avoid a cycle. */
  view: (order: sql.OrderRow) => Record<string, unknown>;
}

/** An order the batch will try to write, with everything its answer shows. */
interface PlannedOrder {
  request: OrderRequest;
  order: sql.OrderRow;
  intent: NewIntent;
  eventId: string;
  body: unknown;
  /** An order that confirms: the confirm's context and its first phase as the batch writes it. */
  confirm?: StartedConfirm;
}

const INSERT_ORDERS_WITH_FINISHED_KEYS = `with req as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[],
               $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::jsonb[], $14::jsonb[], $15::text[],
               $16::jsonb[], $17::timestamptz[], $18::text[], $20::text[], $21::text[], $22::text[], $23::bytea[],
               $24::text[], $25::text[])
               as r(merchant_id, key_kind, key, fingerprint, method, path, hold_id, order_id, intent_id, sale_id, amount,
                    currency, body, intent_body, description, metadata, created_at, event_id, payment_method, confirm_key,
                    confirm_path, confirm_fingerprint, attempt_id, provider_key)),
           -- Each hold probed by its key and locked (see batch-sql.ts lockStock): as a join, the
           -- plan kept from a near-empty table read every active hold on each batch.
           held as (
             select r.order_id from req r
             cross join lateral (
               select h.merchant_id, h.id from holds h
               where h.merchant_id = r.merchant_id and h.id = r.hold_id and h.status = 'active' and h.expires_at > r.created_at
                 and h.amount = r.amount and h.currency = r.currency and h.sale_id = r.sale_id
               limit 1
               for update) h
             where not exists (select 1 from orders o where o.merchant_id = h.merchant_id and o.hold_id = h.id)),
           ${finishedKeyCte({
             merchantId: 'r.merchant_id',
             keyKind: 'r.key_kind',
             key: 'r.key',
             method: 'r.method',
             path: 'r.path',
             fingerprint: 'r.fingerprint',
             resourceId: 'r.order_id',
             status: '200',
             body: 'r.body',
             now: 'r.created_at',
             ttlHours: '$19',
             from: 'req r join held using (order_id)',
             returning: 'resource_id',
           })},
           ${lockedKeysCte({
             name: 'confirm_key',
             merchantId: 'r.merchant_id',
             keyKind: 'r.key_kind',
             key: 'r.confirm_key',
             method: "'POST'",
             path: 'r.confirm_path',
             fingerprint: 'r.confirm_fingerprint',
             recoveryPoint: "'authorization_started'",
             resourceId: 'r.intent_id',
             ttlHours: '$19',
             from: 'req r join key on key.resource_id = r.order_id where r.confirm_key is not null',
             returning: 'resource_id',
           })},
           ${newIntentsCte({
             merchantId: 'r.merchant_id',
             id: 'r.intent_id',
             amount: 'r.amount',
             currency: 'r.currency',
             // Confirming: created with its payment method and moved to processing at once.
             status: `case when ck.resource_id is not null then 'processing'
                        when r.payment_method is not null then 'requires_confirmation' else 'requires_payment_method' end`,
             captureMethod: "'automatic'",
             paymentMethod: 'r.payment_method',
             description: 'r.description',
             metadata: 'r.metadata',
             createdAt: 'r.created_at',
             from: 'req r join key on key.resource_id = r.order_id left join confirm_key ck on ck.resource_id = r.intent_id',
           })},
           attempt as (
             insert into payment_attempts (merchant_id, id, payment_intent_id, refund_id, operation, amount,
               provider_idempotency_key, status)
             select r.merchant_id, r.attempt_id, r.intent_id, null, 'authorize', r.amount, r.provider_key, 'started'
             from req r join confirm_key ck on ck.resource_id = r.intent_id
             returning payment_intent_id),
           ${firstEventCte({
             merchantId: 'r.merchant_id',
             id: 'r.event_id',
             type: "'payment_intent.created'",
             data: "jsonb_build_object('object', r.intent_body)",
             createdAt: 'r.created_at',
             objectCte: 'intent',
             join: 'join req r on r.intent_id = intent.id',
           })},
           ord as (
             insert into orders (merchant_id, id, sale_id, hold_id, payment_intent_id, amount, currency, status, created_at, updated_at)
             select r.merchant_id, r.order_id, r.sale_id, r.hold_id, r.intent_id, r.amount, r.currency, 'awaiting_payment',
               r.created_at, r.created_at
             from req r join key on key.resource_id = r.order_id
             returning id)
           select o.id, a.payment_intent_id is not null as started
           from ord o join req r on r.order_id = o.id left join attempt a on a.payment_intent_id = r.intent_id`;

export class OrderCreationBatcher {
  private readonly submitWrite: (request: OrderRequest) => Promise<OrderOutcome>;
  private readonly reads: GroupCommit<{ merchantId: string; id: string }, sql.OrderRow | undefined>;

  constructor(private readonly options: OrderBatchOptions) {
    this.submitWrite = keyedBatch<OrderRequest, OrderOutcome>({
      ...options,
      group: 'orders',
      single: { kind: 'single' },
      write: (batch) => this.write(batch),
    });
    // An order that confirms reads its order back once paid, for paid_at: one round trip per
    // checkout unless the reads go together, as the writes do.
    this.reads = new GroupCommit({
      windowMs: 0,
      batchMax: options.batchMax,
      maxRunning: options.maxRunning,
      run: async (_group, batch) => {
        const orders = await selectOrdersByIds(
          options.pool,
          batch.map((order) => order.merchantId),
          batch.map((order) => order.id),
        );
        return batch.map((order) => orders.get(scopedKey(order.merchantId, order.id)));
      },
    });
  }

  submit(request: OrderRequest): Promise<OrderOutcome> {
    return this.submitWrite(request);
  }

  /** An order as it stands, read together with the others asked for at the same time. */
  read(merchantId: string, id: string): Promise<sql.OrderRow | undefined> {
    return this.reads.submit('orders', { merchantId, id });
  }

  /** Reads the batch's holds, plans each order, writes the plans in one statement. */
  private async write(batch: OrderRequest[]): Promise<OrderOutcome[]> {
    const holds = await batchSql.selectHoldsByIds(
      this.options.pool,
      batch.map((request) => request.merchantId),
      batch.map((request) => request.holdId),
    );
    const now = new Date();
    const ordered = new Set<string>();
    const plans = batch.map((request) => {
      const scoped = scopedKey(request.merchantId, request.holdId);
      const hold = holds.get(scoped);
      // Missing, ended or expired: the single path gives the answer (or finds an existing order).
      // A second request for one hold runs alone after the batch and finds the batch's order.
      if (hold?.status !== 'active' || hold.expires_at <= now || ordered.has(scoped)) return undefined;
      ordered.add(scoped);
      return this.plan(request, hold, now);
    });
    const writes = plans.filter((plan): plan is PlannedOrder => plan !== undefined);
    const created =
      writes.length > 0
        ? await withAutocommit(this.options.pool, (client) => insertOrdersWithFinishedKeys(client, writes, this.options.ttlHours))
        : new Map<string, boolean>();
    return plans.map((plan): OrderOutcome => {
      const started = plan && created.get(plan.order.id);
      if (!plan || started === undefined) return { kind: 'single' };
      return { kind: 'created', body: plan.body, confirm: started ? plan.confirm : undefined };
    });
  }

  private plan(request: OrderRequest, hold: sql.HoldRow, now: Date): PlannedOrder {
    const orderId = newId('ord');
    const paymentMethod = request.confirm?.paymentMethod ?? null;
    const intent: NewIntent = {
      merchantId: request.merchantId,
      id: newId('pi'),
      amount: hold.amount,
      currency: hold.currency,
      status: paymentMethod ? 'requires_confirmation' : 'requires_payment_method',
      captureMethod: 'automatic',
      paymentMethod,
      description: `Order ${orderId}`,
      metadata: { order_id: orderId, hold_id: hold.id, sale_id: hold.sale_id },
      createdAt: now,
    };
    const order = orderOfHold(hold, orderId, intent.id, now);
    const intentView = viewOfNewIntent(intent);
    const body = { ...this.options.view(order), payment_intent_object: intentView };
    return { request, order, intent, eventId: newId('evt'), body, confirm: request.confirm && confirmPlan(request.confirm, intent) };
  }
}

/** The confirm's first phase for an order that confirms: its key's context, the processing intent and its attempt. */
function confirmPlan(confirm: NonNullable<OrderRequest['confirm']>, created: NewIntent): PlannedOrder['confirm'] {
  return { context: confirm.context(created.id), started: startedOfNewIntent(created, confirm.paymentMethod) };
}

/** One statement for a batch of orders; yields the orders it created, by id, and whether it started each one's confirm. */
async function insertOrdersWithFinishedKeys(db: Queryable, plans: PlannedOrder[], ttlHours: number): Promise<Map<string, boolean>> {
  const column = <T>(pick: (plan: PlannedOrder) => T) => plans.map(pick);
  const { rows } = await db.query<{ id: string; started: boolean }>({
    name: 'sales_insert_orders_with_finished_keys',
    text: INSERT_ORDERS_WITH_FINISHED_KEYS,
    values: [
      column((p) => p.request.merchantId),
      column((p) => p.request.keyKind),
      column((p) => p.request.key),
      column((p) => p.request.fingerprint),
      column((p) => p.request.method),
      column((p) => p.request.path),
      column((p) => p.order.hold_id),
      column((p) => p.order.id),
      column((p) => p.intent.id),
      column((p) => p.order.sale_id),
      column((p) => p.order.amount),
      column((p) => p.order.currency),
      jsonbArray(column((p) => p.body)),
      jsonbArray(column((p) => (p.body as { payment_intent_object: unknown }).payment_intent_object)),
      column((p) => p.intent.description),
      jsonbArray(column((p) => p.intent.metadata)),
      column((p) => p.intent.createdAt),
      column((p) => p.eventId),
      ttlHours,
      column((p) => p.intent.paymentMethod),
      column((p) => p.confirm?.context.idempotencyKey ?? null),
      column((p) => p.confirm?.context.path ?? null),
      column((p) => p.confirm?.context.fingerprint ?? null),
      column((p) => p.confirm?.started.attempt.id ?? null),
      column((p) => p.confirm?.started.attempt.provider_idempotency_key ?? null),
    ],
  });
  return new Map(rows.map((row) => [row.id, row.started]));
}
