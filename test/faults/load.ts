/**
 * Payment load for the fault tests and the HA benchmark: concurrent clients creating and
 * confirming payments through the balancer, each logging every attempt. A retrying client
 * sends the same Idempotency-Key again until it gets 200 (or gives up), which is what the API
 * asks of a client that got a 503, a 409 idempotency_key_in_use, or no answer at all.
 */
import { randomUUID } from 'node:crypto';

export interface Attempt {
  key: string;
  attempt: number;
  /** 0: no HTTP answer (connection refused or cut, timeout). */
  status: number;
  code?: string;
  paymentId?: string;
  retryAfter?: string;
  startedAt: number;
  endedAt: number;
}

export interface LoadOptions {
  baseUrl: string;
  secretKey: string;
  concurrency: number;
  /** Retry a key until 200; else every attempt is final. */
  retry: boolean;
  /** The longest a retrying client keeps at one key. */
  giveUpAfterMs?: number;
  /** The longest one attempt may take before the client abandons it (and, retrying, tries again). */
  requestTimeoutMs?: number;
  amount?: number;
}

// A client pauses between retries; Retry-After, when sent, is honoured up to this.
const RETRY_PAUSE_MS = 200;
const RETRY_AFTER_CAP_MS = 2_000;

export class PaymentLoad {
  readonly attempts: Attempt[] = [];
  /** Each key's last attempt: its outcome as the client saw it. */
  readonly finals = new Map<string, Attempt>();
  private stopping = false;
  private workers: Promise<void>[] = [];

  constructor(private readonly options: LoadOptions) {}

  start(): this {
    for (let i = 0; i < this.options.concurrency; i++) this.workers.push(this.loop(i));
    return this;
  }

  /** Stops starting new keys; resolves once every client has settled its current one. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers);
  }

  succeeded(): Attempt[] {
    return [...this.finals.values()].filter((attempt) => attempt.status === 200);
  }

  failed(): Attempt[] {
    return [...this.finals.values()].filter((attempt) => attempt.status !== 200);
  }

  /** Successful attempts that ended within [from, to). */
  successesBetween(from: number, to: number): number {
    return this.attempts.filter((a) => a.status === 200 && a.endedAt >= from && a.endedAt < to).length;
  }

  private async loop(worker: number) {
    let n = 0;
    while (!this.stopping) {
      const key = `load-${worker}-${n++}-${randomUUID()}`;
      await this.pay(key);
    }
  }

  private async pay(key: string) {
    const firstAt = Date.now();
    for (let attempt = 1; ; attempt++) {
      const result = await this.send(key, attempt);
      this.attempts.push(result);
      this.finals.set(key, result);
      if (result.status === 200 || !this.options.retry) return;
      if (Date.now() - firstAt > (this.options.giveUpAfterMs ?? 90_000)) return;
      if (result.status >= 400 && result.status < 500 && result.status !== 409 && result.status !== 429) return;
      const hinted = Number(result.retryAfter) * 1000;
      await new Promise((resolve) =>
        setTimeout(resolve, Number.isFinite(hinted) && hinted > 0 ? Math.min(hinted, RETRY_AFTER_CAP_MS) : RETRY_PAUSE_MS),
      );
    }
  }

  private async send(key: string, attempt: number): Promise<Attempt> {
    const startedAt = Date.now();
    try {
      const response = await fetch(`${this.options.baseUrl}/v1/payment_intents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.options.secretKey}`, 'idempotency-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({ amount: this.options.amount ?? 1_000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true }),
        signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 30_000),
      });
      const text = await response.text();
      let body: { id?: string; status?: string; error?: { code?: string } } = {};
      try {
        body = JSON.parse(text);
      } catch {
        // HAProxy's own error pages are HTML.
      }
      return {
        key,
        attempt,
        status: response.status,
        code: body.error?.code,
        paymentId: response.status === 200 ? body.id : undefined,
        retryAfter: response.headers.get('retry-after') ?? undefined,
        startedAt,
        endedAt: Date.now(),
      };
    } catch (error) {
      return { key, attempt, status: 0, code: error instanceof Error ? error.name : 'error', startedAt, endedAt: Date.now() };
    }
  }
}

/** Counts of attempts by status (and error code), for messages. */
export function tally(attempts: Attempt[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of attempts) {
    const label = a.code ? `${a.status} ${a.code}` : String(a.status);
    counts[label] = (counts[label] ?? 0) + 1;
  }
  return counts;
}
