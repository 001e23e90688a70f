/**
 * The admin commands, run as the real CLI in a child process against this file's test
 * database: the keys they print work against an app on the same database, revocation takes
 * effect, the key list shows no key, migrate brings an empty database up to date, and audit's
 * exit code tells a clean database from a broken one.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createTestDatabase, key, setupTestContext } from '../../test/helpers.js';
import { readMigrations } from '../platform/db/migrate.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const db = await createTestDatabase();
const t = await setupTestContext({ pool: db.pool });

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `floodgate ARGS` on `databaseUrl` (this file's database unless named). */
function floodgateOn(databaseUrl: string, ...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', ...args],
      { cwd: ROOT, env: { ...process.env, DATABASE_URL: databaseUrl, FLOODGATE_LOG_LEVEL: 'warn' }, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const floodgate = (...args: string[]) => floodgateOn(db.url, ...args);

/** The single JSON document a --json command prints, and nothing else. */
function json(run: Run): Record<string, unknown> {
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trim().split('\n');
  assert.equal(lines.length, 1, `one line of JSON on stdout, got:\n${run.stdout}`);
  return JSON.parse(lines[0] as string);
}

function get(secret: string, url = '/v1/payment_intents') {
  return t.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${secret}` } });
}

describe('floodgate merchants and keys', () => {
  const state = { merchantId: '', secretKey: '' };

  test('merchants create NAME --json prints the merchant and keys that work', async () => {
    const printed = json(await floodgate('merchants', 'create', 'Acme', 'Tickets', '--json'));
    assert.deepEqual(Object.keys(printed).sort(), ['merchant', 'publishable_key', 'secret_key']);
    const merchant = printed.merchant as Record<string, unknown>;
    assert.deepEqual(Object.keys(merchant).sort(), ['created', 'id', 'name']);
    assert.match(String(merchant.id), /^mch_[0-9A-Za-z]{22}$/);
    assert.equal(merchant.name, 'Acme Tickets');
    assert.equal(typeof merchant.created, 'number');
    assert.match(String(printed.secret_key), /^sk_test_[0-9A-Za-z]{38}$/);
    assert.match(String(printed.publishable_key), /^pk_test_[0-9A-Za-z]{38}$/);
    state.merchantId = String(merchant.id);
    state.secretKey = String(printed.secret_key);

    // The secret key acts as that merchant; the publishable key cannot use the secret API.
    const created = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: { authorization: `Bearer ${state.secretKey}`, 'idempotency-key': key() },
      payload: { amount: 1200, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
    });
    assert.equal(created.statusCode, 200, created.body);
    const { rows } = await t.pool.query<{ merchant_id: string }>('select merchant_id from payment_intents where id = $1', [
      created.json().id,
    ]);
    assert.deepEqual(rows, [{ merchant_id: state.merchantId }]);
    const publishable = await get(String(printed.publishable_key));
    assert.equal(publishable.statusCode, 403);
    assert.equal(publishable.json().error.code, 'secret_key_required');
  });

  test('keys create --json prints a working key; keys revoke stops it at once', async () => {
    assert.ok(state.merchantId, 'runs after merchants create');
    const printed = json(await floodgate('keys', 'create', '--merchant', state.merchantId, '--json'));
    assert.deepEqual(Object.keys(printed).sort(), ['key', 'key_id', 'kind']);
    assert.equal(printed.kind, 'secret');
    assert.match(String(printed.key_id), /^key_/);
    const secret = String(printed.key);
    assert.equal((await get(secret)).statusCode, 200);

    const revoked = await floodgate('keys', 'revoke', String(printed.key_id));
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`revoked ${printed.key_id}`));
    const refused = await get(secret);
    assert.equal(refused.statusCode, 401);
    assert.equal(refused.json().error.code, 'api_key_invalid');
    assert.equal((await get(state.secretKey)).statusCode, 200, "the merchant's other key still works");

    const { rows } = await t.pool.query<{ key_id: string }>(
      'select key_id from api_keys where merchant_id = $1 and revoked_at is not null',
      [state.merchantId],
    );
    assert.deepEqual(rows, [{ key_id: printed.key_id }], 'only that key was revoked');
  });

  test('keys list shows each key of the merchant by id, kind, prefix and state, never a key itself', async () => {
    const created = json(await floodgate('merchants', 'create', 'Key', 'lister', '--json'));
    const merchantId = String((created.merchant as { id: string }).id);
    const extra = json(await floodgate('keys', 'create', '--merchant', merchantId, '--kind', 'publishable', '--json'));
    assert.equal((await floodgate('keys', 'revoke', String(extra.key_id))).code, 0);
    const keys = [created.secret_key, created.publishable_key, extra.key].map(String);
    const { rows } = await t.pool.query<{ key_id: string; kind: string; display_prefix: string; revoked: boolean }>(
      'select key_id, kind, display_prefix, revoked_at is not null as revoked from api_keys where merchant_id = $1 order by key_id',
      [merchantId],
    );
    assert.equal(rows.length, 3);

    const listed = await floodgate('keys', 'list', '--merchant', merchantId);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      listed.stdout
        .trim()
        .split('\n')
        .map((line) => line.split(/\s+/)),
      rows.map((row) => [row.key_id, row.kind, `${row.display_prefix}...`, row.revoked ? 'revoked' : 'active']),
    );
    const asJson = await floodgate('keys', 'list', '--merchant', merchantId, '--json');
    assert.equal(asJson.code, 0, asJson.stderr);
    const entries = JSON.parse(asJson.stdout) as Array<Record<string, unknown>>;
    assert.deepEqual(
      entries.map((entry) => [entry.key_id, entry.kind, entry.display_prefix, entry.revoked_at !== null]),
      rows.map((row) => [row.key_id, row.kind, row.display_prefix, row.revoked]),
    );
    for (const entry of entries) {
      assert.deepEqual(Object.keys(entry).sort(), ['created_at', 'display_prefix', 'key_id', 'kind', 'merchant_id', 'revoked_at']);
    }
    // A prefix names a key to its owner; what follows it, the secret part, is printed nowhere.
    for (const printed of [listed.stdout, asJson.stdout]) {
      for (const shown of keys) assert.ok(!printed.includes(shown.slice(0, 16)), `${shown.slice(0, 16)}... printed`);
    }

    const unknown = await floodgate('keys', 'list', '--merchant', 'mch_doesnotexist');
    assert.equal(unknown.code, 1, unknown.stdout);
    assert.equal(unknown.stdout, '');
    assert.match(unknown.stderr, /no merchant mch_doesnotexist/);
  });

  test('mistakes exit non-zero and change nothing', async () => {
    const { rows: before } = await t.pool.query('select key_id, revoked_at from api_keys order by key_id');
    const [noName, unknownKey] = await Promise.all([
      floodgate('merchants', 'create', '--json'),
      floodgate('keys', 'revoke', 'key_doesnotexist'),
    ]);
    assert.equal(noName.code, 2);
    assert.match(noName.stderr, /usage: floodgate merchants create NAME/);
    assert.equal(unknownKey.code, 1);
    assert.match(unknownKey.stderr, /no key key_doesnotexist/);
    const { rows: after } = await t.pool.query('select key_id, revoked_at from api_keys order by key_id');
    assert.deepEqual(after, before);
  });
});

describe('floodgate migrate', () => {
  test('applies every migration and the job queue to an empty database; a second run applies none', async () => {
    const empty = await createTestDatabase({ empty: true });
    const names = (await readMigrations()).map((migration) => migration.name);
    const first = await floodgateOn(empty.url, 'migrate');
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, `applied: ${names.join(', ')}\n`);
    const applied = async () =>
      (await empty.pool.query<{ name: string; applied_at: Date }>('select name, applied_at from schema_migrations order by version')).rows;
    const before = await applied();
    assert.deepEqual(
      before.map((row) => row.name),
      names,
    );
    // The job queue's schema is there too: a job can be added, as every state change does.
    await empty.pool.query(`select graphile_worker.add_job('noop', '{}'::json)`);
    const { rows: jobs } = await empty.pool.query('select task_identifier from graphile_worker.jobs');
    assert.deepEqual(jobs, [{ task_identifier: 'noop' }]);

    const second = await floodgateOn(empty.url, 'migrate');
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, 'database is up to date\n');
    assert.deepEqual(await applied(), before, 'nothing applied again');
  });

  test('a database it cannot reach: exit 1 with one line naming the cause, no stack trace', async () => {
    const unreachable = await floodgateOn('postgres://postgres@127.0.0.1:1/nothing', 'migrate');
    assert.equal(unreachable.code, 1);
    assert.equal(unreachable.stderr, 'floodgate: connect ECONNREFUSED 127.0.0.1:1\n');
  });
});

describe('floodgate audit', () => {
  test('exits 0 on a database whose payments are consistent, 1 once one is not', async () => {
    // Some real money movement first: a payment and a partial refund.
    const paid = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 5000, currency: 'eur', payment_method: 'pm_card_visa', confirm: true },
    });
    const refund = await t.app.inject({
      method: 'POST',
      url: '/v1/refunds',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { payment_intent: paid.json().id, amount: 1000 },
    });
    assert.equal(refund.json().status, 'succeeded');

    const clean = await floodgate('audit');
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
    assert.match(clean.stdout, /no violations/);

    // A succeeded payment the ledger never heard of, as a bug or a hand edit would leave.
    await t.pool.query(
      `insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, amount_received, created_at, updated_at)
       values ($1, 'pi_broken', 700, 'usd', 'succeeded', 'automatic', 700, now(), now())`,
      [t.merchant.id],
    );
    const broken = await floodgate('audit', '--json');
    assert.equal(broken.code, 1);
    const report = JSON.parse(broken.stdout) as { violations: Array<{ check: string; object_id: string }> };
    assert.deepEqual(
      report.violations.map((v) => [v.check, v.object_id]),
      [['captured_differs_from_ledger', 'pi_broken']],
    );
  });
});

describe('floodgate cluster', () => {
  test('usage errors name what to fix; status and down without a cluster say so', async () => {
    const unknown = await floodgate('cluster', 'sideways');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /usage: floodgate cluster up\|status\|down/);
    const badCount = await floodgate('cluster', 'up', '--api', '0', '--dir', '/nonexistent/floodgate-cluster');
    assert.equal(badCount.code, 2);
    assert.match(badCount.stderr, /--api is a whole number from 1 to 16/);
    for (const action of ['status', 'down']) {
      const none = await floodgate('cluster', action, '--dir', '/nonexistent/floodgate-cluster');
      assert.equal(none.code, 1);
      assert.match(none.stderr, /no cluster recorded in \/nonexistent\/floodgate-cluster/);
    }
  });
});
