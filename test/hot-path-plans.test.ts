/**
 * Every lookup of the surge's batch statements is served by an index, with tables as large as a
 * surge makes them: tens of thousands of holds, orders, payments, keys and pending expiry jobs.
 * EXPLAIN each statement exactly as its function sends it (caught, not run), with a batch of
 * real ids, and fail on a sequential scan of any large table: one such scan runs for every
 * batch, so each request would pay for the whole table.
 *
 * What it is for: an index the statement cannot use. A paid hold's expiry job was once found by
 * a key built from the hold id, which took the id's collation "C"; graphile-worker's index on
 * key (default collation) could not serve that comparison, and each paid checkout scanned every
 * pending expiry of the surge (bench/README.md, the twentieth session). Plans made while the
 * tables were near empty are another matter, handled by refreshing them (platform/db/pool.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type RecordRow,
  recordSucceeded,
  type SettleRow,
  type StartRow,
  settleCaptured,
  startAuthorizations,
} from '../src/payments/confirm-batch-sql.js';
import type { Queryable } from '../src/platform/db/pool.js';
import { insertJobsSql } from '../src/platform/jobs/queue.js';
import { convertPaidHolds, lockStock, openBatch, selectHoldsByIds, writeHolds } from '../src/sales/batch-sql.js';
import { EXPIRE_HOLD_TASK, RELEASE_ADMISSION_TASK } from '../src/sales/holds.js';
import { selectOrdersByIds } from '../src/sales/orders-sql.js';
import { createTestDatabase } from './helpers.js';
import { type PlanNode, planNodes, planOf } from './plans.js';

const { pool } = await createTestDatabase();

// A surge's tables: buyers holding (each with a pending expiry job) and as many paid.
const HOLDS_PENDING = 20_000;
const HOLDS_PAID = 20_000;
// A table with more rows than this is large: scanning it once per batch is the mistake.
const LARGE_TABLE_ROWS = 5_000;
const BATCH = 12;

const MERCHANT = 'acct_hotpathplans000000000';
const SALE = 'sale_hotpathplans000000000';
const ITEM = 'item_hotpathplans000000000';
const id = (prefix: string, n: number) => `${prefix}_${String(n).padStart(22, '0')}`;

// Holds 1..HOLDS_PENDING are active with their expiry jobs; the rest are converted, each with
// its paid order, PaymentIntent, attempt, event and keys.
await pool.query(`
  insert into merchants (merchant_id, name) values ('${MERCHANT}', 'Hot path plans');
  insert into sales (merchant_id, id, name, currency, opens_at, per_buyer_limit, hold_seconds, admit_per_second, max_shoppers, grace_seconds)
    values ('${MERCHANT}', '${SALE}', 'sale', 'usd', now() - interval '1 day', 4, 600, 100, 1000, 30);
  insert into sale_items (merchant_id, id, sale_id, name, price, stock_total, stock_allocated)
    values ('${MERCHANT}', '${ITEM}', '${SALE}', 'item', 500, 1000000, ${HOLDS_PENDING + HOLDS_PAID});
  insert into holds (merchant_id, id, sale_id, buyer_reference, status, amount, currency, expires_at, admission_ticket)
    select '${MERCHANT}', 'hold_' || lpad(n::text, 22, '0'), '${SALE}', 'buyer-' || n,
           case when n <= ${HOLDS_PENDING} then 'active' else 'converted' end, 500, 'usd', now() + interval '10 minutes',
           'ticket-' || n
    from generate_series(1, ${HOLDS_PENDING + HOLDS_PAID}) n;
  insert into hold_lines (merchant_id, hold_id, item_id, quantity)
    select '${MERCHANT}', 'hold_' || lpad(n::text, 22, '0'), '${ITEM}', 1 from generate_series(1, ${HOLDS_PENDING + HOLDS_PAID}) n;
  insert into graphile_worker._private_tasks (identifier) values ('${EXPIRE_HOLD_TASK}') on conflict do nothing;
  ${insertJobsSql({
    task: `'${EXPIRE_HOLD_TASK}'`,
    payload: "'{}'",
    runAt: "now() + interval '10 minutes'",
    key: `'${EXPIRE_HOLD_TASK}:hold_' || lpad(n::text, 22, '0')`,
    from: `from generate_series(1, ${HOLDS_PENDING}) n`,
  })};
  insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, created_at, updated_at)
    select '${MERCHANT}', 'pi_' || lpad(n::text, 22, '0'), 500, 'usd',
           case when n <= ${HOLDS_PENDING} then 'requires_payment_method' else 'succeeded' end, 'automatic', now(), now()
    from generate_series(1, ${HOLDS_PENDING + HOLDS_PAID}) n;
  insert into orders (merchant_id, id, sale_id, hold_id, payment_intent_id, amount, currency, status, paid_at)
    select '${MERCHANT}', 'ord_' || lpad(n::text, 22, '0'), '${SALE}', 'hold_' || lpad(n::text, 22, '0'), 'pi_' || lpad(n::text, 22, '0'),
           500, 'usd', case when n <= ${HOLDS_PENDING} then 'awaiting_payment' else 'paid' end,
           case when n <= ${HOLDS_PENDING} then null else now() end
    from generate_series(1, ${HOLDS_PENDING + HOLDS_PAID}) n;
  insert into payment_attempts (merchant_id, id, payment_intent_id, operation, amount, provider_idempotency_key, status)
    select '${MERCHANT}', 'pa_' || lpad(n::text, 22, '0'), 'pi_' || lpad(n::text, 22, '0'), 'authorize', 500, 'pk-' || n, 'succeeded'
    from generate_series(${HOLDS_PENDING + 1}, ${HOLDS_PENDING + HOLDS_PAID}) n;
  insert into events (merchant_id, id, type, object_id, data, created_at, sequence)
    select '${MERCHANT}', 'evt_' || lpad(n::text, 22, '0'), 'payment_intent.created', 'pi_' || lpad(n::text, 22, '0'), '{}', now(), 1
    from generate_series(1, ${HOLDS_PENDING + HOLDS_PAID}) n;
  insert into idempotency_keys (merchant_id, key_kind, idempotency_key, request_method, request_path, request_fingerprint,
                                recovery_point, expires_at)
    select '${MERCHANT}', 'secret', 'key-' || n, 'POST', '/v1/holds', '\\x00', 'finished', now() + interval '1 day'
    from generate_series(1, ${3 * HOLDS_PAID}) n;
  analyze;`);

function seqScans(node: PlanNode): string[] {
  return planNodes(node)
    .filter((child) => child['Node Type'] === 'Seq Scan' && child['Relation Name'])
    .map((child) => child['Relation Name'] as string);
}

function indexesOn(node: PlanNode, relation: string): string[] {
  return planNodes(node)
    .filter((child) => child['Relation Name'] === relation && child['Index Name'])
    .map((child) => child['Index Name'] as string);
}

async function largeTables(): Promise<Set<string>> {
  const { rows } = await pool.query<{ relname: string }>(
    `select relname from pg_class
     where relkind = 'r' and relnamespace in ('public'::regnamespace, 'graphile_worker'::regnamespace) and reltuples > $1`,
    [LARGE_TABLE_ROWS],
  );
  return new Set(rows.map((row) => row.relname));
}

// A batch of the surge's requests, spread over the tables.
const pending = Array.from({ length: BATCH }, (_, n) => 1 + n * 1_500);
const paid = pending.map((n) => HOLDS_PENDING + n);
const scoped = (ids: string[]) => ({ merchantIds: ids.map(() => MERCHANT), ids });

const statements: [string, (db: Queryable) => Promise<unknown>][] = [
  [
    'a hold batch opens: the sale, keys that exist, buyers locked (openBatch)',
    (db) =>
      openBatch(db, {
        merchantId: MERCHANT,
        keyKind: 'secret',
        saleId: SALE,
        keys: pending.map((n) => `key-${n}`),
        buyers: pending.map((n) => `buyer-${n}`),
      }),
  ],
  [
    "a hold batch counts its buyers' units and tickets and locks the item (lockStock)",
    (db) =>
      lockStock(db, {
        merchantId: MERCHANT,
        saleId: SALE,
        buyers: pending.map((n) => `buyer-${n}`),
        tickets: pending.map((n) => `ticket-${n}`),
        itemIds: [ITEM],
      }),
  ],
  [
    'a hold batch writes its holds, lines, expiry jobs and keys (writeHolds)',
    (db) =>
      writeHolds(db, {
        merchantId: MERCHANT,
        saleId: SALE,
        currency: 'usd',
        expiresAt: new Date(Date.now() + 600_000),
        createdAt: new Date(),
        taken: new Map([[ITEM, BATCH]]),
        holds: pending.map((n) => ({
          id: id('hold_new', n),
          buyer_reference: `new-buyer-${n}`,
          admission_ticket: `new-ticket-${n}`,
          amount: 500,
          lines: [{ item_id: ITEM, quantity: 1 }],
        })),
        expiryTask: EXPIRE_HOLD_TASK,
        keys: {
          merchantId: MERCHANT,
          keyKind: 'secret',
          method: 'POST',
          path: '/v1/holds',
          ttlHours: 24,
          keys: pending.map((n) => ({
            key: `new-key-${n}`,
            fingerprint: Buffer.alloc(32, n % 256),
            status: 200,
            body: { id: id('hold_new', n) },
          })),
        },
      }),
  ],
  [
    'an order batch reads its holds (selectHoldsByIds)',
    (db) => {
      const holds = scoped(pending.map((n) => id('hold', n)));
      return selectHoldsByIds(db, holds.merchantIds, holds.ids);
    },
  ],
  [
    'paid orders are read back (selectOrdersByIds)',
    (db) => {
      const orders = scoped(paid.map((n) => id('ord', n)));
      return selectOrdersByIds(db, orders.merchantIds, orders.ids);
    },
  ],
  [
    'a confirm batch starts: intents locked, keys written, attempts added (startAuthorizations)',
    (db) =>
      startAuthorizations(
        db,
        pending.map(
          (n): StartRow => ({
            merchantId: MERCHANT,
            keyKind: 'secret',
            key: `confirm-${n}`,
            method: 'POST',
            path: `/v1/payment_intents/${id('pi', n)}/confirm`,
            fingerprint: Buffer.alloc(32, n % 256),
            intentId: id('pi', n),
            paymentMethod: 'pm_card_visa',
            attemptId: id('pa', n),
            providerKey: `pk-new-${n}`,
          }),
        ),
        24,
      ),
  ],
  [
    'a confirm batch settles its captures (settleCaptured)',
    (db) =>
      settleCaptured(
        db,
        paid.map(
          (n): SettleRow => ({ merchantId: MERCHANT, intentId: id('pi', n), attemptId: id('pa', n), reference: `ch_${n}`, received: 500 }),
        ),
      ),
  ],
  [
    "a confirm batch records its payments' events, captures and answers (recordSucceeded)",
    (db) =>
      recordSucceeded(
        db,
        paid.map(
          (n): RecordRow => ({
            merchantId: MERCHANT,
            intentId: id('pi', n),
            eventId: id('evt_new', n),
            view: { id: id('pi', n), object: 'payment_intent', status: 'succeeded' },
            ledgerTransactionId: id('ltx', n),
            currency: 'usd',
            amount: 500,
            keyKind: 'secret',
            key: `key-${n}`,
            status: 200,
            body: { id: id('pi', n) },
          }),
        ),
        new Date(),
      ),
  ],
  [
    'paid holds are converted and their expiry jobs removed (convertPaidHolds)',
    (db) =>
      convertPaidHolds(
        db,
        RELEASE_ADMISSION_TASK,
        pending.map((n) => ({ merchantId: MERCHANT, id: id('pi', n) })),
      ),
  ],
];

describe('the surge batch statements on surge-sized tables', () => {
  test('the seeded tables are large', async () => {
    const large = await largeTables();
    for (const table of [
      'holds',
      'hold_lines',
      'orders',
      'payment_intents',
      'payment_attempts',
      'events',
      'idempotency_keys',
      '_private_jobs',
    ]) {
      assert.ok(large.has(table), `${table} has more than ${LARGE_TABLE_ROWS} rows`);
    }
  });

  for (const [name, send] of statements) {
    test(`${name}: no large table is scanned`, async () => {
      const [plan, large] = await Promise.all([planOf(pool, send), largeTables()]);
      assert.deepEqual(
        seqScans(plan).filter((table) => large.has(table)),
        [],
        'a sequential scan of a large table, once per batch',
      );
    });
  }

  test("each paid hold's expiry job is found through graphile-worker's index on key", async () => {
    const plan = await planOf(
      pool,
      statements.find(([name]) => name.includes('convertPaidHolds'))?.[1] as (db: Queryable) => Promise<unknown>,
    );
    const { rows } = await pool.query<{ indexname: string }>(
      `select indexname from pg_indexes where schemaname = 'graphile_worker' and tablename = '_private_jobs' and indexdef like '%(key)'`,
    );
    assert.equal(rows.length, 1, 'graphile-worker indexes its jobs by key');
    assert.ok(indexesOn(plan, '_private_jobs').includes(rows[0]?.indexname as string), 'the job is probed by its key');
  });
});
