/**
 * The delivery jobs' statements are planned for the tables as they are, not as their statistics
 * remember them: a surge fills a queue analyzed near empty, and one merchant's events outgrow
 * what the statistics say a merchant has; a delivery's read finds its event by the event's key.
 *
 * A late batch job takes the waiting ones (takeWaitingBatches) by reading the queue's head in
 * graphile-worker's index order, whatever the job table's statistics say. Here the table is
 * analyzed empty, as a queue table often is, and then a surge's queue fills it: 3,000 waiting
 * batch jobs of one merchant, the first 2,000 of them since finished (deleted, not vacuumed).
 * The take's statement is explained as it is sent, inside its transaction: no bitmap scan and
 * no sequential scan of the job table. The same statement planned outside the take's settings
 * is read by one of them, which is what this test is about: a bitmap scan never marks the index
 * entries of deleted jobs dead, so each take of a drain visited every job finished before it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createTestDatabase } from '../../test/helpers.js';
import { explain, type PlanNode, planNodes, planOf, scansOf } from '../../test/plans.js';
import type { Client, Pool } from '../platform/db/pool.js';
import { insertJobsSql } from '../platform/jobs/queue.js';
import { migrateJobs } from '../platform/jobs/runner.js';
import { readAndRecord, takeWaitingBatches } from './delivery-sql.js';
import { DELIVER_BATCH_TASK } from './service.js';
import { selectDeliveries } from './sql.js';

const { pool } = await createTestDatabase();
await migrateJobs(pool, [DELIVER_BATCH_TASK]);

const MERCHANT = 'acct_takeplan00000000000000';
const QUEUED = 3_000;
const FINISHED = 2_000;

const jobTableScans = (node: PlanNode) => scansOf(node, '_private_jobs');

interface SentTake {
  text: string;
  values: unknown[];
  plan: PlanNode;
}

/** A pool whose clients explain the take's statement, in its transaction, before running it. */
function explainingTakes(sent: SentTake[]): Pool {
  const explaining = (client: Client): Client =>
    new Proxy(client, {
      get(target, property) {
        if (property !== 'query') {
          const value = Reflect.get(target, property);
          return typeof value === 'function' ? value.bind(target) : value;
        }
        return async (config: unknown, ...rest: unknown[]) => {
          const statement = config as { name?: string; text: string; values: unknown[] };
          if (statement?.name === 'webhooks_take_waiting_batches') {
            sent.push({ text: statement.text, values: statement.values, plan: await explain(target, statement) });
          }
          return (target.query as (...args: unknown[]) => unknown)(config, ...rest);
        };
      },
    });
  return { connect: async () => explaining(await pool.connect()) } as unknown as Pool;
}

test("a take reads the queue's head in index order when the statistics say the queue is empty", async () => {
  await pool.query('analyze graphile_worker._private_jobs');
  await pool.query(
    insertJobsSql({
      task: `'${DELIVER_BATCH_TASK}'`,
      payload: `json_build_object('merchant_id', '${MERCHANT}', 'delivery_ids', json_build_array('wd_' || n), 'round', 1, 'attempt', 1)`,
      runAt: `now() - interval '1 hour' + n * interval '1 ms'`,
      from: `from generate_series(1, ${QUEUED}) n`,
    }),
  );
  await pool.query(
    'delete from graphile_worker._private_jobs where id in (select id from graphile_worker._private_jobs order by id limit $1)',
    [FINISHED],
  );
  const {
    rows: [running],
  } = await pool.query<{ id: string }>('select id::text from graphile_worker._private_jobs order by id limit 1');
  assert.ok(running);
  // A running job is locked by its worker, as graphile-worker's fetch leaves it.
  await pool.query(`update graphile_worker._private_jobs set locked_at = now(), locked_by = 'take-plan' where id = $1`, [running.id]);

  const sent: SentTake[] = [];
  const taken = await takeWaitingBatches(
    explainingTakes(sent),
    { jobId: running.id, merchantId: MERCHANT, round: 1, attempt: 1, deliveries: 1 },
    10,
  );

  // The jobs after the running one, in order: the take works on the queue as it is.
  assert.deepEqual(
    taken,
    Array.from({ length: 10 }, (_, n) => `wd_${FINISHED + 2 + n}`),
  );
  const [take] = sent;
  assert.ok(take, 'the take sent its statement');
  const scans = jobTableScans(take.plan);
  assert.ok(scans.length > 0, JSON.stringify(take.plan));
  for (const scan of scans) assert.match(scan, /^Index (Only )?Scan /, `the take scanned the job table by ${scan}`);

  // Outside the take's settings the planner, believing the table empty, reads it otherwise.
  const unsettled = jobTableScans(await explain(pool, take));
  assert.ok(
    unsettled.some((scan) => !/^Index (Only )?Scan /.test(scan)),
    `without the settings the plan read the job table by ${unsettled.join(', ')}: this test no longer shows what it is for`,
  );
});

// A guard, not a reproduction: the read that joined the events was logged in the bench reading
// every event of the merchant for each delivery (bench/README.md, the twenty-third session), but
// planned here, on these tables, the joined form used the key too. This fails if the read stops
// finding the event by its key.
test("a delivery's read finds its event by the event's key when the merchant has more events than the statistics say", async () => {
  // Statistics of many merchants with a few events each, then one merchant's surge.
  const merchants = 200;
  await pool.query(
    `insert into merchants (merchant_id, name) select 'acct_plans' || lpad(n::text, 18, '0'), 'm' from generate_series(1, ${merchants}) n`,
  );
  await pool.query(`insert into events (merchant_id, id, type, object_id, data, created_at, sequence)
    select 'acct_plans' || lpad((n % ${merchants} + 1)::text, 18, '0'), 'evt_few' || lpad(n::text, 19, '0'), 'payment_intent.created', 'pi_' || n, '{}', now(), 1
    from generate_series(1, ${merchants * 3}) n`);
  await pool.query('analyze events');
  const merchant = 'acct_plans000000000000000001';
  await pool.query(`insert into events (merchant_id, id, type, object_id, data, created_at, sequence)
    select '${merchant}', 'evt_surge' || lpad(n::text, 17, '0'), 'payment_intent.created', 'pi_s' || n, '{}', now(), 1
    from generate_series(1, 3000) n`);
  await pool.query(`insert into webhook_endpoints (merchant_id, id, url, enabled_events, status, secret, created_at, updated_at)
    values ('${merchant}', 'we_plans', 'https://example.com/hook', '{*}', 'enabled', 'whsec_AAAA', now(), now())`);
  await pool.query(`insert into webhook_deliveries (merchant_id, id, endpoint_id, event_id, status, next_attempt_at, created_at, updated_at)
    select '${merchant}', 'wd_plans' || lpad(n::text, 18, '0'), 'we_plans', 'evt_surge' || lpad(n::text, 17, '0'), 'pending', now(), now(), now()
    from generate_series(1, 3000) n`);
  const keys = [7, 1500, 2999].map((n) => ({ merchantId: merchant, deliveryId: `wd_plans${String(n).padStart(18, '0')}` }));

  const plan = await planOf(pool, (db) => readAndRecord(db, keys, []));
  const scans = scansOf(plan, 'events');
  assert.deepEqual(scans, ['Index Scan events_pkey'], JSON.stringify(plan));
  const { targets } = await readAndRecord(pool, keys, []);
  assert.deepEqual(
    targets.map((target) => target?.event?.id),
    [7, 1500, 2999].map((n) => `evt_surge${String(n).padStart(17, '0')}`),
  );
});

// The listing by status has no index on status (a success's record would then write an entry
// in every index: migrations/013_hot_delivery_records.sql). The dead letters, a few among a
// merchant's many delivered, are read through the partial index of the deliveries given up;
// the delivered, most of them, walking the primary key newest first.
test('the dead letters are listed through their own index, the delivered by the primary key', async () => {
  const merchant = 'acct_plans000000000000000002';
  const total = 3000;
  const dead = [10, 1200, 2500];
  await pool.query(`insert into events (merchant_id, id, type, object_id, data, created_at, sequence)
    select '${merchant}', 'evt_dl' || lpad(n::text, 20, '0'), 'payment_intent.created', 'pi_dl' || n, '{}', now(), 1
    from generate_series(1, ${total}) n`);
  await pool.query(`insert into webhook_endpoints (merchant_id, id, url, enabled_events, status, secret, created_at, updated_at)
    values ('${merchant}', 'we_dl', 'https://example.com/hook', '{*}', 'enabled', 'whsec_AAAA', now(), now())`);
  await pool.query(
    `insert into webhook_deliveries (merchant_id, id, endpoint_id, event_id, status, attempts, created_at, updated_at)
     select '${merchant}', 'wd_dl' || lpad(n::text, 20, '0'), 'we_dl', 'evt_dl' || lpad(n::text, 20, '0'),
       case when n = any($1::int[]) then 'dead' else 'succeeded' end, 1, now(), now()
     from generate_series(1, ${total}) n`,
    [dead],
  );
  await pool.query('analyze webhook_deliveries');
  const indexesRead = (plan: PlanNode) => planNodes(plan).flatMap((node) => node['Index Name'] ?? []);

  const deadLetters = { merchantId: merchant, status: 'dead', limit: 11 };
  const deadPlan = await planOf(pool, (db) => selectDeliveries(db, deadLetters));
  assert.deepEqual(indexesRead(deadPlan), ['webhook_deliveries_undelivered'], JSON.stringify(deadPlan));
  assert.deepEqual(
    (await selectDeliveries(pool, deadLetters)).map((delivery) => delivery.id),
    [...dead].reverse().map((n) => `wd_dl${String(n).padStart(20, '0')}`),
  );

  const delivered = { merchantId: merchant, status: 'succeeded', limit: 11 };
  const deliveredPlan = await planOf(pool, (db) => selectDeliveries(db, delivered));
  assert.deepEqual(scansOf(deliveredPlan, 'webhook_deliveries'), ['Index Scan webhook_deliveries_pkey'], JSON.stringify(deliveredPlan));
  assert.equal((await selectDeliveries(pool, delivered)).length, 11);
});
