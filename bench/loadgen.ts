/**
 * The HTTP load generator, run as a child process (bench/run.ts forks it) so that it never
 * shares an event loop with the server it measures.
 *
 * It speaks HTTP/1.1 over raw keep-alive sockets instead of node:http's client: writing a
 * request is one string write and reading a response is a search for the blank line and
 * Content-Length, which costs far less CPU per request than IncomingMessage streams. On a
 * 2-core machine every microsecond the generator spends is taken from the server or the
 * database, so a cheap client keeps the comparison with pgbench (a C client) honest.
 *
 * Two modes:
 *   closed: `connections` sockets, each sends its next request as soon as the last answered,
 *           until durationMs has passed or requestsMax requests were sent; measures the most
 *           the server can do at that concurrency (or makes requestsMax requests as fast as it can).
 *   open:   requests are scheduled as a Poisson process at `rate` per second, like pgbench -R,
 *           and handed to the first idle socket (queued while all are busy). Latency is taken
 *           from the scheduled time, not the send time, so a stalled server is charged for the
 *           requests it delayed (no coordinated omission).
 */
import { type ChildProcess, fork } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { type LatencySummary, summarize } from './stats.js';

export interface LoadJob {
  mode: 'closed' | 'open';
  port: number;
  connections: number;
  durationMs: number;
  /** Requests per second; open mode only. */
  rate?: number;
  authorization: string;
  /** Bounds the run whatever the server does: no more than this many requests are sent. */
  requestsMax: number;
  /** After durationMs, how long to wait for answers before giving up on them. */
  drainTimeoutMs: number;
  /** Open mode: stop early, as overloaded, when this many scheduled requests wait for a socket. */
  queueMax?: number;
}

export interface LoadResult {
  mode: LoadJob['mode'];
  sent: number;
  ok: number;
  errors: Record<string, number>;
  /** From the first send to the last answer, in ms. */
  elapsedMs: number;
  throughput: number;
  latency: LatencySummary;
  overloaded: boolean;
  cpuMs: number;
}

const PATH = '/v1/payment_intents';
export const REQUEST_BODY = '{"amount":2000,"currency":"usd"}';
const HEADER_END = Buffer.from('\r\n\r\n');
const CONTENT_LENGTH = /\r\ncontent-length:\s*(\d+)/i;
// A successful unconfirmed create always answers with this status in the body.
const EXPECTED = Buffer.from('"status":"requires_payment_method"');

/**
 * A fresh key per request, 18 random decimal digits: the same shape as the keys the pgbench
 * script draws with random(), so both sides insert keys of equal length in random order.
 */
export function idempotencyKey(): string {
  const high = 100_000_000 + Math.floor(Math.random() * 900_000_000);
  const low = Math.floor(Math.random() * 1_000_000_000);
  return `${high}${String(low).padStart(9, '0')}`;
}

type Done = (outcome: string) => void;

/** One keep-alive socket with at most one request in flight. */
class Connection {
  private readonly socket: net.Socket;
  private buffered: Buffer | null = null;
  private done: Done | null = null;
  closed = false;

  constructor(
    port: number,
    private readonly head: string,
  ) {
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

  send(done: Done): void {
    this.done = done;
    this.socket.write(`${this.head}${idempotencyKey()}\r\n\r\n${REQUEST_BODY}`, 'latin1');
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Gives up on the request in flight without reporting it (the caller counts it). */
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
    // Nothing is pipelined, so anything after the response is a protocol error.
    if (data.length > end) {
      this.fail('unexpected_data');
      return;
    }
    const status = data.toString('latin1', 9, 12);
    if (status !== '200') this.finish(`http_${status}`);
    else this.finish(data.indexOf(EXPECTED, headerEnd) > 0 ? 'ok' : 'unexpected_body');
  }

  private finish(outcome: string): void {
    const done = this.done;
    this.done = null;
    done?.(outcome);
  }

  private fail(outcome: string): void {
    this.buffered = null;
    this.finish(outcome);
    if (!this.closed) this.socket.destroy();
  }
}

/** Exponential gaps between arrivals: a Poisson process, as pgbench -R schedules. */
function nextGapMs(rate: number): number {
  return (-Math.log(1 - Math.random()) * 1000) / rate;
}

export async function runLoad(job: LoadJob): Promise<LoadResult> {
  const head =
    `POST ${PATH} HTTP/1.1\r\nHost: 127.0.0.1:${job.port}\r\nAuthorization: ${job.authorization}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(REQUEST_BODY)}\r\nIdempotency-Key: `;
  const connections = Array.from({ length: job.connections }, () => new Connection(job.port, head));
  const latenciesUs: number[] = [];
  const errors: Record<string, number> = {};
  const cpuBefore = process.cpuUsage();
  let sent = 0;
  let ok = 0;
  let lastAnswerAt = 0;
  let overloaded = false;
  const startedAt = performance.now();
  const deadline = startedAt + job.durationMs;

  return new Promise<LoadResult>((resolve) => {
    const queue: number[] = [];
    let queueHead = 0;
    let scheduling = true;
    let finished = false;
    let nextAt = startedAt;

    const settle = (startAt: number) => (outcome: string) => {
      const now = performance.now();
      lastAnswerAt = now;
      if (outcome === 'ok') {
        ok += 1;
        latenciesUs.push((now - startAt) * 1000);
      } else errors[outcome] = (errors[outcome] ?? 0) + 1;
      if (job.mode === 'closed') sendClosed(pick());
      else dispatch();
      maybeFinish();
    };

    const pick = (): Connection | undefined => connections.find((connection) => !connection.busy && !connection.closed);

    const sendClosed = (connection: Connection | undefined) => {
      if (!connection || performance.now() >= deadline || sent >= job.requestsMax) return;
      sent += 1;
      connection.send(settle(performance.now()));
    };

    const dispatch = () => {
      while (queueHead < queue.length) {
        const connection = pick();
        if (!connection) return;
        sent += 1;
        connection.send(settle(queue[queueHead++] as number));
      }
    };

    const schedule = () => {
      const now = performance.now();
      while (scheduling && nextAt <= now) {
        if (nextAt >= deadline || sent + queue.length - queueHead >= job.requestsMax) scheduling = false;
        else {
          queue.push(nextAt);
          nextAt += nextGapMs(job.rate as number);
        }
      }
      if (queue.length - queueHead > (job.queueMax ?? Number.POSITIVE_INFINITY)) {
        overloaded = true;
        scheduling = false;
        queue.length = queueHead;
      }
      dispatch();
      if (scheduling) setTimeout(schedule, Math.max(0, nextAt - performance.now()));
      else maybeFinish();
    };

    const maybeFinish = () => {
      if (finished) return;
      const stillSending =
        job.mode === 'open' ? scheduling || queueHead < queue.length : performance.now() < deadline && sent < job.requestsMax;
      if (stillSending || connections.some((connection) => connection.busy)) return;
      finish();
    };

    // The hard bound: whatever the server does, the run ends drainTimeoutMs after its duration.
    const giveUp = setTimeout(() => {
      for (const connection of connections) {
        if (!connection.busy) continue;
        errors.timeout = (errors.timeout ?? 0) + 1;
        connection.abandon();
      }
      const unsent = queue.length - queueHead;
      if (unsent > 0) errors.not_sent = (errors.not_sent ?? 0) + unsent;
      finish();
    }, job.durationMs + job.drainTimeoutMs);

    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(giveUp);
      for (const connection of connections) connection.destroy();
      const elapsedMs = Math.max((lastAnswerAt || performance.now()) - startedAt, 1);
      const cpu = process.cpuUsage(cpuBefore);
      resolve({
        mode: job.mode,
        sent,
        ok,
        errors,
        elapsedMs: Math.round(elapsedMs),
        throughput: Math.round((ok / elapsedMs) * 1000),
        latency: summarize(latenciesUs),
        overloaded,
        cpuMs: Math.round((cpu.user + cpu.system) / 1000),
      });
    };

    if (job.mode === 'closed') for (const connection of connections) sendClosed(connection);
    else schedule();
  });
}

/** The parent's handle on the forked load generator: one job at a time over IPC, each bounded in time. */
export class LoadGenerator {
  private readonly child: ChildProcess;

  constructor() {
    this.child = fork(path.join(import.meta.dirname, 'loadgen.ts'), [], { execArgv: ['--import', 'tsx'] });
  }

  run(job: LoadJob): Promise<LoadResult> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('load generator did not answer in time')),
        job.durationMs + job.drainTimeoutMs + 10_000,
      );
      this.child.once('message', (message: { ok: boolean; result?: LoadResult; error?: string }) => {
        clearTimeout(timer);
        if (message.ok && message.result) resolve(message.result);
        else reject(new Error(`load generator failed: ${message.error}`));
      });
      this.child.send(job);
    });
  }

  stop(): void {
    if (this.child.connected) this.child.disconnect();
    this.child.kill();
  }
}

// As a forked child: run each job the parent sends and answer with its result.
if (process.send) {
  process.on('message', (job: LoadJob) => {
    runLoad(job).then(
      (result) => process.send?.({ ok: true, result }),
      (error: unknown) => process.send?.({ ok: false, error: String(error) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
