/**
 * At-least-once across a crash: a worker process is killed with SIGKILL while its delivery is
 * in flight (the receiver holds the request), and a second worker delivers the event once the
 * dead worker's lock times out. The receiver may see the event twice, always with one webhook-id.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { createTestDatabase, setupTestContext } from '../../test/helpers.js';
import { type Received, startReceiver, waitUntil } from '../../test/receiver.js';
import { merchantWithEndpoint, workerSlot } from '../../test/webhooks-helpers.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

const startWorkerOnce = workerSlot();
const database = await createTestDatabase();
const t = await setupTestContext({ pool: database.pool, config: { webhookAllowPrivate: true } });

function startWorkerProcess(): ChildProcess {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: database.url,
    FLOODGATE_WEBHOOK_ALLOW_PRIVATE: '1',
    // Longer than the test: only the kill ends this worker's attempt.
    FLOODGATE_WEBHOOK_TIMEOUT_MS: '60000',
  };
  // The child is a plain process, not a test file.
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/fixtures/worker.ts')], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

describe('a worker killed mid-delivery', () => {
  test('the event is delivered afterwards by another worker', async () => {
    const receiver = await startReceiver({ answer: () => 'hold' });
    const merchant = await merchantWithEndpoint(t, receiver.url);

    const child = startWorkerProcess();
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    await waitUntil('the worker process is ready', () => output.includes('ready'), 60_000);

    const created = await merchant.post('/v1/payment_intents', { amount: 1200, currency: 'eur' });
    assert.equal(created.statusCode, 200);
    await waitUntil('the first attempt reaches the receiver', () => receiver.received.length === 1);

    receiver.answer = () => 200;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    const [, signal] = await exited;
    assert.equal(signal, 'SIGKILL');
    const { rows } = await t.pool.query('select status, attempts from webhook_deliveries where merchant_id = $1', [merchant.merchantId]);
    assert.deepEqual(rows, [{ status: 'pending', attempts: 0 }]);

    await startWorkerOnce(t.pool);
    await waitUntil('the delivery succeeds', async () => {
      const result = await t.pool.query('select status from webhook_deliveries where merchant_id = $1', [merchant.merchantId]);
      return result.rows[0]?.status === 'succeeded';
    });
    assert.ok(receiver.received.length >= 2);
    const ids = new Set(receiver.received.map((request) => request.headers['webhook-id']));
    assert.equal(ids.size, 1);
    const last = receiver.received.at(-1) as Received;
    const event = new Webhook(merchant.endpoint.secret).verify(last.body, last.headers) as { data: { object: { id: string } } };
    assert.equal(event.data.object.id, created.json().id);
  });
});
