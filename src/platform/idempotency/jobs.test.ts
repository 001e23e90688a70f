/**
 * Housekeeping of idempotency keys: expired keys are deleted, only they, in bounded batches and
 * a bounded number of batches per run; keys whose request died holding the lock are unlocked
 * once the lock is older than the timeout, so a retry resumes the request instead of waiting.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { JobHelpers } from 'graphile-worker';
import { committedRecoveryPoint, crashing } from '../../../test/crash.js';
import { key, setupTestContext } from '../../../test/helpers.js';
import { buildApp } from '../../app.js';
import type { Queryable } from '../db/pool.js';
import { CLEANUP_BATCH_MAX, CLEANUP_TASK, deleteExpiredKeys, idempotencyTasks, UNLOCK_TASK, unlockStuckKeys } from './jobs.js';

// The app's own lock timeout is an hour, so only the housekeeping job can free a key here.
const t = await setupTestContext({ config: { idempotencyLockTimeoutMs: 3_600_000 } });
const LOCK_TIMEOUT_MS = 60_000;
const helpers = {} as JobHelpers;

/** Inserts `count` finished keys for the test merchant that expire `expiresIn` from now (negative: expired). */
async function insertKeys(prefix: string, count: number, expiresIn: string) {
  await t.pool.query(
    `insert into idempotency_keys (merchant_id, idempotency_key, request_method, request_path, request_fingerprint,
       recovery_point, response_status, response_body, created_at, expires_at)
     select $1, $2 || i, 'POST', '/v1/payment_intents', '\\x00'::bytea, 'finished', 200, '{}',
            now() - interval '2 days', now() + $3::interval - i * interval '1 millisecond'
     from generate_series(1, $4::int) as i`,
    [t.merchant.id, prefix, expiresIn, count],
  );
}

async function countKeys(prefix: string): Promise<number> {
  const { rows } = await t.pool.query<{ n: number }>(
    'select count(*)::int as n from idempotency_keys where merchant_id = $1 and idempotency_key like $2',
    [t.merchant.id, `${prefix}%`],
  );
  return rows[0]?.n ?? -1;
}

/** The pool, counting the statements sent through it. */
function counting(): { db: Queryable; readonly statements: number } {
  let statements = 0;
  const db = {
    query: (...args: unknown[]) => {
      statements += 1;
      return (t.pool.query as (...a: unknown[]) => Promise<unknown>)(...args);
    },
  } as Queryable;
  return {
    db,
    get statements() {
      return statements;
    },
  };
}

describe('deleting expired idempotency keys', () => {
  test('deletes every expired key and only those, a batch at a time', async () => {
    await insertKeys('expired-', 2_500, '-1 hour');
    await insertKeys('live-', 30, '1 hour');
    await insertKeys('live-soon-', 5, '1 minute');
    const live = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key('live-request') }),
      payload: { amount: 100, currency: 'usd' },
    });
    assert.equal(live.statusCode, 200);

    const run = counting();
    assert.equal(await deleteExpiredKeys(run.db, 1_000), 2_500);
    assert.equal(run.statements, 3, '1,000 + 1,000 + 500');
    assert.equal(await countKeys('expired-'), 0);
    assert.equal(await countKeys('live-'), 36, 'live keys and the request’s own key stay');
    assert.equal(await deleteExpiredKeys(t.pool, 1_000), 0);
  });

  test('a run stops after its batch limit; the next run takes the rest', async () => {
    await insertKeys('capped-', 2_500, '-1 day');
    const run = counting();
    // 100 batches of 10: the run ends with 1,500 expired keys left for the next one.
    assert.equal(await deleteExpiredKeys(run.db, 10), 1_000);
    assert.equal(run.statements, 100);
    assert.equal(await countKeys('capped-'), 1_500);
    // The periodic task, with its default batch size, takes the rest.
    assert.equal(CLEANUP_BATCH_MAX, 1_000);
    await idempotencyTasks({ pool: t.pool, lockTimeoutMs: LOCK_TIMEOUT_MS })[CLEANUP_TASK]?.({}, helpers);
    assert.equal(await countKeys('capped-'), 0);
    assert.ok((await countKeys('live-')) > 0);
  });
});

describe('unlocking keys whose request died', () => {
  const request = { amount: 2200, currency: 'usd', payment_method: 'pm_card_visa', confirm: true };
  const post = (idempotencyKey: string) =>
    t.app.inject({ method: 'POST', url: '/v1/payment_intents', headers: t.auth({ 'idempotency-key': idempotencyKey }), payload: request });

  /** A create-and-confirm whose process died after committing its attempt, before the provider call. */
  async function diedHoldingKey(): Promise<string> {
    const idempotencyKey = key('died');
    const crash = crashing(t.pool, t.provider, { afterCommitOf: committedRecoveryPoint('authorization_started') });
    const dying = await buildApp({ config: t.config, pool: crash.pool, provider: crash.provider });
    try {
      assert.equal(
        (
          await dying.inject({
            method: 'POST',
            url: '/v1/payment_intents',
            headers: t.auth({ 'idempotency-key': idempotencyKey }),
            payload: request,
          })
        ).statusCode,
        500,
      );
    } finally {
      await dying.close();
    }
    assert.equal(crash.died, true);
    return idempotencyKey;
  }

  async function keyRow(idempotencyKey: string) {
    const { rows } = await t.pool.query(
      'select recovery_point, locked_at, response_status from idempotency_keys where merchant_id = $1 and idempotency_key = $2',
      [t.merchant.id, idempotencyKey],
    );
    return rows[0];
  }

  const lockedAgo = (idempotencyKey: string, interval: string) =>
    t.pool.query(`update idempotency_keys set locked_at = now() - $3::interval where merchant_id = $1 and idempotency_key = $2`, [
      t.merchant.id,
      idempotencyKey,
      interval,
    ]);

  test('only keys locked past the timeout and without a response are unlocked; a retry then resumes', async () => {
    const stuck = await diedHoldingKey();
    const recent = await diedHoldingKey();
    await lockedAgo(stuck, '10 minutes');
    // A finished key with a stale lock (never left so by the code, but the guard must hold).
    const finished = key('finished');
    const done = await post(finished);
    assert.equal(done.json().status, 'succeeded');
    await lockedAgo(finished, '10 minutes');

    const early = await post(stuck);
    assert.equal(early.statusCode, 409, 'before the housekeeping job, the dead request still holds its key');
    assert.equal(early.json().error.code, 'idempotency_key_in_use');

    assert.equal(await unlockStuckKeys(t.pool, LOCK_TIMEOUT_MS), 1);
    assert.deepEqual(await keyRow(stuck), { recovery_point: 'authorization_started', locked_at: null, response_status: null });
    assert.notEqual((await keyRow(recent)).locked_at, null, 'a lock younger than the timeout is kept');
    assert.notEqual((await keyRow(finished)).locked_at, null, 'a key with a response is left as it is');

    const resumed = await post(stuck);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.equal(resumed.json().status, 'succeeded');
    const { rows } = await t.pool.query<{ provider_idempotency_key: string }>(
      'select provider_idempotency_key from payment_attempts where merchant_id = $1 and payment_intent_id = $2',
      [t.merchant.id, resumed.json().id],
    );
    assert.equal(rows.length, 1, 'the resumed request continued with the attempt the dead one committed');
    assert.equal(t.sim.simulator.chargesByKey.get(rows[0]?.provider_idempotency_key ?? ''), 1);
    const replay = await post(stuck);
    assert.equal(replay.headers['idempotent-replayed'], 'true');
    assert.deepEqual(replay.json(), resumed.json());
    assert.equal((await post(recent)).statusCode, 409, 'the recent one still waits out its lock');
  });

  test('the periodic task unlocks with the configured timeout', async () => {
    const stuck = await diedHoldingKey();
    await lockedAgo(stuck, '2 minutes');
    await idempotencyTasks({ pool: t.pool, lockTimeoutMs: 180_000 })[UNLOCK_TASK]?.({}, helpers);
    assert.notEqual((await keyRow(stuck)).locked_at, null);
    await idempotencyTasks({ pool: t.pool, lockTimeoutMs: LOCK_TIMEOUT_MS })[UNLOCK_TASK]?.({}, helpers);
    assert.equal((await keyRow(stuck)).locked_at, null);
    assert.equal((await post(stuck)).json().status, 'succeeded');
  });
});
