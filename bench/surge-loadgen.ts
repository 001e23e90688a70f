/**
 * The surge load generator, run as a forked child like loadgen.ts and built the same way (raw
 * keep-alive HTTP/1.1 sockets, one request in flight per socket, closed loop), but for the
 * surge path's requests:
 *
 *   read   GET  /v1/sales/:id (publishable key), against the API or the bare Fastify server
 *   join   POST /v1/sales/:id/queue with a fresh buyer_reference; an admitted answer's token is
 *          kept, with its buyer, for the hold phase (in this process: tokens never cross IPC)
 *   poll   GET  /v1/sales/:id/queue/:ticket over the tickets of earlier joins, round robin
 *   hold   POST /v1/holds, each with one kept admission token, its buyer and a fresh
 *          Idempotency-Key; one unit of one item
 *
 * Every loop is bounded in requests and time; a hold phase also ends when the tokens run out.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { type LatencySummary, summarize } from './stats.js';

export type SurgeRequestKind = 'read' | 'join' | 'poll' | 'hold';

export interface SurgeJob {
  kind: SurgeRequestKind;
  port: number;
  connections: number;
  durationMs: number;
  /** Bearer key: the merchant's publishable key. */
  authorization: string;
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
  /** hold: true when the phase ended because no admission token was left. */
  tokensRanOut?: boolean;
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
};

interface Admission {
  buyer: string;
  token: string;
}

// Kept between jobs: joins fill them, holds and polls use them.
const admissions = new Map<string, Admission[]>();
const tickets = new Map<string, string[]>();
let pollCursor = 0;

type Done = (outcome: string, body: Buffer | undefined) => void;

class Connection {
  private readonly socket: net.Socket;
  private buffered: Buffer | null = null;
  private done: Done | null = null;
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

  send(request: string, done: Done): void {
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

/** Builds each request of a job and checks (and harvests) each answer. */
function requestsFor(job: SurgeJob): { next: () => string | undefined; check: (body: Buffer, request: string) => string } {
  const host = `Host: 127.0.0.1:${job.port}\r\nAuthorization: ${job.authorization}\r\n`;
  const expected = EXPECTED[job.kind];
  const plainCheck = (body: Buffer) => (body.indexOf(expected) >= 0 ? 'ok' : 'unexpected_body');
  switch (job.kind) {
    case 'read': {
      const request = `GET /v1/sales/${job.saleId} HTTP/1.1\r\n${host}\r\n`;
      return { next: () => request, check: plainCheck };
    }
    case 'join': {
      const head = `POST /v1/sales/${job.saleId}/queue HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: `;
      let n = 0;
      const kept = admissions.get(job.saleId) ?? [];
      admissions.set(job.saleId, kept);
      const keptTickets = tickets.get(job.saleId) ?? [];
      tickets.set(job.saleId, keptTickets);
      const wanted = `"status":"${job.expectStatus ?? 'admitted'}"`;
      return {
        next: () => {
          const body = `{"buyer_reference":"${job.buyerPrefix}-${n++}"}`;
          return `${head}${body.length}\r\n\r\n${body}`;
        },
        check: (body, request) => {
          const text = body.toString('latin1');
          if (!text.includes(wanted)) return 'unexpected_body';
          if (job.expectStatus === 'waiting') {
            const ticket = TICKET.exec(text)?.[1];
            if (!ticket) return 'no_ticket';
            keptTickets.push(ticket);
            return 'ok';
          }
          const token = TOKEN.exec(text)?.[1];
          const buyer = /"buyer_reference":"([^"]+)"/.exec(request)?.[1];
          if (!token || !buyer) return 'no_token';
          kept.push({ buyer, token });
          return 'ok';
        },
      };
    }
    case 'poll': {
      const list = tickets.get(job.saleId) ?? [];
      const base = `GET /v1/sales/${job.saleId}/queue/`;
      return {
        next: () => {
          if (list.length === 0) return undefined;
          const ticket = list[pollCursor++ % list.length];
          return `${base}${ticket} HTTP/1.1\r\n${host}\r\n`;
        },
        check: plainCheck,
      };
    }
    case 'hold': {
      const list = admissions.get(job.saleId) ?? [];
      const head = `POST /v1/holds HTTP/1.1\r\n${host}Content-Type: application/json\r\nIdempotency-Key: `;
      const runTag = `${process.pid}-${Date.now()}`;
      return {
        next: () => {
          const admission = list.shift();
          if (!admission) return undefined;
          const body =
            `{"sale":"${job.saleId}","buyer_reference":"${admission.buyer}","admission_token":"${admission.token}",` +
            `"items":[{"item":"${job.itemId}","quantity":1}]}`;
          return `${head}bench-${runTag}-${idempotencySeq++}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
        },
        check: plainCheck,
      };
    }
  }
}

export async function runSurgeLoad(job: SurgeJob): Promise<SurgeResult> {
  const { next, check } = requestsFor(job);
  const connections = Array.from({ length: job.connections }, () => new Connection(job.port));
  const latenciesUs: number[] = [];
  const errors: Record<string, number> = {};
  const cpuBefore = process.cpuUsage();
  let sent = 0;
  let ok = 0;
  let lastAnswerAt = 0;
  let ranOut = false;
  let sampleBody: string | undefined;
  const startedAt = performance.now();
  const deadline = startedAt + job.durationMs;

  return new Promise<SurgeResult>((resolve) => {
    let finished = false;

    const sendNext = (connection: Connection) => {
      if (connection.closed || performance.now() >= deadline || sent >= job.requestsMax || ranOut) return;
      const request = next();
      if (request === undefined) {
        ranOut = true;
        return;
      }
      sent += 1;
      const startAt = performance.now();
      connection.send(request, (outcome, body) => {
        const now = performance.now();
        lastAnswerAt = now;
        const result = outcome === 'ok' && body ? check(body, request) : outcome;
        if (result === 'ok') {
          ok += 1;
          latenciesUs.push((now - startAt) * 1000);
          if (sampleBody === undefined && body) sampleBody = body.toString('utf8');
        } else {
          errors[result] = (errors[result] ?? 0) + 1;
          // The first few failures' bodies say why; kept short.
          if ((errors[result] ?? 0) <= 1 && body) errors[`${result}: ${body.toString('utf8').slice(0, 160)}`] = 1;
        }
        sendNext(connection);
        maybeFinish();
      });
    };

    const maybeFinish = () => {
      if (finished) return;
      const stillSending = performance.now() < deadline && !ranOut && sent < job.requestsMax;
      if (stillSending || connections.some((connection) => connection.busy)) return;
      finish();
    };

    const giveUp = setTimeout(() => {
      for (const connection of connections) {
        if (!connection.busy) continue;
        errors.timeout = (errors.timeout ?? 0) + 1;
        connection.abandon();
      }
      finish();
    }, job.durationMs + job.drainTimeoutMs);
    // A closed loop whose sockets all sit idle (tokens ran out at once) must still end.
    const idleCheck = setInterval(maybeFinish, 100);

    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(giveUp);
      clearInterval(idleCheck);
      for (const connection of connections) connection.destroy();
      const elapsedMs = Math.max((lastAnswerAt || performance.now()) - startedAt, 1);
      const cpu = process.cpuUsage(cpuBefore);
      resolve({
        kind: job.kind,
        sent,
        ok,
        errors,
        elapsedMs: Math.round(elapsedMs),
        throughput: Math.round((ok / elapsedMs) * 1000),
        latency: summarize(latenciesUs),
        cpuMs: Math.round((cpu.user + cpu.system) / 1000),
        ...(job.kind === 'hold' ? { tokensRanOut: ranOut } : {}),
        tokensLeft: admissions.get(job.saleId)?.length ?? 0,
        ticketsKept: tickets.get(job.saleId)?.length ?? 0,
        sampleBody,
      });
    };

    for (const connection of connections) sendNext(connection);
    maybeFinish();
  });
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
