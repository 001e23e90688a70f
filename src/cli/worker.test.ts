/**
 * `floodgate worker`, run as the real CLI in a child process: it refuses to start without a
 * database and a provider to share, and with them it reconciles a payment whose confirm timed
 * out, then shuts down cleanly on SIGTERM.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { createTestDatabase, key, setupTestContext } from '../../test/helpers.js';
import { waitUntil } from '../../test/receiver.js';
import { DEV_SECRETS_KEY } from '../platform/crypto/sealed.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const db = await createTestDatabase();
// No webhooks: only the worker's reconciliation can learn how the timed-out confirm ended.
const t = await setupTestContext({ pool: db.pool, simulator: { webhookSecret: undefined }, config: { providerTimeoutMs: 200 } });

/** The test runner's environment without anything that would configure the CLI. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_TEST_CONTEXT;
  for (const name of ['DATABASE_URL', 'FLOODGATE_PROVIDER_URL']) if (!(name in extra)) delete env[name];
  return env;
}

function run(env: Record<string, string>, ...args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', ...args],
      { cwd: ROOT, env: cleanEnv(env), timeout: 60_000 },
      (error, _stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stderr }),
    );
  });
}

/** A CLI role as a child process, its output collected, killed after the test if still running. */
function startProcess(role: string, env: Record<string, string>) {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', role], {
    cwd: ROOT,
    env: cleanEnv({ DATABASE_URL: db.url, FLOODGATE_LOG_LEVEL: 'info', FLOODGATE_WORKER_CONCURRENCY: '2', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const state = { output: '' };
  child.stdout?.on('data', (chunk: Buffer) => {
    state.output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    state.output += chunk.toString();
  });
  return { child, state };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address && typeof address === 'object');
  return address.port;
}

describe('floodgate worker', () => {
  test('a job runner that stops by itself ends the process (`start`, whose API would keep it alive) non-zero, saying why', async () => {
    // Its own data directory: `start` writes the demo merchant's keys there.
    const dataDir = await mkdtemp(path.join(tmpdir(), 'floodgate-start-'));
    after(() => rm(dataDir, { recursive: true, force: true }));
    const { child, state } = startProcess('start', {
      FLOODGATE_DATA_DIR: dataDir,
      FLOODGATE_PORT: String(await freePort()),
      FLOODGATE_SIMULATOR_PORT: String(await freePort()),
    });
    await waitUntil('the process serves', () => state.output.includes('Floodgate is running.'), 60_000);
    // graphile-worker shuts its worker pool down on this notice (a breaking schema migration by
    // a newer worker): from then on the runner runs no job, whatever the process does.
    // Sent until it is heard: the runner's LISTEN connection may still be opening.
    await waitUntil(
      'the worker exits',
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) return true;
        await t.pool.query(`select pg_notify('worker:migrate', '{"breaking": true, "migrationNumber": 999999}')`);
        return false;
      },
      30_000,
    );
    assert.equal(child.exitCode, 70, state.output);
    assert.match(state.output, /the job runner stopped by itself; exiting so that a supervisor restarts this process/);
  });

  test('refuses to start without DATABASE_URL and FLOODGATE_PROVIDER_URL: exit 78', async () => {
    const runs = await Promise.all([
      run({}, 'worker'),
      run({ DATABASE_URL: db.url }, 'worker'),
      run({ FLOODGATE_PROVIDER_URL: t.sim.url }, 'worker'),
    ]);
    for (const { code, stderr } of runs) {
      assert.equal(code, 78);
      assert.match(stderr, /floodgate worker needs DATABASE_URL and FLOODGATE_PROVIDER_URL/);
    }
    // The production roles refuse the published development key: they need a key of their own.
    const withoutKey = await run({ DATABASE_URL: db.url, FLOODGATE_PROVIDER_URL: t.sim.url }, 'worker');
    assert.equal(withoutKey.code, 78);
    assert.match(withoutKey.stderr, /floodgate worker needs FLOODGATE_SECRETS_KEYS/);
  });

  test('reconciles a payment whose confirm timed out, then stops cleanly on SIGTERM', async () => {
    const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'worker'], {
      cwd: ROOT,
      env: cleanEnv({
        DATABASE_URL: db.url,
        FLOODGATE_PROVIDER_URL: t.sim.url,
        FLOODGATE_SECRETS_KEYS: DEV_SECRETS_KEY,
        FLOODGATE_LOG_LEVEL: 'info',
        FLOODGATE_WORKER_CONCURRENCY: '2',
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    await waitUntil('the worker runs', () => output.includes('worker running'), 60_000);

    const confirmed = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 1800, currency: 'usd', payment_method: 'pm_card_timeout', confirm: true },
    });
    assert.equal(confirmed.json().status, 'processing');
    const id = confirmed.json().id as string;
    await waitUntil('the worker settles the payment', async () => {
      const { rows } = await t.pool.query('select status from payment_intents where merchant_id = $1 and id = $2', [t.merchant.id, id]);
      return rows[0]?.status !== 'processing';
    });

    child.kill('SIGTERM');
    await waitUntil('the worker exits', () => child.exitCode !== null || child.signalCode !== null, 30_000);
    assert.deepEqual([child.exitCode, child.signalCode], [0, null], output);
    const logs = output
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { level: number; msg: string });
    assert.ok(
      logs.some((line) => line.msg === 'shutting down'),
      output,
    );
    assert.deepEqual(
      logs.filter((line) => line.level >= 40),
      [],
      'no warnings or errors',
    );

    const { rows } = await t.pool.query(
      `select p.status, p.amount_received, (select count(*)::int from ledger_transactions l where l.merchant_id = p.merchant_id
         and l.payment_intent_id = p.id) as postings, a.status as attempt, a.provider_idempotency_key
       from payment_intents p join payment_attempts a on a.merchant_id = p.merchant_id and a.payment_intent_id = p.id
       where p.merchant_id = $1 and p.id = $2`,
      [t.merchant.id, id],
    );
    assert.deepEqual(
      rows.map(({ provider_idempotency_key: _, ...row }) => row),
      [{ status: 'succeeded', amount_received: 1800, postings: 1, attempt: 'succeeded' }],
    );
    assert.equal(t.sim.simulator.chargesByKey.get(rows[0].provider_idempotency_key), 1);
    const { rows: jobs } = await t.pool.query(
      `select task_identifier, locked_at from graphile_worker.jobs where locked_at is not null or task_identifier = 'reconcile_attempt'`,
    );
    assert.deepEqual(jobs, [], 'no job left locked or waiting');
  });
});
