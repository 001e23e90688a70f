/**
 * The provider connector's reading of what comes back over the wire, against a plain HTTP
 * server that answers as no good provider would: each answer that is not a provider's maps to
 * an outcome that is `unknown` (it may have taken effect) and is never mistaken for a charge.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { HttpProvider } from './http-provider.js';

const CHARGE = { id: 'ch_1', status: 'succeeded', amount: 500, amount_captured: 500, amount_refunded: 0 };

// What the connector sent, to check its headers and body.
const received: Array<{ url: string; headers: http.IncomingHttpHeaders; body: string }> = [];
const server = http.createServer((request, response) => {
  let body = '';
  request.on('data', (chunk) => {
    body += chunk;
  });
  request.on('end', () => {
    received.push({ url: request.url ?? '', headers: request.headers, body });
    const answer = (status: number, text: string, headers: Record<string, string> = {}) => {
      response.writeHead(status, { 'content-type': 'application/json', ...headers });
      response.end(text);
    };
    // Our key says how to answer.
    const how = request.headers['idempotency-key'];
    if (how === 'big') return answer(200, JSON.stringify({ ...CHARGE, pad: 'x'.repeat(2 * 1024 * 1024) }));
    if (how === 'html') return answer(200, '<html>gateway</html>');
    if (how === 'redirect') return answer(302, '{}', { location: 'http://127.0.0.1:1/' });
    if (how === 'down') return answer(502, '{"error":{"code":"bad_gateway"}}');
    if (how === 'declined') return answer(402, '{"error":{"code":"card_declined","message":"no"}}');
    if (how === 'slow') return setTimeout(() => answer(200, JSON.stringify(CHARGE)), 1_000);
    answer(200, JSON.stringify(CHARGE));
  });
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
after(() => {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(resolve));
});

// Patient enough for a 2 MB answer on a busy machine; the slow answer has its own, short timeout.
const provider = new HttpProvider({ baseUrl, timeoutMs: 10_000, breakerThreshold: 1_000, halfOpenMs: 1_000 });
const impatient = new HttpProvider({ baseUrl, timeoutMs: 200, breakerThreshold: 1_000, halfOpenMs: 1_000 });
const authorize = (idempotencyKey: string, via = provider) =>
  via.authorize({ idempotencyKey, amount: 500, currency: 'usd', paymentMethod: 'pm_card_visa', capture: true });

describe('the provider connector over HTTP', () => {
  test('sends the charge as JSON with our key, and reads the charge it answers', async () => {
    assert.deepEqual(await authorize('ok-1'), {
      kind: 'succeeded',
      value: { reference: 'ch_1', status: 'succeeded', amount: 500, amountCaptured: 500, amountRefunded: 0 },
    });
    const sent = received.find((entry) => entry.headers['idempotency-key'] === 'ok-1');
    assert.equal(sent?.url, '/v1/charges');
    assert.equal(sent?.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(sent?.body ?? ''), { amount: 500, currency: 'usd', payment_method: 'pm_card_visa', capture: true });
  });

  test('a refusal the provider explains is declined, with its code and message', async () => {
    assert.deepEqual(await authorize('declined'), { kind: 'declined', code: 'card_declined', message: 'no' });
  });

  test("answers that are not a provider's are unknown, never a charge", async () => {
    const cases: Array<[string, RegExp, HttpProvider]> = [
      ['big', /more than 1048576 bytes/, provider],
      ['html', /not JSON/, provider],
      ['redirect', /redirect \(302\)/, provider],
      ['down', /answered 502/, provider],
      ['slow', /timed out after 200 ms/, impatient],
    ];
    for (const [idempotencyKey, reason, via] of cases) {
      const outcome = await authorize(idempotencyKey, via);
      assert.equal(outcome.kind, 'unknown', idempotencyKey);
      assert.match((outcome as { reason: string }).reason, reason);
    }
    // A connection left half-read (the timeout, the oversized answer) is not used again.
    assert.equal((await authorize('ok-2')).kind, 'succeeded');
  });

  test('a provider nothing listens on is unavailable: the charge certainly was not sent', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const unreachable = new HttpProvider({
      baseUrl: `http://127.0.0.1:${port}`,
      timeoutMs: 1_000,
      breakerThreshold: 1_000,
      halfOpenMs: 1_000,
    });
    const outcome = await authorize('x', unreachable);
    assert.equal(outcome.kind, 'unavailable');
    assert.match((outcome as { reason: string }).reason, /ECONNREFUSED/);
  });
});
