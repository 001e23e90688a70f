/**
 * Exactly-once completion: the confirm call, the provider's webhooks (each sent several times,
 * out of order) and the reconciler race to apply the same outcomes. Each payment must complete
 * once: one status change, one ledger posting, one payment_intent.succeeded event, one charge.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { audit } from '../src/audit/service.js';
import { createLogger } from '../src/cli/runtime.js';
import { loadConfig } from '../src/config.js';
import { completeAttempt } from '../src/payments/completion.js';
import { paymentTasks } from '../src/payments/jobs.js';
import { reconcileAttempt } from '../src/payments/reconciliation.js';
import { withTransaction } from '../src/platform/db/pool.js';
import { startWorker } from '../src/platform/jobs/runner.js';
import { convertPaidHold } from '../src/sales/holds.js';
import { key, MANY_TIMEOUTS, setupTestContext, shortTimeoutApp, type TestContext } from './helpers.js';

const PAYMENTS = 100;
const reconcileOptions = { baseDelayMs: 50, maxDelayMs: 200, maxAttempts: 30, staleAfterMs: 1_000 };

async function createIntents(t: TestContext, count: number, paymentMethod: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const response = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key('create') }),
      payload: { amount: 1000 + i, currency: 'usd', payment_method: paymentMethod },
    });
    assert.equal(response.statusCode, 200);
    ids.push(response.json().id);
  }
  return ids;
}

function shuffle<T>(items: T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

async function assertCompletedOnce(t: TestContext, ids: string[]) {
  const { rows } = await t.pool.query(
    `select p.id, p.status, p.amount, p.amount_received,
            (select count(*) from ledger_transactions l where l.merchant_id = p.merchant_id and l.payment_intent_id = p.id)::int as postings,
            (select count(*) from events e where e.merchant_id = p.merchant_id and e.object_id = p.id
               and e.type = 'payment_intent.succeeded')::int as succeeded_events,
            (select array_agg(a.provider_idempotency_key) from payment_attempts a
               where a.merchant_id = p.merchant_id and a.payment_intent_id = p.id) as keys
     from payment_intents p where p.merchant_id = $1 and p.id = any($2)`,
    [t.merchant.id, ids],
  );
  assert.equal(rows.length, ids.length);
  for (const row of rows) {
    assert.equal(row.status, 'succeeded', `${row.id} succeeded`);
    assert.equal(row.amount_received, row.amount);
    assert.equal(row.postings, 1, `${row.id} has one ledger posting`);
    assert.equal(row.succeeded_events, 1, `${row.id} has one succeeded event`);
    for (const providerKey of row.keys)
      assert.ok((t.sim.simulator.chargesByKey.get(providerKey) ?? 0) <= 1, 'charged at most once per key');
  }
  const charged = rows.reduce((sum, row) => sum + (row.keys as string[]).filter((k) => t.sim.simulator.chargesByKey.has(k)).length, 0);
  assert.equal(charged, ids.length, 'one charge per payment');
  assert.deepEqual((await audit(t.pool)).violations, []);
}

describe('exactly-once completion', () => {
  test('confirm, provider webhooks (three times, out of order) and the reconciler racing on 100 payments', async () => {
    // A provider timeout far beyond any wait this machine sees: every confirm must succeed.
    const t = await setupTestContext({ listen: true, simulator: { latencyMs: 20 }, config: { providerTimeoutMs: 60_000 } });
    const ids = await createIntents(t, PAYMENTS, 'pm_card_visa');

    let confirming = true;
    const reconciler = (async () => {
      // Races the confirm calls: settles whatever attempts are open at each pass.
      while (confirming) {
        const { rows } = await t.pool.query(
          `select merchant_id, id from payment_attempts where merchant_id = $1 and status in ('started', 'unknown')`,
          [t.merchant.id],
        );
        await Promise.all(
          rows.map((row) =>
            reconcileAttempt(
              { pool: t.pool, provider: t.provider, options: reconcileOptions, onPaymentSucceeded: convertPaidHold },
              { merchant_id: row.merchant_id, attempt_id: row.id, round: 1 },
            ),
          ),
        );
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const confirms = await Promise.all(
      ids.map((id) =>
        t.app.inject({ method: 'POST', url: `/v1/payment_intents/${id}/confirm`, headers: t.auth({ 'idempotency-key': key('confirm') }) }),
      ),
    );
    confirming = false;
    await reconciler;
    for (const response of confirms) {
      assert.equal(response.statusCode, 200, response.body);
      assert.equal(response.json().status, 'succeeded', response.body);
    }
    // Every webhook again, three times over, in random order.
    const webhooks = t.sim.simulator.webhooksSent.filter((event) => event.type === 'charge.succeeded');
    assert.equal(webhooks.length, PAYMENTS);
    // As a provider does, a delivery the app refused for load (503 with Retry-After, on a busy
    // machine) is sent again until it is accepted: what is tested is that each is applied once.
    const deliver = async (event: (typeof webhooks)[number]) => {
      let status = 0;
      for (let attempt = 0; attempt < 10 && status !== 200; attempt++) {
        if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 500));
        status = await t.sim.simulator.sendWebhook(event);
      }
      return status;
    };
    const statuses = await Promise.all(shuffle([...webhooks, ...webhooks, ...webhooks]).map(deliver));
    assert.deepEqual(
      statuses.filter((status) => status !== 200),
      [],
      'every webhook delivered',
    );
    await assertCompletedOnce(t, ids);
  });

  test('a decline the provider webhook settled first is still answered to the confirm call as card_declined, not as a 200', async () => {
    const t = await setupTestContext({ simulator: { webhookSecret: undefined, timeoutHoldMs: 2_000 } });
    const timingOut = await shortTimeoutApp(t, MANY_TIMEOUTS);
    const [id] = await createIntents(t, 1, 'pm_card_timeout');
    const pending = await timingOut.inject({
      method: 'POST',
      url: `/v1/payment_intents/${id}/confirm`,
      headers: t.auth({ 'idempotency-key': key('confirm') }),
    });
    assert.equal(pending.json().status, 'processing');
    const { rows } = await t.pool.query(`select id from payment_attempts where merchant_id = $1 and payment_intent_id = $2`, [
      t.merchant.id,
      id,
    ]);
    const declined = { kind: 'declined' as const, code: 'card_declined', message: 'The card was declined.' };
    const complete = () =>
      withTransaction(t.pool, (client) =>
        completeAttempt(client, { onPaymentSucceeded: convertPaidHold }, t.merchant.id, rows[0].id, declined),
      );
    // The webhook applies the decline; the confirm call's own completion comes second with the
    // same answer from the provider, and must tell its caller the same.
    const byWebhook = await complete();
    const byConfirm = await complete();
    for (const completion of [byWebhook, byConfirm]) {
      assert.equal(completion.kind, 'card_declined');
      assert.ok(completion.kind === 'card_declined');
      assert.equal(completion.code, 'card_declined');
      assert.equal(completion.intent.status, 'requires_payment_method');
    }
    const { rows: events } = await t.pool.query(
      `select count(*)::int as n from events where merchant_id = $1 and object_id = $2 and type = 'payment_intent.payment_failed'`,
      [t.merchant.id, id],
    );
    assert.equal(events[0].n, 1, 'applied once');
  });

  test('pm_card_timeout payments all reach a final state through the worker, charged once', async () => {
    // No webhooks here: only reconciliation can learn the outcome.
    // The confirms time out (a short timeout, their own app); the reconciler's look-ups, which
    // must succeed, go through the context's provider with the long one.
    const t = await setupTestContext({ simulator: { webhookSecret: undefined, timeoutHoldMs: 2_000 } });
    const timingOut = await shortTimeoutApp(t, MANY_TIMEOUTS);
    const ids = await createIntents(t, 20, 'pm_card_timeout');
    const confirms = await Promise.all(
      ids.map((id) =>
        timingOut.inject({
          method: 'POST',
          url: `/v1/payment_intents/${id}/confirm`,
          headers: t.auth({ 'idempotency-key': key('confirm') }),
        }),
      ),
    );
    for (const response of confirms) assert.equal(response.json().status, 'processing');

    const config = loadConfig({}, { logLevel: 'silent' });
    const worker = await startWorker({
      pool: t.pool,
      tasks: paymentTasks({ pool: t.pool, provider: t.provider, options: reconcileOptions, onPaymentSucceeded: convertPaidHold }),
      concurrency: 5,
      lockTimeoutMs: 5_000,
      pollIntervalMs: 50,
      log: createLogger(config),
    });
    try {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const { rows } = await t.pool.query(
          `select count(*)::int as open from payment_intents where merchant_id = $1 and status = 'processing'`,
          [t.merchant.id],
        );
        if (rows[0].open === 0) break;
        assert.ok(Date.now() < deadline, `${rows[0].open} payments still processing`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      // Before the test database's pool ends: the worker holds connections until it stops.
      await worker.stop();
    }
    await assertCompletedOnce(t, ids);
  });
});
