/**
 * Deliveries end to end: events made through the API, a worker running the webhook tasks with
 * a compressed schedule, and real receivers on 127.0.0.1. Signatures are checked with the
 * standardwebhooks library, never with our own code.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { key, setupTestContext } from '../../test/helpers.js';
import { type Received, startReceiver, waitUntil } from '../../test/receiver.js';
import { COMPRESSED, merchantWithEndpoint, type WebhookMerchant, workerSlot } from '../../test/webhooks-helpers.js';
import { newId } from '../platform/ids.js';
import { createMetrics } from '../platform/observability/metrics.js';
import { type AttemptRecord, readAndRecord } from './delivery-sql.js';
import { pruneAttempts } from './service.js';

const startWorkerOnce = workerSlot();
const t = await setupTestContext({ config: { webhookAllowPrivate: true } });
const metrics = createMetrics({ defaultMetrics: false });
await startWorkerOnce(t.pool, { metrics });

async function createIntent(merchant: WebhookMerchant, body: Record<string, unknown> = {}): Promise<string> {
  const response = await merchant.post('/v1/payment_intents', { amount: 1000, currency: 'usd', ...body });
  assert.ok(response.statusCode === 200, response.body);
  return response.json().id;
}

async function deliveriesOf(merchant: WebhookMerchant, query = '') {
  return (await merchant.get(`/v1/webhook_deliveries?limit=100${query}`)).data as {
    id: string;
    event: string;
    status: string;
    round: number;
    attempts: number;
  }[];
}

/**
 * A merchant with `count` pending deliveries inserted by hand. Their events are made while the
 * endpoint is disabled, so they get no delivery and no job from the fan-out; the deliveries
 * inserted here have no job either, so the running worker leaves them alone.
 */
async function deliveriesWithoutJobs(count: number) {
  const receiver = await startReceiver();
  const merchant = await merchantWithEndpoint(t, receiver.url);
  const setEndpoint = (status: string) =>
    t.pool.query('update webhook_endpoints set status = $2 where merchant_id = $1', [merchant.merchantId, status]);
  await setEndpoint('disabled');
  const intents: string[] = [];
  for (let made = 0; made < count; made++) intents.push(await createIntent(merchant));
  await setEndpoint('enabled');
  const { rows: inserted } = await t.pool.query<{ id: string; event_id: string; object_id: string }>(
    `insert into webhook_deliveries (merchant_id, id, endpoint_id, event_id, status, next_attempt_at, created_at, updated_at)
     select merchant_id, webhook_delivery_id(id, $2), $2, id, 'pending', now(), now(), now() from events
     where merchant_id = $1 and object_id = any($3)
     returning id, event_id, (select object_id from events where merchant_id = $1 and id = event_id)`,
    [merchant.merchantId, merchant.endpoint.id, intents],
  );
  assert.equal(inserted.length, count);
  return { merchant, inserted };
}

const eventIdOf = (request: Received) => JSON.parse(request.body).id as string;

/** One attempt of a delivery as a worker records it: the first, succeeded with a 200, unless told. */
function attemptRecord(key: { merchantId: string; deliveryId: string }, fields: Partial<AttemptRecord> = {}): AttemptRecord {
  return {
    ...key,
    round: 1,
    attempt: 1,
    status: 'succeeded',
    nextAttemptAt: null,
    statusCode: 200,
    error: null,
    durationMs: 3,
    attemptedAt: new Date(),
    ...fields,
  };
}

/** A delivery's attempt log as the API shows it: [attempt, status code], newest first. */
async function attemptLogOf(merchant: WebhookMerchant, deliveryId: string): Promise<[number, number][]> {
  const detail = await merchant.get(`/v1/webhook_deliveries/${deliveryId}`);
  return detail.attempt_log.map((attempt: { attempt: number; status_code: number }) => [attempt.attempt, attempt.status_code]);
}

/** How many deliver_webhooks jobs have run, from the job metrics' exposition. */
const batchRuns = (exposition: string) =>
  Number(/floodgate_job_duration_seconds_count\{task="deliver_webhooks",outcome="success"\} (\d+)/.exec(exposition)?.[1] ?? 0);

describe('webhook deliveries', () => {
  test('signed so that standardwebhooks verifies them, and refuses a tampered body, a stale timestamp or a wrong secret', async (context) => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    const intentId = await createIntent(merchant);
    await waitUntil('the event arrives', () => receiver.received.length === 1);

    const [request] = receiver.received as [Received];
    const event = new Webhook(merchant.endpoint.secret).verify(request.body, request.headers) as Record<string, unknown>;
    assert.equal(event.type, 'payment_intent.created');
    assert.equal(event.object, 'event');
    assert.equal(event.sequence, 1);
    assert.equal((event.data as { object: { id: string } }).object.id, intentId);
    assert.equal(request.headers['webhook-id'], event.id);
    assert.equal(request.headers['content-type'], 'application/json');
    assert.match(request.headers['user-agent'] ?? '', /^Floodgate-Webhooks\//);

    const verifier = new Webhook(merchant.endpoint.secret);
    assert.throws(() => verifier.verify(request.body.replace('"amount":1000', '"amount":1'), request.headers), /No matching signature/);
    assert.throws(() => new Webhook(`whsec_${Buffer.alloc(32, 7).toString('base64')}`).verify(request.body, request.headers));
    const sixMinutesLater = Date.now() + 6 * 60 * 1000;
    context.mock.method(Date, 'now', () => sixMinutesLater);
    assert.throws(() => verifier.verify(request.body, request.headers), /too old/);
    context.mock.restoreAll();

    await waitUntil('the delivery is recorded', async () => (await deliveriesOf(merchant))[0]?.status === 'succeeded');
    // Counted just after the attempt's transaction commits.
    await waitUntil('the attempt is counted', async () =>
      /outcome="succeeded"} [1-9]/.test(await metrics.registry.getSingleMetricAsString('floodgate_webhook_delivery_attempts_total')),
    );
    const latency = await metrics.registry.getSingleMetricAsString('floodgate_webhook_delivery_duration_seconds');
    assert.match(latency, /_count{result="2xx"} [1-9]/);
  });

  test('during a rotation both secrets sign; after it only the new one does', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    const original = merchant.endpoint.secret;
    const rotated = (
      await merchant.post(`/v1/webhook_endpoints/${merchant.endpoint.id}/rotate_secret`, { expires_in_seconds: 3600 })
    ).json();
    await createIntent(merchant);
    await waitUntil('the first event arrives', () => receiver.received.length === 1);
    const during = receiver.received[0] as Received;
    assert.equal(during.headers['webhook-signature']?.split(' ').length, 2);
    new Webhook(original).verify(during.body, during.headers);
    new Webhook(rotated.secret).verify(during.body, during.headers);

    const again = (await merchant.post(`/v1/webhook_endpoints/${merchant.endpoint.id}/rotate_secret`, { expires_in_seconds: 0 })).json();
    await createIntent(merchant);
    await waitUntil('the second event arrives', () => receiver.received.length === 2);
    const afterwards = receiver.received[1] as Received;
    new Webhook(again.secret).verify(afterwards.body, afterwards.headers);
    assert.throws(() => new Webhook(rotated.secret).verify(afterwards.body, afterwards.headers), /No matching signature/);
    assert.throws(() => new Webhook(original).verify(afterwards.body, afterwards.headers), /No matching signature/);
  });

  test('receiver down, then up: every event is delivered', async () => {
    const receiver = await startReceiver({ down: true });
    const merchant = await merchantWithEndpoint(t, receiver.url);
    const intents: string[] = [];
    for (let i = 0; i < 5; i++) intents.push(await createIntent(merchant));
    await waitUntil('every delivery has failed once', async () => {
      const deliveries = await deliveriesOf(merchant);
      return deliveries.length === 5 && deliveries.every((delivery) => delivery.attempts >= 1 && delivery.status === 'pending');
    });
    receiver.down = false;
    await waitUntil('every delivery succeeded', async () => (await deliveriesOf(merchant)).every((d) => d.status === 'succeeded'));
    const delivered = new Set(receiver.received.map((request) => JSON.parse(request.body).data.object.id));
    assert.deepEqual([...delivered].sort(), [...intents].sort());
    const delivery = (await deliveriesOf(merchant))[0] as { id: string };
    const detail = await merchant.get(`/v1/webhook_deliveries/${delivery.id}`);
    // The receiver drops each connection: undici reports it as the other side closing.
    assert.match(detail.attempt_log.at(-1).error, /ECONNRESET|other side closed/);
    assert.equal(detail.attempt_log[0].status_code, 200);
  });

  test('attempts exhausted: the delivery is dead, listed, and redelivered on request', async () => {
    const receiver = await startReceiver({ answer: () => 500 });
    const merchant = await merchantWithEndpoint(t, receiver.url);
    await createIntent(merchant);
    await waitUntil('the delivery is dead', async () => (await deliveriesOf(merchant))[0]?.status === 'dead');
    assert.equal(receiver.received.length, COMPRESSED.maxAttempts);
    assert.equal(new Set(receiver.received.map((request) => request.headers['webhook-id'])).size, 1);

    const dead = await merchant.get(`/v1/webhook_deliveries?status=dead&endpoint=${merchant.endpoint.id}`);
    assert.equal(dead.data.length, 1);
    const [delivery] = dead.data;
    assert.equal(delivery.attempts, COMPRESSED.maxAttempts);
    assert.equal(delivery.last_attempt.status_code, 500);
    assert.equal(delivery.next_attempt_at, null);
    assert.deepEqual((await merchant.get(`/v1/webhook_deliveries?status=dead&event=${delivery.event}`)).data, dead.data);
    assert.deepEqual((await merchant.get('/v1/webhook_deliveries?status=succeeded')).data, []);

    receiver.answer = () => 200;
    const idempotencyKey = key('redeliver');
    const redelivered = await merchant.post(`/v1/events/${delivery.event}/redeliver`, undefined, idempotencyKey);
    assert.equal(redelivered.statusCode, 200, redelivered.body);
    assert.deepEqual(
      redelivered.json().data.map((row: { id: string; status: string; round: number }) => [row.id, row.status, row.round]),
      [[delivery.id, 'pending', 2]],
    );
    await waitUntil('the redelivery succeeded', async () => (await deliveriesOf(merchant))[0]?.status === 'succeeded');
    const last = receiver.received.at(-1) as Received;
    assert.equal(new Webhook(merchant.endpoint.secret).verify(last.body, last.headers) !== undefined, true);
    assert.equal(last.headers['webhook-id'], delivery.event);

    // A retry of the same request replays; it does not send the event a third time.
    const replayed = await merchant.post(`/v1/events/${delivery.event}/redeliver`, undefined, idempotencyKey);
    assert.equal(replayed.headers['idempotent-replayed'], 'true');
    assert.equal((await deliveriesOf(merchant))[0]?.round, 2);
    const detail = await merchant.get(`/v1/webhook_deliveries/${delivery.id}`);
    // The second round's success, then every attempt of the first, newest first: the round the
    // redelivery ended left its last attempt in the log.
    assert.deepEqual(
      detail.attempt_log.map((attempt: { round: number; attempt: number }) => [attempt.round, attempt.attempt]),
      [[2, 1], ...Array.from({ length: COMPRESSED.maxAttempts }, (_, index) => [1, COMPRESSED.maxAttempts - index])],
    );
    assert.equal(detail.attempt_log[0].status_code, 200);
    assert.ok(detail.attempt_log.every((attempt: { duration_ms: number }) => attempt.duration_ms >= 0));

    const missing = await merchant.post('/v1/events/evt_0000000000000000000000/redeliver', undefined);
    assert.equal(missing.statusCode, 404);
  });

  test('410 Gone disables the endpoint and stops its deliveries', async () => {
    // Both deliveries exist before the first answer, so one of them is pending when the 410 comes.
    let open = () => {};
    const gate = new Promise<number>((resolve) => {
      open = () => resolve(410);
    });
    const receiver = await startReceiver({ answer: () => gate });
    const merchant = await merchantWithEndpoint(t, receiver.url);
    await createIntent(merchant);
    await createIntent(merchant);
    open();
    await waitUntil(
      'the endpoint is disabled',
      async () => (await merchant.get(`/v1/webhook_endpoints/${merchant.endpoint.id}`)).status === 'disabled',
    );
    await waitUntil('no delivery job is left', async () => {
      const { rows } = await t.pool.query(
        `select count(*)::int as jobs from graphile_worker._private_jobs job
         join graphile_worker._private_tasks task on task.id = job.task_id
         where task.identifier in ('deliver_webhook', 'deliver_webhooks') and job.payload->>'merchant_id' = $1`,
        [merchant.merchantId],
      );
      return rows[0].jobs === 0;
    });
    const deliveries = await deliveriesOf(merchant);
    assert.deepEqual(
      deliveries.map((d) => d.status),
      ['canceled', 'canceled'],
    );
    assert.ok(deliveries.every((d) => d.attempts <= 1));
    assert.ok(receiver.received.length <= 2);
    const endpoint = await merchant.get(`/v1/webhook_endpoints/${merchant.endpoint.id}`);
    assert.match(endpoint.disabled_reason, /410/);

    // A disabled endpoint gets no new deliveries, nor redeliveries.
    const later = await createIntent(merchant);
    const event = (await merchant.get(`/v1/events?object_id=${later}`)).data[0];
    assert.deepEqual(await deliveriesOf(merchant, `&event=${event.id}`), []);
    assert.deepEqual((await merchant.post(`/v1/events/${event.id}/redeliver`, {})).json().data, []);

    // Once the receiver is back, the merchant enables the endpoint again: new events are
    // delivered, and an event from while it was off can be sent again with redeliver.
    receiver.answer = () => 200;
    const enabled = await merchant.post(`/v1/webhook_endpoints/${merchant.endpoint.id}/enable`, {});
    assert.equal(enabled.statusCode, 200, enabled.body);
    assert.equal(enabled.json().status, 'enabled');
    assert.equal(enabled.json().disabled_reason, null);
    assert.equal(enabled.json().secret, undefined, 'enabling never shows the secret');
    const afterwards = await createIntent(merchant);
    await waitUntil('the new event is delivered', async () =>
      receiver.received.some((request) => JSON.parse(request.body).data.object.id === afterwards),
    );
    const redelivered = await merchant.post(`/v1/events/${event.id}/redeliver`, {});
    assert.equal(redelivered.json().data.length, 1);
    const missing = await merchant.post('/v1/webhook_endpoints/we_0000000000000000000000/enable', {});
    assert.equal(missing.statusCode, 404);
  });

  test('logged delivery attempts older than the retention are deleted by the prune job; the deliveries stay, with their last attempt', async () => {
    // The first attempt fails and the second succeeds: the failure is logged, superseded.
    let answered = 0;
    const receiver = await startReceiver({ answer: () => (answered++ === 0 ? 503 : 200) });
    const merchant = await merchantWithEndpoint(t, receiver.url);
    await createIntent(merchant);
    await waitUntil('delivered', async () => (await deliveriesOf(merchant)).some((d) => d.status === 'succeeded'));
    const [delivery] = await deliveriesOf(merchant);
    assert.ok(delivery);
    const logged = () =>
      t.pool
        .query<{ n: number }>('select count(*)::int as n from webhook_delivery_attempts where merchant_id = $1', [merchant.merchantId])
        .then(({ rows }) => rows[0]?.n);
    const shown = () => attemptLogOf(merchant, delivery.id);
    assert.equal(await logged(), 1);
    assert.deepEqual(await shown(), [
      [2, 200],
      [1, 503],
    ]);
    // Within the retention: kept.
    assert.equal(await pruneAttempts(t.pool, 30), 0);
    assert.equal(await logged(), 1);
    await t.pool.query(`update webhook_delivery_attempts set attempted_at = now() - interval '31 days' where merchant_id = $1`, [
      merchant.merchantId,
    ]);
    assert.ok((await pruneAttempts(t.pool, 30)) >= 1);
    assert.equal(await logged(), 0);
    const kept = await merchant.get(`/v1/webhook_deliveries/${delivery.id}`);
    assert.equal(kept.status, 'succeeded');
    assert.deepEqual(await shown(), [[2, 200]]);
  });

  test('many deliveries at once (reads and records coalesced across jobs): each sent and recorded once', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    const intents = await Promise.all(Array.from({ length: 24 }, () => createIntent(merchant)));
    await waitUntil('every delivery succeeded', async () => {
      const deliveries = await deliveriesOf(merchant);
      return deliveries.length === intents.length && deliveries.every((d) => d.status === 'succeeded');
    });
    assert.deepEqual(
      receiver.received.map((request) => JSON.parse(request.body).data.object.id).sort(),
      [...intents].sort(),
      'each event once, none missing',
    );
    for (const request of receiver.received) new Webhook(merchant.endpoint.secret).verify(request.body, request.headers);
    const { rows } = await t.pool.query<{ attempts: number; logged: number }>(
      `select d.attempts, (select count(*)::int from webhook_delivery_attempts a
                           where a.merchant_id = d.merchant_id and a.delivery_id = d.id) as logged
       from webhook_deliveries d where d.merchant_id = $1`,
      [merchant.merchantId],
    );
    // Each one attempt, on the delivery itself: a first attempt supersedes none, so none is logged.
    assert.ok(rows.every((row) => row.attempts === 1 && row.logged === 0));
  });

  test('a backlog: late jobs take the waiting ones beyond the local queue, and each delivery is sent and recorded once', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    // More jobs than the local queue fetches at once (50), all due a second ago, appearing
    // together at commit: the worker locks the first 50, and those that run take the rest.
    const statements = 80;
    const client = await t.pool.connect();
    try {
      await client.query('begin');
      for (let n = 0; n < statements; n++) {
        await client.query(
          `insert into events (merchant_id, id, type, object_id, sequence, data, created_at)
           values ($1, $2, 'payment_intent.created', $3, 1, '{}', now())`,
          [merchant.merchantId, newId('evt'), newId('pi')],
        );
      }
      await client.query(
        `update graphile_worker._private_jobs set run_at = now() - interval '1 second' where payload->>'merchant_id' = $1`,
        [merchant.merchantId],
      );
      const runs = () => metrics.registry.getSingleMetricAsString('floodgate_job_duration_seconds');
      const ranBefore = batchRuns(await runs());
      await client.query('commit');
      await waitUntil('every delivery succeeded', async () => {
        const deliveries = await deliveriesOf(merchant);
        return deliveries.length === statements && deliveries.every((d) => d.status === 'succeeded');
      });
      const ids = receiver.received.map(eventIdOf);
      assert.equal(ids.length, statements);
      assert.equal(new Set(ids).size, statements, 'no event twice');
      await waitUntil('no job is left', async () => {
        const { rows } = await t.pool.query(`select 1 from graphile_worker._private_jobs where payload->>'merchant_id' = $1`, [
          merchant.merchantId,
        ]);
        return rows.length === 0;
      });
      const ran = batchRuns(await runs()) - ranBefore;
      assert.ok(ran < statements, `${ran} batch jobs ran for ${statements} added`);
    } finally {
      client.release();
    }
  });

  test('the coalesced statement: reads answer in the order asked, none for an unknown delivery; an attempt recorded twice in one call counts once; a read beside a record sees the delivery before it', async () => {
    const { merchant, inserted } = await deliveriesWithoutJobs(2);
    const [first, second] = inserted as [(typeof inserted)[0], (typeof inserted)[0]];
    const known = { merchantId: merchant.merchantId, deliveryId: first.id };
    const unknown = { merchantId: merchant.merchantId, deliveryId: 'wd_00000000000000000000' };
    const { targets, recorded: none } = await readAndRecord(t.pool, [unknown, known, known], []);
    assert.deepEqual(none, []);
    assert.equal(targets.length, 3);
    assert.equal(targets[0], undefined);
    assert.equal(targets[1]?.event_id, first.event_id);
    assert.equal(targets[1]?.status, 'pending');
    assert.equal(targets[1]?.event?.object_id, first.object_id);
    assert.deepEqual(targets[2], targets[1]);

    const attempt = attemptRecord(known);
    const { recorded } = await readAndRecord(t.pool, [], [attempt, { ...attempt, ...unknown }, attempt]);
    assert.equal(recorded[1], false);
    assert.deepEqual([recorded[0], recorded[2]].sort(), [false, true]);
    const detail = await merchant.get(`/v1/webhook_deliveries/${first.id}`);
    assert.equal(detail.status, 'succeeded');
    assert.equal(detail.attempts, 1);
    assert.equal(detail.attempt_log.length, 1);
    // Recorded already: the same attempt again records nothing.
    assert.deepEqual((await readAndRecord(t.pool, [], [attempt])).recorded, [false]);

    const other = { merchantId: merchant.merchantId, deliveryId: second.id };
    const both = await readAndRecord(t.pool, [other], [{ ...attempt, ...other, status: 'dead', statusCode: 500 }]);
    assert.deepEqual(both.recorded, [true]);
    assert.equal(both.targets[0]?.status, 'pending');
    assert.equal(both.targets[0]?.attempts, 0);
    assert.equal((await merchant.get(`/v1/webhook_deliveries/${second.id}`)).status, 'dead');
  });

  test("a delivery's successful record is a HOT update; giving it up is not, and lists it among the dead", async () => {
    const { merchant, inserted } = await deliveriesWithoutJobs(2);
    const [delivered, givenUp] = inserted as [(typeof inserted)[0], (typeof inserted)[0]];
    const attempt = (deliveryId: string, status: 'succeeded' | 'dead') =>
      attemptRecord({ merchantId: merchant.merchantId, deliveryId }, { status, statusCode: status === 'succeeded' ? 200 : 500 });
    // The record's updates of the table, and how many of them wrote no index entry. The session's
    // counts may still hold its earlier transactions' (they are reported when it next idles), so
    // the record's own are the difference across it, inside one transaction.
    const recordCounted = async (record: AttemptRecord) => {
      const client = await t.pool.connect();
      const counts = async () =>
        (
          await client.query<{ updates: number; hot: number }>(
            `select n_tup_upd::int as updates, n_tup_hot_upd::int as hot from pg_stat_xact_user_tables
             where relid = 'webhook_deliveries'::regclass`,
          )
        ).rows[0] ?? { updates: 0, hot: 0 };
      try {
        await client.query('begin');
        const before = await counts();
        assert.deepEqual((await readAndRecord(client, [], [record])).recorded, [true]);
        const after = await counts();
        await client.query('commit');
        return { updates: after.updates - before.updates, hot: after.hot - before.hot };
      } finally {
        client.release();
      }
    };
    // No index names what a success changes (migrations/013_hot_delivery_records.sql).
    assert.deepEqual(await recordCounted(attempt(delivered.id, 'succeeded')), { updates: 1, hot: 1 });
    // Giving up sets `undelivered`, which the dead letters' index names.
    assert.deepEqual(await recordCounted(attempt(givenUp.id, 'dead')), { updates: 1, hot: 0 });
    assert.deepEqual(
      (await deliveriesOf(merchant, '&status=dead')).map((delivery) => delivery.id),
      [givenUp.id],
    );
    assert.deepEqual(
      (await deliveriesOf(merchant, '&status=succeeded')).map((delivery) => delivery.id),
      [delivered.id],
    );
  });

  test('a last attempt that a worker from before migration 014 also logged: the next record keeps it, and the log shows it once', async () => {
    const { merchant, inserted } = await deliveriesWithoutJobs(1);
    const [delivery] = inserted as [(typeof inserted)[0]];
    const record = (attempt: number, statusCode: number) =>
      attemptRecord(
        { merchantId: merchant.merchantId, deliveryId: delivery.id },
        statusCode === 200 ? { attempt, statusCode } : { attempt, statusCode, status: 'pending', nextAttemptAt: new Date() },
      );
    assert.deepEqual((await readAndRecord(t.pool, [], [record(1, 503)])).recorded, [true]);
    // What the older worker wrote beside its record: the attempt in the log too.
    await t.pool.query(
      `insert into webhook_delivery_attempts (merchant_id, delivery_id, round, attempt, status_code, error, duration_ms, attempted_at)
       select merchant_id, id, round, attempts, last_status_code, last_error, last_duration_ms, last_attempt_at
       from webhook_deliveries where merchant_id = $1 and id = $2`,
      [merchant.merchantId, delivery.id],
    );
    const shown = () => attemptLogOf(merchant, delivery.id);
    assert.deepEqual(await shown(), [[1, 503]]);
    assert.deepEqual((await readAndRecord(t.pool, [], [record(2, 200)])).recorded, [true]);
    assert.deepEqual(await shown(), [
      [2, 200],
      [1, 503],
    ]);
  });

  test('each event carries its object sequence number', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    const intent = await merchant.post('/v1/payment_intents', {
      amount: 2000,
      currency: 'usd',
      capture_method: 'manual',
      payment_method: 'pm_card_visa',
      confirm: true,
    });
    const intentId = intent.json().id;
    await merchant.post(`/v1/payment_intents/${intentId}/capture`, {});
    const refund = (await merchant.post('/v1/refunds', { payment_intent: intentId, amount: 500 })).json();
    await waitUntil('five events arrive', () => receiver.received.length === 5);

    const byObject = new Map<string, { id: string; type: string; sequence: number }[]>();
    for (const request of receiver.received) {
      const event = JSON.parse(request.body);
      byObject.set(event.data.object.id, [...(byObject.get(event.data.object.id) ?? []), event]);
    }
    const ordered = (objectId: string) =>
      (byObject.get(objectId) ?? []).sort((a, b) => a.sequence - b.sequence).map((event) => [event.sequence, event.type]);
    assert.deepEqual(ordered(intentId), [
      [1, 'payment_intent.created'],
      [2, 'payment_intent.amount_capturable_updated'],
      [3, 'payment_intent.succeeded'],
    ]);
    assert.deepEqual(ordered(refund.id), [
      [1, 'refund.created'],
      [2, 'refund.updated'],
    ]);
    assert.deepEqual(receiver.received.map(eventIdOf).sort(), [...new Set(receiver.received.map(eventIdOf))].sort());
  });
});
