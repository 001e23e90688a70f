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
import * as ledger from '../ledger/service.js';
import { type Client, type Pool, withTransaction } from '../platform/db/pool.js';
import { ApiError } from '../platform/http/errors.js';
import { page } from '../platform/http/pagination.js';
import type { HeldKey, PhaseResult, Reply } from '../platform/idempotency/service.js';
import * as idempotency from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import type { ProviderOutcome, ProviderRefund } from '../providers/provider.js';
import { providerKeyFor, toApiRefund } from './domain.js';
import { unavailableReply } from './outcomes.js';
import { errorReply, ok, type PaymentDeps, type RequestContext, refusedReply } from './service.js';
import * as sql from './sql.js';

export interface CreateRefundParams {
  payment_intent: string;
  amount?: number;
  reason?: string;
  metadata?: Record<string, string>;
}

const phaseResponse = (reply: Reply): PhaseResult => ({ kind: 'response', status: reply.status, body: reply.body });

export async function createRefund(deps: PaymentDeps, ctx: RequestContext, params: CreateRefundParams): Promise<Reply> {
  return idempotency.run(
    deps.pool,
    { merchantId: ctx.merchantId, key: ctx.idempotencyKey, method: ctx.method, path: ctx.path, fingerprint: ctx.fingerprint },
    deps.idempotency,
    async (held) => {
      if (held.recoveryPoint === 'started') {
        const result = await idempotency.atomicPhase(deps.pool, held, (client) => startRefund(client, held.merchantId, params));
        if (result.kind === 'response') return result;
      }
      assert.equal(held.recoveryPoint, 'refund_started');
      return callProvider(deps, held);
    },
    refusedReply,
  );
}

/** Phase: reserve the amount, create the pending refund and its attempt. */
async function startRefund(client: Client, merchantId: string, params: CreateRefundParams): Promise<PhaseResult> {
  const intent = await sql.selectIntent(client, merchantId, params.payment_intent, true);
  if (!intent) {
    return phaseResponse(
      errorReply(new ApiError('resource_missing', `No such payment_intent: '${params.payment_intent}'`, 'payment_intent')),
    );
  }
  if (intent.status !== 'succeeded') {
    return phaseResponse(
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
    return phaseResponse(errorReply(new ApiError('charge_already_refunded', 'This payment has already been refunded in full.')));
  }
  const amount = params.amount ?? remaining;
  if (amount > remaining) {
    return phaseResponse(
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
    providerIdempotencyKey: providerKeyFor(attemptId),
  });
  await events.record(client, merchantId, 'refund.created', toApiRefund(refund));
  return { kind: 'recoveryPoint', name: 'refund_started', resourceId: refund.id };
}

async function callProvider(deps: PaymentDeps, held: HeldKey): Promise<Reply> {
  const refund = await sql.selectRefund(deps.pool, held.merchantId, held.resourceId as string);
  assert.ok(refund, 'the refund a key points at exists');
  const [intent, attempt] = await Promise.all([
    sql.selectIntent(deps.pool, held.merchantId, refund.payment_intent_id),
    sql.selectOpenRefundAttempt(deps.pool, held.merchantId, refund.payment_intent_id, refund.id),
  ]);
  assert.ok(intent);
  if (!attempt) {
    return idempotency.atomicPhase(deps.pool, held, async () => phaseResponse(ok(toApiRefund(refund)))) as Promise<Reply>;
  }
  const outcome = await deps.provider.refund({
    idempotencyKey: attempt.provider_idempotency_key,
    reference: intent.provider_reference as string,
    amount: refund.amount,
  });
  if (outcome.kind === 'unavailable') {
    // Nothing reached the provider: fail this refund, release its amount, and let a retry with
    // the same key start a new one.
    return withTransaction(deps.pool, async (client) => {
      await applyRefundOutcome(client, refund, attempt, outcome);
      await idempotency.release(client, held, 'started');
      return unavailableReply(outcome.retryAfterSeconds);
    });
  }
  return idempotency.atomicPhase(deps.pool, held, async (client) =>
    phaseResponse(await applyRefundOutcome(client, refund, attempt, outcome)),
  ) as Promise<Reply>;
}

export async function applyRefundOutcome(
  client: Client,
  refund: sql.RefundRow,
  attempt: sql.AttemptRow,
  outcome: ProviderOutcome<ProviderRefund>,
): Promise<Reply> {
  const { merchant_id: merchantId } = refund;
  if (outcome.kind === 'unknown') {
    await sql.settleAttempt(client, merchantId, attempt.id, { status: 'unknown', errorCode: 'outcome_unknown' });
    return ok(toApiRefund(refund));
  }
  const succeeded = outcome.kind === 'succeeded';
  const settledAttempt = await sql.settleAttempt(client, merchantId, attempt.id, {
    status: succeeded ? 'succeeded' : 'failed',
    providerReference: succeeded ? outcome.value.reference : null,
    errorCode: succeeded ? null : outcome.kind === 'declined' ? outcome.code : 'provider_unavailable',
  });
  const settled = settledAttempt
    ? await sql.settleRefund(client, merchantId, refund.id, succeeded ? 'succeeded' : 'failed', succeeded ? null : failureReason(outcome))
    : undefined;
  if (!settled) return ok(toApiRefund((await sql.selectRefund(client, merchantId, refund.id)) ?? refund));
  if (succeeded) {
    await ledger.post(client, {
      merchantId,
      kind: 'refund',
      currency: refund.currency,
      amount: refund.amount,
      paymentIntentId: refund.payment_intent_id,
      refundId: refund.id,
    });
    await events.record(client, merchantId, 'refund.updated', toApiRefund(settled));
  } else {
    assert.ok(await sql.adjustAmountRefunded(client, merchantId, refund.payment_intent_id, -refund.amount));
    await events.record(client, merchantId, 'refund.failed', toApiRefund(settled));
  }
  return ok(toApiRefund(settled));
}

function failureReason(outcome: ProviderOutcome<ProviderRefund>): string {
  return outcome.kind === 'declined' ? outcome.code : 'provider_unavailable';
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
