/**
 * The connector interface every payment provider implements. Each call carries our own
 * idempotency key, derived from the attempt we committed before calling, so a retried call can
 * never charge twice and an unknown outcome can be looked up later by that key.
 *
 * Outcomes are values, not exceptions: the caller must handle each kind.
 */

export interface ProviderCharge {
  reference: string;
  status: 'authorized' | 'captured' | 'canceled';
  amount: number;
  amountCaptured: number;
  amountRefunded: number;
}

export interface ProviderRefund {
  reference: string;
  chargeReference: string;
  amount: number;
}

export type ProviderOutcome<T> =
  /** The provider did what was asked. */
  | { kind: 'succeeded'; value: T }
  /** The provider answered and refused: the card was declined, the request was invalid. */
  | { kind: 'declined'; code: string; message: string }
  /** The request may have reached the provider, but its outcome is not known (a timeout). */
  | { kind: 'unknown'; reason: string }
  /** The request certainly did not take effect: the provider is down or the breaker is open. */
  | { kind: 'unavailable'; reason: string; retryAfterSeconds: number };

export interface AuthorizeRequest {
  idempotencyKey: string;
  amount: number;
  currency: string;
  paymentMethod: string;
  /** true charges at once (automatic capture); false only authorizes. */
  capture: boolean;
}

/** What the provider recorded for one of our idempotency keys. */
export type ProviderOperation =
  | { kind: 'charge'; charge: ProviderCharge }
  | { kind: 'refund'; refund: ProviderRefund }
  | { kind: 'declined'; code: string; message: string };

export interface PaymentProvider {
  authorize(request: AuthorizeRequest): Promise<ProviderOutcome<ProviderCharge>>;
  capture(request: { idempotencyKey: string; reference: string; amount: number }): Promise<ProviderOutcome<ProviderCharge>>;
  cancel(request: { idempotencyKey: string; reference: string }): Promise<ProviderOutcome<ProviderCharge>>;
  refund(request: { idempotencyKey: string; reference: string; amount: number }): Promise<ProviderOutcome<ProviderRefund>>;
  /** The recorded outcome of an earlier call by our key; `null` when the provider never saw it. */
  retrieve(idempotencyKey: string): Promise<ProviderOutcome<ProviderOperation | null>>;
}
