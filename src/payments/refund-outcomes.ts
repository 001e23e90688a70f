/**
 * Applying a provider's answer to a refund attempt, inside the completion command's
 * transaction: the refund settles once, the ledger is posted on success, and a failed refund
 * releases the amount it reserved.
 */
import assert from 'node:assert/strict';
import * as events from '../events/service.js';
import * as ledger from '../ledger/service.js';
import type { Client } from '../platform/db/pool.js';
import type { ProviderOutcome, ProviderRefund } from '../providers/service.js';
import { toApiRefund } from './domain.js';
import type { Completion } from './outcomes.js';
import { scheduleReconciliation } from './reconciliation-queue.js';
import * as sql from './sql.js';

const settledAs = (refund: sql.RefundRow): Completion => ({ kind: 'refund', refund: toApiRefund(refund) });

export async function applyRefundOutcome(
  client: Client,
  refund: sql.RefundRow,
  attempt: sql.AttemptRow,
  outcome: ProviderOutcome<ProviderRefund>,
): Promise<Completion> {
  const { merchant_id: merchantId } = refund;
  if (outcome.kind === 'unknown') {
    if (await sql.settleAttempt(client, merchantId, attempt.id, { status: 'unknown', errorCode: 'outcome_unknown' })) {
      await scheduleReconciliation(client, attempt);
    }
    return settledAs(refund);
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
  if (!settled) return settledAs((await sql.selectRefund(client, merchantId, refund.id)) ?? refund);
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
  return settledAs(settled);
}

function failureReason(outcome: ProviderOutcome<ProviderRefund>): string {
  return outcome.kind === 'declined' ? outcome.code : 'provider_unavailable';
}
