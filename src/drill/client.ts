/**
 * The drill's HTTP client: keep-alive connections, a cap on how many requests are in flight
 * (the drill is a crowd of buyers, not a flood of sockets), and a record of every request.
 * Retries follow what a well-behaved client does: wait as Retry-After says, retry a POST only
 * with the same Idempotency-Key, give up after a few tries.
 */
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';

export type RequestKind = 'join' | 'poll' | 'hold' | 'release' | 'order' | 'confirm' | 'read' | 'setup';

export interface RequestRecord {
  kind: RequestKind;
  /** Milliseconds since the drill started, when the answer came. */
  atMs: number;
  latencyMs: number;
  /** 0: no answer (connection error, timeout). */
  status: number;
  /** The error code of a 4xx/5xx answer, or the connection error's code. */
  code?: string;
  /** The phase the request belongs to: the calm baseline or the surge. */
  phase: 'baseline' | 'surge' | 'setup';
  /** True for requests of a buyer who was admitted (hold, order, confirm): the ones compared. */
  admitted: boolean;
}

export interface Answer {
  status: number;
  body: Record<string, unknown>;
  retryAfterSeconds?: number;
  /** Cache-Control max-age: a cached read may be up to this much (rounded down) behind the source. */
  maxAgeSeconds?: number;
}

const LINE_KINDS: ReadonlySet<RequestKind> = new Set(['join', 'poll', 'read']);

// A buyer's request that takes longer than this has failed for them.
const REQUEST_TIMEOUT_MS = 30_000;
// Tries of one request, the first included, before the buyer gives up on it.
const TRIES_MAX = 5;

export class DrillClient {
  readonly records: RequestRecord[] = [];
  /**
   * Sockets for the crowd in line, and apart from them for checkout (an admitted buyer's hold,
   * the merchant server's order and payment): in a real sale these never share connections, and
   * an admitted buyer's request must not wait here behind thousands of polls.
   */
  private readonly agents: { line: http.Agent; checkout: http.Agent };
  private readonly startedAt = performance.now();

  constructor(
    private readonly base: string,
    options: { socketsMax: number },
  ) {
    const Agent = base.startsWith('https:') ? https.Agent : http.Agent;
    this.agents = {
      line: new Agent({ keepAlive: true, maxSockets: options.socketsMax }),
      checkout: new Agent({ keepAlive: true, maxSockets: options.socketsMax }),
    };
  }

  now(): number {
    return performance.now() - this.startedAt;
  }

  close(): void {
    this.agents.line.destroy();
    this.agents.checkout.destroy();
  }

  /**
   * One request, retried as a real client would: after a connection error, 429, 503 or 409
   * idempotency_key_in_use, wait (Retry-After, else 1 s) and send it again, a POST with the same
   * Idempotency-Key. Answers with the last response; status 0 when none came.
   */
  async send(
    kind: RequestKind,
    method: string,
    path: string,
    options: {
      key: string;
      body?: unknown;
      idempotencyKey?: string;
      phase: RequestRecord['phase'];
      admitted?: boolean;
      /**
       * Retry until this time (drill milliseconds) instead of TRIES_MAX tries: a buyer's page
       * in line keeps polling at Retry-After for as long as the buyer waits (web/hosted/hosted.js).
       */
      retryUntilMs?: number;
    },
  ): Promise<Answer> {
    let answer: Answer = { status: 0, body: {} };
    for (let tries = 1; ; tries += 1) {
      answer = await this.once(kind, method, path, options);
      const code = (answer.body.error as { code?: string } | undefined)?.code;
      const retryable = answer.status === 0 || answer.status === 429 || answer.status === 503 || code === 'idempotency_key_in_use';
      const triesLeft = options.retryUntilMs === undefined ? tries < TRIES_MAX : this.now() < options.retryUntilMs;
      if (!retryable || !triesLeft) return answer;
      await sleep(((answer.retryAfterSeconds ?? 1) + Math.random() * 0.5) * 1000);
    }
  }

  private once(
    kind: RequestKind,
    method: string,
    path: string,
    options: { key: string; body?: unknown; idempotencyKey?: string; phase: RequestRecord['phase']; admitted?: boolean },
  ): Promise<Answer> {
    const started = performance.now();
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    const headers: Record<string, string> = { authorization: `Bearer ${options.key}`, accept: 'application/json' };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    if (options.idempotencyKey) headers['idempotency-key'] = options.idempotencyKey;
    const record = (status: number, code: string | undefined) =>
      this.records.push({
        kind,
        atMs: this.now(),
        latencyMs: performance.now() - started,
        status,
        code,
        phase: options.phase,
        admitted: options.admitted ?? false,
      });
    return new Promise<Answer>((resolve) => {
      const url = new URL(path, this.base);
      const request = (url.protocol === 'https:' ? https : http).request(
        url,
        { method, headers, agent: LINE_KINDS.has(kind) ? this.agents.line : this.agents.checkout, timeout: REQUEST_TIMEOUT_MS },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            let body: Record<string, unknown> = {};
            try {
              const text = Buffer.concat(chunks).toString('utf8');
              body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
            } catch {
              body = {};
            }
            const status = response.statusCode ?? 0;
            const code = status >= 400 ? ((body.error as { code?: string } | undefined)?.code ?? `http_${status}`) : undefined;
            record(status, code);
            const retryAfter = Number(response.headers['retry-after']);
            const maxAge = Number(/max-age=(\d+)/.exec(String(response.headers['cache-control'] ?? ''))?.[1]);
            resolve({
              status,
              body,
              retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined,
              maxAgeSeconds: Number.isFinite(maxAge) ? maxAge : undefined,
            });
          });
          response.on('error', (error: NodeJS.ErrnoException) => {
            record(0, error.code ?? 'response_error');
            resolve({ status: 0, body: {} });
          });
        },
      );
      request.on('timeout', () => request.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
      request.on('error', (error: NodeJS.ErrnoException) => {
        record(0, error.code ?? 'request_error');
        resolve({ status: 0, body: {} });
      });
      request.end(payload);
    });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
