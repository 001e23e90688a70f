/**
 * Converting a batch of paid holds finds each hold's expiry job by its key in graphile-worker's
 * job table, which holds every pending expiry of a surge: one per buyer holding. The probe must
 * use the table's index on key, or each paid checkout reads the whole table. It once did: the
 * key, made from a hold id (collation "C"), was compared in "C", which the index (default
 * collation) cannot serve. EXPLAIN the statement exactly as batch-sql.ts sends it, with as many
 * pending expiries as a large surge has, and fail on a sequential scan of the job table.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createTestDatabase } from '../../test/helpers.js';
import type { Queryable } from '../platform/db/pool.js';
import { convertPaidHolds } from './batch-sql.js';
import { EXPIRE_HOLD_TASK, RELEASE_ADMISSION_TASK } from './holds.js';

const { pool } = await createTestDatabase();

// Buyers holding at once in a large surge, each with a pending expiry job.
const PENDING_EXPIRIES = 20_000;
const MERCHANT = 'acct_convertplan00000000000';
const SALE = 'sale_convertplan00000000000';

await pool.query(`
  insert into merchants (merchant_id, name) values ('${MERCHANT}', 'Plan test');
  insert into sales (merchant_id, id, name, currency, opens_at, per_buyer_limit, hold_seconds, admit_per_second, max_shoppers, grace_seconds)
    values ('${MERCHANT}', '${SALE}', 'sale', 'usd', now() - interval '1 day', 10, 600, 100, 1000, 30);
  insert into holds (merchant_id, id, sale_id, buyer_reference, status, amount, currency, expires_at)
    select '${MERCHANT}', 'hold_' || lpad(n::text, 22, '0'), '${SALE}', 'buyer-' || n, 'active', 500, 'usd', now() + interval '10 minutes'
    from generate_series(1, ${PENDING_EXPIRIES}) n;
  insert into graphile_worker._private_tasks (identifier) values ('${EXPIRE_HOLD_TASK}') on conflict do nothing;
  insert into graphile_worker._private_jobs (task_id, payload, run_at, max_attempts, key)
    select (select id from graphile_worker._private_tasks where identifier = '${EXPIRE_HOLD_TASK}'), '{}',
           now() + interval '10 minutes', 25, '${EXPIRE_HOLD_TASK}:hold_' || lpad(n::text, 22, '0')
    from generate_series(1, ${PENDING_EXPIRIES}) n;
  analyze holds, graphile_worker._private_jobs;`);

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

function nodesOn(node: PlanNode, relation: string): PlanNode[] {
  const own = node['Relation Name'] === relation ? [node] : [];
  return [...own, ...(node.Plans ?? []).flatMap((child) => nodesOn(child, relation))];
}

/** The statement convertPaidHolds sends, caught instead of run. */
async function convertStatement(intents: { merchantId: string; id: string }[]): Promise<{ text: string; values: unknown[] }> {
  let sent: { text: string; values: unknown[] } | undefined;
  const catcher = {
    query: async (config: { text: string; values: unknown[] }) => {
      sent = config;
      return { rows: [{ paid: 0, converted: 0 }] };
    },
  } as unknown as Queryable;
  await convertPaidHolds(catcher, RELEASE_ADMISSION_TASK, intents);
  assert.ok(sent, 'convertPaidHolds sent a statement');
  return sent;
}

describe('converting paid holds with a surge of pending expiries', () => {
  test("each hold's expiry job is found through the index on key, never by scanning the job table", async () => {
    const intents = Array.from({ length: 14 }, (_, n) => ({ merchantId: MERCHANT, id: `pi_convertplan${String(n).padStart(13, '0')}` }));
    const { text, values } = await convertStatement(intents);
    const { rows } = await pool.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>({ text: `explain (format json) ${text}`, values });
    const plan = rows[0]?.['QUERY PLAN'][0].Plan as PlanNode;
    const jobs = nodesOn(plan, '_private_jobs');
    assert.deepEqual(
      jobs.filter((node) => node['Node Type'] === 'Seq Scan'),
      [],
      'a sequential scan of graphile-worker jobs reads every pending expiry for each paid hold',
    );
    const { rows: keyIndex } = await pool.query<{ indexname: string }>(
      `select indexname from pg_indexes where schemaname = 'graphile_worker' and tablename = '_private_jobs' and indexdef like '%(key)'`,
    );
    assert.equal(keyIndex.length, 1, 'graphile-worker indexes its jobs by key');
    assert.ok(
      jobs.some((node) => node['Index Name'] === keyIndex[0]?.indexname),
      `the expiry job is probed by its key: ${JSON.stringify(jobs.map((node) => [node['Node Type'], node['Index Name']]))}`,
    );
  });
});
