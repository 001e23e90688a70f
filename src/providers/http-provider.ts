/**
 * The connector to a provider that speaks the simulator's HTTP API. Every call has a timeout
 * and goes through a circuit breaker: when more than half of the last `breakerWindow` calls
 * failed in transport (and at least `breakerThreshold` calls are counted, so a provider down
 * from the start opens it after that many failures), the breaker opens and calls fail fast as
 * `unavailable` (nothing was sent) until a trial call after `halfOpenMs` succeeds.
 *
 * A share of recent calls rather than a run of consecutive failures: in a surge, a few charges
 * that each time out on their own (a card's issuer slow to answer) end within the same
 * milliseconds, because the calls started together, and five in a row opened the old breaker
 * for every buyer for ten seconds (a drill measured 374 refused confirms). A provider that is
 * really failing fails most calls, and still opens it within one window.
 *
 * Timeouts count toward the breaker: a provider that never answers would otherwise cost every
 * call its full timeout. A timed-out call may still have taken effect, so it is reported as
 * `unknown` for reconciliation to resolve by key; only the calls refused by the open breaker
 * are `unavailable` (certainly not sent).
 */
import { performance } from 'node:perf_hooks';
import { BrokenCircuitError, CircuitState, CountBreaker, circuitBreaker, handleType } from 'cockatiel';
import { Pool } from 'undici';
import { exchange } from '../platform/http/exchange.js';
import { inSpan, SpanKind, traceCarrier } from '../platform/observability/tracing.js';
import type { AuthorizeRequest, PaymentProvider, ProviderCharge, ProviderOperation, ProviderOutcome, ProviderRefund } from './provider.js';

export interface HttpProviderOptions {
  baseUrl: string;
  timeoutMs: number;
  /** The fewest calls counted before the breaker may open: from a fresh start, this many failures open it. */
  breakerThreshold: number;
  /** The breaker opens when more than half of this many last calls failed (at least breakerThreshold; default 20). */
  breakerWindow?: number;
  halfOpenMs: number;
  /** Told of every call's duration and outcome, for metrics. */
  observe?: (operation: ProviderCallName, outcome: ProviderOutcome<unknown>['kind'], seconds: number) => void;
}

export type ProviderCallName = 'authorize' | 'capture' | 'cancel' | 'refund' | 'retrieve';

/** The provider could not be reached or answered with a server error. */
class TransportError extends Error {
  constructor(
    message: string,
    /** True when the request certainly never reached the provider (connection refused). */
    readonly notSent: boolean,
  ) {
    super(message);
  }
}

type RawResponse = { status: number; body: Record<string, unknown> };

interface ChargeBody {
  id: string;
  status: ProviderCharge['status'];
  amount: number;
  amount_captured: number;
  amount_refunded: number;
}

const toCharge = (body: ChargeBody): ProviderCharge => ({
  reference: body.id,
  status: body.status,
  amount: body.amount,
  amountCaptured: body.amount_captured,
  amountRefunded: body.amount_refunded,
});

const toRefund = (body: { id: string; charge: string; amount: number }): ProviderRefund => ({
  reference: body.id,
  chargeReference: body.charge,
  amount: body.amount,
});

// Connections kept open to the provider by one process: a surge's checkouts pay in parallel.
const SOCKETS_MAX = 64;
// More than this share of the window's calls failing opens the breaker.
const BREAKER_FAILURE_SHARE = 0.5;
const BREAKER_WINDOW_DEFAULT = 20;
// A provider's answer is a small JSON object; anything far larger is not one.
const RESPONSE_BYTES_MAX = 1024 * 1024;

export class HttpProvider implements PaymentProvider {
  private readonly breaker;
  private readonly halfOpenSeconds: number;
  private readonly connections: Pool;

  constructor(private readonly options: HttpProviderOptions) {
    this.breaker = circuitBreaker(handleType(TransportError), {
      halfOpenAfter: options.halfOpenMs,
      breaker: new CountBreaker({
        threshold: BREAKER_FAILURE_SHARE,
        size: Math.max(options.breakerWindow ?? BREAKER_WINDOW_DEFAULT, options.breakerThreshold),
        minimumNumberOfCalls: options.breakerThreshold,
      }),
    });
    this.halfOpenSeconds = Math.max(1, Math.ceil(options.halfOpenMs / 1000));
    // Our own deadline covers the whole exchange (platform/http/exchange.ts); undici's would end it with errors of its own.
    this.connections = new Pool(new URL(options.baseUrl).origin, { connections: SOCKETS_MAX, headersTimeout: 0, bodyTimeout: 0 });
  }

  get breakerState(): 'closed' | 'open' | 'half_open' {
    const state = this.breaker.state;
    return state === CircuitState.Closed ? 'closed' : state === CircuitState.HalfOpen ? 'half_open' : 'open';
  }

  authorize(request: AuthorizeRequest): Promise<ProviderOutcome<ProviderCharge>> {
    const body = { amount: request.amount, currency: request.currency, payment_method: request.paymentMethod, capture: request.capture };
    return this.timed('authorize', () => this.call('POST', '/v1/charges', request.idempotencyKey, body, toCharge));
  }

  capture(request: { idempotencyKey: string; reference: string; amount: number }) {
    const path = `/v1/charges/${encodeURIComponent(request.reference)}/capture`;
    return this.timed('capture', () => this.call('POST', path, request.idempotencyKey, { amount: request.amount }, toCharge));
  }

  cancel(request: { idempotencyKey: string; reference: string }) {
    const path = `/v1/charges/${encodeURIComponent(request.reference)}/cancel`;
    return this.timed('cancel', () => this.call('POST', path, request.idempotencyKey, {}, toCharge));
  }

  refund(request: { idempotencyKey: string; reference: string; amount: number }) {
    const path = `/v1/charges/${encodeURIComponent(request.reference)}/refunds`;
    return this.timed('refund', () => this.call('POST', path, request.idempotencyKey, { amount: request.amount }, toRefund));
  }

  retrieve(idempotencyKey: string): Promise<ProviderOutcome<ProviderOperation | null>> {
    return this.timed('retrieve', () => this.retrieveOnce(idempotencyKey));
  }

  private async timed<T>(operation: ProviderCallName, run: () => Promise<ProviderOutcome<T>>): Promise<ProviderOutcome<T>> {
    const started = performance.now();
    const outcome = await run();
    this.options.observe?.(operation, outcome.kind, (performance.now() - started) / 1000);
    return outcome;
  }

  private async retrieveOnce(idempotencyKey: string): Promise<ProviderOutcome<ProviderOperation | null>> {
    const outcome = await this.send('GET', `/v1/operations/${encodeURIComponent(idempotencyKey)}`, undefined, undefined);
    if (outcome.kind !== 'answered') return outcome;
    const { status, body } = outcome.response;
    if (status === 404) return { kind: 'succeeded', value: null };
    if (status !== 200) return { kind: 'unknown', reason: `provider answered ${status} to a look-up` };
    return { kind: 'succeeded', value: operationFromRecorded(body as unknown as RecordedResponse) };
  }

  private async call<T>(
    method: 'GET' | 'POST',
    path: string,
    idempotencyKey: string,
    body: unknown,
    parse: (body: never) => T,
  ): Promise<ProviderOutcome<T>> {
    const outcome = await this.send(method, path, idempotencyKey, body);
    if (outcome.kind !== 'answered') return outcome;
    const { status, body: responseBody } = outcome.response;
    if (status >= 200 && status < 300) return { kind: 'succeeded', value: parse(responseBody as never) };
    const error = (responseBody.error ?? {}) as { code?: string; message?: string };
    return { kind: 'declined', code: error.code ?? `http_${status}`, message: error.message ?? `provider answered ${status}` };
  }

  private async send(
    method: 'GET' | 'POST',
    path: string,
    idempotencyKey: string | undefined,
    body: unknown,
  ): Promise<{ kind: 'answered'; response: RawResponse } | ProviderOutcome<never>> {
    try {
      const response = await this.breaker.execute(() => this.fetchOnce(method, path, idempotencyKey, body));
      return { kind: 'answered', response };
    } catch (error) {
      if (error instanceof BrokenCircuitError) {
        return { kind: 'unavailable', reason: 'circuit breaker open', retryAfterSeconds: this.halfOpenSeconds };
      }
      if (error instanceof TransportError && error.notSent) {
        return { kind: 'unavailable', reason: error.message, retryAfterSeconds: this.halfOpenSeconds };
      }
      return { kind: 'unknown', reason: (error as Error).message };
    }
  }

  private async fetchOnce(method: 'GET' | 'POST', path: string, idempotencyKey: string | undefined, body: unknown): Promise<RawResponse> {
    const url = new URL(path, this.options.baseUrl);
    // A client span per call (HTTP semantic conventions), its context sent on as traceparent.
    return inSpan(
      method,
      {
        kind: SpanKind.CLIENT,
        attributes: { 'http.request.method': method, 'url.full': url.origin + url.pathname, 'server.address': url.hostname },
      },
      async (span) => {
        const response = await this.fetchInSpan(method, url, idempotencyKey, body);
        span.setAttribute('http.response.status_code', response.status);
        return response;
      },
    );
  }

  /**
   * One HTTP exchange on the provider's kept-alive connections (platform/http/exchange.ts). Not
   * fetch: a checkout pays through here, and fetch's streams cost about 200 µs more CPU per call.
   */
  private async fetchInSpan(method: 'GET' | 'POST', url: URL, idempotencyKey: string | undefined, body: unknown): Promise<RawResponse> {
    const payload = body === undefined ? null : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json', ...traceCarrier() };
    if (idempotencyKey) headers['idempotency-key'] = idempotencyKey;
    if (payload !== null) headers['content-type'] = 'application/json';
    const { timeoutMs } = this.options;
    const end = await exchange(
      this.connections,
      { path: `${url.pathname}${url.search}`, method, headers, body: payload },
      { timeoutMs, answerBytesMax: RESPONSE_BYTES_MAX, keepAnswer: true },
    );
    if (end.kind === 'failed') {
      if (end.timedOut) throw new TransportError(`provider timed out after ${timeoutMs} ms`, false);
      const { error } = end;
      throw new TransportError(`provider unreachable (${error.code || error.message})`, NOT_SENT_CODES.has(error.code ?? ''));
    }
    const { status } = end;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(end.body.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new TransportError(`provider answered ${status} with a body that is not JSON`, false);
    }
    if (status >= 500) throw new TransportError(`provider answered ${status}`, false);
    if (status >= 300 && status < 400) throw new TransportError(`provider answered a redirect (${status})`, false);
    return { status, body: parsed };
  }
}

/** A response the provider recorded for one of our keys, as its look-up and webhooks carry it. */
export interface RecordedResponse {
  status: number;
  body: Record<string, unknown>;
}

export function operationFromRecorded(recorded: RecordedResponse): ProviderOperation {
  if (recorded.status !== 200) {
    const error = (recorded.body.error ?? {}) as { code?: string; message?: string };
    return { kind: 'declined', code: error.code ?? 'declined', message: error.message ?? '' };
  }
  return recorded.body.object === 'refund'
    ? { kind: 'refund', refund: toRefund(recorded.body as never) }
    : { kind: 'charge', charge: toCharge(recorded.body as never) };
}

// Connection errors that prove the request never reached the provider.
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);
