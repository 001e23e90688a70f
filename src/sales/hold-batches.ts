/**
 * Batched stock allocation (group commit). A surge is thousands of buyers for one item, and a
 * transaction that takes stock holds that item's row lock until it commits: one hold per
 * commit is one WAL flush per buyer. So a node collects the hold requests for one sale that
 * arrive within a few milliseconds (or while the sale's previous batch is committing) and
 * allocates them in one transaction: the buyers' locks, one read of what is left under the
 * items' row locks, first come first served in arrival order, then one statement that writes
 * the batch's total per item (the items' check constraint refuses going past the total),
 * every hold and line, every expiry job and every key with its stored answer, one commit: two
 * round trips, the pool pipelining the statements that do not wait for an answer. Several
 * nodes each run their own batches; the row lock then serializes batches, not buyers.
 *
 * Every rule of the single path holds per request: the same checks in the same order with the
 * same errors, the per-buyer limit exact (two requests of one buyer in one batch included), one
 * hold per admission ticket, one expiry job per hold, each request's own idempotency key. A
 * refusal is one request's answer, stored with its key, never the batch's failure. A request
 * whose key already exists (a retry) takes the single path, which replays, refuses or resumes
 * it; if the batch transaction itself fails, each of its requests runs alone on the single path.
 */
import assert from 'node:assert/strict';
import { GroupCommit } from '../platform/db/group-commit.js';
import type { Client, Pool } from '../platform/db/pool.js';
import { withTransactionEndingIn } from '../platform/db/pool.js';
import { ApiError } from '../platform/http/errors.js';
import type { Reply } from '../platform/http/reply.js';
import type { IdempotencyOptions } from '../platform/idempotency/service.js';
import * as idempotencySql from '../platform/idempotency/sql.js';
import { newId } from '../platform/ids.js';
import * as batchSql from './batch-sql.js';
import { type HoldLine, normalizeLines, totalQuantity } from './domain.js';
import { admissionRefused, buyerLimitRefusal, holdAmount, linesRefusal, saleRefusal, TOKEN_ALREADY_USED } from './hold-rules.js';
import { EXPIRE_HOLD_TASK } from './holds.js';
import * as sql from './sql.js';

export interface HoldRequest {
  merchantId: string;
  keyKind: 'secret' | 'publishable';
  idempotencyKey: string;
  method: string;
  path: string;
  fingerprint: Buffer;
  saleId: string;
  buyerReference: string;
  lines: HoldLine[];
  admission: { ok: true; ticketId: string } | { ok: false; reason: string };
}

/** A request's answer from its batch; `single` sends it down the single path instead. */
export type BatchAnswer = { kind: 'reply'; reply: Reply } | { kind: 'single' };

export interface HoldBatchOptions {
  pool: Pool;
  idempotency: IdempotencyOptions;
  windowMs: number;
  batchMax: number;
  /** Holds are reservations: see the README's durability contract. */
  synchronousCommit: boolean;
  /** Called with each batch's size, for metrics and the bench. */
  onBatch?: (size: number) => void;
  /** Turns the hold row and its lines into the API's answer. */
  view: (hold: sql.HoldRow, lines: HoldLine[]) => unknown;
}

/** The rows a batch writes for the holds it grants (batch-sql.ts writeHolds). */
type HoldWrite = Pick<Parameters<typeof batchSql.writeHolds>[1], 'currency' | 'expiresAt' | 'createdAt' | 'taken' | 'holds'>;

export class HoldBatcher {
  private readonly commits: GroupCommit<HoldRequest, BatchAnswer>;

  constructor(private readonly options: HoldBatchOptions) {
    // A sale runs one batch at a time on a node (its batches contend for the items' rows):
    // while it commits, the next gathers. The first request of an idle sale waits the window.
    this.commits = new GroupCommit({
      windowMs: options.windowMs,
      batchMax: options.batchMax,
      maxRunning: 1,
      run: (_sale, batch) => this.run(batch),
      onBatch: options.onBatch,
    });
  }

  submit(request: HoldRequest): Promise<BatchAnswer> {
    // One group per sale and key scope: a batch's keys share one scope.
    return this.commits.submit(`${request.merchantId}/${request.keyKind}/${request.saleId}`, request);
  }

  private async run(batch: HoldRequest[]): Promise<BatchAnswer[]> {
    try {
      const { value, last } = await withTransactionEndingIn(this.options.pool, (client) => this.allocate(client, batch), {
        synchronousCommit: this.options.synchronousCommit,
      });
      // A sanity check after the commit: the statement refuses a wrong allocation itself. Were
      // it to fail, each request would take the single path and replay its stored answer.
      assert.equal(last.allocated, last.expected, 'the locked items give what the batch counted');
      return value;
    } catch {
      // The batch's transaction failed as a whole (the database went away, a deadlock): nothing
      // of it committed, so each request runs alone and meets its own outcome.
      return batch.map(() => ({ kind: 'single' }));
    }
  }

  /**
   * The batch's transaction; answers in the order of `batch`. Its last statement, which writes
   * the holds (or only the refusals' keys), is left in flight to go out with the COMMIT.
   */
  private async allocate(
    client: Client,
    batch: HoldRequest[],
  ): Promise<{ value: BatchAnswer[]; last: Promise<{ allocated: number; expected: number }> }> {
    const first = batch[0] as HoldRequest;
    const { merchantId, saleId } = first;
    const admitted = batch.filter((request) => request.admission.ok);
    const opened = batchSql.openBatch(client, {
      merchantId,
      keyKind: first.keyKind,
      saleId,
      keys: [...new Set(batch.map((request) => request.idempotencyKey))],
      buyers: [...new Set(admitted.map((request) => request.buyerReference))],
    });
    // The stock's read and lock go out right behind openBatch (the pool pipelines), one round
    // trip for both. PostgreSQL runs them in order, so this statement's snapshot still comes
    // after the buyers' locks. It is sent before openBatch says which requests are the batch's
    // (a retry's key may exist, the sale may be closed), so it covers every admitted request:
    // reading a few more rows, or locking an item no request of ours takes, only makes a
    // concurrent request wait for this commit.
    const stock = admitted.length > 0 ? batchSql.lockStock(client, stockScope(merchantId, saleId, admitted)) : Promise.resolve(noStock());
    stock.catch(() => {});
    const { sale, existingKeys } = await opened;
    // A request whose key exists (a retry, a reuse) or repeats one earlier in this batch is not ours.
    const seen = new Set<string>();
    const mine = batch.map((request) => {
      const key = request.idempotencyKey;
      const own = !existingKeys.has(key) && !seen.has(key);
      seen.add(key);
      return own;
    });
    const requests = batch.filter((_, index) => mine[index]);
    const decided = requests.length > 0 ? await this.decide(client, merchantId, saleId, sale, requests, stock) : { replies: [] };
    const { replies } = decided;
    // The keys last, finished with their answers, in the statement that writes the holds.
    const keys = {
      merchantId,
      keyKind: first.keyKind,
      method: first.method,
      path: first.path,
      ttlHours: this.options.idempotency.ttlHours,
      keys: replies.map((reply, index) => {
        const request = requests[index] as HoldRequest;
        return { key: request.idempotencyKey, fingerprint: request.fingerprint, status: reply.status, body: reply.body };
      }),
    };
    const write = decided.write;
    const last = write
      ? batchSql
          .writeHolds(client, { ...write, merchantId, saleId, expiryTask: EXPIRE_HOLD_TASK, keys })
          .then((allocated) => ({ allocated, expected: write.taken.size }))
      : idempotencySql.insertFinishedKeys(client, keys).then(() => ({ allocated: 0, expected: 0 }));
    let next = 0;
    const value = mine.map((own): BatchAnswer => (own ? { kind: 'reply', reply: replies[next++] as Reply } : { kind: 'single' }));
    return { value, last };
  }

  /** Each request's answer, and what the batch must write for the holds it grants. */
  private async decide(
    client: Client,
    merchantId: string,
    saleId: string,
    sale: sql.SaleRow | undefined,
    requests: HoldRequest[],
    stock: Promise<BatchStock>,
  ): Promise<{ replies: Reply[]; write?: HoldWrite }> {
    const now = new Date();
    const closed = saleRefusal(saleId, sale, now);
    if (closed) return { replies: requests.map(() => refusal(closed)) };
    assert.ok(sale, 'saleRefusal refuses a missing sale');
    const plans = requests.map((request) => ({ request, lines: normalizeLines(request.lines) }));
    const { held, usedTickets, items } = await stock;
    const returning = [...items.values()].filter((item) => item.returned > 0).map((item) => item.id);
    // Returns of ended holds come back to the items here, many in one statement, under the lock.
    if (returning.length > 0) await sql.creditReturns(client, merchantId, returning);
    const left = new Map([...items.values()].map((item) => [item.id, item.unallocated + item.returned]));
    const taken = new Map<string, number>();
    const expiresAt = new Date(now.getTime() + sale.hold_seconds * 1000);
    const holds: (batchSql.NewHold | ApiError)[] = plans.map(({ request, lines }) => {
      const admission = request.admission;
      if (!admission.ok) return admissionRefused(admission.reason);
      const linesRefused = linesRefusal(sale.currency, lines, items, (item) => left.get(item.id) ?? 0);
      if (linesRefused) return linesRefused;
      const amount = holdAmount(lines, items);
      if (usedTickets.has(admission.ticketId)) return admissionRefused(TOKEN_ALREADY_USED);
      const already = held.get(request.buyerReference) ?? 0;
      const overLimit = buyerLimitRefusal(sale, already, lines);
      if (overLimit) return overLimit;
      usedTickets.add(admission.ticketId);
      held.set(request.buyerReference, already + totalQuantity(lines));
      for (const line of lines) {
        left.set(line.item_id, (left.get(line.item_id) ?? 0) - line.quantity);
        taken.set(line.item_id, (taken.get(line.item_id) ?? 0) + line.quantity);
      }
      return { id: newId('hold'), buyer_reference: request.buyerReference, admission_ticket: admission.ticketId, amount, lines };
    });
    const created = holds.filter((hold): hold is batchSql.NewHold => !(hold instanceof ApiError));
    const replies = holds.map((hold) => {
      if (hold instanceof ApiError) return refusal(hold);
      const row: sql.HoldRow = {
        merchant_id: merchantId,
        id: hold.id,
        sale_id: saleId,
        buyer_reference: hold.buyer_reference,
        status: 'active',
        admission_ticket: hold.admission_ticket,
        amount: hold.amount,
        currency: sale.currency,
        expires_at: expiresAt,
        created_at: now,
      };
      return { status: 200, body: this.options.view(row, hold.lines) };
    });
    if (created.length === 0) return { replies };
    return { replies, write: { currency: sale.currency, expiresAt, createdAt: now, taken, holds: created } };
  }
}

/** What lockStock reads for a batch: each buyer's units, the tickets used, the items locked. */
type BatchStock = Awaited<ReturnType<typeof batchSql.lockStock>>;

/** A batch with no admitted request reads no stock (fresh maps: decide adds to them). */
function noStock(): BatchStock {
  return { held: new Map(), usedTickets: new Set(), items: new Map() };
}

/** The buyers, tickets and items (in lock order) that the admitted requests of a batch name. */
function stockScope(merchantId: string, saleId: string, admitted: HoldRequest[]): Parameters<typeof batchSql.lockStock>[1] {
  return {
    merchantId,
    saleId,
    buyers: [...new Set(admitted.map((request) => request.buyerReference))],
    tickets: admitted.flatMap((request) => (request.admission.ok ? [request.admission.ticketId] : [])),
    itemIds: [...new Set(admitted.flatMap((request) => normalizeLines(request.lines).map((line) => line.item_id)))].sort(),
  };
}

function refusal(error: ApiError): Reply {
  return { status: error.status, body: error.toBody(), headers: error.headers };
}
