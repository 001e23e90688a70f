/**
 * The surge load generator, run as a forked child like loadgen.ts and built the same way (raw
 * keep-alive HTTP/1.1 sockets, one request in flight per socket, the closed or open loop of
 * load-loop.ts), but for the surge path's requests:
 *
 *   read   GET  /v1/sales/:id (publishable key), against the API or the bare Fastify server
 *   join   POST /v1/sales/:id/queue with a fresh buyer_reference; an admitted answer's token is
 *          kept, with its buyer, for the hold phase (in this process: tokens never cross IPC)
 *   poll   GET  /v1/sales/:id/queue/:ticket over the tickets of earlier joins, round robin
 *   hold   POST /v1/holds, each with one kept admission token, its buyer and a fresh
 *          Idempotency-Key; one unit of one item
 *   checkout  a buyer's whole purchase on one connection: the hold above, then, with the
 *          merchant's secret key, POST /v1/orders on it with confirm: true and pm_card_visa (or,
 *          with `checkoutRequests` 3, POST /v1/orders and then POST /v1/payment_intents/:id/confirm
 *          with pm_card_visa); one unit of work ends when the payment answers `succeeded` (the
 *          order is paid in the same transaction), and its latency covers all its requests
 *
 * Every loop is bounded in requests and time; a hold or checkout phase also ends when the
 * tokens run out.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { type Done, type LoopJob, runLoop } from './load-loop.js';
import { type LatencySummary, summarize } from './stats.js';

export type SurgeRequestKind = 'read' | 'join' | 'poll' | 'hold' | 'checkout';

export interface SurgeJob {
  kind: SurgeRequestKind;
  /** Closed loop unless 'open' (then `rate` and `queueMax`, as in loadgen.ts). */
  mode?: LoopJob['mode'];
  rate?: number;
  queueMax?: number;
  port: number;
  connections: number;
  durationMs: number;
  /** Bearer key: the merchant's publishable key. */
  authorization: string;
  /** checkout: the merchant's secret key, for the order and the confirm (as the merchant's server sends them). */
  secretAuthorization?: string;
  /** checkout: 2, an order that confirms (the default); 3, an order and then a confirm. */
  checkoutRequests?: 2 | 3;
  saleId: string;
  /** hold: the item to hold one unit of. */
  itemId?: string;
  /** join: the status every answer must have ('admitted' keeps the token, 'waiting' the ticket). */
  expectStatus?: 'admitted' | 'waiting';
  /** join: prefix of the buyer references, unique per run and phase. */
  buyerPrefix?: string;
  requestsMax: number;
  drainTimeoutMs: number;
}

export interface SurgeResult {
  kind: SurgeRequestKind;
  sent: number;
  ok: number;
  errors: Record<string, number>;
  elapsedMs: number;
  throughput: number;
  latency: LatencySummary;
  cpuMs: number;
  /** Open mode: true when the backlog passed queueMax and the phase stopped early. */
  overloaded: boolean;
  /** hold, checkout: true when the phase ended because no admission token was left. */
  tokensRanOut?: boolean;
  /** checkout: the steps answered as expected, by name (a hold counts even if its order then failed). */
  steps?: Record<string, number>;
  /** checkout: each step's own latency, from its send to its answer (the steps of unfinished checkouts included). */
  stepLatency?: Record<string, LatencySummary>;
  /** After the job: admission tokens and waiting tickets kept, per sale. */
  tokensLeft: number;
  ticketsKept: number;
  /** One response body of the phase, for checking (the read phases compare them). */
  sampleBody?: string;
}

const HEADER_END = Buffer.from('\r\n\r\n');
const CONTENT_LENGTH = /\r\ncontent-length:\s*(\d+)/i;
const TOKEN = /"admission_token":"([^"]+)"/;
const TICKET = /"ticket":"([^"]+)"/;
const EXPECTED: Record<SurgeRequestKind, Buffer> = {
  read: Buffer.from('"object":"sale"'),
  join: Buffer.from('"object":"queue_ticket"'),
  poll: Buffer.from('"status":"waiting"'),
  hold: Buffer.from('"object":"hold"'),
  checkout: Buffer.from('"status":"succeeded"'),
};
const HOLD_ID = /"id":"(hold_[^"]+)"/;
const ORDER_INTENT = /"object":"order".*?"payment_intent":"(pi_[^"]+)"/;

interface Admission {
  buyer: string;
  token: string;
}

// Kept between jobs: joins fill them, holds and polls use them.
const admissions = new Map<string, Admission[]>();
const tickets = new Map<string, string[]>();
let pollCursor = 0;

type Answered = (outcome: string, body: Buffer | undefined) => void;

class Connection {
  private readonly socket: net.Socket;
  private buffered: Buffer | null = null;
  private done: Answered | null = null;
  closed = false;

  constructor(port: number) {
    this.socket = net.createConnection({ host: '127.0.0.1', port, noDelay: true });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', () => this.fail('socket_error'));
    this.socket.on('close', () => {
      this.closed = true;
      this.fail('socket_closed');
    });
  }

  get busy(): boolean {
    return this.done !== null;
  }

  send(request: string, done: Answered): void {
    this.done = done;
    this.socket.write(request, 'latin1');
  }

  destroy(): void {
    this.socket.destroy();
  }

  abandon(): void {
    this.done = null;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    const data = this.buffered ? Buffer.concat([this.buffered, chunk]) : chunk;
    const headerEnd = data.indexOf(HEADER_END);
    if (headerEnd < 0) {
      this.buffered = data;
      return;
    }
    const match = CONTENT_LENGTH.exec(data.toString('latin1', 0, headerEnd));
    if (!match) {
      this.fail('no_content_length');
      return;
    }
    const end = headerEnd + HEADER_END.length + Number(match[1]);
    if (data.length < end) {
      this.buffered = data;
      return;
    }
    this.buffered = null;
    if (data.length > end) {
      this.fail('unexpected_data');
      return;
    }
    const status = data.toString('latin1', 9, 12);
    const body = data.subarray(headerEnd + HEADER_END.length, end);
    this.finish(status === '200' ? 'ok' : `http_${status}`, body);
  }

  private finish(outcome: string, body?: Buffer): void {
    const done = this.done;
    this.done = null;
    done?.(outcome, body);
  }

  private fail(outcome: string): void {
    this.buffered = null;
    this.finish(outcome);
    if (!this.closed) this.socket.destroy();
  }
}

let idempotencySeq = 0;

/**
 * One request of a unit of work and the check of its answer, which says 'ok', names what was
 * wrong, or gives the next request of the same unit (a checkout's order after its hold).
 */
interface Step {
  request: string;
  /** Names a step of a chain in its errors ("order: http_409"); single requests have none. */
  label?: string;
  check: (body: Buffer) => string | Step;
}

/** Builds each unit of work of a job (undefined: no more work) and checks (and harvests) each answer. */
function stepsFor(job: SurgeJob): () => Step | undefined {
  const host = `Host: 127.0.0.1:${job.port}\r\nAuthorization: ${job.authorization}\r\n`;
  const expected = EXPECTED[job.kind];
  const plainCheck = (body: Buffer) => (body.indexOf(expected) >= 0 ? 'ok' : 'unexpected_body');
  switch (job.kind) {
    case 'read': {
      const step: Step = { request: `GET /v1/sales/${job.saleId} HTTP/1.1\r\n${host}\r\n`, check: plainCheck };
      return () => step;
    }
    case 'join': {
      const head = `POST /v1/sales/${job.saleId}/queue HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: `;
      let n = 0;
      const kept = admissions.get(job.saleId) ?? [];
      admissions.set(job.saleId, kept);
      const keptTickets = tickets.get(job.saleId) ?? [];
      tickets.set(job.saleId, keptTickets);
      const wanted = `"status":"${job.expectStatus ?? 'admitted'}"`;
      return () => {
        const buyer = `${job.buyerPrefix}-${n++}`;
        const body = `{"buyer_reference":"${buyer}"}`;
        return {
          request: `${head}${body.length}\r\n\r\n${body}`,
          check: (answer) => {
            const text = answer.toString('latin1');
            if (!text.includes(wanted)) return 'unexpected_body';
            if (job.expectStatus === 'waiting') {
              const ticket = TICKET.exec(text)?.[1];
              if (!ticket) return 'no_ticket';
              keptTickets.push(ticket);
              return 'ok';
            }
            const token = TOKEN.exec(text)?.[1];
            if (!token) return 'no_token';
            kept.push({ buyer, token });
            return 'ok';
          },
        };
      };
    }
    case 'poll': {
      const list = tickets.get(job.saleId) ?? [];
      const base = `GET /v1/sales/${job.saleId}/queue/`;
      return () => {
        if (list.length === 0) return undefined;
        const ticket = list[pollCursor++ % list.length];
        return { request: `${base}${ticket} HTTP/1.1\r\n${host}\r\n`, check: plainCheck };
      };
    }
    case 'hold': {
      const hold = holdRequests(job, host);
      return () => {
        const request = hold();
        return request === undefined ? undefined : { request, check: plainCheck };
      };
    }
    case 'checkout':
      return checkoutSteps(job, host);
  }
}

/** Hold requests, one per kept admission token (undefined once they have run out). */
function holdRequests(job: SurgeJob, host: string): () => string | undefined {
  const list = admissions.get(job.saleId) ?? [];
  const head = `POST /v1/holds HTTP/1.1\r\n${host}Content-Type: application/json\r\nIdempotency-Key: `;
  const runTag = `${process.pid}-${Date.now()}`;
  return () => {
    // From the end: shift() moves every token left after it, and a list holds 100,000s of them.
    const admission = list.pop();
    if (!admission) return undefined;
    const body =
      `{"sale":"${job.saleId}","buyer_reference":"${admission.buyer}","admission_token":"${admission.token}",` +
      `"items":[{"item":"${job.itemId}","quantity":1}]}`;
    return `${head}bench-${runTag}-${idempotencySeq++}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  };
}

/** hold → order that confirms with pm_card_visa (or order → confirm), each answer checked before the next request. */
function checkoutSteps(job: SurgeJob, host: string): () => Step | undefined {
  const hold = holdRequests(job, host);
  const merchant = `Host: 127.0.0.1:${job.port}\r\nAuthorization: ${job.secretAuthorization}\r\nContent-Type: application/json\r\n`;
  const runTag = `${process.pid}-${Date.now()}`;
  const post = (path: string, body: string) =>
    `POST ${path} HTTP/1.1\r\n${merchant}Idempotency-Key: bench-${runTag}-${idempotencySeq++}\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  const confirm = (intent: string): Step => ({
    label: 'confirm',
    request: post(`/v1/payment_intents/${intent}/confirm`, '{"payment_method":"pm_card_visa"}'),
    check: (body) => (body.indexOf(EXPECTED.checkout) >= 0 ? 'ok' : 'unexpected_body'),
  });
  const order = (holdId: string): Step =>
    job.checkoutRequests === 3
      ? {
          label: 'order',
          request: post('/v1/orders', `{"hold":"${holdId}"}`),
          check: (body) => {
            const intent = ORDER_INTENT.exec(body.toString('latin1'))?.[1];
            return intent ? confirm(intent) : 'unexpected_body';
          },
        }
      : {
          label: 'order',
          request: post('/v1/orders', `{"hold":"${holdId}","payment_method":"pm_card_visa","confirm":true}`),
          check: (body) => (body.indexOf(EXPECTED.checkout) >= 0 ? 'ok' : 'unexpected_body'),
        };
  return () => {
    const request = hold();
    if (request === undefined) return undefined;
    return {
      label: 'hold',
      request,
      check: (body) => {
        const id = body.indexOf(EXPECTED.hold) >= 0 ? HOLD_ID.exec(body.toString('latin1'))?.[1] : undefined;
        return id ? order(id) : 'unexpected_body';
      },
    };
  };
}

export async function runSurgeLoad(job: SurgeJob): Promise<SurgeResult> {
  const next = stepsFor(job);
  const connections = Array.from({ length: job.connections }, () => new Connection(job.port));
  let sampleBody: string | undefined;
  // A chain's steps, each answered as expected: how many, and their own latencies (send to answer).
  const steps: Record<string, number> = {};
  const stepLatenciesUs: Record<string, number[]> = {};

  /** Sends `step` and, while its answers give a next step, the rest of its chain on the same connection. */
  const send = (connection: Connection, step: Step, done: Done) => {
    const sentAt = performance.now();
    connection.send(step.request, (outcome, body) => {
      const named = (what: string) => (step.label ? `${step.label}: ${what}` : what);
      if (outcome !== 'ok' || !body) {
        done(named(outcome), body?.toString('utf8'));
        return;
      }
      const checked = step.check(body);
      if (step.label && (typeof checked !== 'string' || checked === 'ok')) {
        steps[step.label] = (steps[step.label] ?? 0) + 1;
        const samples = stepLatenciesUs[step.label] ?? [];
        stepLatenciesUs[step.label] = samples;
        samples.push((performance.now() - sentAt) * 1000);
      }
      if (typeof checked !== 'string') send(connection, checked, done);
      else if (checked !== 'ok') done(named(checked), body.toString('utf8'));
      else {
        sampleBody ??= body.toString('utf8');
        done('ok');
      }
    });
  };

  const result = await runLoop({ ...job, mode: job.mode ?? 'closed' }, connections, (connection, done) => {
    const step = next();
    if (step === undefined) return false;
    send(connection, step, done);
    return true;
  });
  const usesTokens = job.kind === 'hold' || job.kind === 'checkout';
  return {
    kind: job.kind,
    sent: result.sent,
    ok: result.ok,
    errors: result.errors,
    elapsedMs: result.elapsedMs,
    throughput: result.throughput,
    latency: result.latency,
    cpuMs: result.cpuMs,
    overloaded: result.overloaded,
    ...(usesTokens ? { tokensRanOut: result.ranOut } : {}),
    ...(job.kind === 'checkout'
      ? { steps, stepLatency: Object.fromEntries(Object.entries(stepLatenciesUs).map(([name, samples]) => [name, summarize(samples)])) }
      : {}),
    tokensLeft: admissions.get(job.saleId)?.length ?? 0,
    ticketsKept: tickets.get(job.saleId)?.length ?? 0,
    sampleBody,
  };
}

if (process.send) {
  process.on('message', (job: SurgeJob) => {
    runSurgeLoad(job).then(
      (result) => process.send?.({ ok: true, result }),
      (error: unknown) => process.send?.({ ok: false, error: String(error) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
