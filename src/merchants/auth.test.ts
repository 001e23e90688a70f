/**
 * Authentication and merchant isolation: only a live secret key gets in, and a merchant can
 * neither see nor change another merchant's objects (it cannot even learn they exist).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { key, setupTestContext } from '../../test/helpers.js';
import { generateKey, hashKey } from './domain.js';
import { createAuthenticator, createKey, createMerchant, revokeKey } from './service.js';

const t = await setupTestContext();

type Method = 'GET' | 'POST';
const ENDPOINTS: Array<{ method: Method; url: string; payload?: object }> = [
  { method: 'GET', url: '/v1/payment_intents' },
  { method: 'POST', url: '/v1/payment_intents', payload: { amount: 100, currency: 'usd' } },
  { method: 'GET', url: '/v1/refunds' },
  { method: 'GET', url: '/v1/events' },
  { method: 'GET', url: '/v1/balance' },
  // The router decodes %76 to v: the encoded path reaches the same route and must be guarded alike.
  { method: 'GET', url: '/%761/payment_intents' },
];

function send(endpoint: (typeof ENDPOINTS)[number], headers: Record<string, string>) {
  return t.app.inject({
    method: endpoint.method,
    url: endpoint.url,
    headers: { ...headers, 'idempotency-key': key() },
    payload: endpoint.payload,
  });
}

async function intentCount(merchantId: string): Promise<number> {
  const { rows } = await t.pool.query<{ n: number }>('select count(*)::int as n from payment_intents where merchant_id = $1', [merchantId]);
  return rows[0]?.n ?? -1;
}

const secret = t.merchant.secretKey;
const revoked = await createKey(t.pool, t.merchant.id, 'secret');
assert.equal(revoked.kind, 'created');

// Objects of the test merchant in every state, and another merchant who tries to reach them.
const post = (url: string, payload: object, headers = t.auth()) =>
  t.app.inject({ method: 'POST', url, headers: { ...headers, 'idempotency-key': key() }, payload });
const paid = (await post('/v1/payment_intents', { amount: 1000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true })).json();
const authorized = (
  await post('/v1/payment_intents', {
    amount: 700,
    currency: 'usd',
    capture_method: 'manual',
    payment_method: 'pm_card_visa',
    confirm: true,
  })
).json();
const unconfirmed = (await post('/v1/payment_intents', { amount: 300, currency: 'usd' })).json();
const refund = (await post('/v1/refunds', { payment_intent: paid.id, amount: 100 })).json();
const event = (await t.app.inject({ method: 'GET', url: '/v1/events?limit=1', headers: t.auth() })).json().data[0];
assert.equal(paid.status, 'succeeded');
assert.equal(authorized.status, 'requires_capture');
assert.equal(refund.status, 'succeeded');
assert.ok(event?.id);

const other = await createMerchant(t.pool, 'Other merchant');
const otherAuth = { authorization: `Bearer ${other.secret_key}` };

describe('authentication', () => {
  const credentials: Array<{ name: string; authorization?: string; status: number; code: string }> = [
    { name: 'no Authorization header', status: 401, code: 'api_key_missing' },
    {
      name: 'a scheme other than Bearer',
      authorization: `Basic ${Buffer.from(`${secret}:`).toString('base64')}`,
      status: 401,
      code: 'api_key_invalid',
    },
    { name: 'Bearer without a key', authorization: 'Bearer', status: 401, code: 'api_key_invalid' },
    { name: 'a live-mode prefix', authorization: `Bearer ${secret.replace('sk_test_', 'sk_live_')}`, status: 401, code: 'api_key_invalid' },
    { name: 'an unknown prefix', authorization: `Bearer ${secret.replace('sk_test_', 'rk_test_')}`, status: 401, code: 'api_key_invalid' },
    {
      name: 'a bad checksum',
      authorization: `Bearer ${secret.slice(0, -1)}${secret.endsWith('0') ? '1' : '0'}`,
      status: 401,
      code: 'api_key_invalid',
    },
    {
      name: 'a mistyped secret part',
      authorization: `Bearer sk_test_${secret.at(8) === 'a' ? 'b' : 'a'}${secret.slice(9)}`,
      status: 401,
      code: 'api_key_invalid',
    },
    { name: 'a truncated key', authorization: `Bearer ${secret.slice(0, -1)}`, status: 401, code: 'api_key_invalid' },
    { name: 'a key with a character added', authorization: `Bearer ${secret}x`, status: 401, code: 'api_key_invalid' },
    { name: 'two keys', authorization: `Bearer ${secret} ${secret}`, status: 401, code: 'api_key_invalid' },
    {
      name: 'a well-formed key that was never issued',
      authorization: `Bearer ${generateKey('secret').key}`,
      status: 401,
      code: 'api_key_invalid',
    },
    { name: 'a publishable key', authorization: `Bearer ${t.merchant.publishableKey}`, status: 403, code: 'secret_key_required' },
  ];

  for (const credential of credentials) {
    test(`${credential.name}: ${credential.status} ${credential.code} on every endpoint, and nothing is written`, async () => {
      const before = await intentCount(t.merchant.id);
      const headers: Record<string, string> = credential.authorization === undefined ? {} : { authorization: credential.authorization };
      for (const endpoint of ENDPOINTS) {
        const response = await send(endpoint, headers);
        assert.equal(response.statusCode, credential.status, `${endpoint.method} ${endpoint.url}: ${response.body}`);
        assert.deepEqual(Object.keys(response.json()), ['error']);
        assert.equal(response.json().error.code, credential.code);
      }
      assert.equal(await intentCount(t.merchant.id), before);
    });
  }

  test('a live secret key gets in, whatever the case of "Bearer"', async () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER']) {
      for (const endpoint of ENDPOINTS) {
        const response = await send(endpoint, { authorization: `${scheme} ${secret}` });
        assert.equal(response.statusCode, 200, `${endpoint.method} ${endpoint.url}: ${response.body}`);
      }
    }
  });

  test('a revoked key is refused at once (the test app caches keys for 0 ms)', async () => {
    assert.ok(revoked.kind === 'created');
    const headers = { authorization: `Bearer ${revoked.key}` };
    const list = ENDPOINTS[0] as (typeof ENDPOINTS)[number];
    assert.equal((await send(list, headers)).statusCode, 200, 'the key works before it is revoked');
    const row = await revokeKey(t.pool, revoked.keyId);
    assert.ok(row?.revoked_at);
    for (const endpoint of ENDPOINTS) {
      const response = await send(endpoint, headers);
      assert.equal(response.statusCode, 401, `${endpoint.method} ${endpoint.url}`);
      assert.equal(response.json().error.code, 'api_key_invalid');
    }
    // The merchant's other keys are untouched.
    assert.equal((await send(list, t.auth())).statusCode, 200);
  });
});

describe("another merchant's objects", () => {
  /** Everything the owner can see of its objects, and the provider's view of its charges. */
  async function ownerSnapshot() {
    const get = async (url: string) => (await t.app.inject({ method: 'GET', url, headers: t.auth() })).json();
    return {
      intents: await Promise.all([paid, authorized, unconfirmed].map((intent) => get(`/v1/payment_intents/${intent.id}`))),
      refund: await get(`/v1/refunds/${refund.id}`),
      events: await get('/v1/events?limit=100'),
      balance: await get('/v1/balance'),
      charges: JSON.stringify([...t.sim.simulator.charges.values()]),
    };
  }

  test('reading one by id answers 404 resource_missing, with no data', async () => {
    for (const url of [
      `/v1/payment_intents/${paid.id}`,
      `/v1/payment_intents/${authorized.id}`,
      `/v1/refunds/${refund.id}`,
      `/v1/events/${event.id}`,
    ]) {
      const response = await t.app.inject({ method: 'GET', url, headers: otherAuth });
      assert.equal(response.statusCode, 404, url);
      assert.deepEqual(Object.keys(response.json()), ['error']);
      assert.equal(response.json().error.code, 'resource_missing');
      assert.doesNotMatch(response.body, /amount|status|succeeded|pm_card/);
    }
    // The owner reads the same ids fine: the 404 is about who asks.
    const own = await t.app.inject({ method: 'GET', url: `/v1/refunds/${refund.id}`, headers: t.auth() });
    assert.equal(own.statusCode, 200);
  });

  test('lists and filters show none of them', async () => {
    for (const url of [
      '/v1/payment_intents',
      '/v1/refunds',
      `/v1/refunds?payment_intent=${paid.id}`,
      '/v1/events',
      `/v1/events?object_id=${paid.id}`,
    ]) {
      const response = await t.app.inject({ method: 'GET', url, headers: otherAuth });
      assert.equal(response.statusCode, 200, url);
      assert.deepEqual(response.json().data, [], url);
    }
    const balance = await t.app.inject({ method: 'GET', url: '/v1/balance', headers: otherAuth });
    assert.deepEqual(balance.json().available, []);
  });

  test('confirm, capture, cancel and refund answer 404 and change nothing', async () => {
    const before = await ownerSnapshot();
    const attempts: Array<[string, object]> = [
      [`/v1/payment_intents/${unconfirmed.id}/confirm`, { payment_method: 'pm_card_visa' }],
      [`/v1/payment_intents/${authorized.id}/capture`, {}],
      [`/v1/payment_intents/${authorized.id}/cancel`, {}],
      [`/v1/payment_intents/${unconfirmed.id}/cancel`, {}],
      ['/v1/refunds', { payment_intent: paid.id, amount: 1 }],
    ];
    for (const [url, payload] of attempts) {
      const response = await post(url, payload, otherAuth);
      assert.equal(response.statusCode, 404, `${url}: ${response.body}`);
      assert.equal(response.json().error.code, 'resource_missing');
      assert.doesNotMatch(response.body, /amount_|status|pm_card/);
    }
    assert.deepEqual(await ownerSnapshot(), before);
    const { rows } = await t.pool.query<{ n: number }>('select count(*)::int as n from refunds where merchant_id = $1', [
      other.merchant.id,
    ]);
    assert.equal(rows[0]?.n, 0);
  });
});

describe('the API-key cache', () => {
  test("holds keys' SHA-256 hashes, never a key itself, and still serves a hit", async () => {
    const authenticate = createAuthenticator(t.pool, 60_000);
    for (let i = 0; i < 2; i++) {
      const result = await authenticate(`Bearer ${secret}`);
      assert.equal(result.kind === 'authenticated' && result.principal.merchantId, t.merchant.id);
    }
    assert.equal((await authenticate(`Bearer ${other.publishable_key}`)).kind, 'authenticated');
    const cached = authenticate.cachedKeys();
    assert.deepEqual(cached.sort(), [hashKey(secret).toString('base64'), hashKey(other.publishable_key).toString('base64')].sort());
    for (const entry of cached) {
      assert.ok(!entry.includes(secret) && !entry.includes(other.publishable_key) && !/^(sk|pk)_/.test(entry), entry);
    }
  });
});
