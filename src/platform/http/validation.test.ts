/**
 * Malformed input, table-driven: every bad request gets its 4xx with a stable code and the
 * parameter to fix, in the one error shape, and never a 500 or a stack trace. A few valid
 * requests at the limits show the limits are where they say.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, describe, test } from 'node:test';
import { key, setupTestContext } from '../../../test/helpers.js';
import { newId } from '../ids.js';
import { createMetrics } from '../observability/metrics.js';
import { clientErrorRefusal } from './client-errors.js';
import { API_ERRORS, type ApiErrorCode } from './errors.js';
import { createHttpServer } from './server.js';

const t = await setupTestContext();

interface Case {
  name: string;
  method?: 'GET' | 'POST';
  url?: string;
  /** A JSON body; `raw` sends text as is. */
  body?: unknown;
  raw?: string;
  headers?: Record<string, string | string[]>;
  status: number;
  code?: ApiErrorCode;
  /** The parameter the error names; null when it names none. */
  param?: string | null;
}

const INTENTS = '/v1/payment_intents';
const valid = { amount: 1000, currency: 'usd' };
const withBody = (body: Record<string, unknown>) => ({ ...valid, ...body });
const manyKeys = (count: number, keyLength = 3, valueLength = 1) =>
  Object.fromEntries(Array.from({ length: count }, (_, i) => [String(i).padStart(keyLength, 'k'), 'v'.repeat(valueLength)]));
const somePi = newId('pi');

const invalid = (name: string, body: unknown, param: string | null, code: ApiErrorCode = 'parameter_invalid'): Case => ({
  name,
  body,
  status: API_ERRORS[code].status,
  code,
  param,
});

const rawInvalid = (name: string, raw: string, param: string): Case => ({ name, raw, status: 400, code: 'parameter_invalid', param });
const sale = (body: Record<string, unknown>) => ({
  name: 'Drop',
  currency: 'usd',
  opens_at: '2026-12-01T10:00:00Z',
  items: [{ name: 'Tee', price: 2000, stock: 10 }],
  ...body,
});

const CASES: Case[] = [
  // Types of the create body: no coercion.
  invalid('amount as a string', withBody({ amount: '100' }), 'amount'),
  invalid('amount with a fraction', withBody({ amount: 1.5 }), 'amount'),
  invalid('negative amount', withBody({ amount: -1 }), 'amount'),
  invalid('zero amount', withBody({ amount: 0 }), 'amount'),
  invalid('null amount', withBody({ amount: null }), 'amount'),
  invalid('confirm as a string', withBody({ confirm: 'yes' }), 'confirm'),
  invalid('capture_method not one of its values', withBody({ capture_method: 'sometimes' }), 'capture_method'),
  invalid('empty payment_method', withBody({ payment_method: '' }), 'payment_method'),
  invalid('description too long', withBody({ description: 'd'.repeat(1001) }), 'description'),
  invalid('unknown field', withBody({ colour: 'red' }), 'colour', 'parameter_unknown'),
  invalid('misspelt field', withBody({ ammount: 100 }), 'ammount', 'parameter_unknown'),
  invalid('missing amount', { currency: 'usd' }, 'amount', 'parameter_missing'),
  invalid('missing currency', { amount: 100 }, 'currency', 'parameter_missing'),
  invalid('unsupported currency', withBody({ currency: 'xyz' }), 'currency'),
  invalid('currency of four letters', withBody({ currency: 'usdd' }), 'currency'),
  invalid('currency as a number', withBody({ currency: 840 }), 'currency'),
  invalid('confirm without payment_method', withBody({ confirm: true }), 'payment_method', 'parameter_missing'),
  // Amount limits follow the currency's exponent: 99,999,999 major units.
  invalid('usd amount above its maximum', withBody({ amount: 9_999_999_901 }), 'amount', 'amount_too_large'),
  invalid('jpy amount above its maximum', { amount: 100_000_000, currency: 'jpy' }, 'amount', 'amount_too_large'),
  invalid('bhd amount above its maximum', { amount: 99_999_999_001, currency: 'bhd' }, 'amount', 'amount_too_large'),
  invalid('amount beyond 2^53', withBody({ amount: 2 ** 60 }), 'amount', 'amount_too_large'),
  { name: 'usd amount at its maximum', body: withBody({ amount: 9_999_999_900 }), status: 200 },
  { name: 'jpy amount at its maximum', body: { amount: 99_999_999, currency: 'jpy' }, status: 200 },
  { name: 'the same number of usd minor units', body: { amount: 100_000_000, currency: 'usd' }, status: 200 },
  { name: 'bhd amount at its maximum', body: { amount: 99_999_999_000, currency: 'bhd' }, status: 200 },
  // Metadata limits.
  invalid('metadata with 51 keys', withBody({ metadata: manyKeys(51) }), 'metadata'),
  invalid('metadata key of 41 characters', withBody({ metadata: { ['k'.repeat(41)]: 'v' } }), 'metadata'),
  invalid('metadata key empty', withBody({ metadata: { '': 'v' } }), 'metadata'),
  invalid('metadata value of 501 characters', withBody({ metadata: { note: 'v'.repeat(501) } }), 'metadata[note]'),
  invalid('metadata value a number', withBody({ metadata: { n: 1 } }), 'metadata[n]'),
  invalid('metadata value an object', withBody({ metadata: { n: { deep: 'x' } } }), 'metadata[n]'),
  invalid('metadata value null', withBody({ metadata: { n: null } }), 'metadata[n]'),
  invalid('metadata an array', withBody({ metadata: ['a'] }), 'metadata'),
  { name: 'metadata at every limit', body: withBody({ metadata: manyKeys(50, 40, 500) }), status: 200 },
  // PostgreSQL text cannot hold U+0000; it must be refused at the edge, not fail in SQL.
  invalid('NUL in description', withBody({ description: 'a\u0000b' }), 'description'),
  invalid('NUL in a metadata value', withBody({ metadata: { note: 'a\u0000' } }), 'metadata[note]'),
  invalid('NUL in a metadata key', withBody({ metadata: { 'a\u0000': 'v' } }), 'metadata'),
  invalid('NUL in payment_method', withBody({ payment_method: 'pm_\u0000', confirm: true }), 'payment_method'),
  // Keys are validated one by one: a line break in a key once skipped validation altogether.
  invalid('metadata key with a line break, value an object', withBody({ metadata: { 'a\nb': { nested: [1] } } }), 'metadata'),
  invalid('metadata key with a line break', withBody({ metadata: { 'a\nb': 'v' } }), 'metadata'),
  invalid('metadata key with a carriage return', withBody({ metadata: { 'a\rb': 'v' } }), 'metadata'),
  invalid('metadata key with a tab', withBody({ metadata: { 'a\tb': 'v' } }), 'metadata'),
  // Valid JSON that jsonb refuses: a lone surrogate.
  rawInvalid('lone surrogate in description', '{"amount":1000,"currency":"usd","description":"a\\ud800b"}', 'description'),
  rawInvalid('lone low surrogate in description', '{"amount":1000,"currency":"usd","description":"\\udc00"}', 'description'),
  rawInvalid('lone surrogate in a metadata value', '{"amount":1000,"currency":"usd","metadata":{"note":"\\ud800"}}', 'metadata[note]'),
  rawInvalid('lone surrogate in a metadata key', '{"amount":1000,"currency":"usd","metadata":{"\\ud800":"v"}}', 'metadata'),
  {
    name: 'a surrogate pair (an emoji) is fine',
    raw: '{"amount":1000,"currency":"usd","description":"\\ud83d\\ude00"}',
    status: 200,
  },
  // Sales: times JavaScript and PostgreSQL cannot hold, a rate too small to schedule.
  { ...invalid('leap second in opens_at', sale({ opens_at: '2026-12-31T23:59:60Z' }), 'opens_at'), url: '/v1/sales' },
  {
    ...invalid('leap second in closes_at', sale({ closes_at: '2026-12-31T23:59:60Z' }), 'closes_at'),
    url: '/v1/sales',
  },
  { ...invalid('admit_per_second of 1e-300', sale({ admit_per_second: 1e-300 }), 'admit_per_second'), url: '/v1/sales' },
  // The body itself.
  { name: 'body not JSON', raw: '{"amount": 100,', status: 400, code: 'body_invalid_json', param: null },
  // An empty body with a JSON content type means no parameters, like no body at all.
  { name: 'empty JSON body', raw: '', status: 400, code: 'parameter_missing', param: 'amount' },
  invalid('body an array', [valid], null, 'body_invalid_json'),
  invalid('body a string', 'amount=100', null, 'body_invalid_json'),
  invalid('body null', null, null, 'body_invalid_json'),
  { name: 'no body at all', status: 400, code: 'parameter_missing', param: 'amount' },
  {
    name: 'body larger than the limit',
    body: withBody({ description: 'd'.repeat(70_000) }),
    status: 413,
    code: 'body_too_large',
    param: null,
  },
  ...['text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x'].map(
    (type): Case => ({
      name: `content-type ${type}`,
      raw: JSON.stringify(valid),
      headers: { 'content-type': type },
      status: 415,
      code: 'unsupported_media_type',
      param: null,
    }),
  ),
  // Idempotency-Key syntax.
  {
    name: 'idempotency key of 256 characters',
    body: valid,
    headers: { 'idempotency-key': 'k'.repeat(256) },
    status: 400,
    code: 'idempotency_key_invalid',
  },
  {
    name: 'idempotency key of 255 characters',
    body: valid,
    headers: { 'idempotency-key': `${key()}${'k'.repeat(200)}`.slice(0, 255) },
    status: 200,
  },
  {
    name: 'idempotency key with a space',
    body: valid,
    headers: { 'idempotency-key': 'two words' },
    status: 400,
    code: 'idempotency_key_invalid',
  },
  { name: 'empty idempotency key', body: valid, headers: { 'idempotency-key': '' }, status: 400, code: 'idempotency_key_invalid' },
  {
    name: 'two idempotency keys',
    body: valid,
    headers: { 'idempotency-key': [key(), key()] },
    status: 400,
    code: 'idempotency_key_invalid',
  },
  // Query strings of lists.
  ...['0', '101', 'abc', '-1', '1.5', '', '1e1', '0x10', '%2010', '10%20', '1e0'].map(
    (limit): Case => ({
      name: `limit=${limit}`,
      method: 'GET',
      url: `${INTENTS}?limit=${limit}`,
      status: 400,
      code: 'parameter_invalid',
      param: 'limit',
    }),
  ),
  { name: 'limit=100', method: 'GET', url: `${INTENTS}?limit=100`, status: 200 },
  { name: 'unknown query parameter', method: 'GET', url: `${INTENTS}?colour=red`, status: 400, code: 'parameter_unknown', param: 'colour' },
  {
    name: 'unknown query parameter on refunds',
    method: 'GET',
    url: '/v1/refunds?limit=5&x=1',
    status: 400,
    code: 'parameter_unknown',
    param: 'x',
  },
  {
    name: 'starting_after too long',
    method: 'GET',
    url: `${INTENTS}?starting_after=${'p'.repeat(65)}`,
    status: 400,
    code: 'parameter_invalid',
    param: 'starting_after',
  },
  {
    name: 'NUL in starting_after',
    method: 'GET',
    url: `${INTENTS}?starting_after=pi_%00`,
    status: 400,
    code: 'parameter_invalid',
    param: 'starting_after',
  },
  {
    name: 'NUL in a refunds filter',
    method: 'GET',
    url: '/v1/refunds?payment_intent=%00',
    status: 400,
    code: 'parameter_invalid',
    param: 'payment_intent',
  },
  {
    name: 'NUL in an events filter',
    method: 'GET',
    url: '/v1/events?object_id=%00',
    status: 400,
    code: 'parameter_invalid',
    param: 'object_id',
  },
  {
    name: 'unknown event type',
    method: 'GET',
    url: '/v1/events?type=payment_intent.exploded',
    status: 400,
    code: 'parameter_invalid',
    param: 'type',
  },
  // Ids in paths: a malformed id names nothing, as an unknown one.
  ...[
    `${INTENTS}/nope`,
    `${INTENTS}/${somePi}x`,
    `${INTENTS}/${newId('re')}`,
    `/v1/refunds/${somePi}`,
    '/v1/events/evt_short',
    `${INTENTS}/pi_${'0'.repeat(150)}`,
    // Longer than the router's parameter limit.
    `${INTENTS}/pi_${'0'.repeat(250)}`,
    `/v1/refunds/${'r'.repeat(250)}`,
  ].map((url): Case => ({ name: `GET ${url.slice(0, 50)}`, method: 'GET', url, status: 404, code: 'resource_missing', param: 'id' })),
  { name: 'GET an unknown well-formed id', method: 'GET', url: `${INTENTS}/${somePi}`, status: 404, code: 'resource_missing', param: 'id' },
  ...['confirm', 'capture', 'cancel'].map(
    (action): Case => ({
      name: `POST ${action} on a malformed id`,
      url: `${INTENTS}/pi_bad/${action}`,
      body: {},
      status: 404,
      code: 'resource_missing',
      param: 'id',
    }),
  ),
  { name: 'a badly percent-encoded path', method: 'GET', url: `${INTENTS}/%E0%A4%A`, status: 400, code: 'parameter_invalid', param: null },
  // The other POST bodies.
  {
    name: 'confirm with an unknown field',
    url: `${INTENTS}/${somePi}/confirm`,
    body: { payment_method: 'pm_card_visa', save: true },
    status: 400,
    code: 'parameter_unknown',
    param: 'save',
  },
  {
    name: 'confirm with payment_method a number',
    url: `${INTENTS}/${somePi}/confirm`,
    body: { payment_method: 4242 },
    status: 400,
    code: 'parameter_invalid',
    param: 'payment_method',
  },
  {
    name: 'capture of zero',
    url: `${INTENTS}/${somePi}/capture`,
    body: { amount_to_capture: 0 },
    status: 400,
    code: 'parameter_invalid',
    param: 'amount_to_capture',
  },
  {
    name: 'capture of a string',
    url: `${INTENTS}/${somePi}/capture`,
    body: { amount_to_capture: '5' },
    status: 400,
    code: 'parameter_invalid',
    param: 'amount_to_capture',
  },
  {
    name: 'cancel with an unknown reason',
    url: `${INTENTS}/${somePi}/cancel`,
    body: { cancellation_reason: 'bored' },
    status: 400,
    code: 'parameter_invalid',
    param: 'cancellation_reason',
  },
  {
    name: 'refund of a malformed intent id',
    url: '/v1/refunds',
    body: { payment_intent: 'pi_bad' },
    status: 400,
    code: 'parameter_invalid',
    param: 'payment_intent',
  },
  {
    name: 'refund without an intent',
    url: '/v1/refunds',
    body: { amount: 5 },
    status: 400,
    code: 'parameter_missing',
    param: 'payment_intent',
  },
  {
    name: 'refund amount as a string',
    url: '/v1/refunds',
    body: { payment_intent: somePi, amount: '5' },
    status: 400,
    code: 'parameter_invalid',
    param: 'amount',
  },
  {
    name: 'refund with an unknown reason',
    url: '/v1/refunds',
    body: { payment_intent: somePi, reason: 'whim' },
    status: 400,
    code: 'parameter_invalid',
    param: 'reason',
  },
  {
    name: 'refund of an unknown intent',
    url: '/v1/refunds',
    body: { payment_intent: somePi },
    status: 404,
    code: 'resource_missing',
    param: 'payment_intent',
  },
];

function request(c: Case) {
  const headers: Record<string, string | string[]> = { ...t.auth({ 'idempotency-key': key() }), ...c.headers };
  const method = c.method ?? 'POST';
  const url = c.url ?? INTENTS;
  if (c.raw !== undefined) {
    headers['content-type'] ??= 'application/json';
    return t.app.inject({ method, url, headers, payload: c.raw });
  }
  if (c.body === undefined) return t.app.inject({ method, url, headers });
  headers['content-type'] ??= 'application/json';
  return t.app.inject({ method, url, headers, payload: JSON.stringify(c.body) });
}

async function intentCount(): Promise<number> {
  const { rows } = await t.pool.query<{ n: number }>('select count(*)::int as n from payment_intents where merchant_id = $1', [
    t.merchant.id,
  ]);
  return rows[0]?.n ?? -1;
}

const intentsBefore = await intentCount();

/** An accepted request answers with what it asked for: the intent it created, or the list. */
function assertAccepted(c: (typeof CASES)[number], body: Record<string, unknown>) {
  if ((c.method ?? 'POST') === 'GET') {
    assert.equal(body.object, 'list');
    assert.ok(Array.isArray(body.data));
    return;
  }
  assert.equal(body.object, 'payment_intent');
  assert.match(String(body.id), /^pi_/);
  // A raw case sends its bytes as written: what was sent is what they parse to.
  const raw = (c as { raw?: string }).raw;
  const sent = (raw === undefined ? c.body : JSON.parse(raw)) as Record<string, unknown>;
  for (const field of ['amount', 'currency', 'metadata', 'description'] as const) {
    if (sent[field] !== undefined) assert.deepEqual(body[field], sent[field], `the intent's ${field} is the one sent`);
  }
}

describe('malformed input', () => {
  for (const c of CASES) {
    test(`${c.name} → ${c.status}${c.code ? ` ${c.code}` : ''}`, async () => {
      const response = await request(c);
      assert.equal(response.statusCode, c.status, response.body);
      assert.doesNotMatch(response.body, /\bat .+:\d+:\d+|node_modules|\.ts\b|"stack"/, 'no stack trace or source path in the answer');
      const body = response.json();
      if (c.status === 200) {
        assertAccepted(c, body);
        return;
      }
      assert.deepEqual(Object.keys(body), ['error']);
      assert.equal(body.error.code, c.code);
      assert.equal(API_ERRORS[body.error.code as ApiErrorCode].status, c.status);
      assert.equal(body.error.type, API_ERRORS[body.error.code as ApiErrorCode].type);
      assert.equal(typeof body.error.message, 'string');
      if (c.param !== undefined) assert.equal(body.error.param, c.param ?? undefined);
    });
  }

  test('only the valid requests created intents', async () => {
    const creating = CASES.filter((c) => c.status === 200 && (c.method ?? 'POST') === 'POST' && (c.url ?? INTENTS) === INTENTS).length;
    assert.equal(await intentCount(), intentsBefore + creating);
  });
});

describe('stored data in responses', () => {
  test('a metadata key with any valid character is stored and answered back, never dropped', async () => {
    // U+2028 is a line terminator to a regular expression's '.', but a fine character in a key.
    const metadata = { 'line\u2028separator': 'kept', 'über 🚀': 'also kept', plain: 'v' };
    const created = await t.app.inject({
      method: 'POST',
      url: INTENTS,
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 1000, currency: 'usd', metadata },
    });
    assert.equal(created.statusCode, 200, created.body);
    assert.deepEqual(created.json().metadata, metadata);
    const { rows } = await t.pool.query<{ metadata: unknown }>('select metadata from payment_intents where id = $1', [created.json().id]);
    assert.deepEqual(rows[0]?.metadata, metadata);
    const retrieved = await t.app.inject({ method: 'GET', url: `${INTENTS}/${created.json().id}`, headers: t.auth() });
    assert.deepEqual(retrieved.json().metadata, metadata);
  });
});

describe('requests the HTTP parser refuses', () => {
  test('a header with a control byte gets our error body, not the framework default', async () => {
    const app = await createHttpServer({
      logger: false,
      bodyLimitBytes: 1024,
      metrics: createMetrics({ defaultMetrics: false }),
      version: 'test',
    });
    app.get('/v1/thing', async () => ({ ok: true }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    after(() => app.close());
    const address = app.server.address();
    assert.ok(address && typeof address === 'object');
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(address.port, '127.0.0.1', () =>
        socket.write('GET /v1/thing HTTP/1.1\r\nHost: x\r\nX-Note: a\u0001b\r\n\r\n'),
      );
      let text = '';
      socket.on('data', (chunk) => {
        text += chunk.toString();
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(text));
    });
    const [head = '', body = ''] = answer.split('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 400 Bad Request/);
    assert.match(head, /content-type: application\/json/i);
    const parsed = JSON.parse(body);
    assert.deepEqual(Object.keys(parsed), ['error']);
    assert.equal(parsed.error.code, 'request_malformed');
    assert.equal(parsed.error.type, 'invalid_request_error');
    assert.match(parsed.error.message, /control byte/);
  });

  test('every parser refusal maps to a registered code with its own status', () => {
    for (const [code, status] of [
      ['ERR_HTTP_REQUEST_TIMEOUT', 408],
      ['HPE_HEADER_OVERFLOW', 431],
      ['HPE_INVALID_HEADER_TOKEN', 400],
      ['HPE_INVALID_METHOD', 400],
    ] as const) {
      const refusal = clientErrorRefusal(code);
      assert.equal(refusal.status, status, code);
      assert.equal(API_ERRORS[refusal.code].status, status);
    }
  });
});
