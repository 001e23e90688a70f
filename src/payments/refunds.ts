/**
 * Refunds, full or partial, several up to the amount received and never more. A refund
 * reserves its amount on the intent (amount_refunded) in the same transaction that creates
 * it, so concurrent refunds cannot together exceed what was received; a failed refund
 * releases its reservation.
 *
 * Recovery points: started → refund_started → finished
 */
import assert from 'node:assert/strict';
import * as events from '../events/service.js';
import type { Client, Pool } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import { ApiError } from '../platform/http/errors.js';
import { page } from '../platform/http/pagination.js';
import { errorReply, ok, type Reply } from '../platform/http/reply.js';
import type { HeldKey, PhaseResult } from '../platform/idempotency/service.js';
import * as idempotency from '../platform/idempotency/service.js';
import { respond } from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import { callAndComplete } from './calls.js';
import { providerKeyFor, toApiRefund } from './domain.js';
import type { PaymentDeps } from './service.js';
import * as sql from './sql.js';

export interface CreateRefundParams {
  payment_intent: string;
  amount?: number;
  reason?: string;
  metadata?: Record<string, string>;
}

type RefundPoint = 'refund_started';

export async function createRefund(deps: PaymentDeps, ctx: RequestContext, params: CreateRefundParams): Promise<Reply> {
  return idempotency.idempotent<RefundPoint>(deps, ctx, async (held) => {
    if (held.recoveryPoint === 'started') {
      const result = await idempotency.atomicPhase(deps.pool, held, (client) => startRefund(client, held.merchantId, params));
      if (result.kind === 'response') return result;
    }
    assert.equal(held.recoveryPoint, 'refund_started');
    return callProvider(deps, held);
  });
}

/** Phase: reserve the amount, create the pending refund and its attempt. */
async function startRefund(client: Client, merchantId: string, params: CreateRefundParams): Promise<PhaseResult<RefundPoint>> {
  const intent = await sql.selectIntent(client, merchantId, params.payment_intent, true);
  if (!intent) {
    return respond(errorReply(new ApiError('resource_missing', `No such payment_intent: '${params.payment_intent}'`, 'payment_intent')));
  }
  if (intent.status !== 'succeeded') {
    return respond(
      errorReply(
        new ApiError(
          'payment_intent_unexpected_state',
          `This PaymentIntent's status is ${intent.status}; only succeeded payments can be refunded.`,
        ),
      ),
    );
  }
  const remaining = intent.amount_received - intent.amount_refunded;
  if (remaining === 0) {
    return respond(errorReply(new ApiError('charge_already_refunded', 'This payment has already been refunded in full.')));
  }
  const amount = params.amount ?? remaining;
  if (amount > remaining) {
    return respond(
      errorReply(
        new ApiError(
          'refund_exceeds_received',
          `amount (${amount}) is more than the ${remaining} left to refund on this payment.`,
          'amount',
        ),
      ),
    );
  }
  assert.ok(await sql.adjustAmountRefunded(client, merchantId, intent.id, amount), 'the locked intent has room for the refund');
  const refund = await sql.insertRefund(client, {
    merchantId,
    id: newId('re'),
    paymentIntentId: intent.id,
    amount,
    currency: intent.currency,
    reason: params.reason ?? null,
    metadata: params.metadata ?? {},
  });
  const attemptId = newId('pa');
  await sql.insertAttempt(client, {
    merchantId,
    id: attemptId,
    paymentIntentId: intent.id,
    refundId: refund.id,
    operation: 'refund',
    amount,
    providerIdempotencyKey: providerKeyFor(merchantId, attemptId),
  });
  await events.record(client, merchantId, 'refund.created', toApiRefund(refund));
  return { kind: 'recoveryPoint', name: 'refund_started', resourceId: refund.id };
}

async function callProvider(deps: PaymentDeps, held: HeldKey<RefundPoint>): Promise<Reply> {
  const refund = await sql.selectRefund(deps.pool, held.merchantId, held.resourceId as string);
  assert.ok(refund, 'the refund a key points at exists');
  const attempt = await sql.selectOpenRefundAttempt(deps.pool, held.merchantId, refund.payment_intent_id, refund.id);
  if (!attempt) {
    // Settled meanwhile (by the provider's webhook or the reconciler): answer with its state.
    const latest = (await sql.selectRefund(deps.pool, held.merchantId, refund.id)) ?? refund;
    return idempotency.finalPhase(deps.pool, held, async () => ok(toApiRefund(latest)));
  }
  // Nothing reached the provider when it is unavailable: the refund fails, its amount is
  // released, and a retry with the same key starts a new one.
  return callAndComplete(deps, held, attempt, 'started');
}

export async function retrieveRefund(pool: Pool, merchantId: string, id: string) {
  const refund = await sql.selectRefund(pool, merchantId, id);
  return refund ? toApiRefund(refund) : undefined;
}

export async function listRefunds(
  pool: Pool,
  query: { merchantId: string; limit: number; startingAfter?: string; paymentIntentId?: string },
) {
  const rows = await sql.selectRefunds(pool, { ...query, limit: query.limit + 1 });
  return page(rows.map(toApiRefund), query.limit, '/v1/refunds');
}
