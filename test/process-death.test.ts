/**
 * Real process deaths: an `floodgate api` child killed with SIGKILL while the provider holds
 * its confirm, and a `floodgate worker` child killed with SIGKILL in the middle of a
 * reconciliation. Nothing in-process stands in for the crash: the kernel ends the process, its
 * connections drop, PostgreSQL rolls back what was open. A retry of the confirm (after the
 * idempotency lock times out) and a second worker (after the job lock times out) finish each
 * payment exactly once.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { buildApp } from '../src/app.js';
import { audit } from '../src/audit/service.js';
import { DEV_SECRETS_KEY } from '../src/platform/crypto/sealed.js';
import {
  createTestDatabase,
  key,
  PROVIDER_TIMEOUT_MS,
  setupTestContext,
  shortTimeoutApp,
  TEST_ADMISSION_SECRET,
  TEST_PROVIDER_WEBHOOK_SECRET,
} from './helpers.js';
import { waitUntil } from './receiver.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const db = await createTestDatabase();
// The simulator sends no webhooks here: only the retry and the reconciler settle payments.
const t = await setupTestContext({ pool: db.pool, simulator: { webhookSecret: undefined } });
const sim = t.sim.simulator;
// A node whose idempotency locks count as timed out at once: a retry after the timeout.
const resumer = await buildApp({ config: { ...t.config, idempotencyLockTimeoutMs: 0 }, pool: t.pool, provider: t.provider });
after(() => resumer.close());

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  return typeof address === 'object' && address ? address.port : 0;
}

/** Runs `floodgate ROLE` as a child process on this file's database and simulator. */
function floodgate(role: string, env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: db.url,
    FLOODGATE_PROVIDER_URL: t.sim.url,
    FLOODGATE_PROVIDER_TIMEOUT_MS: String(PROVIDER_TIMEOUT_MS * 6),
    FLOODGATE_LOG_LEVEL: 'warn',
    // A worker's metrics on any free port: the default 4002 may be another process's.
    FLOODGATE_WORKER_METRICS_PORT: '0',
    // The production roles refuse to start without a sealing key of their own.
    FLOODGATE_SECRETS_KEYS: DEV_SECRETS_KEY,
    ...env,
  };
  delete childEnv.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', role], {
    cwd: ROOT,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, output: () => output };
}

async function killed(child: ChildProcess): Promise<void> {
  child.kill('SIGKILL');
  await waitUntil('the child is dead', () => child.signalCode !== null || child.exitCode !== null, 30_000);
  assert.equal(child.signalCode, 'SIGKILL');
}

async function attemptsOf(intentId: string) {
  const { rows } = await t.pool.query<{ id: string; status: string; provider_idempotency_key: string }>(
    'select id, status, provider_idempotency_key from payment_attempts where merchant_id = $1 and payment_intent_id = $2',
    [t.merchant.id, intentId],
  );
  return rows;
}

/** One succeeded payment of `amount`, charged once, posted once; nothing amiss anywhere. */
async function assertPaidOnce(intentId: string, amount: number) {
  const { rows } = await t.pool.query(
    `select p.status, p.amount_received,
            (select count(*)::int from ledger_transactions l where l.merchant_id = p.merchant_id and l.payment_intent_id = p.id) as postings
     from payment_intents p where p.merchant_id = $1 and p.id = $2`,
    [t.merchant.id, intentId],
  );
  assert.deepEqual(rows, [{ status: 'succeeded', amount_received: amount, postings: 1 }]);
  const attempts = await attemptsOf(intentId);
  assert.deepEqual(
    attempts.map((attempt) => [attempt.status, sim.chargesByKey.get(attempt.provider_idempotency_key)]),
    [['succeeded', 1]],
    'one attempt, charged once',
  );
  assert.deepEqual((await audit(t.pool)).violations, []);
}

describe('real process deaths', () => {
  test('an API node killed with SIGKILL while the provider holds its confirm: the retry completes the payment once', async () => {
    const port = await freePort();
    const api = floodgate('api', {
      FLOODGATE_HOST: '127.0.0.1',
      FLOODGATE_PORT: String(port),
      FLOODGATE_ADMISSION_SECRET: TEST_ADMISSION_SECRET,
      FLOODGATE_PROVIDER_WEBHOOK_SECRET: TEST_PROVIDER_WEBHOOK_SECRET,
    });
    const base = `http://127.0.0.1:${port}`;
    await waitUntil('the API node answers', async () => (await fetch(`${base}/livez`).catch(() => undefined))?.status === 200, 60_000);
    const created = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 4200, currency: 'usd' },
    });
    const intentId = created.json().id as string;
    // pm_card_timeout: the simulator records the charge and holds its answer for a minute.
    sim.timeoutHoldMs = 60_000;
    const confirmKey = key('confirm');
    const request = {
      method: 'POST',
      headers: { authorization: `Bearer ${t.merchant.secretKey}`, 'content-type': 'application/json', 'idempotency-key': confirmKey },
      body: JSON.stringify({ payment_method: 'pm_card_timeout' }),
    };
    const dying = fetch(`${base}/v1/payment_intents/${intentId}/confirm`, request).then(
      (response) => response.status,
      () => 'connection lost' as const,
    );
    await waitUntil('the provider has charged and holds the answer', async () => {
      const [attempt] = await attemptsOf(intentId);
      return attempt !== undefined && sim.chargesByKey.get(attempt.provider_idempotency_key) === 1;
    });
    await killed(api.child);
    assert.equal(await dying, 'connection lost', 'the client never got an answer');
    assert.deepEqual(
      (await attemptsOf(intentId)).map((attempt) => attempt.status),
      ['started'],
    );
    const { rows: keys } = await t.pool.query(
      'select recovery_point, locked_at is not null as locked, response_status from idempotency_keys where merchant_id = $1 and idempotency_key = $2',
      [t.merchant.id, confirmKey],
    );
    assert.deepEqual(keys, [{ recovery_point: 'authorization_started', locked: true, response_status: null }]);

    // The provider answers at once from now on; the client retries after the lock timeout.
    sim.timeoutHoldMs = 0;
    sim.releaseHeld();
    const retried = await resumer.inject({
      method: 'POST',
      url: `/v1/payment_intents/${intentId}/confirm`,
      headers: t.auth({ 'idempotency-key': confirmKey }),
      payload: { payment_method: 'pm_card_timeout' },
    });
    assert.equal(retried.statusCode, 200, retried.body);
    assert.equal(retried.json().status, 'succeeded');
    await assertPaidOnce(intentId, 4200);
  });

  test('a worker killed with SIGKILL mid-reconciliation: a second worker frees the job and settles the payment once', async () => {
    sim.timeoutHoldMs = 5_000;
    const timingOut = await shortTimeoutApp(t);
    const confirmed = await timingOut.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 3300, currency: 'usd', payment_method: 'pm_card_timeout', confirm: true },
    });
    assert.equal(confirmed.json().status, 'processing', confirmed.body);
    const intentId = confirmed.json().id as string;

    // Every provider call now waits a minute: the worker's look-up is in flight when it dies.
    sim.latencyMs = 60_000;
    const requestsBefore = t.sim.requests;
    const first = floodgate('worker', { FLOODGATE_JOB_LOCK_TIMEOUT_MS: '120000' });
    await waitUntil('the worker is asking the provider', () => t.sim.requests > requestsBefore, 60_000).catch((error: Error) => {
      throw new Error(`${error.message}; the worker said: ${first.output().slice(-3000)}`);
    });
    const { rows: locked } = await t.pool.query(
      `select task_identifier, locked_by is not null as locked from graphile_worker.jobs where task_identifier = 'reconcile_attempt'`,
    );
    assert.deepEqual(locked, [{ task_identifier: 'reconcile_attempt', locked: true }]);
    await killed(first.child);
    assert.equal((await attemptsOf(intentId))[0]?.status, 'unknown', 'the dead worker settled nothing');

    // A second worker, with a short job lock timeout, frees the dead worker's job and runs it.
    sim.latencyMs = 0;
    const second = floodgate('worker', { FLOODGATE_JOB_LOCK_TIMEOUT_MS: '2000' });
    await waitUntil('the second worker settles the payment', async () => (await attemptsOf(intentId))[0]?.status === 'succeeded', 60_000);
    await assertPaidOnce(intentId, 3300);
    second.child.kill('SIGTERM');
    await waitUntil('the second worker exits', () => second.child.exitCode !== null || second.child.signalCode !== null, 30_000);
    assert.equal(second.child.exitCode, 0, second.output());
  });
});
