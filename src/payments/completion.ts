/**
 * The one completion command. Whoever learns how a provider call ended — the request that
 * made it, the provider's webhook, or the reconciler asking the provider later — applies it
 * through completeAttempt, in one transaction. The attempt is settled by a guarded update, so
 * exactly one of them applies the outcome: one status change, one ledger posting, one event.
 * The others see the attempt already settled and return the current state.
 */
import assert from 'node:assert/strict';
import type { Client, Queryable } from '../platform/db/pool.js';
import type { PaymentProvider, ProviderCharge, ProviderOperation, ProviderOutcome, ProviderRefund } from '../providers/service.js';
import type { CompletionDeps } from './hooks.js';
import { applyOutcome, type Completion } from './outcomes.js';
import { applyRefundOutcome } from './refund-outcomes.js';
import * as sql from './sql.js';

export type AttemptOutcome = ProviderOutcome<ProviderCharge> | ProviderOutcome<ProviderRefund>;

/** Sends (or re-sends, under the same key) the provider call an attempt stands for. */
export function sendAttempt(provider: PaymentProvider, intent: sql.PaymentIntentRow, attempt: sql.AttemptRow): Promise<AttemptOutcome> {
  const idempotencyKey = attempt.provider_idempotency_key;
  const reference = intent.provider_reference as string;
  switch (attempt.operation) {
    case 'authorize':
      return provider.authorize({
        idempotencyKey,
        amount: intent.amount,
        currency: intent.currency,
        paymentMethod: intent.payment_method as string,
        capture: intent.capture_method === 'automatic',
      });
    case 'capture':
      return provider.capture({ idempotencyKey, reference, amount: attempt.amount });
    case 'cancel':
      return provider.cancel({ idempotencyKey, reference });
    case 'refund':
      return provider.refund({ idempotencyKey, reference, amount: attempt.amount });
  }
}

/**
 * Applies an outcome to the attempt `attemptId`. Locks the intent first (the order every path
 * uses: intent, then attempt), so completions of one payment are serialized.
 */
export async function completeAttempt(
  client: Client,
  deps: CompletionDeps,
  merchantId: string,
  attemptId: string,
  outcome: AttemptOutcome,
): Promise<Completion> {
  const attempt = await sql.selectAttempt(client, merchantId, attemptId);
  assert.ok(attempt, `attempt ${attemptId} exists`);
  const intent = await sql.selectIntent(client, merchantId, attempt.payment_intent_id, true);
  assert.ok(intent, 'an attempt belongs to an intent');
  const current = (await sql.selectAttempt(client, merchantId, attemptId)) as sql.AttemptRow;
  if (attempt.operation === 'refund') {
    const refund = await sql.selectRefund(client, merchantId, attempt.refund_id as string);
    assert.ok(refund, 'a refund attempt belongs to a refund');
    return applyRefundOutcome(client, refund, current, outcome as ProviderOutcome<ProviderRefund>);
  }
  return applyOutcome(client, deps, { intent, attempt: current, outcome: outcome as ProviderOutcome<ProviderCharge> });
}

export async function loadAttempt(db: Queryable, merchantId: string, attemptId: string) {
  const attempt = await sql.selectAttempt(db, merchantId, attemptId);
  if (!attempt) return undefined;
  const intent = await sql.selectIntent(db, merchantId, attempt.payment_intent_id);
  assert.ok(intent);
  return { attempt, intent };
}

/** What the provider recorded for a key, as the outcome of the call made under it. */
export function outcomeFromOperation(operation: ProviderOperation): AttemptOutcome {
  switch (operation.kind) {
    case 'charge':
      return { kind: 'succeeded', value: operation.charge };
    case 'refund':
      return { kind: 'succeeded', value: operation.refund };
    case 'declined':
      return { kind: 'declined', code: operation.code, message: operation.message };
  }
}
