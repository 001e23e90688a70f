/**
 * Webhook endpoints over HTTP, with the SSRF guard on (the default): no worker runs in this
 * file, so nothing is ever sent to the addresses registered here.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { key, setupTestContext } from '../../test/helpers.js';
import { createMerchant } from '../merchants/service.js';
import { DEV_SECRETS_KEY, newSecretsKey, sealerFor } from '../platform/crypto/sealed.js';
import { resealSecrets } from './service.js';

const t = await setupTestContext();

async function post(url: string, body: unknown, headers: Record<string, string> = t.auth({ 'idempotency-key': key() })) {
  return t.app.inject({ method: 'POST', url, headers, payload: body as object });
}

async function create(body: Record<string, unknown> = {}) {
  return post('/v1/webhook_endpoints', { url: 'https://1.1.1.1/hooks', enabled_events: ['*'], ...body });
}

describe('webhook endpoints', () => {
  test('create shows the secret once; retrieve and list never do', async () => {
    const created = await create({ enabled_events: ['payment_intent.succeeded', 'refund.created'], description: 'orders' });
    assert.equal(created.statusCode, 200);
    const endpoint = created.json();
    assert.match(endpoint.id, /^we_/);
    assert.equal(endpoint.object, 'webhook_endpoint');
    assert.equal(endpoint.status, 'enabled');
    assert.deepEqual(endpoint.enabled_events, ['payment_intent.succeeded', 'refund.created']);
    assert.equal(endpoint.description, 'orders');
    assert.match(endpoint.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);

    const retrieved = await t.app.inject({ method: 'GET', url: `/v1/webhook_endpoints/${endpoint.id}`, headers: t.auth() });
    assert.equal(retrieved.statusCode, 200);
    assert.equal(retrieved.json().secret, undefined);
    const { secret: _secret, ...shown } = endpoint;
    assert.deepEqual(retrieved.json(), shown);

    const listed = await t.app.inject({ method: 'GET', url: '/v1/webhook_endpoints', headers: t.auth() });
    assert.ok(listed.json().data.some((row: { id: string }) => row.id === endpoint.id));
    assert.ok(listed.json().data.every((row: { secret?: string }) => row.secret === undefined));
  });

  test('lists page by starting_after, newest first', async () => {
    const merchant = await createMerchant(t.pool, 'Paging merchant');
    const headers = () => ({ authorization: `Bearer ${merchant.secret_key}`, 'idempotency-key': key() });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++)
      ids.push((await post('/v1/webhook_endpoints', { url: 'https://1.1.1.1/', enabled_events: ['*'] }, headers())).json().id);
    const first = await t.app.inject({ method: 'GET', url: '/v1/webhook_endpoints?limit=2', headers: headers() });
    assert.deepEqual(
      first.json().data.map((row: { id: string }) => row.id),
      [ids[2], ids[1]],
    );
    assert.equal(first.json().has_more, true);
    const second = await t.app.inject({ method: 'GET', url: `/v1/webhook_endpoints?limit=2&starting_after=${ids[1]}`, headers: headers() });
    assert.deepEqual(
      second.json().data.map((row: { id: string }) => row.id),
      [ids[0]],
    );
    assert.equal(second.json().has_more, false);
  });

  test('the same Idempotency-Key replays the creation instead of making a second endpoint', async () => {
    const headers = t.auth({ 'idempotency-key': key() });
    const body = { url: 'https://1.1.1.1/once', enabled_events: ['*'] };
    const first = await post('/v1/webhook_endpoints', body, headers);
    const second = await post('/v1/webhook_endpoints', body, headers);
    assert.equal(second.headers['idempotent-replayed'], 'true');
    assert.deepEqual(second.json(), first.json());
  });

  test('signing secrets are sealed at rest: neither the endpoint row nor the stored idempotent response holds one in clear', async () => {
    const createKey = key();
    const created = await post(
      '/v1/webhook_endpoints',
      { url: 'https://1.1.1.1/sealed', enabled_events: ['*'] },
      t.auth({ 'idempotency-key': createKey }),
    );
    const endpoint = created.json();
    const rotateKey = key();
    const rotatePath = `/v1/webhook_endpoints/${endpoint.id}/rotate_secret`;
    const rotated = (await post(rotatePath, { expires_in_seconds: 60 }, t.auth({ 'idempotency-key': rotateKey }))).json();
    const secretParts = [endpoint.secret, rotated.secret].map((secret: string) => secret.slice('whsec_'.length));

    const { rows: stored } = await t.pool.query('select secret, previous_secret from webhook_endpoints where id = $1', [endpoint.id]);
    const { rows: responses } = await t.pool.query(
      'select response_body::text as body from idempotency_keys where idempotency_key = any($1)',
      [[createKey, rotateKey]],
    );
    assert.equal(responses.length, 2);
    for (const text of [stored[0].secret, stored[0].previous_secret, ...responses.map((row) => row.body)]) {
      for (const part of secretParts) assert.ok(!text.includes(part), `a secret in clear in ${text}`);
    }
    assert.match(stored[0].secret, /^sealed:v1:/);

    // Replays still answer with the secret, opened from the sealed copy.
    const createReplay = await post(
      '/v1/webhook_endpoints',
      { url: 'https://1.1.1.1/sealed', enabled_events: ['*'] },
      t.auth({ 'idempotency-key': createKey }),
    );
    assert.equal(createReplay.headers['idempotent-replayed'], 'true');
    assert.deepEqual(createReplay.json(), endpoint);
    const rotateReplay = await post(rotatePath, { expires_in_seconds: 60 }, t.auth({ 'idempotency-key': rotateKey }));
    assert.equal(rotateReplay.json().secret, rotated.secret);
  });

  test('a key rotation: reseal seals every secret with the new key, legacy cleartext ones too, and they still open', async () => {
    const endpoint = (await create()).json();
    // A secret stored in clear, as before sealing existed.
    const legacy = (await create()).json();
    await t.pool.query('update webhook_endpoints set secret = $2 where id = $1', [legacy.id, legacy.secret]);
    const newKey = newSecretsKey();
    const rotated = sealerFor(`${newKey},${t.config.secretsKeys ?? DEV_SECRETS_KEY}`);
    assert.ok((await resealSecrets(t.pool, rotated)) >= 2);
    const onlyNew = sealerFor(newKey);
    const { rows } = await t.pool.query('select id, secret from webhook_endpoints where id = any($1)', [[endpoint.id, legacy.id]]);
    const opened = Object.fromEntries(rows.map((row) => [row.id, onlyNew.open(row.secret)]));
    assert.deepEqual(opened, { [endpoint.id]: endpoint.secret, [legacy.id]: legacy.secret });
    assert.equal(await resealSecrets(t.pool, rotated), 0, 'nothing left to reseal');
    // Back to the test key, so the rest of the file's endpoints open as before.
    await resealSecrets(t.pool, sealerFor(`${t.config.secretsKeys ?? DEV_SECRETS_KEY},${newKey}`));
  });

  test('rotation returns a new secret and keeps the old one signing for the overlap', async () => {
    const endpoint = (await create()).json();
    const rotated = await post(`/v1/webhook_endpoints/${endpoint.id}/rotate_secret`, { expires_in_seconds: 3600 });
    assert.equal(rotated.statusCode, 200);
    assert.match(rotated.json().secret, /^whsec_/);
    assert.notEqual(rotated.json().secret, endpoint.secret);
    const expiresAt = rotated.json().previous_secret_expires_at;
    const now = Math.floor(Date.now() / 1000);
    assert.ok(expiresAt > now + 3500 && expiresAt <= now + 3601);
    const { rows } = await t.pool.query('select secret, previous_secret from webhook_endpoints where id = $1', [endpoint.id]);
    const sealer = sealerFor(t.config.secretsKeys);
    assert.deepEqual(
      { secret: sealer.open(rows[0].secret), previous_secret: sealer.open(rows[0].previous_secret) },
      { secret: rotated.json().secret, previous_secret: endpoint.secret },
    );

    const defaulted = await post(`/v1/webhook_endpoints/${endpoint.id}/rotate_secret`, {});
    assert.ok(defaulted.json().previous_secret_expires_at >= now + 86_399);
    const immediate = await post(`/v1/webhook_endpoints/${endpoint.id}/rotate_secret`, { expires_in_seconds: 0 });
    assert.equal(immediate.json().previous_secret_expires_at, null);
    const tooLong = await post(`/v1/webhook_endpoints/${endpoint.id}/rotate_secret`, { expires_in_seconds: 7 * 86_400 + 1 });
    assert.equal(tooLong.statusCode, 400);
    assert.equal(tooLong.json().error.param, 'expires_in_seconds');
  });

  test('delete removes the endpoint', async () => {
    const endpoint = (await create()).json();
    const deleted = await t.app.inject({ method: 'DELETE', url: `/v1/webhook_endpoints/${endpoint.id}`, headers: t.auth() });
    assert.deepEqual(deleted.json(), { id: endpoint.id, object: 'webhook_endpoint', deleted: true });
    const again = await t.app.inject({ method: 'DELETE', url: `/v1/webhook_endpoints/${endpoint.id}`, headers: t.auth() });
    assert.equal(again.statusCode, 404);
    const gone = await t.app.inject({ method: 'GET', url: `/v1/webhook_endpoints/${endpoint.id}`, headers: t.auth() });
    assert.equal(gone.statusCode, 404);
  });

  test("another merchant's endpoint is 404 everywhere", async () => {
    const endpoint = (await create()).json();
    const other = await createMerchant(t.pool, 'Other merchant');
    const auth = { authorization: `Bearer ${other.secret_key}` };
    for (const [method, url] of [
      ['GET', `/v1/webhook_endpoints/${endpoint.id}`],
      ['DELETE', `/v1/webhook_endpoints/${endpoint.id}`],
      ['POST', `/v1/webhook_endpoints/${endpoint.id}/rotate_secret`],
    ] as const) {
      const response = await t.app.inject({ method, url, headers: auth, ...(method === 'POST' ? { payload: {} } : {}) });
      assert.equal(response.statusCode, 404, `${method} ${url}`);
      assert.equal(response.json().error.code, 'resource_missing');
    }
    const listed = await t.app.inject({ method: 'GET', url: '/v1/webhook_endpoints', headers: auth });
    assert.deepEqual(listed.json().data, []);
    const deliveries = await t.app.inject({ method: 'GET', url: '/v1/webhook_deliveries', headers: auth });
    assert.deepEqual(deliveries.json().data, []);
  });

  test('bad input is a 400 naming the parameter', async () => {
    const cases: [Record<string, unknown>, string, string][] = [
      [{ url: 'ftp://1.1.1.1/', enabled_events: ['*'] }, 'parameter_invalid', 'url'],
      [{ url: 'not a url', enabled_events: ['*'] }, 'parameter_invalid', 'url'],
      [{ url: 'https://user:pw@1.1.1.1/', enabled_events: ['*'] }, 'parameter_invalid', 'url'],
      [{ url: `https://1.1.1.1/${'a'.repeat(2048)}`, enabled_events: ['*'] }, 'parameter_invalid', 'url'],
      [{ enabled_events: ['*'] }, 'parameter_missing', 'url'],
      [{ url: 'https://1.1.1.1/' }, 'parameter_missing', 'enabled_events'],
      [{ url: 'https://1.1.1.1/', enabled_events: [] }, 'parameter_invalid', 'enabled_events'],
      [{ url: 'https://1.1.1.1/', enabled_events: ['payment_intent.exploded'] }, 'parameter_invalid', 'enabled_events[0]'],
      [{ url: 'https://1.1.1.1/', enabled_events: ['refund.created', 'refund.created'] }, 'parameter_invalid', 'enabled_events'],
      [{ url: 'https://1.1.1.1/', enabled_events: ['*'], secret: 'whsec_mine' }, 'parameter_unknown', 'secret'],
      [{ url: 'https://1.1.1.1/', enabled_events: ['*'], description: 'x'.repeat(1001) }, 'parameter_invalid', 'description'],
    ];
    for (const [body, code, param] of cases) {
      const response = await post('/v1/webhook_endpoints', body);
      assert.equal(response.statusCode, 400, JSON.stringify(body).slice(0, 100));
      assert.deepEqual([response.json().error.code, response.json().error.param], [code, param], JSON.stringify(body).slice(0, 100));
    }
    const badStatus = await t.app.inject({ method: 'GET', url: '/v1/webhook_deliveries?status=lost', headers: t.auth() });
    assert.equal(badStatus.statusCode, 400);
    assert.equal(badStatus.json().error.param, 'status');
  });

  test('a publishable key cannot manage endpoints', async () => {
    const response = await t.app.inject({
      method: 'GET',
      url: '/v1/webhook_endpoints',
      headers: { authorization: `Bearer ${t.merchant.publishableKey}` },
    });
    assert.equal(response.statusCode, 403);
  });

  test('an account has at most 16 endpoints', async () => {
    const merchant = await createMerchant(t.pool, 'Busy merchant');
    const headers = () => ({ authorization: `Bearer ${merchant.secret_key}`, 'idempotency-key': key() });
    for (let i = 0; i < 16; i++) {
      assert.equal((await post('/v1/webhook_endpoints', { url: 'https://1.1.1.1/', enabled_events: ['*'] }, headers())).statusCode, 200);
    }
    const refused = await post('/v1/webhook_endpoints', { url: 'https://1.1.1.1/', enabled_events: ['*'] }, headers());
    assert.equal(refused.statusCode, 400);
    assert.equal(refused.json().error.code, 'webhook_endpoint_limit_reached');
  });
});

describe('SSRF guard at registration', () => {
  const refused = [
    'http://127.0.0.1/hooks',
    'http://127.0.0.1:4000/v1/payment_intents',
    'http://localhost/hooks',
    'http://0.0.0.0/',
    'http://0x7f.1/',
    'http://2130706433/',
    'http://10.1.2.3/',
    'http://172.20.0.5/',
    'http://192.168.0.10/',
    'http://169.254.169.254/latest/meta-data/',
    'http://100.100.100.200/',
    'http://224.0.0.1/',
    'http://255.255.255.255/',
    'http://[::1]/',
    'http://[::]/',
    'http://[::ffff:127.0.0.1]/',
    'http://[::ffff:a00:1]/',
    'http://[fd00::1]/',
    'http://[fe80::1]/',
  ];
  for (const url of refused) {
    test(`refuses ${url}`, async () => {
      const response = await post('/v1/webhook_endpoints', { url, enabled_events: ['*'] });
      assert.equal(response.statusCode, 400);
      assert.equal(response.json().error.code, 'url_not_allowed');
      assert.equal(response.json().error.param, 'url');
    });
  }

  test('accepts public addresses', async () => {
    for (const url of ['https://1.1.1.1/hooks', 'https://[2606:4700:4700::1111]/hooks']) {
      assert.equal((await post('/v1/webhook_endpoints', { url, enabled_events: ['*'] })).statusCode, 200, url);
    }
  });
});
