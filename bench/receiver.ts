/**
 * The webhook receiver: a small HTTP server in a child process (bench/run.ts forks it), so
 * it never shares an event loop with the worker that delivers to it or with the bench's own
 * polling. It answers every POST with 200 and records, per delivery, the `webhook-id` header
 * (the event id) and the wall-clock time it arrived, for the delivery latency from an event's
 * created_at (written by the API process, on the same clock) to its arrival here.
 *
 * Bounded: it records at most RECORDS_MAX arrivals between two reports (counting the rest),
 * exits when the parent disconnects, and exits on its own after LIFETIME_MS whatever happens.
 */
import { type ChildProcess, fork } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

// Far more deliveries than any phase makes; only caps memory.
const RECORDS_MAX = 1_000_000;
// Longer than the longest full run; a receiver left behind by a killed bench exits by itself.
const LIFETIME_MS = 60 * 60_000;
// Idle keep-alive connections stay open across the pauses between phases, so a worker never
// reuses a socket the receiver has just closed (which would fail that delivery and schedule a
// retry, tens of seconds later, in the middle of a measurement).
const KEEP_ALIVE_TIMEOUT_MS = 10 * 60_000;
const START_TIMEOUT_MS = 30_000;
const REPORT_TIMEOUT_MS = 10_000;

export interface Arrivals {
  /** The `webhook-id` of every request, in arrival order. */
  ids: string[];
  /** Its arrival time, Unix ms (Date.now(), the same clock as the API's created_at). */
  times: number[];
  /** Requests that carried no webhook-id or came past RECORDS_MAX. */
  unrecorded: number;
  /** CPU time of the receiver process since it started, ms. */
  cpuMs: number;
}

type Message = { type: 'ready'; port: number } | ({ type: 'arrivals' } & Arrivals);

function serve(delayMs: number): void {
  let ids: string[] = [];
  let times: number[] = [];
  let unrecorded = 0;
  const server = http.createServer((request, response) => {
    // The body is read and dropped: a receiver acknowledges after reading what it was sent.
    request.on('data', () => {});
    request.on('end', () => {
      const id = request.headers['webhook-id'];
      if (typeof id === 'string' && ids.length < RECORDS_MAX) {
        ids.push(id);
        times.push(Date.now());
      } else unrecorded += 1;
      const answer = () => response.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' }).end('ok');
      if (delayMs > 0) setTimeout(answer, delayMs);
      else answer();
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.listen(0, '127.0.0.1', () => {
    process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port } satisfies Message);
  });
  process.on('message', (message: { type: string }) => {
    if (message.type !== 'take') return;
    const cpu = process.cpuUsage();
    process.send?.({ type: 'arrivals', ids, times, unrecorded, cpuMs: Math.round((cpu.user + cpu.system) / 1000) } satisfies Message);
    ids = [];
    times = [];
    unrecorded = 0;
  });
  process.on('disconnect', () => process.exit(0));
  setTimeout(() => process.exit(0), LIFETIME_MS).unref();
}

/** The parent's handle on the receiver process. */
export class Receiver {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}/webhooks`;
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Starts the receiver; it answers each request `delayMs` after it has read it. */
  static start(delayMs = 0): Promise<Receiver> {
    const child = fork(path.join(import.meta.dirname, 'receiver.ts'), [String(delayMs)], { execArgv: ['--import', 'tsx'] });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill();
        reject(new Error('webhook receiver did not start in time'));
      }, START_TIMEOUT_MS);
      child.once('exit', (code) => reject(new Error(`webhook receiver exited with ${code} before it was ready`)));
      child.once('message', (message: Message) => {
        clearTimeout(timer);
        if (message.type === 'ready') resolve(new Receiver(child, message.port));
        else reject(new Error('webhook receiver sent arrivals before it was ready'));
      });
    });
  }

  /** The arrivals since the last call (and clears them). */
  take(): Promise<Arrivals> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('webhook receiver did not report in time')), REPORT_TIMEOUT_MS);
      this.child.once('message', (message: Message) => {
        clearTimeout(timer);
        if (message.type === 'arrivals') resolve(message);
        else reject(new Error(`unexpected message from the webhook receiver: ${message.type}`));
      });
      this.child.send({ type: 'take' });
    });
  }

  stop(): void {
    if (this.child.connected) this.child.disconnect();
    this.child.kill();
  }
}

// As a forked child: serve until the parent goes away.
if (process.send && process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename))
  serve(Number(process.argv[2] ?? 0));
