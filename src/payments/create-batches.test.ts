/**
 * Coalesced PaymentIntent creation: every guarantee of the one-statement path per request,
 * inside batches (own key, own answer, replay, reuse refused, scopes apart), a batch that fails
 * as a whole falling back to one statement per request, and a webhook merchant's batch fanning
 * out with one `add_jobs` and one notification.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createTestMerchant, key, setupTestContext } from '../../test/helpers.js';
import type { RequestContext } from '../platform/http/context.js';
import type { Reply } from '../platform/http/reply.js';
import { fingerprint } from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import { type CreationOutcome, type IntentCreation, IntentCreationBatcher } from './create-batches.js';
import { completionReply } from './routes.js';
import { createPaymentIntent, type PaymentDeps, viewOfNewIntent } from './service.js';
import type { NewIntent } from './sql.js';

const t = await setupTestContext();

function post(body: unknown, idempotencyKey = key(), secretKey = t.merchant.secretKey) {
  return t.app.inject({
    method: 'POST',
    url: '/v1/payment_intents',
    headers: { authorization: `Bearer ${secretKey}`, 'idempotency-key': idempotencyKey },
    payload: body as object,
  });
}

/** Count and sum of the batch-size histogram: how many batches, how many creations in them. */
async function batchMetrics(): Promise<{ batches: number; creations: number }> {
  const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  return {
    batches: value('floodgate_payment_intent_batch_size_count'),
    creations: value('floodgate_payment_intent_batch_size_sum'),
  };
}

function creation(merchantId: string, amount = 1000, idempotencyKey = key('batch')): IntentCreation {
  const intent: NewIntent = {
    merchantId,
    id: newId('pi'),
    amount,
    currency: 'usd',
    status: 'requires_payment_method',
    captureMethod: 'automatic',
    paymentMethod: null,
    description: null,
    metadata: {},
    createdAt: new Date(),
  };
  return {
    merchantId,
    intent,
    keyKind: 'secret',
    key: idempotencyKey,
    fingerprint: fingerprint('POST', '/v1/payment_intents', { amount, currency: 'usd' }),
    eventId: newId('evt'),
    responseBody: viewOfNewIntent(intent),
  };
}

const countOf = async (sql: string, values: unknown[]) => (await t.pool.query<{ n: number }>(sql, values)).rows[0]?.n;

describe('coalesced payment intent creation', () => {
  test('concurrent creations share batches; each has its own intent, event, stored answer and replay', async () => {
    const before = await batchMetrics();
    const keys = Array.from({ length: 60 }, () => key('surge'));
    const answers = await Promise.all(keys.map((k, i) => post({ amount: 1000 + i, currency: 'usd' }, k)));
    assert.deepEqual(
      answers.map((answer) => answer.statusCode),
      keys.map(() => 200),
    );
    const intents = answers.map((answer) => answer.json());
    assert.equal(new Set(intents.map((intent) => intent.id)).size, 60);
    assert.deepEqual(
      intents.map((intent) => intent.amount),
      keys.map((_, i) => 1000 + i),
    );
    const ids = intents.map((intent) => intent.id);
    assert.equal(await countOf('select count(*)::int as n from payment_intents where id = any($1)', [ids]), 60);
    assert.equal(
      await countOf(
        `select count(*)::int as n from events where object_id = any($1) and type = 'payment_intent.created' and sequence = 1`,
        [ids],
      ),
      60,
    );
    const after = await batchMetrics();
    assert.equal(after.creations - before.creations, 60, 'every creation went through the batcher');
    assert.ok(after.batches - before.batches < 60, `60 concurrent creations took ${after.batches - before.batches} batches`);

    const replays = await Promise.all(keys.map((k, i) => post({ amount: 1000 + i, currency: 'usd' }, k)));
    for (const [i, replay] of replays.entries()) {
      assert.equal(replay.statusCode, 200);
      assert.equal(replay.headers['idempotent-replayed'], 'true');
      assert.deepEqual(replay.json(), intents[i]);
    }
  });

  test('one key sent many times in one batch creates one intent; other parameters under it are refused', async () => {
    const shared = key('twice');
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => post({ amount: i % 2 === 0 ? 700 : 900, currency: 'usd' }, shared)),
    );
    const created = answers.filter((answer) => answer.statusCode === 200);
    const refused = answers.filter((answer) => answer.statusCode !== 200);
    assert.equal(new Set(created.map((answer) => answer.json().id)).size, 1);
    assert.equal(created.length, 5, 'the five requests with the winning parameters all see its intent');
    assert.deepEqual(
      refused.map((answer) => answer.json().error.code),
      refused.map(() => 'idempotency_key_reused'),
    );
    assert.equal(
      await countOf(`select count(*)::int as n from idempotency_keys where merchant_id = $1 and idempotency_key = $2`, [
        t.merchant.id,
        shared,
      ]),
      1,
    );
    assert.equal(await countOf('select count(*)::int as n from payment_intents where id = $1', [created[0]?.json().id]), 1);
  });

  test('two merchants sending the same key in one batch each get their own intent', async () => {
    const other = await createTestMerchant(t.pool);
    const shared = key('scoped');
    const [mine, theirs] = await Promise.all([
      post({ amount: 100, currency: 'usd' }, shared),
      post({ amount: 200, currency: 'usd' }, shared, other.secretKey),
    ]);
    assert.equal(mine?.statusCode, 200);
    assert.equal(theirs?.statusCode, 200);
    assert.notEqual(mine?.json().id, theirs?.json().id);
    assert.equal(theirs?.json().amount, 200);
  });
});

describe('the batcher', () => {
  const sizes: number[] = [];
  const batcher = new IntentCreationBatcher({
    pool: t.pool,
    ttlHours: 24,
    windowMs: 5,
    batchMax: 100,
    maxRunning: 1,
    onBatch: (size) => sizes.push(size),
  });

  test('a key that exists is not written again; a key twice in one batch goes once', async () => {
    const first = creation(t.merchant.id);
    assert.equal(await batcher.submit(first), 'created');
    const again = { ...creation(t.merchant.id), key: first.key };
    const twin = creation(t.merchant.id);
    const outcomes = await Promise.all([
      batcher.submit(again),
      batcher.submit(twin),
      batcher.submit({ ...creation(t.merchant.id), key: twin.key }),
    ]);
    assert.deepEqual(outcomes, ['exists', 'created', 'single'] satisfies CreationOutcome[]);
    assert.equal(await countOf('select count(*)::int as n from payment_intents where id = $1', [again.intent.id]), 0);
  });

  test('a batch whose statement fails writes nothing and sends each request down the one-statement path', async () => {
    const good = [creation(t.merchant.id), creation(t.merchant.id)];
    // Past validation no request has a zero amount; here it stands for any row the database refuses.
    const bad = creation(t.merchant.id, 0);
    const outcomes = await Promise.all([...good, bad].map((c) => batcher.submit(c)));
    assert.deepEqual(outcomes, ['single', 'single', 'single']);
    const ids = [...good, bad].map((c) => c.intent.id);
    assert.equal(await countOf('select count(*)::int as n from payment_intents where id = any($1)', [ids]), 0);

    // Through the use case, the good requests of such a batch are created and the bad one fails alone.
    const deps: PaymentDeps = {
      pool: t.pool,
      provider: t.provider,
      idempotency: { ttlHours: 24, lockTimeoutMs: 60_000 },
      intentBatcher: batcher,
      present: completionReply,
      onPaymentSucceeded: async () => undefined,
    };
    const create = (amount: number): Promise<Reply> => {
      const context: RequestContext = {
        merchantId: t.merchant.id,
        keyKind: 'secret',
        idempotencyKey: key(),
        method: 'POST',
        path: '/v1/payment_intents',
        fingerprint: fingerprint('POST', '/v1/payment_intents', { amount, currency: 'usd' }),
      };
      return createPaymentIntent(deps, context, { amount, currency: 'usd' });
    };
    const results = await Promise.allSettled([create(300), create(0), create(400)]);
    assert.equal(results[0]?.status === 'fulfilled' && results[0].value.status, 200);
    assert.equal(results[1]?.status, 'rejected', 'the bad request meets its own error');
    assert.equal(results[2]?.status === 'fulfilled' && results[2].value.status, 200);
  });

  test("a webhook merchant's batch: one delivery per event, one delivery job and one notification for the batch", async () => {
    const merchant = await createTestMerchant(t.pool);
    await t.pool.query(
      `insert into webhook_endpoints (merchant_id, id, url, enabled_events, status, secret, created_at, updated_at)
       values ($1, 'we_batch', 'https://1.1.1.1/hooks', '{*}', 'enabled', 'whsec_AAAA', now(), now())`,
      [merchant.id],
    );
    const listener = await t.pool.connect();
    after(() => listener.release());
    const notifications: string[] = [];
    listener.on('notification', (message) => {
      if (message.channel === 'jobs:insert') notifications.push(message.payload ?? '');
    });
    await listener.query('listen "jobs:insert"');

    const batch = Array.from({ length: 20 }, () => creation(merchant.id));
    const sizesBefore = sizes.length;
    const outcomes = await Promise.all(batch.map((c) => batcher.submit(c)));
    assert.deepEqual(
      outcomes,
      batch.map(() => 'created'),
    );
    assert.deepEqual(sizes.slice(sizesBefore), [20], 'the twenty went as one batch');
    // Notifications sent before this query's answer arrive before it.
    await listener.query('select 1');
    await listener.query('unlisten "jobs:insert"');
    assert.equal(notifications.length, 1, `one notification, not one per event: ${notifications.join(' ')}`);
    assert.equal(JSON.parse(notifications[0] as string).count, 1, 'for one job');

    const eventIds = batch.map((c) => c.eventId);
    assert.equal(await countOf('select count(*)::int as n from webhook_deliveries where event_id = any($1)', [eventIds]), 20);
    // One batch job names the twenty (migrations/011_batched_deliveries.sql).
    assert.equal(
      await countOf(
        `select count(*)::int as n from graphile_worker._private_jobs j
         join graphile_worker._private_tasks task on task.id = j.task_id and task.identifier = 'deliver_webhooks'
         where j.payload->>'merchant_id' = $1 and jsonb_array_length((j.payload::jsonb)->'delivery_ids') = 20`,
        [merchant.id],
      ),
      1,
    );
  });
});
