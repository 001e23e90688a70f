/**
 * Reconciliation: the backoff's bounds, and attempts left open — by a timeout (`unknown`) or by
 * a process that died after committing its attempt (`started`) — settled by asking the provider
 * by our key: a charge it recorded is applied once, a call it never saw is sent forward under
 * the same key, an unreachable provider is asked again later, and after the last round the
 * attempt is left to an operator. Refund attempts settle the same way.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { JobHelpers } from 'graphile-worker';
import { committedRecoveryPoint } from '../../test/crash.js';
import { key } from '../../test/helpers.js';
import { type Merchant, type PostRequest, setupRecovery } from '../../test/recovery.js';
import { HttpProvider } from '../providers/http-provider.js';
import { paymentTasks } from './jobs.js';
import {
  backoffDelayMs,
  RECONCILE_TASK,
  type ReconcileOptions,
  reconcileAttempt,
  reconcileDeadlineMs,
  scheduleReconciliation,
  sweepOpenAttempts,
} from './reconciliation.js';

const r = await setupRecovery({ config: { providerTimeoutMs: 200 } });
const { t } = r;
const sim = t.sim.simulator;
const AMOUNT = 3100;
const OPTIONS: ReconcileOptions = { baseDelayMs: 60_000, maxDelayMs: 100_000, maxAttempts: 3, staleAfterMs: 60_000 };
/** The intents whose success the completion command announced, in order: each must appear once. */
const succeededIntents: string[] = [];
const deps = {
  pool: t.pool,
  provider: t.provider,
  options: OPTIONS,
  onPaymentSucceeded: async (_client: unknown, intent: { id: string }) => {
    succeededIntents.push(intent.id);
  },
};
// Nothing listens on port 1: every call is refused before it is sent, as when the provider is down.
const unreachable = new HttpProvider({ baseUrl: 'http://127.0.0.1:1', timeoutMs: 1_000, breakerThreshold: 1_000, halfOpenMs: 1_000 });

const createAndConfirm = (paymentMethod: string): PostRequest => ({
  url: '/v1/payment_intents',
  payload: { amount: AMOUNT, currency: 'usd', payment_method: paymentMethod, confirm: true },
});

interface Attempt {
  merchant_id: string;
  id: string;
  payment_intent_id: string;
  operation: string;
  status: string;
  error_code: string | null;
  provider_idempotency_key: string;
}

async function attemptsOf(merchantId: string, operation = 'authorize'): Promise<Attempt[]> {
  const { rows } = await t.pool.query<Attempt>(
    `select merchant_id, id, payment_intent_id, operation, status, error_code, provider_idempotency_key from payment_attempts
     where merchant_id = $1 and operation = $2 order by id`,
    [merchantId, operation],
  );
  return rows;
}

async function onlyAttempt(merchantId: string, operation = 'authorize'): Promise<Attempt> {
  const rows = await attemptsOf(merchantId, operation);
  assert.equal(rows.length, 1, `one ${operation} attempt`);
  return rows[0] as Attempt;
}

/** Every reconciliation job of an attempt, keyed or not. */
async function jobsFor(attemptId: string) {
  const { rows } = await t.pool.query<{ key: string | null; round: number; run_at: Date; due: boolean }>(
    `select j.key, (j.payload->>'round')::int as round, j.run_at, j.run_at <= now() as due
     from graphile_worker._private_jobs j join graphile_worker._private_tasks k on k.id = j.task_id
     where k.identifier = $1 and j.payload->>'attempt_id' = $2`,
    [RECONCILE_TASK, attemptId],
  );
  return rows;
}

async function intentOf(merchantId: string) {
  const { rows } = await t.pool.query('select id, status, amount_received, amount_refunded from payment_intents where merchant_id = $1', [
    merchantId,
  ]);
  assert.equal(rows.length, 1);
  return rows[0];
}

/** Commits the attempt as a dead process leaves it, last touched an hour ago. */
async function backdate(attempt: Attempt) {
  await t.pool.query(`update payment_attempts set updated_at = now() - interval '1 hour' where merchant_id = $1 and id = $2`, [
    attempt.merchant_id,
    attempt.id,
  ]);
}

/** A payment confirmed with pm_card_timeout: charged at the provider, the answer lost. */
async function timedOut(m: Merchant): Promise<Attempt> {
  const response = await r.post(t.app, m, createAndConfirm('pm_card_timeout'));
  assert.equal(response.statusCode, 200);
  assert.equal(response.json().status, 'processing');
  const attempt = await onlyAttempt(m.id);
  assert.equal(attempt.status, 'unknown');
  assert.equal(sim.chargesByKey.get(attempt.provider_idempotency_key), 1, 'the provider recorded the charge');
  return attempt;
}

const round = (attempt: Attempt, n: number) => ({ merchant_id: attempt.merchant_id, attempt_id: attempt.id, round: n });

async function assertSucceededOnce(m: Merchant, attempt: Attempt) {
  const intent = await intentOf(m.id);
  assert.deepEqual([intent.status, intent.amount_received, intent.amount_refunded], ['succeeded', AMOUNT, 0]);
  assert.equal((await onlyAttempt(m.id)).status, 'succeeded');
  const counts = await r.counts(m.id);
  assert.deepEqual(counts.ledger, { capture: 1 });
  assert.equal(counts.events['payment_intent.succeeded'], 1);
  assert.equal(sim.chargesByKey.get(attempt.provider_idempotency_key), 1, 'charged once');
  await r.assertAuditClean();
}

describe('the backoff schedule', () => {
  const delayOptions = fc.record({
    baseDelayMs: fc.integer({ min: 1, max: 3_600_000 }),
    maxDelayMs: fc.integer({ min: 1, max: 86_400_000 }),
  });

  test('backoffDelayMs is a whole number in [0, min(max, base·2^(round−1)))', () => {
    const unit = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2_000 }), delayOptions, unit, (n, options, random) => {
        const bound = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (n - 1));
        const delay = backoffDelayMs(n, options, () => random);
        return Number.isInteger(delay) && delay >= 0 && delay < bound;
      }),
    );
    // With Math.random itself, too.
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 60 }), delayOptions, (n, options) => {
        const delay = backoffDelayMs(n, options);
        return delay >= 0 && delay < Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (n - 1));
      }),
    );
    assert.equal(
      backoffDelayMs(4, { baseDelayMs: 100, maxDelayMs: 10_000 }, () => 0.5),
      400,
    );
    assert.equal(
      backoffDelayMs(9, { baseDelayMs: 100, maxDelayMs: 10_000 }, () => 0.5),
      5_000,
      'capped at max',
    );
  });

  test('reconcileDeadlineMs is the sum of the caps of the delays between rounds', () => {
    assert.equal(reconcileDeadlineMs({ baseDelayMs: 100, maxDelayMs: 250, maxAttempts: 4 }), 100 + 200 + 250);
    assert.equal(reconcileDeadlineMs({ baseDelayMs: 100, maxDelayMs: 250, maxAttempts: 1 }), 0, 'one round, no delay');
    // The configured defaults (2 s doubling to 5 min, 20 rounds): 510 s, then 11 rounds of 300 s.
    assert.equal(reconcileDeadlineMs({ baseDelayMs: 2_000, maxDelayMs: 300_000, maxAttempts: 20 }), 3_810_000);
    fc.assert(
      fc.property(delayOptions, fc.integer({ min: 1, max: 200 }), (options, maxAttempts) => {
        let caps = 0;
        let drawn = 0;
        for (let n = 1; n < maxAttempts; n++) {
          caps += Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (n - 1));
          drawn += backoffDelayMs(n, options);
        }
        const deadline = reconcileDeadlineMs({ ...options, maxAttempts });
        return deadline === caps && drawn <= deadline && (maxAttempts === 1 || drawn < deadline);
      }),
    );
  });
});

describe('reconciling a payment attempt', () => {
  test('an unknown attempt whose charge the provider recorded settles succeeded, once', async () => {
    const m = await r.newMerchant();
    const attempt = await timedOut(m);
    assert.deepEqual(
      (await jobsFor(attempt.id)).map((job) => [job.key, job.round, job.due]),
      [[`reconcile:${attempt.id}`, 1, true]],
      'the timeout queued a reconciliation in its own transaction',
    );

    assert.equal(await reconcileAttempt(deps, round(attempt, 1)), 'settled');
    await assertSucceededOnce(m, attempt);
    assert.equal(await reconcileAttempt(deps, round(attempt, 1)), 'already_settled');
    await assertSucceededOnce(m, attempt);
    assert.equal(
      succeededIntents.filter((id) => id === attempt.payment_intent_id).length,
      1,
      'the success listener passed in the deps ran once, in the completion',
    );
  });

  test('an attempt the provider never saw is sent forward under the same key and settled, charged once', async () => {
    const m = await r.newMerchant();
    const chargesBefore = sim.charges.size;
    const request = createAndConfirm('pm_card_visa');
    const plan = { afterCommitOf: committedRecoveryPoint('authorization_started') };
    const k = await r.crash(m, request, plan, { recoveryPoint: 'authorization_started' });
    const attempt = await onlyAttempt(m.id);
    assert.equal(attempt.status, 'started');
    assert.equal(sim.operations.has(attempt.provider_idempotency_key), false, 'the provider never heard of it');
    await backdate(attempt);

    await sweepOpenAttempts(t.pool, OPTIONS);
    assert.deepEqual(
      (await jobsFor(attempt.id)).map((job) => job.round),
      [1],
    );
    assert.equal(await reconcileAttempt(deps, round(attempt, 1)), 'settled');
    assert.ok(sim.operations.has(attempt.provider_idempotency_key), 'sent under the attempt’s own key');
    await assertSucceededOnce(m, attempt);

    // The dead request's retry finds the work done and answers with it; nothing is charged again.
    const resumed = await r.post(r.resumer, m, request, k);
    assert.equal(resumed.statusCode, 200);
    assert.equal(resumed.json().status, 'succeeded');
    await assertSucceededOnce(m, attempt);
    assert.equal(sim.charges.size, chargesBefore + 1);
  });

  test('while the provider is unreachable it asks again later, one job at a time, then settles', async (context) => {
    const m = await r.newMerchant();
    const attempt = await timedOut(m);
    // Half the bound each time, so the expected run_at is exact.
    context.mock.method(Math, 'random', () => 0.5);

    for (const [n, delayMs] of [
      [1, 30_000],
      [2, 50_000],
    ] as const) {
      const before = Date.now();
      assert.equal(await reconcileAttempt({ ...deps, provider: unreachable }, round(attempt, n)), 'rescheduled');
      const after = Date.now();
      const jobs = await jobsFor(attempt.id);
      assert.equal(jobs.length, 1, 'the waiting job was moved, not doubled');
      const [job] = jobs;
      assert.ok(job);
      assert.equal(job.key, `reconcile:${attempt.id}`);
      assert.equal(job.round, n + 1);
      assert.equal(job.due, false, 'run_at is in the future');
      assert.ok(job.run_at.getTime() >= before + delayMs && job.run_at.getTime() <= after + delayMs, `run_at ${delayMs} ms later`);
      const current = await onlyAttempt(m.id);
      assert.deepEqual([current.status, current.error_code], ['unknown', 'outcome_unknown']);
      assert.equal((await intentOf(m.id)).status, 'processing');
    }
    // The provider is back by the last round.
    assert.equal(await reconcileAttempt(deps, round(attempt, 3)), 'settled');
    await assertSucceededOnce(m, attempt);
  });

  test('after maxAttempts rounds it gives up, marks the attempt and the sweep leaves it alone', async () => {
    const [m, control] = [await r.newMerchant(), await r.newMerchant()];
    const attempt = await timedOut(m);
    const other = await timedOut(control);
    const exhausted: unknown[] = [];
    const logged: string[] = [];
    const tasks = paymentTasks({ ...deps, provider: unreachable, onExhausted: (payload) => exhausted.push(payload) });
    const helpers = { logger: { error: (message: string) => logged.push(message) } } as unknown as JobHelpers;

    assert.equal(await reconcileAttempt({ ...deps, provider: unreachable }, round(attempt, 1)), 'rescheduled');
    assert.equal(await reconcileAttempt({ ...deps, provider: unreachable }, round(attempt, 2)), 'rescheduled');
    await tasks[RECONCILE_TASK]?.(round(attempt, OPTIONS.maxAttempts), helpers);
    assert.deepEqual(exhausted, [round(attempt, OPTIONS.maxAttempts)]);
    assert.match(logged.join('\n'), new RegExp(`${attempt.id} gave up after 3 rounds`));
    const marked = await onlyAttempt(m.id);
    assert.deepEqual([marked.status, marked.error_code], ['unknown', 'reconciliation_exhausted']);
    assert.equal((await intentOf(m.id)).status, 'processing', 'nothing is guessed');
    assert.equal(sim.chargesByKey.get(attempt.provider_idempotency_key), 1);

    // Once their jobs are done, both attempts are open and stale; only the other one is swept.
    for (const a of [attempt, other]) {
      await t.pool.query('select graphile_worker.remove_job($1)', [`reconcile:${a.id}`]);
      await backdate(a);
    }
    await sweepOpenAttempts(t.pool, OPTIONS);
    assert.deepEqual(await jobsFor(attempt.id), []);
    assert.deepEqual(
      (await jobsFor(other.id)).map((job) => job.round),
      [1],
    );
  });

  test('the sweep queues each stale open attempt exactly once and ignores fresh and settled ones', async () => {
    const m = await r.newMerchant();
    const plan = { afterCommitOf: committedRecoveryPoint('authorization_started') };
    await r.crash(m, createAndConfirm('pm_card_visa'), plan, { recoveryPoint: 'authorization_started' });
    await r.crash(m, createAndConfirm('pm_card_visa'), plan, { recoveryPoint: 'authorization_started' });
    const settled = await r.post(t.app, m, createAndConfirm('pm_card_visa'));
    assert.equal(settled.json().status, 'succeeded');
    const [stale, fresh, done] = (await attemptsOf(m.id)).sort((a, b) => a.status.localeCompare(b.status));
    assert.ok(stale && fresh && done);
    assert.deepEqual([stale.status, fresh.status, done.status], ['started', 'started', 'succeeded']);
    await backdate(stale);
    await backdate(done);

    // Two sweeps racing, then a third: still one job.
    await Promise.all([sweepOpenAttempts(t.pool, OPTIONS), sweepOpenAttempts(t.pool, OPTIONS)]);
    await sweepOpenAttempts(t.pool, OPTIONS);
    const jobs = await jobsFor(stale.id);
    assert.deepEqual(
      jobs.map((job) => [job.key, job.round, job.due]),
      [[`reconcile:${stale.id}`, 1, true]],
    );
    assert.deepEqual(await jobsFor(fresh.id), []);
    assert.deepEqual(await jobsFor(done.id), []);

    // Queued again (as by a sweep that read before the job existed), it keeps its place in line.
    await scheduleReconciliation(t.pool, stale);
    assert.deepEqual(await jobsFor(stale.id), jobs);
  });
});

describe('reconciling a refund attempt', () => {
  /** A succeeded payment, and a refund of part of it whose process died as planned. */
  async function paidThenRefundDied(plan: Parameters<typeof r.crash>[2]) {
    const m = await r.newMerchant();
    const paid = await r.post(t.app, m, createAndConfirm('pm_card_visa'));
    assert.equal(paid.json().status, 'succeeded');
    const refund = { url: '/v1/refunds', payload: { payment_intent: paid.json().id, amount: 1000 } };
    await r.crash(m, refund, plan, { recoveryPoint: 'refund_started' });
    const attempt = await onlyAttempt(m.id, 'refund');
    assert.equal(attempt.status, 'started');
    assert.equal((await intentOf(m.id)).amount_refunded, 1000, 'the refund reserved its amount');
    return { m, attempt };
  }

  async function refundOf(merchantId: string) {
    const { rows } = await t.pool.query('select status, failure_reason from refunds where merchant_id = $1', [merchantId]);
    assert.equal(rows.length, 1);
    return rows[0];
  }

  test('a refund the provider made settles succeeded with one refund posting', async () => {
    const { m, attempt } = await paidThenRefundDied({ afterProviderCall: 'refund' });
    assert.equal(await reconcileAttempt(deps, round(attempt, 1)), 'settled');
    assert.deepEqual(await refundOf(m.id), { status: 'succeeded', failure_reason: null });
    assert.equal((await onlyAttempt(m.id, 'refund')).status, 'succeeded');
    assert.equal((await intentOf(m.id)).amount_refunded, 1000);
    const counts = await r.counts(m.id);
    assert.deepEqual(counts.ledger, { capture: 1, refund: 1 });
    assert.equal(counts.events['refund.updated'], 1);
    assert.equal(await reconcileAttempt(deps, round(attempt, 1)), 'already_settled');
    assert.deepEqual((await r.counts(m.id)).ledger, { capture: 1, refund: 1 });
    await r.assertAuditClean();
  });

  test('a refund the provider declines settles failed and releases its amount', async () => {
    const { m, attempt } = await paidThenRefundDied({ afterCommitOf: committedRecoveryPoint('refund_started') });
    // Meanwhile the whole charge was refunded at the provider by other means, so ours is refused.
    const { rows } = await t.pool.query('select provider_reference from payment_intents where merchant_id = $1', [m.id]);
    const elsewhere = await t.provider.refund({ idempotencyKey: key('elsewhere'), reference: rows[0].provider_reference, amount: AMOUNT });
    assert.equal(elsewhere.kind, 'succeeded');

    assert.equal(await reconcileAttempt(deps, round(attempt, 1)), 'settled');
    assert.deepEqual(await refundOf(m.id), { status: 'failed', failure_reason: 'refund_not_allowed' });
    const settled = await onlyAttempt(m.id, 'refund');
    assert.deepEqual([settled.status, settled.error_code], ['failed', 'refund_not_allowed']);
    assert.equal((await intentOf(m.id)).amount_refunded, 0, 'the reserved amount is released');
    const counts = await r.counts(m.id);
    assert.deepEqual(counts.ledger, { capture: 1 });
    assert.equal(counts.events['refund.failed'], 1);
    await r.assertAuditClean();
  });
});
