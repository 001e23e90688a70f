/**
 * PaymentIntent use cases. Each POST runs as a sequence of atomic phases under its idempotency
 * key (see platform/idempotency). The rule of the money path holds throughout: the attempt is
 * committed before the provider is called, and no transaction is open during the call.
 *
 * Recovery points:
 *   create:  started → intent_created → authorization_started → finished
 *   confirm: started → authorization_started → finished
 *   capture: started → capture_started → finished
 *   cancel:  started → cancel_started → finished
 */
import assert from 'node:assert/strict';
import * as events from '../events/service.js';
import { type Client, type Pool, withAutocommit } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import { ApiError } from '../platform/http/errors.js';
import { page } from '../platform/http/pagination.js';
import { errorReply, ok, type Reply } from '../platform/http/reply.js';
import type { HeldKey, IdempotencyOptions, PhaseResult } from '../platform/idempotency/service.js';
import * as idempotency from '../platform/idempotency/service.js';
import { respond } from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import { type CallDeps, callAndComplete, sendAndCompleteInBatch } from './calls.js';
import type { Started } from './confirm-batch-sql.js';
import type { ConfirmBatcher } from './confirm-batches.js';
import type { IntentCreationBatcher } from './create-batches.js';
import { CANCELABLE, CONFIRMABLE, initialStatus, providerKeyFor, toApiIntent } from './domain.js';

export { type Started, startedOfNewIntent } from './confirm-batch-sql.js';
/** The node's batcher of confirms, which the app builds with the batch form of the payment-succeeded reaction. */
export { ConfirmBatcher, type PaymentsSucceededListener } from './confirm-batches.js';
export { newIntentsCte } from './create-batches.js';
/** What other capabilities may do inside their own transactions: see hooks.ts. */
export { cancelUnpaidForExpiry, createIntentInTransaction, type ExpiryDecision, type PaymentSucceededListener } from './hooks.js';
export type { NewIntent } from './sql.js';

import type { OpenOperation } from './outcomes.js';
import * as sql from './sql.js';

export interface PaymentDeps extends CallDeps {
  idempotency: IdempotencyOptions;
  /** Coalesces unconfirmed creations that arrive together (create-batches.ts); absent, each is its own statement. */
  intentBatcher?: IntentCreationBatcher;
  /** Coalesces confirms that arrive together (confirm-batches.ts); absent, each runs its own phases. */
  confirmBatcher?: ConfirmBatcher;
}

export interface CreateIntentParams {
  amount: number;
  currency: string;
  capture_method?: 'automatic' | 'manual';
  payment_method?: string;
  confirm?: boolean;
  description?: string;
  metadata?: Record<string, string>;
}

/** The recovery points of each use case after `started` (see the top of this file). */
type CreatePoint = 'intent_created' | 'authorization_started';
type ConfirmPoint = 'authorization_started';
type CapturePoint = 'capture_started';
type CancelPoint = 'cancel_started';

const missing = (id: string) => errorReply(new ApiError('resource_missing', `No such payment_intent: '${id}'`, 'id'));
const unexpectedState = (intent: sql.PaymentIntentRow, action: string) =>
  errorReply(
    new ApiError('payment_intent_unexpected_state', `This PaymentIntent's status is ${intent.status}; it cannot be ${action} now.`),
  );

function newIntent(merchantId: string, params: CreateIntentParams): sql.NewIntent {
  return {
    merchantId,
    id: newId('pi'),
    amount: params.amount,
    currency: params.currency,
    status: initialStatus(params.payment_method),
    captureMethod: params.capture_method ?? 'automatic',
    paymentMethod: params.payment_method ?? null,
    description: params.description ?? null,
    metadata: params.metadata ?? {},
    createdAt: new Date(),
  };
}

export async function createPaymentIntent(deps: PaymentDeps, ctx: RequestContext, params: CreateIntentParams): Promise<Reply> {
  if (!params.confirm) return createUnconfirmed(deps, ctx, params);
  return idempotency.idempotent<CreatePoint>(deps, ctx, (held) => createAndConfirm(deps, held, params));
}

/** What the API shows for an intent just created, before any payment activity. */
export function viewOfNewIntent(intent: sql.NewIntent) {
  return toApiIntent(sql.rowOfNewIntent(intent));
}

/** One round trip: intent, event and finished key in a single statement. */
async function createUnconfirmed(deps: PaymentDeps, ctx: RequestContext, params: CreateIntentParams): Promise<Reply> {
  const intent = newIntent(ctx.merchantId, params);
  // The view is spelt out rather than spread from `intent`: a spread plus extra fields gives
  // V8 a fresh object shape on every call, and each field then costs an inline-cache miss.
  const body = viewOfNewIntent(intent);
  const creation = {
    keyKind: ctx.keyKind,
    key: ctx.idempotencyKey,
    fingerprint: ctx.fingerprint,
    ttlHours: deps.idempotency.ttlHours,
    eventId: newId('evt'),
    responseBody: body,
  };
  const outcome = deps.intentBatcher ? await deps.intentBatcher.submit({ merchantId: ctx.merchantId, intent, ...creation }) : 'single';
  const created =
    outcome === 'single'
      ? await withAutocommit(deps.pool, (client) => sql.insertIntentWithFinishedKey(client, intent, creation))
      : outcome === 'created';
  if (created) return ok(body);
  // The key exists: replay it or refuse it. (This path stores finished keys only, so a key
  // without a response belongs to a different request and is refused as a mismatch.)
  return idempotency.idempotentExisting<CreatePoint>(deps, ctx, (held) => createAndConfirm(deps, held, params));
}

async function createAndConfirm(deps: PaymentDeps, held: HeldKey<CreatePoint>, params: CreateIntentParams): Promise<Reply> {
  for (;;) {
    switch (held.recoveryPoint) {
      case 'started': {
        await idempotency.atomicPhase(deps.pool, held, async (client) => {
          const intent = await sql.insertIntent(client, newIntent(held.merchantId, params));
          await events.record(client, held.merchantId, 'payment_intent.created', toApiIntent(intent));
          return { kind: 'recoveryPoint', name: 'intent_created', resourceId: intent.id };
        });
        break;
      }
      case 'intent_created': {
        const result = await idempotency.atomicPhase(deps.pool, held, (client) =>
          startAuthorization(client, held.merchantId, held.resourceId as string, params.payment_method),
        );
        if (result.kind === 'response') return result;
        break;
      }
      case 'authorization_started':
        return callProvider(deps, held, 'authorize', 'intent_created');
      default:
        return assert.fail(`unknown recovery point ${held.recoveryPoint satisfies never} for payment creation`);
    }
  }
}

/** The answer for a request whose work is done but whose key missed its response. */
async function replayCurrent<P extends string>(deps: PaymentDeps, held: HeldKey<P>): Promise<Reply> {
  return idempotency.finalPhase(deps.pool, held, async (client) => {
    const intent = await sql.selectIntent(client, held.merchantId, held.resourceId as string);
    assert.ok(intent, 'the intent a key points at exists');
    return ok(toApiIntent(intent));
  });
}

export async function confirmPaymentIntent(
  deps: PaymentDeps,
  ctx: RequestContext,
  id: string,
  params: { payment_method?: string },
): Promise<Reply> {
  const batcher = deps.confirmBatcher;
  const started = batcher ? await batcher.start({ ctx, intentId: id, paymentMethod: params.payment_method }) : undefined;
  if (started?.kind === 'started') return continueStartedConfirm(deps, ctx, started);
  return idempotency.idempotent<ConfirmPoint>(deps, ctx, async (held) => {
    if (held.recoveryPoint === 'started') {
      held.resourceId = id;
      const result = await idempotency.atomicPhase(deps.pool, held, (client) =>
        startAuthorization(client, held.merchantId, id, params.payment_method),
      );
      if (result.kind === 'response') return result;
    }
    assert.equal(held.recoveryPoint, 'authorization_started');
    return callProvider(deps, held, 'authorize', 'started');
  });
}

/**
 * The rest of a confirm whose first phase a batch wrote: the confirm batcher's start, or an
 * order batch that confirms (sales/order-batches.ts). Its key is held at authorization_started,
 * exactly as the general path leaves it, so a crash from here on resumes the same way.
 */
export function continueStartedConfirm(deps: PaymentDeps, ctx: RequestContext, started: Started): Promise<Reply> {
  const held: HeldKey<ConfirmPoint> = {
    merchantId: ctx.merchantId,
    keyKind: ctx.keyKind,
    key: ctx.idempotencyKey,
    recoveryPoint: 'authorization_started',
    resourceId: started.intent.id,
  };
  const batcher = deps.confirmBatcher;
  return idempotency.continueHeld(deps.pool, held, () =>
    batcher
      ? sendAndCompleteInBatch(deps, batcher, held, ctx, started, 'started')
      : callAndComplete(deps, held, started.attempt, 'started'),
  );
}

/** Phase: commit an authorization attempt and move the intent to processing. */
async function startAuthorization(
  client: Client,
  merchantId: string,
  id: string,
  paymentMethod: string | undefined,
): Promise<PhaseResult<'authorization_started'>> {
  const intent = await sql.selectIntent(client, merchantId, id, true);
  if (!intent) return respond(missing(id));
  if (!CONFIRMABLE.includes(intent.status)) return respond(unexpectedState(intent, 'confirmed'));
  const method = paymentMethod ?? intent.payment_method;
  if (!method) {
    return respond(
      errorReply(new ApiError('parameter_missing', 'A payment_method is required to confirm this PaymentIntent.', 'payment_method')),
    );
  }
  await sql.transitionIntent(client, {
    merchantId,
    id,
    from: CONFIRMABLE,
    to: 'processing',
    set: { payment_method: method, last_payment_error: null },
  });
  await insertAttempt(client, merchantId, id, 'authorize', intent.amount);
  return { kind: 'recoveryPoint', name: 'authorization_started', resourceId: id };
}

export async function capturePaymentIntent(
  deps: PaymentDeps,
  ctx: RequestContext,
  id: string,
  params: { amount_to_capture?: number },
): Promise<Reply> {
  return idempotency.idempotent<CapturePoint>(deps, ctx, async (held) => {
    if (held.recoveryPoint === 'started') {
      held.resourceId = id;
      const result = await idempotency.atomicPhase(deps.pool, held, async (client) => {
        const intent = await sql.selectIntent(client, held.merchantId, id, true);
        if (!intent) return respond(missing(id));
        if (intent.status !== 'requires_capture') return respond(unexpectedState(intent, 'captured'));
        const amount = params.amount_to_capture ?? intent.amount_capturable;
        if (amount > intent.amount_capturable) {
          return respond(
            errorReply(
              new ApiError(
                'amount_too_large',
                `amount_to_capture (${amount}) is more than the amount_capturable (${intent.amount_capturable}).`,
                'amount_to_capture',
              ),
            ),
          );
        }
        await sql.transitionIntent(client, { merchantId: held.merchantId, id, from: ['requires_capture'], to: 'processing' });
        await insertAttempt(client, held.merchantId, id, 'capture', amount);
        return { kind: 'recoveryPoint', name: 'capture_started', resourceId: id };
      });
      if (result.kind === 'response') return result;
    }
    assert.equal(held.recoveryPoint, 'capture_started');
    return callProvider(deps, held, 'capture', 'started');
  });
}

export async function cancelPaymentIntent(
  deps: PaymentDeps,
  ctx: RequestContext,
  id: string,
  params: { cancellation_reason?: string },
): Promise<Reply> {
  return idempotency.idempotent<CancelPoint>(deps, ctx, async (held) => {
    if (held.recoveryPoint === 'started') {
      held.resourceId = id;
      const result = await idempotency.atomicPhase(deps.pool, held, async (client) => {
        const intent = await sql.selectIntent(client, held.merchantId, id, true);
        if (!intent) return respond(missing(id));
        if (!CANCELABLE.includes(intent.status)) return respond(unexpectedState(intent, 'canceled'));
        const reason = params.cancellation_reason ?? null;
        if (intent.status !== 'requires_capture') {
          // Nothing was authorized, so nothing at the provider needs releasing.
          const canceled = await sql.transitionIntent(client, {
            merchantId: held.merchantId,
            id,
            from: CANCELABLE,
            to: 'canceled',
            set: { cancellation_reason: reason, canceled_at: new Date() },
          });
          assert.ok(canceled, 'the locked intent is cancelable');
          await events.record(client, held.merchantId, 'payment_intent.canceled', toApiIntent(canceled));
          return respond(ok(toApiIntent(canceled)));
        }
        await sql.transitionIntent(client, {
          merchantId: held.merchantId,
          id,
          from: ['requires_capture'],
          to: 'processing',
          set: { cancellation_reason: reason },
        });
        await insertAttempt(client, held.merchantId, id, 'cancel', intent.amount_capturable);
        return { kind: 'recoveryPoint', name: 'cancel_started', resourceId: id };
      });
      if (result.kind === 'response') return result;
    }
    assert.equal(held.recoveryPoint, 'cancel_started');
    return callProvider(deps, held, 'cancel', 'started');
  });
}

async function insertAttempt(client: Client, merchantId: string, intentId: string, operation: OpenOperation, amount: number) {
  const attemptId = newId('pa');
  await sql.insertAttempt(client, {
    merchantId,
    id: attemptId,
    paymentIntentId: intentId,
    operation,
    amount,
    providerIdempotencyKey: providerKeyFor(merchantId, attemptId),
  });
}

/** Phase: send the open attempt and complete it; answer with the current state if it is settled. */
async function callProvider<P extends string>(
  deps: PaymentDeps,
  held: HeldKey<P>,
  operation: OpenOperation,
  retryPoint: idempotency.StartPoint | P,
): Promise<Reply> {
  const attempt = await sql.selectOpenAttempt(deps.pool, held.merchantId, held.resourceId as string, operation);
  if (!attempt) return replayCurrent(deps, held);
  return callAndComplete(deps, held, attempt, retryPoint);
}

export async function retrievePaymentIntent(pool: Pool, merchantId: string, id: string) {
  const intent = await sql.selectIntent(pool, merchantId, id);
  return intent ? toApiIntent(intent) : undefined;
}

export async function listPaymentIntents(pool: Pool, merchantId: string, limit: number, startingAfter?: string) {
  const rows = await sql.selectIntents(pool, merchantId, limit + 1, startingAfter);
  return page(rows.map(toApiIntent), limit, '/v1/payment_intents');
}

// A payment's page shows at most this many attempts; more means something is very wrong.
const ATTEMPTS_SHOWN_MAX = 100;

/** A payment's provider attempts, for the operator dashboard. */
export async function listAttempts(pool: Pool, merchantId: string, intentId: string) {
  const rows = await sql.selectAttemptsOfIntent(pool, merchantId, intentId, ATTEMPTS_SHOWN_MAX);
  return rows.map((row) => ({
    id: row.id,
    operation: row.operation,
    amount: row.amount,
    status: row.status,
    error_code: row.error_code,
    created: row.created_at ? Math.floor(row.created_at.getTime() / 1000) : null,
  }));
}

/** Newest intents in one status (the dashboard's filter). */
export async function listPaymentIntentsWithStatus(pool: Pool, merchantId: string, status: string, limit: number, startingAfter?: string) {
  const rows = await sql.selectIntentsWithStatus(pool, merchantId, status, limit + 1, startingAfter);
  return page(rows.map(toApiIntent), limit, '/v1/payment_intents');
}

/**
 * For a drill's verdict: provider attempts not settled, and payments authorized more than once
 * (a double charge). Both must be 0 once reconciliation has run.
 */
export function attemptAnomalies(pool: Pool, merchantId: string) {
  return sql.selectAttemptAnomalies(pool, merchantId);
}
