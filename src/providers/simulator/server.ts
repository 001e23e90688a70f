/**
 * The card provider simulator: a real HTTP service with the shape of a card acquirer's API.
 * It keeps charges in memory, honours our Idempotency-Key (the same key never charges twice,
 * even when requests race), and offers test payment methods:
 *
 *   pm_card_visa                succeeds
 *   pm_card_declined            declined, card_declined
 *   pm_card_insufficient_funds  declined, insufficient_funds
 *   pm_card_timeout             the charge is recorded, but the answer comes too late
 *   pm_card_capture_declined    authorizes; capturing the charge is refused (capture_declined)
 *   pm_card_cancel_declined     authorizes; releasing the authorization is refused (cancel_declined)
 *   pm_card_refund_timeout      succeeds; each refund is recorded, but its answer comes too late
 *
 * Test cards are exchanged for a payment-method token at POST /v1/tokens, the way a real
 * provider's hosted fields work: a buyer's browser sends the card number here, and only the
 * token (`pm_tok_...`) goes on to Floodgate. Test card numbers (any future expiry, any CVC):
 *
 *   4242 4242 4242 4242   succeeds (as pm_card_visa)
 *   4000 0000 0000 0002   declined, card_declined
 *   4000 0000 0000 9995   declined, insufficient_funds
 *   4000 0000 0000 0119   times out (as pm_card_timeout)
 *   any other valid number  declined, card_declined
 *
 * Latency and a random error rate (503 before anything is recorded) are configurable.
 *
 * Like a real acquirer it also reports each operation by webhook (when `webhookUrl` is set),
 * signed `simulator-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`. The event
 * carries our idempotency key and the operation's recorded response.
 *
 * This file is the simulator's state and rules; app.ts is its HTTP API.
 */
import { createHmac, randomBytes } from 'node:crypto';

export interface SimulatorOptions {
  latencyMs?: number;
  errorRate?: number;
  /** How long pm_card_timeout holds its answer: longer than any client waits. */
  timeoutHoldMs?: number;
  /** Where to send operation webhooks, and the secret that signs them. */
  webhookUrl?: string;
  webhookSecret?: string;
}

export interface SimulatorWebhook {
  id: string;
  type: string;
  created: number;
  idempotency_key: string;
  response: StoredResponse;
}

// A webhook is sent a few times with a short pause; the reconciler covers any that never arrive.
const WEBHOOK_SEND_ATTEMPTS_MAX = 3;
const WEBHOOK_RETRY_DELAY_MS = 500;
const WEBHOOK_TIMEOUT_MS = 5_000;

export function signSimulatorWebhook(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export interface StoredResponse {
  status: number;
  body: unknown;
}

interface Charge {
  id: string;
  status: 'authorized' | 'captured' | 'canceled';
  amount: number;
  currency: string;
  payment_method: string;
  amount_captured: number;
  amount_refunded: number;
}

const DECLINES: Record<string, { code: string; message: string }> = {
  pm_card_declined: { code: 'card_declined', message: 'The card was declined.' },
  pm_card_insufficient_funds: { code: 'insufficient_funds', message: 'The card has insufficient funds.' },
};
// Methods whose charge succeeds and whose later operations fail, for the paths after a charge.
const CAPTURE_DECLINED = 'pm_card_capture_declined';
const CANCEL_DECLINED = 'pm_card_cancel_declined';
const REFUND_TIMEOUT = 'pm_card_refund_timeout';
const KNOWN_METHODS = new Set([
  'pm_card_visa',
  'pm_card_timeout',
  CAPTURE_DECLINED,
  CANCEL_DECLINED,
  REFUND_TIMEOUT,
  ...Object.keys(DECLINES),
]);
/** The test card numbers and the payment method each stands for. */
export const TEST_CARDS: Record<string, string> = {
  '4242424242424242': 'pm_card_visa',
  '4000000000000002': 'pm_card_declined',
  '4000000000009995': 'pm_card_insufficient_funds',
  '4000000000000119': 'pm_card_timeout',
};

/** The Luhn check every card number passes; catches a mistyped digit. */
export function luhnValid(number: string): boolean {
  if (!/^[0-9]{12,19}$/.test(number)) return false;
  let sum = 0;
  for (let index = 0; index < number.length; index++) {
    let digit = Number(number[number.length - 1 - index]);
    if (index % 2 === 1) {
      digit *= 2;
      if (digit > 9) digit -= 9;
    }
    sum += digit;
  }
  return sum % 10 === 0;
}

// Caps memory for long simulator runs (benchmarks); the oldest records are dropped first.
const RECORDS_MAX = 1_000_000;

export class ProviderSimulator {
  readonly charges = new Map<string, Charge>();
  /** Our idempotency key → the response it produced (or is producing). */
  readonly operations = new Map<string, Promise<StoredResponse>>();
  /** How many times each idempotency key caused a new charge: a test checks it is never 2. */
  readonly chargesByKey = new Map<string, number>();
  /** Every webhook sent, so tests can send them again (duplicated, out of order). */
  readonly webhooksSent: SimulatorWebhook[] = [];
  /** Payment-method tokens (pm_tok_...) → the test method each stands for. No card number is kept. */
  readonly tokens = new Map<string, string>();
  latencyMs: number;
  errorRate: number;
  timeoutHoldMs: number;
  webhookUrl: string | undefined;
  webhookSecret: string | undefined;
  private readonly held = new Map<NodeJS.Timeout, () => void>();

  constructor(options: SimulatorOptions = {}) {
    this.latencyMs = options.latencyMs ?? 0;
    this.errorRate = options.errorRate ?? 0;
    this.timeoutHoldMs = options.timeoutHoldMs ?? 120_000;
    this.webhookUrl = options.webhookUrl;
    this.webhookSecret = options.webhookSecret;
  }

  /** Reports an operation's result by webhook, without delaying the operation's own answer. */
  notify(key: string, operation: string, response: StoredResponse): void {
    // Without a secret there are no webhooks; without a URL they are recorded, not sent.
    if (!this.webhookSecret) return;
    const type = response.status === 200 ? `${operation}.succeeded` : `${operation}.failed`;
    const event: SimulatorWebhook = {
      id: `sevt_${randomBytes(10).toString('hex')}`,
      type,
      created: Math.floor(Date.now() / 1000),
      idempotency_key: key,
      response,
    };
    if (this.webhooksSent.length < RECORDS_MAX) this.webhooksSent.push(event);
    if (this.webhookUrl) void this.sendWebhook(event);
  }

  /** Sends one webhook, retrying briefly; returns the receiver's last status (0: unreachable). */
  async sendWebhook(event: SimulatorWebhook): Promise<number> {
    if (!this.webhookUrl || !this.webhookSecret) return 0;
    let status = 0;
    for (let attempt = 1; attempt <= WEBHOOK_SEND_ATTEMPTS_MAX; attempt++) {
      const body = JSON.stringify(event);
      try {
        const response = await fetch(this.webhookUrl as string, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'simulator-signature': signSimulatorWebhook(this.webhookSecret as string, Math.floor(Date.now() / 1000), body),
          },
          body,
          signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
        });
        status = response.status;
        await response.arrayBuffer();
        if (status < 500) return status;
      } catch {
        status = 0;
      }
      await sleep(WEBHOOK_RETRY_DELAY_MS * attempt);
    }
    return status;
  }

  /** Runs op once per idempotency key; concurrent and later requests with the key share its answer. */
  async once(key: string, op: () => StoredResponse): Promise<StoredResponse> {
    const existing = this.operations.get(key);
    if (existing) return existing;
    const result = Promise.resolve().then(op);
    this.operations.set(key, result);
    if (this.operations.size > RECORDS_MAX) {
      const oldest = this.operations.keys().next().value;
      if (oldest !== undefined) this.operations.delete(oldest);
    }
    return result;
  }

  /** Exchanges a card for a token; the card number itself is not kept, only its last four digits. */
  tokenize(card: { number: string; exp_month: number; exp_year: number; cvc: string }, now = new Date()): StoredResponse {
    const number = card.number.replace(/[\s-]/g, '');
    if (!luhnValid(number)) {
      return { status: 400, body: { error: { code: 'card_number_invalid', message: 'The card number is not a valid card number.' } } };
    }
    const expiry = card.exp_year * 12 + card.exp_month;
    if (expiry < now.getUTCFullYear() * 12 + now.getUTCMonth() + 1) {
      return { status: 400, body: { error: { code: 'card_expired', message: 'The card has expired.' } } };
    }
    const id = `pm_tok_${randomBytes(12).toString('hex')}`;
    this.tokens.set(id, TEST_CARDS[number] ?? 'pm_card_declined');
    if (this.tokens.size > RECORDS_MAX) {
      const oldest = this.tokens.keys().next().value;
      if (oldest !== undefined) this.tokens.delete(oldest);
    }
    return {
      status: 200,
      body: { id, object: 'payment_method', card: { last4: number.slice(-4), exp_month: card.exp_month, exp_year: card.exp_year } },
    };
  }

  createCharge(key: string, request: { amount: number; currency: string; payment_method: string; capture: boolean }): StoredResponse {
    // A token charges as the test method it stands for; the charge still shows the token.
    const body = { ...request, payment_method: this.tokens.get(request.payment_method) ?? request.payment_method };
    if (!KNOWN_METHODS.has(body.payment_method)) {
      return {
        status: 402,
        body: { error: { code: 'payment_method_invalid', message: `No such payment method: ${body.payment_method}` } },
      };
    }
    const decline = DECLINES[body.payment_method];
    if (decline) return { status: 402, body: { error: decline } };
    const charge: Charge = {
      id: `ch_${randomBytes(10).toString('hex')}`,
      status: body.capture ? 'captured' : 'authorized',
      amount: body.amount,
      currency: body.currency,
      payment_method: request.payment_method,
      amount_captured: body.capture ? body.amount : 0,
      amount_refunded: 0,
    };
    this.charges.set(charge.id, charge);
    this.chargesByKey.set(key, (this.chargesByKey.get(key) ?? 0) + 1);
    return { status: 200, body: { object: 'charge', ...charge } };
  }

  capture(id: string, amount: number): StoredResponse {
    const charge = this.charges.get(id);
    if (!charge) return notFound(id);
    if (charge.payment_method === CAPTURE_DECLINED) {
      return { status: 402, body: { error: { code: 'capture_declined', message: 'The issuer refused the capture.' } } };
    }
    if (charge.status !== 'authorized' || amount > charge.amount || amount < 1) {
      return { status: 400, body: { error: { code: 'charge_not_capturable', message: `Charge ${id} cannot capture ${amount}.` } } };
    }
    charge.status = 'captured';
    charge.amount_captured = amount;
    return { status: 200, body: { object: 'charge', ...charge } };
  }

  cancel(id: string): StoredResponse {
    const charge = this.charges.get(id);
    if (!charge) return notFound(id);
    if (charge.payment_method === CANCEL_DECLINED) {
      return { status: 402, body: { error: { code: 'cancel_declined', message: 'The issuer refused to release the authorization.' } } };
    }
    if (charge.status !== 'authorized') {
      return { status: 400, body: { error: { code: 'charge_not_cancelable', message: `Charge ${id} is ${charge.status}.` } } };
    }
    charge.status = 'canceled';
    return { status: 200, body: { object: 'charge', ...charge } };
  }

  refund(id: string, amount: number): StoredResponse {
    const charge = this.charges.get(id);
    if (!charge) return notFound(id);
    if (charge.status !== 'captured' || amount < 1 || charge.amount_refunded + amount > charge.amount_captured) {
      return { status: 400, body: { error: { code: 'refund_not_allowed', message: `Charge ${id} cannot refund ${amount}.` } } };
    }
    charge.amount_refunded += amount;
    return { status: 200, body: { object: 'refund', id: `sre_${randomBytes(10).toString('hex')}`, charge: id, amount } };
  }

  /** Whether the answer to a refund of this charge is held back (pm_card_refund_timeout). */
  holdsRefundsOf(id: string): boolean {
    return this.charges.get(id)?.payment_method === REFUND_TIMEOUT;
  }

  /** Holds a pm_card_timeout answer past the client's patience, cancelled when the server closes. */
  hold(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.held.delete(timer);
        resolve();
      }, this.timeoutHoldMs);
      this.held.set(timer, resolve);
    });
  }

  /** Answers every held request now, so the server can close without waiting for them. */
  releaseHeld(): void {
    for (const [timer, resolve] of this.held) {
      clearTimeout(timer);
      resolve();
    }
    this.held.clear();
  }
}

function notFound(id: string): StoredResponse {
  return { status: 404, body: { error: { code: 'resource_missing', message: `No such charge: ${id}` } } };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
