/**
 * `floodgate worker`, run as the real CLI in a child process: it refuses to start without a
 * database and a provider to share, and with them it runs its real task list — it reconciles
 * the timed-out payment of an order (and, through its own paid-order listener, marks the order
 * paid and sells its stock), expires a due hold, runs the open-attempt sweep — then shuts down
 * cleanly on SIGTERM. Its crontab names only tasks it registers.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { parseCrontab } from 'graphile-worker';
import { committedRecoveryPoint, crashing } from '../../test/crash.js';
import { createSaleThroughApi, createTestDatabase, key, setupTestContext, shortTimeoutApp } from '../../test/helpers.js';
import { waitUntil } from '../../test/receiver.js';
import { buildApp } from '../app.js';
import { DEV_SECRETS_KEY } from '../platform/crypto/sealed.js';
import { withTransaction } from '../platform/db/pool.js';
import { takeHold } from '../sales/holds.js';
import { createLogger } from './runtime.js';
import { WORKER_CRONTAB, workerTasks } from './worker.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const db = await createTestDatabase();
// No webhooks: only the worker's reconciliation can learn how the timed-out confirm ended.
const t = await setupTestContext({ pool: db.pool, simulator: { webhookSecret: undefined } });
// Only the pm_card_timeout confirm goes through this app: it is meant to time out.
const timingOut = await shortTimeoutApp(t);

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

async function createSale() {
  return createSaleThroughApi(t, {
    name: 'Worker release',
    opens_at: new Date(Date.now() - 3_600_000).toISOString(),
    hold_seconds: 60,
    items: [{ name: 'Ticket', price: 1500, stock: 10 }],
  });
}

/** A hold taken at `now` (its expiry job queued for now + hold_seconds), as the hold route takes it. */
async function holdOf(sale: { id: string; itemId: string }, quantity: number, now: Date) {
  const result = await withTransaction(t.pool, (client) =>
    takeHold(client, {
      merchantId: t.merchant.id,
      saleId: sale.id,
      buyerReference: key('buyer'),
      lines: [{ item_id: sale.itemId, quantity }],
      now,
    }),
  );
  assert.equal(result.kind, 'created');
  if (result.kind !== 'created') throw new Error('unreachable');
  return result.hold;
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
  test('every crontab line names a task the worker registers', () => {
    const tasks = workerTasks({
      config: t.config,
      pool: t.pool,
      provider: t.provider,
      log: createLogger(t.config),
      releaseAdmission: async () => {},
    });
    const items = parseCrontab(WORKER_CRONTAB);
    assert.ok(items.length >= 3, WORKER_CRONTAB);
    for (const item of items) assert.ok(Object.hasOwn(tasks, item.task), `crontab names ${item.task}, which no capability registers`);
    assert.deepEqual(items.map((item) => item.task).sort(), [
      'cleanup_idempotency_keys',
      'prune_webhook_attempts',
      'sweep_open_attempts',
      'unlock_stuck_idempotency_keys',
    ]);
  });

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

  test("reconciles an order's timed-out payment (order paid, stock sold), expires a due hold, sweeps, then stops on SIGTERM", async () => {
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

    // An order whose payment's confirm timed out: only the worker can learn it succeeded.
    const sale = await createSale();
    const hold = await holdOf(sale, 2, new Date());
    const placed = await t.app.inject({
      method: 'POST',
      url: '/v1/orders',
      headers: t.auth({ 'idempotency-key': key('order') }),
      payload: { hold: hold.id },
    });
    assert.equal(placed.statusCode, 200, placed.body);
    const confirmed = await timingOut.inject({
      method: 'POST',
      url: `/v1/payment_intents/${placed.json().payment_intent}/confirm`,
      headers: t.auth({ 'idempotency-key': key('confirm') }),
      payload: { payment_method: 'pm_card_timeout' },
    });
    assert.equal(confirmed.json().status, 'processing', confirmed.body);
    const id = confirmed.json().id as string;

    // A hold taken two minutes ago for 60 seconds: its expiry job is due at once.
    const due = await holdOf(sale, 1, new Date(Date.now() - 120_000));

    // A confirm whose process died once its attempt committed, before it called the provider:
    // no reconciliation is queued, and only the sweep can find it. It is made an hour old.
    const created = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 700, currency: 'usd' },
    });
    const orphan = created.json().id as string;
    const crash = crashing(t.pool, t.provider, { afterCommitOf: committedRecoveryPoint('authorization_started') });
    const dying = await buildApp({ config: t.config, pool: crash.pool, provider: crash.provider });
    await dying.inject({
      method: 'POST',
      url: `/v1/payment_intents/${orphan}/confirm`,
      headers: t.auth({ 'idempotency-key': key('crash') }),
      payload: { payment_method: 'pm_card_visa' },
    });
    await dying.close();
    assert.equal(crash.died, true);
    await t.pool.query(
      `update payment_attempts set updated_at = now() - interval '1 hour' where merchant_id = $1 and payment_intent_id = $2`,
      [t.merchant.id, orphan],
    );
    // The sweep runs every minute from the crontab; queue one now rather than wait for it.
    await t.pool.query(`select graphile_worker.add_job('sweep_open_attempts', '{}'::json)`);

    await waitUntil('the worker settles the payment, expires the hold and completes the swept attempt', async () => {
      const { rows } = await t.pool.query(
        `select (select status from payment_intents where merchant_id = $1 and id = $2) as paid,
                (select status from holds where merchant_id = $1 and id = $3) as due,
                (select status from payment_intents where merchant_id = $1 and id = $4) as orphan`,
        [t.merchant.id, id, due.id, orphan],
      );
      return rows[0].paid !== 'processing' && rows[0].due !== 'active' && rows[0].orphan !== 'processing';
    });
    const order = await t.app.inject({ method: 'GET', url: `/v1/orders/${placed.json().id}`, headers: t.auth() });
    assert.equal(order.json().status, 'paid', order.body);
    const { rows: holds } = await t.pool.query('select id, status from holds where merchant_id = $1 order by created_at', [t.merchant.id]);
    assert.deepEqual(
      holds.map((row) => [row.id, row.status]),
      [
        [hold.id, 'converted'],
        [due.id, 'expired'],
      ],
    );
    const { rows: stock } = await t.pool.query('select stock_available, stock_held, stock_sold from items where sale_id = $1', [sale.id]);
    assert.deepEqual(stock, [{ stock_available: 8, stock_held: 0, stock_sold: 2 }]);
    const swept = await t.app.inject({ method: 'GET', url: `/v1/payment_intents/${orphan}`, headers: t.auth() });
    assert.deepEqual([swept.json().status, swept.json().amount_received], ['succeeded', 700]);

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
      [{ status: 'succeeded', amount_received: 2 * 1500, postings: 1, attempt: 'succeeded' }],
    );
    assert.equal(t.sim.simulator.chargesByKey.get(rows[0].provider_idempotency_key), 1);
    const { rows: jobs } = await t.pool.query(
      `select task_identifier, locked_at from graphile_worker.jobs where locked_at is not null or task_identifier = 'reconcile_attempt'`,
    );
    assert.deepEqual(jobs, [], 'no job left locked or waiting');
  });
});
