/**
 * The PaymentIntent state machine and its pure rules. No I/O here.
 *
 *   requires_payment_method ──(payment method set)──▶ requires_confirmation
 *   requires_payment_method | requires_confirmation ──confirm──▶ processing
 *   processing ──authorized, manual capture──▶ requires_capture
 *   processing ──charged──▶ succeeded (final)
 *   processing ──declined──▶ requires_payment_method (with last_payment_error)
 *   processing ──provider unavailable──▶ back where it was, retryable
 *   requires_capture ──capture or cancel sent──▶ processing ──▶ succeeded | canceled (final)
 *     (a capture of less than the authorized amount releases the remainder)
 *   requires_payment_method | requires_confirmation ──cancel──▶ canceled (final)
 */

export const STATUSES = [
  'requires_payment_method',
  'requires_confirmation',
  'processing',
  'requires_capture',
  'succeeded',
  'canceled',
] as const;
export type PaymentIntentStatus = (typeof STATUSES)[number];

/**
 * Every legal transition. Each guarded UPDATE (`where status = any(...)`) moves only along
 * these; the property test in properties.test.ts checks every observed change against them.
 */
export const TRANSITIONS: Readonly<Record<PaymentIntentStatus, readonly PaymentIntentStatus[]>> = {
  requires_payment_method: ['requires_confirmation', 'processing', 'canceled'],
  requires_confirmation: ['requires_payment_method', 'processing', 'canceled'],
  processing: ['requires_payment_method', 'requires_confirmation', 'requires_capture', 'succeeded', 'canceled'],
  requires_capture: ['processing', 'succeeded', 'canceled'],
  succeeded: [],
  canceled: [],
};

export function canTransition(from: PaymentIntentStatus, to: PaymentIntentStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

export const CONFIRMABLE: readonly PaymentIntentStatus[] = ['requires_payment_method', 'requires_confirmation'];
export const CANCELABLE: readonly PaymentIntentStatus[] = ['requires_payment_method', 'requires_confirmation', 'requires_capture'];

export function initialStatus(paymentMethod: string | undefined): PaymentIntentStatus {
  return paymentMethod ? 'requires_confirmation' : 'requires_payment_method';
}

export const CANCELLATION_REASONS = ['duplicate', 'fraudulent', 'requested_by_customer', 'abandoned'] as const;
export const REFUND_REASONS = ['duplicate', 'fraudulent', 'requested_by_customer'] as const;

/** The fields of a stored intent that the API shows; the shape integrators know from Stripe. */
export interface IntentView {
  id: string;
  amount: number;
  currency: string;
  status: PaymentIntentStatus;
  capture_method: 'automatic' | 'manual';
  payment_method: string | null;
  description: string | null;
  metadata: Record<string, string>;
  amount_capturable: number;
  amount_received: number;
  amount_refunded: number;
  last_payment_error: Record<string, string> | null;
  cancellation_reason: string | null;
  canceled_at: Date | null;
  created_at: Date;
}

export function toApiIntent(intent: IntentView) {
  return {
    id: intent.id,
    object: 'payment_intent' as const,
    amount: intent.amount,
    amount_capturable: intent.amount_capturable,
    amount_received: intent.amount_received,
    amount_refunded: intent.amount_refunded,
    currency: intent.currency,
    status: intent.status,
    capture_method: intent.capture_method,
    payment_method: intent.payment_method,
    description: intent.description,
    metadata: intent.metadata,
    last_payment_error: intent.last_payment_error,
    cancellation_reason: intent.cancellation_reason,
    canceled_at: intent.canceled_at ? toUnixSeconds(intent.canceled_at) : null,
    created: toUnixSeconds(intent.created_at),
    livemode: false,
  };
}
export type ApiPaymentIntent = ReturnType<typeof toApiIntent>;

export interface RefundView {
  id: string;
  payment_intent_id: string;
  amount: number;
  currency: string;
  status: 'pending' | 'succeeded' | 'failed';
  reason: string | null;
  metadata: Record<string, string>;
  failure_reason: string | null;
  created_at: Date;
}

export function toApiRefund(refund: RefundView) {
  return {
    id: refund.id,
    object: 'refund' as const,
    amount: refund.amount,
    currency: refund.currency,
    payment_intent: refund.payment_intent_id,
    status: refund.status,
    reason: refund.reason,
    failure_reason: refund.failure_reason,
    metadata: refund.metadata,
    created: toUnixSeconds(refund.created_at),
  };
}

export function toUnixSeconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

/**
 * Our idempotency key at the provider, derived from the attempt committed before the call. It
 * names the merchant too, so a provider webhook or a look-up by key leads back to the attempt
 * without a cross-merchant index.
 */
export function providerKeyFor(merchantId: string, attemptId: string): string {
  return `floodgate.${merchantId}.${attemptId}`;
}

export function parseProviderKey(key: string): { merchantId: string; attemptId: string } | undefined {
  const match = /^floodgate\.(mch_[0-9A-Za-z]+)\.(pa_[0-9A-Za-z]+)$/.exec(key);
  return match ? { merchantId: match[1] as string, attemptId: match[2] as string } : undefined;
}
