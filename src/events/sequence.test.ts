import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { key, setupTestContext } from '../../test/helpers.js';
import { waitUntil } from '../../test/receiver.js';
import { withTransaction } from '../platform/db/pool.js';
import * as events from './service.js';

const t = await setupTestContext();

async function post(url: string, body: unknown) {
  return t.app.inject({ method: 'POST', url, headers: t.auth({ 'idempotency-key': key() }), payload: body as object });
}

async function sequencesOf(objectId: string) {
  const listed = await t.app.inject({ method: 'GET', url: `/v1/events?object_id=${objectId}`, headers: t.auth() });
  return listed
    .json()
    .data.reverse()
    .map((event: { type: string; sequence: number }) => [event.sequence, event.type]);
}

describe('event sequence numbers', () => {
  test('count 1, 2, 3, ... per object, on the fast path and the others', async () => {
    const created = (await post('/v1/payment_intents', { amount: 800, currency: 'usd' })).json();
    await post(`/v1/payment_intents/${created.id}/confirm`, { payment_method: 'pm_card_insufficient_funds' });
    await post(`/v1/payment_intents/${created.id}/confirm`, { payment_method: 'pm_card_visa' });
    assert.deepEqual(await sequencesOf(created.id), [
      [1, 'payment_intent.created'],
      [2, 'payment_intent.payment_failed'],
      [3, 'payment_intent.succeeded'],
    ]);
    const other = (
      await post('/v1/payment_intents', { amount: 900, currency: 'usd', payment_method: 'pm_card_visa', confirm: true })
    ).json();
    assert.deepEqual(await sequencesOf(other.id), [
      [1, 'payment_intent.created'],
      [2, 'payment_intent.succeeded'],
    ]);
    const event = await t.app.inject({ method: 'GET', url: `/v1/events?object_id=${other.id}&limit=1`, headers: t.auth() });
    const retrieved = await t.app.inject({ method: 'GET', url: `/v1/events/${event.json().data[0].id}`, headers: t.auth() });
    assert.equal(retrieved.json().sequence, 2);
  });

  test('concurrent requests on one intent still number its events without gaps or repeats', async () => {
    const created = (await post('/v1/payment_intents', { amount: 500, currency: 'usd', capture_method: 'manual' })).json();
    await post(`/v1/payment_intents/${created.id}/confirm`, { payment_method: 'pm_card_visa' });
    // Racing captures and cancels: one of them wins, each event is numbered once.
    await Promise.all([
      post(`/v1/payment_intents/${created.id}/capture`, {}),
      post(`/v1/payment_intents/${created.id}/cancel`, {}),
      post(`/v1/payment_intents/${created.id}/capture`, {}),
    ]);
    // The provider timeout is long (test/helpers.ts), so every call is answered: the intent
    // ends succeeded or canceled, and its events are exactly created, amount_capturable_updated
    // and the winner's, numbered 1, 2, 3.
    const final = (await t.app.inject({ method: 'GET', url: `/v1/payment_intents/${created.id}`, headers: t.auth() })).json().status;
    assert.ok(final === 'succeeded' || final === 'canceled', final);
    assert.deepEqual(await sequencesOf(created.id), [
      [1, 'payment_intent.created'],
      [2, 'payment_intent.amount_capturable_updated'],
      [3, `payment_intent.${final}`],
    ]);
  });

  test('a writer that does not hold the object lock is refused rather than given a duplicate number', async () => {
    const objectId = `obj_${key()}`;
    const object = { id: objectId };
    const first = await t.pool.connect();
    try {
      await first.query('begin');
      await events.record(first, t.merchant.id, 'refund.created', object);
      // The second writer cannot see the first's uncommitted event, so takes the same number,
      // and waits on the unique index until the first commits.
      const second = withTransaction(t.pool, (client) => events.record(client, t.merchant.id, 'refund.updated', object));
      await waitUntil('the second writer waits on the first', async () => {
        const { rows } = await t.pool.query(
          `select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
        );
        return rows[0].waiting === 1;
      });
      // Its refusal is awaited before the commit that causes it: the error can come back in the
      // same turn as the commit's answer, and a rejection nobody awaits yet fails the run.
      const refused = assert.rejects(second, { code: '23505' });
      await first.query('commit');
      await refused;
    } finally {
      first.release();
    }
    assert.deepEqual(await sequencesOf(objectId), [[1, 'refund.created']]);
  });

  test('an event and its webhook fan-out roll back together', async () => {
    await t.pool.query(
      `insert into webhook_endpoints (merchant_id, id, url, enabled_events, status, secret, created_at, updated_at)
       values ($1, 'we_rollback', 'https://1.1.1.1/hooks', '{*}', 'enabled', 'whsec_AAAA', now(), now())`,
      [t.merchant.id],
    );
    const deliveries = async (db: Pick<typeof t.pool, 'query'>) =>
      (await db.query('select count(*)::int as n from webhook_deliveries where merchant_id = $1', [t.merchant.id])).rows[0].n;
    const client = await t.pool.connect();
    try {
      await client.query('begin');
      await events.record(client, t.merchant.id, 'refund.created', { id: 'obj_rolled_back' });
      assert.equal(await deliveries(client), 1);
      await client.query('rollback');
    } finally {
      client.release();
    }
    assert.equal(await deliveries(t.pool), 0);
    await t.pool.query(`delete from webhook_endpoints where merchant_id = $1 and id = 'we_rollback'`, [t.merchant.id]);
  });
});
