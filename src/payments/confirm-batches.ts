/**
 * Coalesced confirmation. A paid checkout's confirm is two atomic phases around the provider
 * call, and alone each is a transaction of several statements: about a dozen round trips per
 * checkout, each costing the API and the database far more CPU than the work it carries. So a
 * node gathers the confirms that arrive together, as it gathers creations (create-batches.ts):
 *
 *   start:    one statement per batch writes every request's key (at `authorization_started`,
 *             locked), moves its intent to processing and inserts its authorize attempt;
 *   (the provider call stays one per request, outside any transaction);
 *   complete: for the common outcome, an automatic capture that succeeded, one transaction per
 *             batch settles the attempts, moves the intents to succeeded, records their events,
 *             posts their captures, runs the payment-succeeded reaction (orders paid, holds
 *             converted) and stores each key's answer.
 *
 * Each request keeps its own key, answer and replay. Anything unusual is left out of a batch
 * and runs on the general path, request by request, which answers as it always has: a key that
 * exists (a retry, a reuse), an intent missing or not confirmable, a second confirm of one
 * intent in a batch, an attempt another path settled first, every other provider outcome. A
 * batch whose statement or transaction fails as a whole wrote nothing, and each of its
 * requests runs alone (except a commit the synchronous standby did not confirm, see below).
 * A crash between the phases leaves the key at `authorization_started`, exactly where the
 * general path leaves it, and a retry resumes by sending again under the same provider key.
 */
import assert from 'node:assert/strict';
import { isPostableAmount } from '../ledger/service.js';
import { scopedKey } from '../platform/db/by-ids.js';
import { GroupCommit } from '../platform/db/group-commit.js';
import { type KeyedWrite, keyedBatch } from '../platform/db/keyed-batches.js';
import { type Client, type Pool, SyncReplicationCanceledError, withAutocommit, withTransaction } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import type { Reply } from '../platform/http/reply.js';
import { newId } from '../platform/ids.js';
import type { ProviderCharge } from '../providers/service.js';
import { recordSucceeded, type Started, type StartRow, settleCaptured, startAuthorizations } from './confirm-batch-sql.js';
import { providerKeyFor, toApiIntent } from './domain.js';
import type { Completion } from './outcomes.js';
import type { AttemptRow, PaymentIntentRow } from './sql.js';

/** The payment-succeeded reaction for many payments, in the completion's transaction (hooks.ts's listener for a batch). */
export type PaymentsSucceededListener = (client: Client, intents: PaymentIntentRow[]) => Promise<void>;

export interface ConfirmBatchOptions {
  pool: Pool;
  ttlHours: number;
  windowMs: number;
  batchMax: number;
  /** Batches of each phase in flight at once on a node: they lock different intents. */
  maxRunning: number;
  /** The answer stored with a key for what completing came to (routes.ts's, as the general path's). */
  present: (completion: Completion) => Reply;
  onPaymentsSucceeded: PaymentsSucceededListener;
  /** Called with each batch's phase and size, for metrics and the bench. */
  onBatch?: (phase: 'start' | 'complete', size: number) => void;
}

export interface ConfirmRequest {
  ctx: RequestContext;
  intentId: string;
  paymentMethod: string | undefined;
}

/** `started`: the batch wrote the first phase and the request holds its key; `single`: run it on the general path. */
export type StartOutcome = ({ kind: 'started' } & Started) | { kind: 'single' };

export interface CapturedCall {
  ctx: RequestContext;
  intent: PaymentIntentRow;
  attempt: AttemptRow;
  charge: ProviderCharge;
}

/** `completed`: the batch applied the outcome and stored this answer with the key; `single`: complete it on the general path. */
export type CompleteOutcome = { kind: 'completed'; reply: Reply } | { kind: 'single' };

/** Whether a provider outcome can be completed in a batch: a captured authorization. */
export function isBatchableCapture(attempt: AttemptRow, charge: ProviderCharge): boolean {
  return attempt.operation === 'authorize' && charge.status === 'captured' && isPostableAmount(charge.amountCaptured);
}

export class ConfirmBatcher {
  private readonly starts: (request: ConfirmRequest & KeyedWrite) => Promise<StartOutcome>;
  private readonly completions: GroupCommit<CapturedCall, CompleteOutcome>;

  constructor(private readonly options: ConfirmBatchOptions) {
    const limits = { windowMs: options.windowMs, batchMax: options.batchMax, maxRunning: options.maxRunning };
    // One group per phase for the node: a batch may mix merchants, each row carries its own scope.
    // A start writes keys: a key twice in a batch and a failed statement go by the keyed-batch rules.
    this.starts = keyedBatch<ConfirmRequest & KeyedWrite, StartOutcome>({
      ...limits,
      group: 'start',
      single: { kind: 'single' },
      write: (batch) => this.writeStarts(batch),
      onBatch: (size) => options.onBatch?.('start', size),
    });
    this.completions = new GroupCommit({
      ...limits,
      run: (_group, batch) => this.runCompletions(batch),
      onBatch: (size) => options.onBatch?.('complete', size),
    });
  }

  start(request: ConfirmRequest): Promise<StartOutcome> {
    const { ctx } = request;
    return this.starts({
      ...request,
      merchantId: ctx.merchantId,
      keyKind: ctx.keyKind,
      key: ctx.idempotencyKey,
      fingerprint: ctx.fingerprint,
    });
  }

  complete(call: CapturedCall): Promise<CompleteOutcome> {
    return this.completions.submit('complete', call);
  }

  /** One statement for a batch's first phases; its keys are distinct (keyed-batches.ts). */
  private async writeStarts(batch: ConfirmRequest[]): Promise<StartOutcome[]> {
    // One request per intent in a batch; the others run alone after it, and meet what they
    // would meet today (the intent processing).
    const intents = new Set<string>();
    const rows = batch.map((request): StartRow | undefined => {
      const { ctx } = request;
      const intent = scopedKey(ctx.merchantId, request.intentId);
      if (intents.has(intent)) return undefined;
      intents.add(intent);
      const attemptId = newId('pa');
      return {
        merchantId: ctx.merchantId,
        keyKind: ctx.keyKind,
        key: ctx.idempotencyKey,
        method: ctx.method,
        path: ctx.path,
        fingerprint: ctx.fingerprint,
        intentId: request.intentId,
        paymentMethod: request.paymentMethod ?? null,
        attemptId,
        providerKey: providerKeyFor(ctx.merchantId, attemptId),
      };
    });
    const writes = rows.filter((row) => row !== undefined);
    // One autocommit statement, with the commit guard of platform/db/pool.ts.
    const started = await withAutocommit(this.options.pool, (client) => startAuthorizations(client, writes, this.options.ttlHours));
    return rows.map((row) => {
      const done = row && started.get(row.intentId);
      // An intent of another merchant with the same id cannot be: ids are unique.
      return done && done.intent.merchant_id === row.merchantId ? { kind: 'started', ...done } : { kind: 'single' };
    });
  }

  private async runCompletions(batch: CapturedCall[]): Promise<CompleteOutcome[]> {
    const intents = new Set<string>();
    const firsts = batch.map((call) => {
      const intent = scopedKey(call.intent.merchant_id, call.intent.id);
      if (intents.has(intent)) return false;
      intents.add(intent);
      return true;
    });
    const calls = batch.filter((_, index) => firsts[index]);
    let replies: Map<string, Reply>;
    try {
      // Intents, attempts, keys, orders, holds and expiry jobs, each found by its key.
      replies = await withTransaction(this.options.pool, (client) => this.completeTogether(client, calls), { keyedLookups: true });
    } catch (error) {
      // As the start: a commit maybe lost in a failover is acknowledged to no one.
      if (error instanceof SyncReplicationCanceledError) throw error;
      return batch.map(() => ({ kind: 'single' }));
    }
    return batch.map((call, index) => {
      const reply = firsts[index] ? replies.get(call.intent.id) : undefined;
      return reply ? { kind: 'completed', reply } : { kind: 'single' };
    });
  }

  /** The completion of a batch in the caller's transaction; yields each completed request's answer by intent id. */
  private async completeTogether(client: Client, calls: CapturedCall[]): Promise<Map<string, Reply>> {
    const succeeded = await settleCaptured(
      client,
      calls.map((call) => ({
        merchantId: call.intent.merchant_id,
        intentId: call.intent.id,
        attemptId: call.attempt.id,
        reference: call.charge.reference,
        received: call.charge.amountCaptured,
      })),
    );
    const replies = new Map<string, Reply>();
    const moved: PaymentIntentRow[] = [];
    const records = [];
    for (const call of calls) {
      if (!succeeded.has(call.intent.id)) continue;
      const intent = succeeded.get(call.intent.id);
      // An open attempt means a processing intent: anything else is a bug, and fails the batch.
      assert.ok(intent, `intent ${call.intent.id} with an open attempt is processing`);
      const view = toApiIntent(intent);
      const reply = this.options.present({ kind: 'intent', intent: view });
      replies.set(intent.id, reply);
      moved.push(intent);
      records.push({
        merchantId: intent.merchant_id,
        intentId: intent.id,
        eventId: newId('evt'),
        view,
        ledgerTransactionId: newId('ltx'),
        currency: intent.currency,
        amount: call.charge.amountCaptured,
        keyKind: call.ctx.keyKind,
        key: call.ctx.idempotencyKey,
        status: reply.status,
        body: reply.body,
      });
    }
    if (records.length === 0) return replies;
    // The record and the payment-succeeded reaction go out together (the pool pipelines), one
    // round trip for both, and are answered in order: a failed record aborts the transaction,
    // so the reaction fails after it and the record's error is the one thrown.
    const [written] = await Promise.all([recordSucceeded(client, records, new Date()), this.options.onPaymentsSucceeded(client, moved)]);
    assert.equal(written.events, records.length, 'one event per succeeded payment');
    assert.equal(written.keys, records.length, 'every completed request holds its key');
    return replies;
  }
}
