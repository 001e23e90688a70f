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
 * It runs the closed or the open loop of load-loop.ts (shared with surge-loadgen.ts): closed
 * measures the most the server can do at a concurrency; open schedules requests as a Poisson
 * process at a rate, like pgbench -R, with latency from the scheduled time.
 */
import { type ChildProcess, fork } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { type Done, runLoop } from './load-loop.js';
import type { LatencySummary } from './stats.js';

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

export async function runLoad(job: LoadJob): Promise<LoadResult> {
  const head =
    `POST ${PATH} HTTP/1.1\r\nHost: 127.0.0.1:${job.port}\r\nAuthorization: ${job.authorization}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(REQUEST_BODY)}\r\nIdempotency-Key: `;
  const connections = Array.from({ length: job.connections }, () => new Connection(job.port, head));
  // Payment creations never run out of work: `ranOut` says nothing here.
  const { ranOut: _, ...result } = await runLoop(job, connections, (connection, done) => {
    connection.send(done);
    return true;
  });
  return { mode: job.mode, ...result };
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
