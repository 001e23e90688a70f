/**
 * Test wiring for webhooks: a real HTTP receiver on 127.0.0.1 that records what it gets and
 * answers as told, and a bounded wait for a condition.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after } from 'node:test';

export interface Received {
  headers: Record<string, string>;
  body: string;
}

/**
 * A status code to answer with, a promise of one (to answer later), or 'hold' to keep the
 * request open until the receiver closes.
 */
export type Answer = number | Promise<number> | 'hold';

export interface Receiver {
  url: string;
  port: number;
  received: Received[];
  /** Decides each answer; replace it to change the receiver's behaviour. */
  answer: (request: Received) => Answer;
  /**
   * While true the receiver is down: it drops every connection at once, so senders see a
   * connection error. (It keeps its port, which a closed server could lose to another test.)
   */
  down: boolean;
  close(): Promise<void>;
}

/** Starts a receiver (on `port`, or a free one) and closes it when the file's tests end. */
export async function startReceiver(options: { down?: boolean; answer?: (request: Received) => Answer } = {}): Promise<Receiver> {
  const held: http.ServerResponse[] = [];
  const receiver: Receiver = {
    url: '',
    port: 0,
    received: [],
    answer: options.answer ?? (() => 200),
    down: options.down ?? false,
    close: async () => {
      for (const response of held) response.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(request.headers)) if (typeof value === 'string') headers[name] = value;
      const received = { headers, body: Buffer.concat(chunks).toString('utf8') };
      receiver.received.push(received);
      const answer = receiver.answer(received);
      if (answer === 'hold') held.push(response);
      else
        Promise.resolve(answer).then((status) => {
          if (!response.destroyed) response.writeHead(status, { 'content-type': 'text/plain' }).end('ok');
        });
    });
  });
  server.on('connection', (socket) => {
    if (receiver.down) socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  receiver.port = (server.address() as AddressInfo).port;
  receiver.url = `http://127.0.0.1:${receiver.port}/hooks`;
  let closed = false;
  const close = receiver.close;
  receiver.close = async () => {
    if (closed) return;
    closed = true;
    await close();
  };
  after(() => receiver.close());
  return receiver;
}

/** Polls `condition` until it holds; fails with `what` after `timeoutMs`. Never measures time. */
export async function waitUntil(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
