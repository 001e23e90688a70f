/**
 * What other capabilities may do inside the transactions of payments: react to a payment's
 * success in the same transaction as the completion command (sales marks its order paid
 * there, exactly once), and create or cancel intents as part of their own changes.
 */
import assert from 'node:assert/strict';
import * as events from '../events/service.js';
import type { Client } from '../platform/db/pool.js';
import { newId } from '../platform/ids.js';
import { toApiIntent } from './domain.js';
import * as sql from './sql.js';

/**
 * Run by the completion command when a payment succeeds, in its transaction. Every entry point
 * that can complete a payment (the API, the worker, tests) passes one in its deps, so none can
 * take money without reacting to it (sales turns the paid hold into sold stock).
 */
export type PaymentSucceededListener = (client: Client, intent: sql.PaymentIntentRow) => Promise<void>;

/** What the completion command needs from whoever runs it. */
export interface CompletionDeps {
  onPaymentSucceeded: PaymentSucceededListener;
}

/** Creates an intent (and its created event) in the caller's transaction. */
export async function createIntentInTransaction(
  client: Client,
  merchantId: string,
  params: { amount: number; currency: string; description: string; metadata: Record<string, string> },
) {
  const intent = await sql.insertIntent(client, {
    merchantId,
    id: newId('pi'),
    amount: params.amount,
    currency: params.currency,
    status: 'requires_payment_method',
    captureMethod: 'automatic',
    paymentMethod: null,
    description: params.description,
    metadata: params.metadata,
    createdAt: new Date(),
  });
  const view = toApiIntent(intent);
  await events.record(client, merchantId, 'payment_intent.created', view);
  return view;
}

export type ExpiryDecision = 'canceled' | 'in_flight';

/**
 * For a hold that is expiring: cancels its intent if no money can still move (nothing
 * authorized, nothing in flight), in the caller's transaction, so it can never be confirmed
 * afterwards. An intent processing, authorized or succeeded is left alone: `in_flight`.
 *
 * The caller holds the hold's row; a completion locks the intent, then the order and the hold.
 * Waiting here for the intent would close that circle (a deadlock, PostgreSQL's 40P01), so an
 * intent some other transaction has locked — a confirm or a completion working on it right
 * now — counts as `in_flight` without waiting.
 */
export async function cancelUnpaidForExpiry(client: Client, merchantId: string, intentId: string): Promise<ExpiryDecision> {
  const intent = await sql.selectIntentUnlessLocked(client, merchantId, intentId);
  if (!intent) return 'in_flight';
  if (intent.status === 'canceled') return 'canceled';
  if (intent.status !== 'requires_payment_method' && intent.status !== 'requires_confirmation') return 'in_flight';
  const canceled = await sql.transitionIntent(client, {
    merchantId,
    id: intentId,
    from: ['requires_payment_method', 'requires_confirmation'],
    to: 'canceled',
    set: { cancellation_reason: 'abandoned', canceled_at: new Date() },
  });
  assert.ok(canceled, 'the locked intent is cancelable');
  await events.record(client, merchantId, 'payment_intent.canceled', toApiIntent(canceled));
  return 'canceled';
}
