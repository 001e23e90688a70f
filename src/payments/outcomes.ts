/**
 * Applying what the provider answered to an attempt and its intent, inside one transaction:
 * attempt settled, intent moved by a guarded transition, ledger posted and event recorded
 * together. Used by the request path now and by reconciliation later, so a payment completes
 * the same way whoever learns its outcome.
 */
import assert from 'node:assert/strict';
import * as events from '../events/service.js';
import * as ledger from '../ledger/service.js';
import type { Client } from '../platform/db/pool.js';
import type { ProviderCharge, ProviderOutcome } from '../providers/service.js';
import { type ApiPaymentIntent, toApiIntent, type toApiRefund } from './domain.js';
import type { CompletionDeps } from './hooks.js';
import { scheduleReconciliation } from './reconciliation-queue.js';
import * as sql from './sql.js';

export type OpenOperation = 'authorize' | 'capture' | 'cancel';

export interface SettledCall {
  intent: sql.PaymentIntentRow;
  attempt: sql.AttemptRow;
  outcome: ProviderOutcome<ProviderCharge>;
}

/**
 * What completing an attempt came to, in the domain's words; routes.ts turns it into
 * the request's answer, and the reconciler and the provider webhook need no answer at all.
 */
export type Completion =
  /** The intent as it now stands: settled by this call, or already by another path. */
  | { kind: 'intent'; intent: ApiPaymentIntent }
  | { kind: 'refund'; refund: ReturnType<typeof toApiRefund> }
  /** The card was declined; the intent is back to requires_payment_method. */
  | { kind: 'card_declined'; code: string; message: string; intent: ApiPaymentIntent }
  /** The provider refused a capture or cancel; the authorization is still held. */
  | { kind: 'provider_refused'; operation: string; message: string }
  /** The call certainly did not take effect; the intent is retryable as before. */
  | { kind: 'provider_unavailable'; retryAfterSeconds: number };

/** Where an intent returns when a call certainly did not take effect: retryable as before. */
function statusBefore(attempt: sql.AttemptRow, intent: sql.PaymentIntentRow) {
  if (attempt.operation === 'authorize') return intent.payment_method ? 'requires_confirmation' : 'requires_payment_method';
  return 'requires_capture';
}

export async function applyOutcome(client: Client, deps: CompletionDeps, call: SettledCall): Promise<Completion> {
  const { intent, attempt, outcome } = call;
  const where = { merchantId: intent.merchant_id, id: intent.id, from: ['processing'] as const };
  switch (outcome.kind) {
    case 'unknown': {
      // The call may have taken effect: leave the intent processing for reconciliation to settle.
      if (await sql.settleAttempt(client, intent.merchant_id, attempt.id, { status: 'unknown', errorCode: 'outcome_unknown' })) {
        await scheduleReconciliation(client, attempt);
      }
      return current(client, intent);
    }
    case 'unavailable': {
      if (await sql.settleAttempt(client, intent.merchant_id, attempt.id, { status: 'failed', errorCode: 'provider_unavailable' })) {
        await sql.transitionIntent(client, { ...where, to: statusBefore(attempt, intent), set: { cancellation_reason: null } });
      }
      return { kind: 'provider_unavailable', retryAfterSeconds: outcome.retryAfterSeconds };
    }
    case 'declined':
      return applyDecline(client, call, outcome);
    case 'succeeded':
      break;
  }
  const charge = outcome.value;
  if (!(await sql.settleAttempt(client, intent.merchant_id, attempt.id, { status: 'succeeded', providerReference: charge.reference }))) {
    return current(client, intent);
  }
  switch (attempt.operation) {
    case 'authorize':
      if (charge.status === 'captured') return succeed(client, deps, intent, charge.amountCaptured, charge.reference);
      return transitionAndRecord(client, intent, 'requires_capture', 'payment_intent.amount_capturable_updated', {
        provider_reference: charge.reference,
        amount_capturable: charge.amount,
      });
    case 'capture':
      return succeed(client, deps, intent, charge.amountCaptured, charge.reference);
    case 'cancel':
      return transitionAndRecord(client, intent, 'canceled', 'payment_intent.canceled', {
        amount_capturable: 0,
        canceled_at: new Date(),
      });
    case 'refund':
      return assert.fail('refund outcomes are applied by refund-outcomes.ts');
  }
}

async function applyDecline(client: Client, call: SettledCall, outcome: { code: string; message: string }): Promise<Completion> {
  const { intent, attempt } = call;
  if (!(await sql.settleAttempt(client, intent.merchant_id, attempt.id, { status: 'failed', errorCode: outcome.code }))) {
    // Settled first by another path (the provider's webhook, the reconciler) with the same
    // answer the provider gave us under the same key: the caller is told the same thing as if
    // this path had applied it, a decline, not a 200 that depends on who won the race.
    const settled = await sql.selectAttempt(client, intent.merchant_id, attempt.id);
    const latest = await current(client, intent);
    if (settled?.status !== 'failed' || latest.kind !== 'intent') return latest;
    if (attempt.operation !== 'authorize') return { kind: 'provider_refused', operation: attempt.operation, message: outcome.message };
    return { kind: 'card_declined', code: outcome.code, message: outcome.message, intent: latest.intent };
  }
  if (attempt.operation !== 'authorize') {
    // The provider refused to capture or release the authorization; it is still held.
    await sql.transitionIntent(client, { merchantId: intent.merchant_id, id: intent.id, from: ['processing'], to: 'requires_capture' });
    return { kind: 'provider_refused', operation: attempt.operation, message: outcome.message };
  }
  const lastPaymentError = { type: 'card_error', code: 'card_declined', decline_code: outcome.code, message: outcome.message };
  const updated = await sql.transitionIntent(client, {
    merchantId: intent.merchant_id,
    id: intent.id,
    from: ['processing'],
    to: 'requires_payment_method',
    set: { last_payment_error: lastPaymentError, payment_method: null },
  });
  assert.ok(updated, 'an intent with an open attempt is processing');
  const view = toApiIntent(updated);
  await events.record(client, intent.merchant_id, 'payment_intent.payment_failed', view);
  return { kind: 'card_declined', code: outcome.code, message: outcome.message, intent: view };
}

/** Marks the intent succeeded with `received` captured, and posts the capture to the ledger. */
async function succeed(
  client: Client,
  deps: CompletionDeps,
  intent: sql.PaymentIntentRow,
  received: number,
  reference: string,
): Promise<Completion> {
  const reply = await transitionAndRecord(client, intent, 'succeeded', 'payment_intent.succeeded', {
    provider_reference: reference,
    amount_received: received,
    amount_capturable: 0,
  });
  await ledger.post(client, {
    merchantId: intent.merchant_id,
    kind: 'capture',
    currency: intent.currency,
    amount: received,
    paymentIntentId: intent.id,
  });
  await deps.onPaymentSucceeded(client, intent);
  return reply;
}

async function transitionAndRecord(
  client: Client,
  intent: sql.PaymentIntentRow,
  to: 'succeeded' | 'requires_capture' | 'canceled',
  eventType: events.EventType,
  set: sql.IntentChanges,
): Promise<Completion> {
  const updated = await sql.transitionIntent(client, { merchantId: intent.merchant_id, id: intent.id, from: ['processing'], to, set });
  assert.ok(updated, 'an intent with an open attempt is processing');
  const view = toApiIntent(updated);
  await events.record(client, intent.merchant_id, eventType, view);
  return { kind: 'intent', intent: view };
}

async function current(client: Client, intent: sql.PaymentIntentRow): Promise<Completion> {
  const latest = await sql.selectIntent(client, intent.merchant_id, intent.id);
  assert.ok(latest);
  return { kind: 'intent', intent: toApiIntent(latest) };
}
