import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, luhnValid, scrubText } from './logging.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      raw.push(String(chunk));
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { logger: createLogger({ level: 'debug', destination }), lines, raw };
}

test('card-shaped numbers that pass Luhn are redacted, other digit runs are kept', () => {
  assert.equal(luhnValid('4242424242424242'), true);
  assert.equal(luhnValid('4242424242424241'), false);
  assert.equal(scrubText('card 4242 4242 4242 4242 declined'), 'card [REDACTED] card declined');
  assert.equal(scrubText('pan=5555-5555-5555-4444'), 'pan=[REDACTED] card');
  assert.equal(scrubText('order 1796063853380'), 'order 1796063853380', 'a 13-digit number that fails Luhn stays');
  assert.equal(scrubText('amount 2000'), 'amount 2000');
});

test('keys, webhook secrets and bearer tokens are redacted by shape', () => {
  assert.equal(scrubText('key sk_test_abcDEF123456789 used'), 'key sk_test_[REDACTED] used');
  assert.equal(scrubText('pk_live_0123456789abc'), 'pk_live_[REDACTED]');
  assert.equal(scrubText('secret whsec_c2VjcmV0c2VjcmV0'), 'secret whsec_[REDACTED]');
  assert.equal(scrubText('Authorization: Bearer sk_test_abcdef123456'), 'Authorization: Bearer [REDACTED]');
});

test('the logger redacts by path and by shape, in messages, nested objects and errors, and keeps numbers', () => {
  const { logger, lines, raw } = capture();
  logger.info({ req: { headers: { authorization: 'Bearer abc.def.ghi', 'x-request-id': 'r1' } } }, 'request');
  logger.info({ body: { secret_key: 'anything at all', note: 'paid with 4111 1111 1111 1111' } }, 'nested');
  logger.error({ err: new Error('provider refused sk_live_ABCDEFGHIJKL for 4000056655665556') }, 'failed');
  logger.warn('message with sk_test_zzzzzzzzzzzz and whsec_abcdefabcdef');
  const text = raw.join('');
  for (const leaked of [
    'abc.def.ghi',
    'anything at all',
    '4111 1111 1111 1111',
    'ABCDEFGHIJKL',
    '4000056655665556',
    'zzzzzzzzzzzz',
    'abcdefabcdef',
  ]) {
    assert.ok(!text.includes(leaked), `${leaked} leaked: ${text}`);
  }
  assert.equal((lines[0]!.req as { headers: Record<string, string> }).headers['x-request-id'], 'r1');
  assert.equal(typeof lines[0]?.time, 'number');
  assert.match(String((lines[2]!.err as { message: string }).message), /provider refused sk_live_\[REDACTED\] for \[REDACTED\] card/);
  assert.equal(lines[3]?.msg, 'message with sk_test_[REDACTED] and whsec_[REDACTED]');
});
