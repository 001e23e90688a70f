/**
 * The connect-time SSRF guard, against a real receiver on 127.0.0.1: with private addresses
 * not allowed, nothing reaches it, whether the URL names the address or a host resolving to
 * it (localhost, from /etc/hosts: no network). This is what stops a URL whose DNS answer
 * changed after registration.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { startReceiver } from '../../test/receiver.js';
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

  test('gives up after the timeout', async () => {
    receiver.answer = () => 'hold';
    const quick = createTransport({ timeoutMs: 200, allowPrivate: true, userAgent: 'test' });
    const result = await quick.post(receiver.url, {}, '{}');
    quick.close();
    assert.equal(result.kind, 'error');
    assert.equal(result.kind === 'error' && result.timedOut, true);
  });
});
