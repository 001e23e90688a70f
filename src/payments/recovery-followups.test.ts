/**
 * One test per recovery point of capture, cancel and refund: the process dies between phases,
 * a retry before the lock timeout is refused, and a retry after it completes the operation
 * exactly once at the provider, in the ledger and in the events.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type CrashPlan, committedRecoveryPoint, insertedKey } from '../../test/crash.js';
import { type Merchant, type PostRequest, setupRecovery } from '../../test/recovery.js';

const r = await setupRecovery();
const { t } = r;
const sim = t.sim.simulator;
const AMOUNT = 1000;

/** An intent of `m` with its charge at the provider, authorized only (manual) or captured. */
async function paidIntent(m: Merchant, captureMethod: 'manual' | 'automatic') {
  const created = await r.post(r.resumer, m, {
    url: '/v1/payment_intents',
    payload: { amount: AMOUNT, currency: 'usd', capture_method: captureMethod, payment_method: 'pm_card_visa', confirm: true },
  });
  assert.equal(created.statusCode, 200);
  const id: string = created.json().id;
  const { rows } = await t.pool.query<{ provider_reference: string }>(
    'select provider_reference from payment_intents where merchant_id = $1 and id = $2',
    [m.id, id],
  );
  const charge = sim.charges.get(rows[0]?.provider_reference ?? '');
  assert.ok(charge, 'the provider holds the charge');
  return { id, charge };
}

async function intent(m: Merchant, id: string) {
  const response = await t.app.inject({ method: 'GET', url: `/v1/payment_intents/${id}`, headers: m.auth() });
  assert.equal(response.statusCode, 200);
  return response.json();
}

/** The one attempt of `operation` was settled, and the provider ran its key exactly once. */
async function assertOneSettledAttempt(m: Merchant, operation: string) {
  const { rows } = await t.pool.query<{ status: string; provider_idempotency_key: string }>(
    'select status, provider_idempotency_key from payment_attempts where merchant_id = $1 and operation = $2',
    [m.id, operation],
  );
  assert.equal(rows.length, 1);
  assert.equal(rows[0]?.status, 'succeeded');
  assert.ok(sim.operations.has(rows[0]?.provider_idempotency_key ?? ''), 'the provider saw the attempt by its key');
}

/** Resumes a crashed request after the lock timeout, then checks a further retry replays it. */
async function resume(m: Merchant, request: PostRequest, idempotencyKey: string) {
  const resumed = await r.post(r.resumer, m, request, idempotencyKey);
  assert.equal(resumed.statusCode, 200, resumed.body);
  const replay = await r.post(r.resumer, m, request, idempotencyKey);
  assert.equal(replay.headers['idempotent-replayed'], 'true');
  assert.deepEqual(replay.json(), resumed.json());
  return resumed.json();
}

describe('capture: a process dies, a retry resumes', () => {
  const cases: Array<{ name: string; plan: CrashPlan; leaves: string; providerCaptured: boolean }> = [
    { name: 'started: dies right after storing the key', plan: { afterCommitOf: insertedKey }, leaves: 'started', providerCaptured: false },
    {
      name: 'capture_started: dies after committing the attempt, before calling the provider',
      plan: { afterCommitOf: committedRecoveryPoint('capture_started') },
      leaves: 'capture_started',
      providerCaptured: false,
    },
    {
      name: 'capture_started: dies after the provider captured, before the outcome is recorded',
      plan: { afterProviderCall: 'capture' },
      leaves: 'capture_started',
      providerCaptured: true,
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const m = await r.newMerchant();
      const paid = await paidIntent(m, 'manual');
      const capture = { url: `/v1/payment_intents/${paid.id}/capture`, payload: { amount_to_capture: 600 } };
      const k = await r.crash(m, capture, c.plan, { recoveryPoint: c.leaves });
      assert.equal(paid.charge.status, c.providerCaptured ? 'captured' : 'authorized');
      assert.equal((await intent(m, paid.id)).status, c.leaves === 'started' ? 'requires_capture' : 'processing');

      const captured = await resume(m, capture, k);
      assert.equal(captured.status, 'succeeded');
      assert.equal(captured.amount_received, 600);
      assert.equal(captured.amount_capturable, 0);
      assert.equal(paid.charge.status, 'captured');
      assert.equal(paid.charge.amount_captured, 600);
      await assertOneSettledAttempt(m, 'capture');
      const counts = await r.counts(m.id);
      assert.equal(counts.intents, 1);
      assert.deepEqual(counts.ledger, { capture: 1 });
      assert.deepEqual(counts.events, {
        'payment_intent.created': 1,
        'payment_intent.amount_capturable_updated': 1,
        'payment_intent.succeeded': 1,
      });
      await r.assertAuditClean();
    });
  }
});

describe('cancel: a process dies, a retry resumes', () => {
  const cases: Array<{ name: string; plan: CrashPlan; leaves: string; providerCanceled: boolean }> = [
    { name: 'started: dies right after storing the key', plan: { afterCommitOf: insertedKey }, leaves: 'started', providerCanceled: false },
    {
      name: 'cancel_started: dies after committing the attempt, before calling the provider',
      plan: { afterCommitOf: committedRecoveryPoint('cancel_started') },
      leaves: 'cancel_started',
      providerCanceled: false,
    },
    {
      name: 'cancel_started: dies after the provider released the authorization, before the outcome is recorded',
      plan: { afterProviderCall: 'cancel' },
      leaves: 'cancel_started',
      providerCanceled: true,
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const m = await r.newMerchant();
      const paid = await paidIntent(m, 'manual');
      const cancel = { url: `/v1/payment_intents/${paid.id}/cancel`, payload: { cancellation_reason: 'requested_by_customer' } };
      const k = await r.crash(m, cancel, c.plan, { recoveryPoint: c.leaves });
      assert.equal(paid.charge.status, c.providerCanceled ? 'canceled' : 'authorized');

      const canceled = await resume(m, cancel, k);
      assert.equal(canceled.status, 'canceled');
      assert.equal(canceled.cancellation_reason, 'requested_by_customer');
      assert.equal(canceled.amount_capturable, 0);
      assert.equal(paid.charge.status, 'canceled');
      await assertOneSettledAttempt(m, 'cancel');
      const counts = await r.counts(m.id);
      assert.equal(counts.intents, 1);
      assert.deepEqual(counts.ledger, {});
      assert.deepEqual(counts.events, {
        'payment_intent.created': 1,
        'payment_intent.amount_capturable_updated': 1,
        'payment_intent.canceled': 1,
      });
      await r.assertAuditClean();
    });
  }
});

describe('refund: a process dies, a retry resumes', () => {
  const REFUNDED = 400;
  const cases: Array<{ name: string; plan: CrashPlan; leaves: string; providerRefunded: number }> = [
    { name: 'started: dies right after storing the key', plan: { afterCommitOf: insertedKey }, leaves: 'started', providerRefunded: 0 },
    {
      name: 'refund_started: dies after committing the refund, before calling the provider',
      plan: { afterCommitOf: committedRecoveryPoint('refund_started') },
      leaves: 'refund_started',
      providerRefunded: 0,
    },
    {
      name: 'refund_started: dies after the provider refunded, before the outcome is recorded',
      plan: { afterProviderCall: 'refund' },
      leaves: 'refund_started',
      providerRefunded: REFUNDED,
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const m = await r.newMerchant();
      const paid = await paidIntent(m, 'automatic');
      const refund = { url: '/v1/refunds', payload: { payment_intent: paid.id, amount: REFUNDED } };
      const k = await r.crash(m, refund, c.plan, { recoveryPoint: c.leaves });
      assert.equal(paid.charge.amount_refunded, c.providerRefunded);
      assert.equal((await r.counts(m.id)).refunds, c.leaves === 'started' ? 0 : 1);

      const refunded = await resume(m, refund, k);
      assert.equal(refunded.status, 'succeeded');
      assert.equal(refunded.amount, REFUNDED);
      // Twice the amount here would mean the provider paid the buyer back twice.
      assert.equal(paid.charge.amount_refunded, REFUNDED);
      assert.equal((await intent(m, paid.id)).amount_refunded, REFUNDED);
      await assertOneSettledAttempt(m, 'refund');
      const counts = await r.counts(m.id);
      assert.equal(counts.refunds, 1);
      assert.deepEqual(counts.ledger, { capture: 1, refund: 1 });
      assert.deepEqual(counts.events, {
        'payment_intent.created': 1,
        'payment_intent.succeeded': 1,
        'refund.created': 1,
        'refund.updated': 1,
      });
      const balance = await t.app.inject({ method: 'GET', url: '/v1/balance', headers: m.auth() });
      assert.deepEqual(balance.json().available, [{ currency: 'usd', amount: AMOUNT - REFUNDED }]);
      await r.assertAuditClean();
    });
  }
});

describe('refund: two refunds of one payment die, each resumes its own', () => {
  for (const order of ['older first', 'newer first'] as const) {
    test(`both die before calling the provider; resumed ${order}`, async () => {
      const m = await r.newMerchant();
      const paid = await paidIntent(m, 'automatic');
      const plan = { afterCommitOf: committedRecoveryPoint('refund_started') };
      const older = { url: '/v1/refunds', payload: { payment_intent: paid.id, amount: 300 } };
      const newer = { url: '/v1/refunds', payload: { payment_intent: paid.id, amount: 200 } };
      const olderKey = await r.crash(m, older, plan, { recoveryPoint: 'refund_started' });
      const newerKey = await r.crash(m, newer, plan, { recoveryPoint: 'refund_started' });
      const resumes: Array<[PostRequest, string, number]> = [
        [older, olderKey, 300],
        [newer, newerKey, 200],
      ];
      if (order === 'newer first') resumes.reverse();

      for (const [request, k, amount] of resumes) {
        const refunded = await resume(m, request, k);
        assert.equal(refunded.amount, amount);
        assert.equal(refunded.status, 'succeeded', `the ${amount} refund was sent to the provider, not left pending`);
      }
      assert.equal(paid.charge.amount_refunded, 500);
      const { rows } = await t.pool.query<{ status: string; n: number }>(
        `select status, count(*)::int as n from payment_attempts where merchant_id = $1 and operation = 'refund' group by status`,
        [m.id],
      );
      assert.deepEqual(rows, [{ status: 'succeeded', n: 2 }]);
      const counts = await r.counts(m.id);
      assert.deepEqual(counts.ledger, { capture: 1, refund: 2 });
      assert.equal(counts.events['refund.updated'], 2);
      assert.equal((await intent(m, paid.id)).amount_refunded, 500);
      await r.assertAuditClean();
    });
  }
});
