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

export type PaymentSucceededListener = (client: Client, intent: sql.PaymentIntentRow) => Promise<void>;

const succeededListeners: PaymentSucceededListener[] = [];

/**
 * Registers a listener run by the completion command when a payment succeeds, in its
 * transaction. Registration is per process and idempotent: call it where the process is wired.
 */
export function onPaymentSucceeded(listener: PaymentSucceededListener): void {
  if (!succeededListeners.includes(listener)) succeededListeners.push(listener);
}

export async function notifySucceeded(client: Client, intent: sql.PaymentIntentRow): Promise<void> {
  for (const listener of succeededListeners) await listener(client, intent);
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
 */
export async function cancelUnpaidForExpiry(client: Client, merchantId: string, intentId: string): Promise<ExpiryDecision> {
  const intent = await sql.selectIntent(client, merchantId, intentId, true);
  assert.ok(intent, 'an order points at an existing intent');
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
