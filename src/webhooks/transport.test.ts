/**
 * The connect-time SSRF guard, against a real receiver on 127.0.0.1: with private addresses
 * not allowed, nothing reaches it, whether the URL names the address or a host resolving to
 * it (localhost, from /etc/hosts: no network). This is what stops a URL whose DNS answer
 * changed after registration.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { startReceiver, waitUntil } from '../../test/receiver.js';
import { createTransport } from './transport.js';

const receiver = await startReceiver({ answer: () => 301 });
const guarded = createTransport({ timeoutMs: 2_000, allowPrivate: false, userAgent: 'test' });
const open = createTransport({ timeoutMs: 2_000, allowPrivate: true, userAgent: 'test' });
after(() => {
  guarded.close();
  open.close();
});

describe('webhook transport', () => {
  for (const host of ['127.0.0.1', 'localhost', '[::ffff:127.0.0.1]']) {
    test(`refuses to connect to ${host}`, async () => {
      const result = await guarded.post(`http://${host}:${receiver.port}/hooks`, {}, '{}');
      assert.equal(result.kind, 'error');
      assert.match(result.kind === 'error' ? result.error : '', /loopback|IPv4-mapped/);
      assert.equal(receiver.received.length, 0);
    });
  }

  test('does not follow redirects: a 3xx is the answer', async () => {
    const result = await open.post(`${receiver.url}`, { 'webhook-id': 'evt_1' }, '{"a":1}');
    assert.deepEqual({ ...result, durationMs: 0 }, { kind: 'response', statusCode: 301, durationMs: 0 });
    assert.equal(receiver.received.length, 1);
    assert.equal(receiver.received[0]?.body, '{"a":1}');
  });

  test('sends the body with its headers, the content type and the user agent', async () => {
    receiver.answer = () => 204;
    const before = receiver.received.length;
    const result = await open.post(receiver.url, { 'webhook-id': 'evt_2', 'webhook-signature': 'v1,abc' }, '{"b":2}');
    assert.equal(result.kind === 'response' && result.statusCode, 204);
    const got = receiver.received[before];
    assert.equal(got?.body, '{"b":2}');
    assert.equal(got?.headers['webhook-id'], 'evt_2');
    assert.equal(got?.headers['webhook-signature'], 'v1,abc');
    assert.equal(got?.headers['content-type'], 'application/json');
    assert.equal(got?.headers['user-agent'], 'test');
  });

  test('a long answer is not read to its end: its connection is closed, and the next delivery opens another', async () => {
    const closedSockets: number[] = [];
    let connections = 0;
    const requestsOn: number[] = [];
    const numbers = new WeakMap<object, number>();
    const chatty = http.createServer((request, response) => {
      requestsOn.push(numbers.get(request.socket) ?? 0);
      request.resume();
      request.on('end', () => {
        response.writeHead(200, { 'content-type': 'text/plain' });
        // 4 MB, written as the client reads: far above what a delivery reads of an answer.
        const chunk = Buffer.alloc(64 * 1024, 'x');
        let left = 64;
        const more = () => {
          while (left > 0 && !response.destroyed) {
            left -= 1;
            if (!response.write(chunk)) return void response.once('drain', more);
          }
          response.end();
        };
        more();
      });
    });
    chatty.on('connection', (socket) => {
      const n = ++connections;
      numbers.set(socket, n);
      socket.on('close', () => closedSockets.push(n));
    });
    await new Promise<void>((resolve) => chatty.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(chatty.address() as AddressInfo).port}/hooks`;
    try {
      const first = await open.post(url, {}, '{}');
      assert.equal(first.kind === 'response' && first.statusCode, 200);
      await waitUntil("the long answer's connection is closed", () => closedSockets.includes(requestsOn[0] ?? -1));
      const second = await open.post(url, {}, '{}');
      assert.equal(second.kind === 'response' && second.statusCode, 200);
      const [firstOn, secondOn] = requestsOn;
      assert.ok(firstOn !== undefined && closedSockets.includes(firstOn));
      assert.notEqual(secondOn, firstOn);
    } finally {
      chatty.closeAllConnections();
      await new Promise<void>((resolve) => chatty.close(() => resolve()));
    }
  });

  test('gives up after the timeout', async () => {
    receiver.answer = () => 'hold';
    const quick = createTransport({ timeoutMs: 200, allowPrivate: true, userAgent: 'test' });
    const result = await quick.post(receiver.url, {}, '{}');
    quick.close();
    assert.equal(result.kind, 'error');
    assert.equal(result.kind === 'error' && result.timedOut, true);
  });
});
