/**
 * One test per recovery point of create-and-confirm and of confirm: the process dies between
 * phases (or in the middle of one), a retry before the lock timeout is refused, and a retry
 * after it completes the payment exactly once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { committedRecoveryPoint, finishedKey, insertedKey } from '../../test/crash.js';
import { type Merchant, type PostRequest, setupRecovery } from '../../test/recovery.js';

const r = await setupRecovery();
const { t } = r;
const sim = t.sim.simulator;
const AMOUNT = 2500;

const createAndConfirm: PostRequest = {
  url: '/v1/payment_intents',
  payload: { amount: AMOUNT, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
};

async function intentStatuses(merchantId: string): Promise<string[]> {
  const { rows } = await t.pool.query<{ status: string }>('select status from payment_intents where merchant_id = $1', [merchantId]);
  return rows.map((row) => row.status);
}

/** The merchant's one payment succeeded once: one intent, one attempt charged once, one posting, each event once. */
async function assertPaidOnce(m: Merchant, resumed: { statusCode: number; json(): Record<string, unknown> }, chargesBefore: number) {
  assert.equal(resumed.statusCode, 200);
  const body = resumed.json();
  assert.equal(body.status, 'succeeded');
  assert.equal(body.amount_received, AMOUNT);
  const counts = await r.counts(m.id);
  assert.equal(counts.intents, 1);
  assert.deepEqual(counts.attempts, { authorize: 1 });
  assert.deepEqual(counts.ledger, { capture: 1 });
  assert.deepEqual(counts.events, { 'payment_intent.created': 1, 'payment_intent.succeeded': 1 });
  const { rows } = await t.pool.query<{ payment_intent_id: string; provider_idempotency_key: string; status: string }>(
    'select payment_intent_id, provider_idempotency_key, status from payment_attempts where merchant_id = $1',
    [m.id],
  );
  const [attempt] = rows;
  assert.ok(attempt);
  assert.equal(attempt.payment_intent_id, body.id);
  assert.equal(attempt.status, 'succeeded');
  assert.equal(sim.chargesByKey.get(attempt.provider_idempotency_key), 1, 'the provider charged this attempt once');
  assert.equal(sim.charges.size, chargesBefore + 1, 'the provider holds exactly one new charge');
  const balance = await t.app.inject({ method: 'GET', url: '/v1/balance', headers: m.auth() });
  assert.deepEqual(balance.json().available, [{ currency: 'usd', amount: AMOUNT }]);
  await r.assertAuditClean();
}

/** A retry after completion replays the completed answer. */
async function assertReplays(m: Merchant, request: PostRequest, idempotencyKey: string, body: unknown) {
  const replay = await r.post(r.resumer, m, request, idempotencyKey);
  assert.equal(replay.statusCode, 200);
  assert.equal(replay.headers['idempotent-replayed'], 'true');
  assert.deepEqual(replay.json(), body);
}

describe('create with confirm: a process dies, a retry resumes', () => {
  test('started: dies right after storing the key, before any phase', async () => {
    const m = await r.newMerchant();
    const before = sim.charges.size;
    const k = await r.crash(m, createAndConfirm, { afterCommitOf: insertedKey }, { recoveryPoint: 'started' });
    assert.deepEqual(await intentStatuses(m.id), []);
    const resumed = await r.post(r.resumer, m, createAndConfirm, k);
    await assertPaidOnce(m, resumed, before);
    await assertReplays(m, createAndConfirm, k, resumed.json());
  });

  test('started: dies inside the first phase, which rolls back whole', async () => {
    const m = await r.newMerchant();
    const before = sim.charges.size;
    // The intent is inserted, then the process dies before the phase's event is written.
    const k = await r.crash(m, createAndConfirm, { atQuery: (q) => q.name === 'events_insert' }, { recoveryPoint: 'started' });
    assert.deepEqual(await intentStatuses(m.id), [], 'the half-done phase left no intent');
    const resumed = await r.post(r.resumer, m, createAndConfirm, k);
    await assertPaidOnce(m, resumed, before);
  });

  test('intent_created: dies after the intent is committed, before the attempt', async () => {
    const m = await r.newMerchant();
    const before = sim.charges.size;
    const k = await r.crash(
      m,
      createAndConfirm,
      { afterCommitOf: committedRecoveryPoint('intent_created') },
      { recoveryPoint: 'intent_created' },
    );
    assert.deepEqual(await intentStatuses(m.id), ['requires_confirmation']);
    assert.deepEqual((await r.counts(m.id)).attempts, {});
    const resumed = await r.post(r.resumer, m, createAndConfirm, k);
    await assertPaidOnce(m, resumed, before);
    assert.equal(resumed.json().id, (await r.keyRow(m.id, k))?.resource_id, 'the resumed request continued with the same intent');
  });

  test('authorization_started: dies after committing the attempt, before calling the provider', async () => {
    const m = await r.newMerchant();
    const before = sim.charges.size;
    const plan = { afterCommitOf: committedRecoveryPoint('authorization_started') };
    const k = await r.crash(m, createAndConfirm, plan, { recoveryPoint: 'authorization_started' });
    assert.deepEqual(await intentStatuses(m.id), ['processing']);
    assert.deepEqual((await r.counts(m.id)).attempts, { authorize: 1 });
    assert.equal(sim.charges.size, before, 'nothing reached the provider');
    const resumed = await r.post(r.resumer, m, createAndConfirm, k);
    await assertPaidOnce(m, resumed, before);
    await assertReplays(m, createAndConfirm, k, resumed.json());
  });

  test('authorization_started: dies after the provider charged, before the outcome is recorded', async () => {
    const m = await r.newMerchant();
    const before = sim.charges.size;
    const k = await r.crash(m, createAndConfirm, { afterProviderCall: 'authorize' }, { recoveryPoint: 'authorization_started' });
    assert.equal(sim.charges.size, before + 1, 'the provider charged before the process died');
    assert.deepEqual(await intentStatuses(m.id), ['processing']);
    assert.deepEqual((await r.counts(m.id)).ledger, {});
    const resumed = await r.post(r.resumer, m, createAndConfirm, k);
    await assertPaidOnce(m, resumed, before);
  });

  test('finished: dies after storing the response, before the client got it', async () => {
    const m = await r.newMerchant();
    const before = sim.charges.size;
    const { idempotencyKey: k } = await r.dieDuring(m, createAndConfirm, { afterCommitOf: finishedKey });
    const stored = await r.keyRow(m.id, k);
    assert.equal(stored?.recovery_point, 'finished');
    assert.equal(stored?.response_status, 200);
    // Even a retry before the lock timeout gets the stored answer: the key is no longer locked.
    const retried = await r.post(t.app, m, createAndConfirm, k);
    assert.equal(retried.headers['idempotent-replayed'], 'true');
    await assertPaidOnce(m, retried, before);
  });
});

describe('confirm: a process dies, a retry resumes', () => {
  async function unconfirmedIntent(m: Merchant): Promise<PostRequest> {
    const created = await r.post(r.resumer, m, { url: '/v1/payment_intents', payload: { amount: AMOUNT, currency: 'usd' } });
    assert.equal(created.statusCode, 200);
    return { url: `/v1/payment_intents/${created.json().id}/confirm`, payload: { payment_method: 'pm_card_visa' } };
  }

  test('started: dies right after storing the key', async () => {
    const m = await r.newMerchant();
    const confirm = await unconfirmedIntent(m);
    const before = sim.charges.size;
    const k = await r.crash(m, confirm, { afterCommitOf: insertedKey }, { recoveryPoint: 'started' });
    assert.deepEqual(await intentStatuses(m.id), ['requires_payment_method']);
    const resumed = await r.post(r.resumer, m, confirm, k);
    await assertPaidOnce(m, resumed, before);
    await assertReplays(m, confirm, k, resumed.json());
  });

  test('authorization_started: dies after committing the attempt, before calling the provider', async () => {
    const m = await r.newMerchant();
    const confirm = await unconfirmedIntent(m);
    const before = sim.charges.size;
    const plan = { afterCommitOf: committedRecoveryPoint('authorization_started') };
    const k = await r.crash(m, confirm, plan, { recoveryPoint: 'authorization_started' });
    assert.deepEqual(await intentStatuses(m.id), ['processing']);
    assert.equal(sim.charges.size, before);
    const resumed = await r.post(r.resumer, m, confirm, k);
    await assertPaidOnce(m, resumed, before);
  });

  test('authorization_started: dies after the provider charged, before the outcome is recorded', async () => {
    const m = await r.newMerchant();
    const confirm = await unconfirmedIntent(m);
    const before = sim.charges.size;
    const k = await r.crash(m, confirm, { afterProviderCall: 'authorize' }, { recoveryPoint: 'authorization_started' });
    assert.equal(sim.charges.size, before + 1);
    const resumed = await r.post(r.resumer, m, confirm, k);
    await assertPaidOnce(m, resumed, before);
    await assertReplays(m, confirm, k, resumed.json());
  });
});
