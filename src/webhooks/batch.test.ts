/**
 * Batched deliveries: the fan-out adds one deliver_webhooks job per statement and merchant (per
 * 100 deliveries), and the batch task sends its deliveries at once to real receivers on
 * 127.0.0.1. No worker runs here: each test runs the task itself on the job's payload, as the
 * worker would, so it can run a batch again, or run one that was never queued.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { JobHelpers, Task } from 'graphile-worker';
import { createTestMerchant, setupTestContext } from '../../test/helpers.js';
import { type Received, startReceiver } from '../../test/receiver.js';
import { COMPRESSED, merchantWithEndpoint, type WebhookMerchant } from '../../test/webhooks-helpers.js';
import { newId } from '../platform/ids.js';
import { createMetrics } from '../platform/observability/metrics.js';
import { webhookTasks } from './jobs.js';
import { DELIVER_BATCH_TASK, DELIVER_TASK, DELIVERIES_PER_BATCH_MAX } from './service.js';

const t = await setupTestContext({ config: { webhookAllowPrivate: true } });

// Short, so that a receiver that never answers costs the test little.
const TIMEOUT_MS = 500;

/** The batch task as the worker runs it, with metrics of its own. */
function batchTask() {
  const metrics = createMetrics({ defaultMetrics: false });
  const tasks = webhookTasks({ pool: t.pool, settings: { ...COMPRESSED, timeoutMs: TIMEOUT_MS }, metrics });
  const task = tasks[DELIVER_BATCH_TASK] as Task;
  const run = (payload: unknown) => task(payload, { job: { id: '1', run_at: new Date() } } as unknown as JobHelpers) as Promise<void>;
  const attempts = () => metrics.registry.getSingleMetricAsString('floodgate_webhook_delivery_attempts_total');
  return { run, attempts };
}

interface QueuedJob {
  payload: { merchant_id: string; delivery_ids: string[]; round: number; attempt: number; delivery_id?: string; _trace?: unknown };
  run_at: Date;
}

async function jobsOf(task: string, merchantId: string): Promise<QueuedJob[]> {
  const { rows } = await t.pool.query<QueuedJob>(
    `select job.payload::jsonb as payload, job.run_at from graphile_worker._private_jobs job
     join graphile_worker._private_tasks task on task.id = job.task_id
     where task.identifier = $1 and job.payload->>'merchant_id' = $2
     order by job.id`,
    [task, merchantId],
  );
  return rows;
}

/** The merchant's batch job, as its task sees it: graphile-worker's runner takes the trace context out. */
async function onlyBatchOf(merchantId: string) {
  const jobs = await jobsOf(DELIVER_BATCH_TASK, merchantId);
  assert.equal(jobs.length, 1);
  const { _trace, ...payload } = (jobs[0] as QueuedJob).payload;
  return payload;
}

async function addEndpoint(merchant: WebhookMerchant, url: string): Promise<string> {
  const response = await merchant.post('/v1/webhook_endpoints', { url, enabled_events: ['*'] });
  assert.equal(response.statusCode, 200, response.body);
  return response.json().id;
}

async function createIntent(merchant: WebhookMerchant): Promise<void> {
  const response = await merchant.post('/v1/payment_intents', { amount: 1000, currency: 'usd' });
  assert.equal(response.statusCode, 200, response.body);
}

/** The merchant's deliveries; `logged` counts the attempts their log shows (the last one, on the delivery, and those it superseded). */
async function deliveries(merchantId: string) {
  const { rows } = await t.pool.query<{
    id: string;
    endpoint_id: string;
    status: string;
    attempts: number;
    next_attempt_at: Date | null;
    last_attempt_at: Date | null;
    last_error: string | null;
    logged: number;
  }>(
    `select d.id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_error,
       (select count(*)::int from webhook_delivery_attempts a where a.merchant_id = d.merchant_id and a.delivery_id = d.id)
         + (d.attempts > 0)::int as logged
     from webhook_deliveries d where d.merchant_id = $1 order by d.id`,
    [merchantId],
  );
  return rows;
}

const eventIdOf = (request: Received) => JSON.parse(request.body).id as string;

describe('the fan-out', () => {
  test('a statement of many events adds one batch job per merchant and per 100 deliveries, carrying the trace context', async () => {
    const [big, small] = [await createTestMerchant(t.pool), await createTestMerchant(t.pool)];
    for (const merchant of [big, small]) {
      await t.pool.query(
        `insert into webhook_endpoints (merchant_id, id, url, enabled_events, status, secret, created_at, updated_at)
         values ($1, $2, 'https://1.1.1.1/hooks', '{*}', 'enabled', 'whsec_AAAA', now(), now())`,
        [merchant.id, newId('we')],
      );
    }
    const events = [
      ...Array.from({ length: 2 * DELIVERIES_PER_BATCH_MAX + 50 }, () => [big.id, newId('evt'), newId('pi')]),
      ...Array.from({ length: 3 }, () => [small.id, newId('evt'), newId('pi')]),
    ];
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const client = await t.pool.connect();
    try {
      await client.query('begin');
      await client.query(`select set_config('floodgate.traceparent', $1, true)`, [traceparent]);
      await client.query(
        `insert into events (merchant_id, id, type, object_id, sequence, data, created_at)
         select merchant_id, id, 'payment_intent.created', object_id, 1, '{}', now()
         from unnest($1::text[], $2::text[], $3::text[]) as event (merchant_id, id, object_id)`,
        [events.map((e) => e[0]), events.map((e) => e[1]), events.map((e) => e[2])],
      );
      await client.query('commit');
    } finally {
      client.release();
    }

    const bigJobs = await jobsOf(DELIVER_BATCH_TASK, big.id);
    assert.deepEqual(
      bigJobs.map((job) => job.payload.delivery_ids.length).sort((a, b) => a - b),
      [50, DELIVERIES_PER_BATCH_MAX, DELIVERIES_PER_BATCH_MAX],
    );
    const smallJobs = await jobsOf(DELIVER_BATCH_TASK, small.id);
    assert.equal(smallJobs.length, 1);
    const { delivery_ids, ...rest } = (smallJobs[0] as QueuedJob).payload;
    assert.deepEqual(rest, { merchant_id: small.id, round: 1, attempt: 1, _trace: { traceparent } });
    const { rows } = await t.pool.query<{ id: string }>('select id from webhook_deliveries where merchant_id = $1 order by id', [small.id]);
    assert.deepEqual(
      delivery_ids,
      rows.map((row) => row.id),
    );
    // Every delivery is in exactly one job, and no job is one delivery's alone.
    const named = bigJobs.flatMap((job) => job.payload.delivery_ids);
    assert.equal(new Set(named).size, 2 * DELIVERIES_PER_BATCH_MAX + 50);
    assert.deepEqual(await jobsOf(DELIVER_TASK, big.id), []);
  });
});

describe('a batch job', () => {
  test('one receiver answers 200 and another fails: the first is delivered, the second gets a retry with backoff', async () => {
    const ok = await startReceiver();
    const failing = await startReceiver({ answer: () => 503 });
    const merchant = await merchantWithEndpoint(t, ok.url);
    const failingEndpoint = await addEndpoint(merchant, failing.url);
    await createIntent(merchant);
    const batch = await onlyBatchOf(merchant.merchantId);
    assert.equal(batch.delivery_ids.length, 2);

    const task = batchTask();
    await task.run(batch);
    assert.equal(ok.received.length, 1);
    assert.equal(failing.received.length, 1);
    const [first, second] = [ok.received[0], failing.received[0]] as [Received, Received];
    assert.equal(eventIdOf(first), eventIdOf(second));

    const byEndpoint = new Map((await deliveries(merchant.merchantId)).map((d) => [d.endpoint_id, d]));
    const delivered = byEndpoint.get(merchant.endpoint.id);
    const retried = byEndpoint.get(failingEndpoint);
    assert.ok(delivered && retried);
    assert.equal(delivered.status, 'succeeded');
    assert.equal(delivered.attempts, 1);
    assert.equal(delivered.logged, 1);
    assert.equal(retried.status, 'pending');
    assert.equal(retried.attempts, 1);
    assert.equal(retried.logged, 1);
    // The retry is a deliver_webhook job of its own, for the next attempt, at the delivery's
    // next attempt time: after the failed one by at most the first backoff's cap.
    const retries = await jobsOf(DELIVER_TASK, merchant.merchantId);
    assert.equal(retries.length, 1);
    const [retry] = retries as [QueuedJob];
    const { _trace, ...payload } = retry.payload;
    assert.deepEqual(payload, { merchant_id: merchant.merchantId, delivery_id: retried.id, round: 1, attempt: 2 });
    assert.equal(retry.run_at.getTime(), retried.next_attempt_at?.getTime());
    const waitMs = retry.run_at.getTime() - (retried.last_attempt_at as Date).getTime();
    assert.ok(waitMs >= 0 && waitMs <= COMPRESSED.retryBaseMs + 1_000, `retry after ${waitMs} ms`);

    const counted = await task.attempts();
    assert.match(counted, /outcome="succeeded"} 1/);
    assert.match(counted, /outcome="retry_scheduled"} 1/);
  });

  test('a receiver that never answers holds back the others no longer than the transport timeout', async () => {
    const ok = await startReceiver();
    const silent = await startReceiver({ answer: () => 'hold' });
    const merchant = await merchantWithEndpoint(t, ok.url);
    const silentEndpoint = await addEndpoint(merchant, silent.url);
    await createIntent(merchant);

    const started = Date.now();
    await batchTask().run(await onlyBatchOf(merchant.merchantId));
    const tookMs = Date.now() - started;
    assert.ok(tookMs >= TIMEOUT_MS && tookMs < TIMEOUT_MS + 2_000, `the batch took ${tookMs} ms`);
    const byEndpoint = new Map((await deliveries(merchant.merchantId)).map((d) => [d.endpoint_id, d]));
    assert.equal(byEndpoint.get(merchant.endpoint.id)?.status, 'succeeded');
    assert.equal(byEndpoint.get(silentEndpoint)?.status, 'pending');
    assert.match(byEndpoint.get(silentEndpoint)?.last_error ?? '', /no response within/);
    await silent.close();
  });

  test('a delivery that throws fails only itself: the others are recorded, then the job throws', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    const broken = await addEndpoint(merchant, receiver.url);
    // A stored URL that does not parse: the transport throws, as for no answer it ever gives.
    await t.pool.query(`update webhook_endpoints set url = 'not a url' where merchant_id = $1 and id = $2`, [merchant.merchantId, broken]);
    await createIntent(merchant);
    await assert.rejects(batchTask().run(await onlyBatchOf(merchant.merchantId)), /Invalid URL/);
    assert.equal(receiver.received.length, 1);
    const byEndpoint = new Map((await deliveries(merchant.merchantId)).map((d) => [d.endpoint_id, d]));
    assert.equal(byEndpoint.get(merchant.endpoint.id)?.status, 'succeeded');
    assert.deepEqual([byEndpoint.get(broken)?.status, byEndpoint.get(broken)?.attempts], ['pending', 0]);
  });

  test('run again after some or all of its deliveries were recorded, it sends none of those twice', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    await addEndpoint(merchant, receiver.url);
    await addEndpoint(merchant, receiver.url);
    await createIntent(merchant);
    const batch = await onlyBatchOf(merchant.merchantId);
    assert.equal(batch.delivery_ids.length, 3);
    const [recordedFirst, ...rest] = batch.delivery_ids as [string, ...string[]];
    const task = batchTask();

    // A worker that died mid-batch had recorded one delivery: the run again sends the others only.
    await task.run({ ...batch, delivery_ids: [recordedFirst] });
    assert.equal(receiver.received.length, 1);
    await task.run(batch);
    assert.equal(receiver.received.length, 3);
    // And once all are recorded, a run again sends nothing.
    await task.run(batch);
    assert.equal(receiver.received.length, 3);

    const rows = await deliveries(merchant.merchantId);
    assert.deepEqual(
      rows.map((row) => [row.status, row.attempts, row.logged]),
      [
        ['succeeded', 1, 1],
        ['succeeded', 1, 1],
        ['succeeded', 1, 1],
      ],
    );
    assert.deepEqual(
      [recordedFirst, ...rest].sort(),
      rows.map((row) => row.id),
    );
    assert.match(await task.attempts(), /outcome="succeeded"} 3/);
  });

  test('skips what the single job skips: a delivery of a disabled endpoint, an unknown delivery', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    const disabled = await addEndpoint(merchant, receiver.url);
    await createIntent(merchant);
    const batch = await onlyBatchOf(merchant.merchantId);
    await t.pool.query(`update webhook_endpoints set status = 'disabled' where merchant_id = $1 and id = $2`, [
      merchant.merchantId,
      disabled,
    ]);
    const task = batchTask();
    await task.run({ ...batch, delivery_ids: [...batch.delivery_ids, 'wd_0000000000000000000000'] });
    assert.equal(receiver.received.length, 1);
    const byEndpoint = new Map((await deliveries(merchant.merchantId)).map((d) => [d.endpoint_id, d]));
    assert.equal(byEndpoint.get(merchant.endpoint.id)?.status, 'succeeded');
    assert.equal(byEndpoint.get(disabled)?.attempts, 0);
  });

  test('a deliver_webhook job queued before the upgrade still delivers its one delivery', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    await createIntent(merchant);
    const [delivery] = (await onlyBatchOf(merchant.merchantId)).delivery_ids as [string];
    const tasks = webhookTasks({ pool: t.pool, settings: COMPRESSED });
    const single = tasks[DELIVER_TASK] as Task;
    const job = { merchant_id: merchant.merchantId, delivery_id: delivery, round: 1, attempt: 1 };
    await single(job, { job: { id: '2' } } as unknown as JobHelpers);
    assert.equal(receiver.received.length, 1);
    assert.deepEqual(
      (await deliveries(merchant.merchantId)).map((d) => [d.status, d.attempts]),
      [['succeeded', 1]],
    );
  });

  test('a payload that does not parse throws', async () => {
    const task = batchTask();
    const good = { merchant_id: t.merchant.id, delivery_ids: ['wd_0000000000000000000000'], round: 1, attempt: 1 };
    for (const payload of [
      {},
      { ...good, delivery_ids: [] },
      { ...good, delivery_ids: 'wd_0000000000000000000000' },
      { ...good, delivery_ids: Array.from({ length: DELIVERIES_PER_BATCH_MAX + 1 }, (_, n) => `wd_${n}`) },
      { ...good, round: 0 },
      { ...good, merchant_id: undefined },
    ]) {
      await assert.rejects(task.run(payload), /deliver_webhooks: malformed payload/, JSON.stringify(payload).slice(0, 80));
    }
    await task.run(good);
  });
});

describe('a batch job that starts late', () => {
  type QueuedJobRow = { id: string; payload: { delivery_ids: string[] } };

  /** The merchant's waiting batch jobs, by id: one per statement that created events. */
  async function batchJobsOf(merchantId: string) {
    const { rows } = await t.pool.query<QueuedJobRow>(
      `select job.id::text, job.payload::jsonb as payload from graphile_worker._private_jobs job
       join graphile_worker._private_tasks task on task.id = job.task_id
       where task.identifier = $1 and job.payload->>'merchant_id' = $2
       order by job.id`,
      [DELIVER_BATCH_TASK, merchantId],
    );
    return rows;
  }

  /** Takes the job as a worker does (locks it), then runs it `lateMs` after it was due. */
  async function runAsWorker(job: { id: string }, lateMs: number) {
    const { rows } = await t.pool.query<{ payload: unknown }>(
      `update graphile_worker._private_jobs set locked_at = now(), locked_by = 'test', attempts = attempts + 1
       where id = $1 returning payload`,
      [job.id],
    );
    assert.equal(rows.length, 1, `job ${job.id} is queued`);
    const { _trace, ...payload } = (rows[0] as { payload: Record<string, unknown> }).payload;
    const task = webhookTasks({ pool: t.pool, settings: COMPRESSED })[DELIVER_BATCH_TASK] as Task;
    await task(payload, { job: { id: job.id, run_at: new Date(Date.now() - lateMs) } } as unknown as JobHelpers);
  }

  /** `count` events of the merchant in one statement: one batch job of `count` deliveries. */
  async function eventsInOneStatement(merchantId: string, count: number) {
    await t.pool.query(
      `insert into events (merchant_id, id, type, object_id, sequence, data, created_at)
       select $1, id, 'payment_intent.created', object_id, 1, '{}', now() from unnest($2::text[], $3::text[]) as event (id, object_id)`,
      [merchantId, Array.from({ length: count }, () => newId('evt')), Array.from({ length: count }, () => newId('pi'))],
    );
  }

  test('takes the waiting jobs of its merchant that no worker holds, and keeps their deliveries in its payload', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    const other = await merchantWithEndpoint(t, receiver.url);
    for (let n = 0; n < 4; n++) await createIntent(merchant);
    await createIntent(other);
    const [first, second, third, held] = (await batchJobsOf(merchant.merchantId)) as [
      QueuedJobRow,
      QueuedJobRow,
      QueuedJobRow,
      QueuedJobRow,
    ];
    // Another worker holds the fourth.
    await t.pool.query(`update graphile_worker._private_jobs set locked_at = now(), locked_by = 'other' where id = $1`, [held.id]);

    await runAsWorker(first, 5_000);
    const taken = [first, second, third].flatMap((job) => job.payload.delivery_ids);
    assert.equal(receiver.received.length, 3);
    const byId = new Map((await deliveries(merchant.merchantId)).map((d) => [d.id, d.status]));
    assert.deepEqual(
      taken.map((id) => byId.get(id)),
      ['succeeded', 'succeeded', 'succeeded'],
    );
    assert.equal(byId.get(held.payload.delivery_ids[0] as string), 'pending');
    // The taken jobs are gone; the running job names their deliveries, so a run again (its
    // worker died) sends them; the held one and the other merchant's job stay.
    const left = await batchJobsOf(merchant.merchantId);
    assert.deepEqual(
      left.map((job) => job.id),
      [first.id, held.id],
    );
    assert.deepEqual(left[0]?.payload.delivery_ids, taken);
    assert.equal((await batchJobsOf(other.merchantId)).length, 1);
  });

  test('takes nothing when it starts on time', async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    await createIntent(merchant);
    await createIntent(merchant);
    const [first, second] = (await batchJobsOf(merchant.merchantId)) as [QueuedJobRow, QueuedJobRow];
    await runAsWorker(first, 0);
    assert.equal(receiver.received.length, 1);
    assert.deepEqual(
      (await batchJobsOf(merchant.merchantId)).map((job) => [job.id, job.payload.delivery_ids.length]),
      [
        [first.id, 1],
        [second.id, 1],
      ],
    );
  });

  test(`takes no more than fill it to ${DELIVERIES_PER_BATCH_MAX} deliveries, in the order the jobs were added`, async () => {
    const receiver = await startReceiver();
    const merchant = await merchantWithEndpoint(t, receiver.url);
    await eventsInOneStatement(merchant.merchantId, DELIVERIES_PER_BATCH_MAX - 1);
    await createIntent(merchant);
    await createIntent(merchant);
    const [big, next, last] = (await batchJobsOf(merchant.merchantId)) as [QueuedJobRow, QueuedJobRow, QueuedJobRow];
    assert.equal(big.payload.delivery_ids.length, DELIVERIES_PER_BATCH_MAX - 1);
    await runAsWorker(big, 5_000);
    assert.equal(receiver.received.length, DELIVERIES_PER_BATCH_MAX);
    const left = await batchJobsOf(merchant.merchantId);
    assert.deepEqual(
      left.map((job) => job.id),
      [big.id, last.id],
    );
    assert.deepEqual(left[0]?.payload.delivery_ids, [...big.payload.delivery_ids, ...next.payload.delivery_ids]);
  });
});
