/**
 * A batched confirm (confirm-batches.ts) whose process dies: after its batch's first phase,
 * after the provider charged, after its batch's completion. The key is left where the general
 * path leaves it, a retry before the lock timeout is refused, and one after it completes the
 * payment exactly once (or replays it).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { completedConfirmBatch, startedConfirmBatch } from '../../test/crash.js';
import { type Merchant, type PostRequest, setupRecovery } from '../../test/recovery.js';

const r = await setupRecovery();
const { t } = r;
const sim = t.sim.simulator;
const AMOUNT = 2500;
const BATCHED = { confirmBatchMax: 100 };

async function unconfirmedIntent(m: Merchant): Promise<PostRequest> {
  const created = await r.post(r.resumer, m, { url: '/v1/payment_intents', payload: { amount: AMOUNT, currency: 'usd' } });
  assert.equal(created.statusCode, 200);
  return { url: `/v1/payment_intents/${created.json().id}/confirm`, payload: { payment_method: 'pm_card_visa' } };
}

/** The merchant's one payment succeeded once: one attempt charged once, one posting, each event once. */
async function assertPaidOnce(m: Merchant, resumed: { statusCode: number; json(): Record<string, unknown> }, chargesBefore: number) {
  assert.equal(resumed.statusCode, 200);
  assert.equal(resumed.json().status, 'succeeded');
  const counts = await r.counts(m.id);
  assert.deepEqual(counts.attempts, { authorize: 1 });
  assert.deepEqual(counts.ledger, { capture: 1 });
  assert.deepEqual(counts.events, { 'payment_intent.created': 1, 'payment_intent.succeeded': 1 });
  assert.equal(sim.charges.size, chargesBefore + 1, 'the provider holds exactly one new charge');
  await r.assertAuditClean();
}

async function assertReplays(m: Merchant, request: PostRequest, idempotencyKey: string, body: unknown) {
  const replay = await r.post(r.resumer, m, request, idempotencyKey);
  assert.equal(replay.statusCode, 200);
  assert.equal(replay.headers['idempotent-replayed'], 'true');
  assert.deepEqual(replay.json(), body);
}

describe('batched confirm: a process dies, a retry resumes', () => {
  test('authorization_started: dies after the batch committed the first phase, before calling the provider', async () => {
    const m = await r.newMerchant();
    const confirm = await unconfirmedIntent(m);
    const before = sim.charges.size;
    const k = await r.crash(m, confirm, { afterCommitOf: startedConfirmBatch }, { recoveryPoint: 'authorization_started' }, BATCHED);
    const { rows } = await t.pool.query('select status from payment_intents where merchant_id = $1', [m.id]);
    assert.deepEqual(rows, [{ status: 'processing' }]);
    assert.equal(sim.charges.size, before);
    const resumed = await r.post(r.resumer, m, confirm, k);
    await assertPaidOnce(m, resumed, before);
    await assertReplays(m, confirm, k, resumed.json());
  });

  test('authorization_started: dies after the provider charged, before the batch completed it', async () => {
    const m = await r.newMerchant();
    const confirm = await unconfirmedIntent(m);
    const before = sim.charges.size;
    const k = await r.crash(m, confirm, { afterProviderCall: 'authorize' }, { recoveryPoint: 'authorization_started' }, BATCHED);
    assert.equal(sim.charges.size, before + 1);
    const resumed = await r.post(r.resumer, m, confirm, k);
    await assertPaidOnce(m, resumed, before);
  });

  test('finished: dies after the batch completed it, before the client got the answer', async () => {
    const m = await r.newMerchant();
    const confirm = await unconfirmedIntent(m);
    const before = sim.charges.size;
    const { idempotencyKey: k } = await r.dieDuring(m, confirm, { afterCommitOf: completedConfirmBatch }, BATCHED);
    const stored = await r.keyRow(m.id, k);
    assert.equal(stored?.recovery_point, 'finished');
    assert.equal(stored?.response_status, 200);
    assert.equal(stored?.locked_at, null);
    // Even a retry before the lock timeout gets the stored answer.
    const retried = await r.post(t.app, m, confirm, k);
    assert.equal(retried.headers['idempotent-replayed'], 'true');
    await assertPaidOnce(m, retried, before);
  });
});
