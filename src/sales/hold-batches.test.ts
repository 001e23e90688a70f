/**
 * Batched stock allocation: every guarantee of the single path, per request, inside batches,
 * with two nodes (two batchers on their own pools) racing on one database.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { insertOpenSale } from '../../test/fixtures/sales.js';
import { createTestDatabase, createTestMerchant } from '../../test/helpers.js';
import { audit } from '../audit/service.js';
import { createLogger } from '../cli/runtime.js';
import { loadConfig } from '../config.js';
import { createPool, type Pool } from '../platform/db/pool.js';
import { fingerprint } from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import { startWorker } from '../platform/jobs/runner.js';
import { HoldBatcher } from './hold-batches.js';
import { DIRECTLY_WRITTEN_TASKS, salesTasks } from './jobs.js';
import { createHold, type SalesDeps, toApiHold } from './service.js';

const { url } = await createTestDatabase();
// Thousands of requests queue here, longer than a request would wait in production.
const pools = [0, 1].map(() => createPool({ connectionString: url, max: 10, statementTimeoutMs: 30_000, connectionTimeoutMs: 300_000 }));
after(() => Promise.all(pools.map((pool) => pool.end())));
const pool = pools[0] as Pool;
const merchant = await createTestMerchant(pool);
const IDEMPOTENCY = { ttlHours: 24, lockTimeoutMs: 60_000 };

/** A node: its own pool and batcher. Tokens are `ok:<ticket>` or anything else (refused). */
function node(nodePool: Pool, sizes: number[] = []): SalesDeps {
  return {
    pool: nodePool,
    idempotency: IDEMPOTENCY,
    checkAdmission: (token) =>
      token.startsWith('ok:')
        ? { ok: true, ticketId: token.slice(3), expiresAtMs: Date.now() + 60_000 }
        : { ok: false, reason: 'not ours' },
    confirmAdmission: async () => undefined,
    releaseAdmission: async () => undefined,
    holdBatcher: new HoldBatcher({
      pool: nodePool,
      idempotency: IDEMPOTENCY,
      windowMs: 2,
      batchMax: 200,
      synchronousCommit: false,
      view: toApiHold,
      onBatch: (size) => sizes.push(size),
    }),
  };
}

async function createSale(stock: number, perBuyerLimit = 4) {
  return insertOpenSale(pool, merchant.id, { stock, perBuyerLimit });
}

function hold(
  deps: SalesDeps,
  request: { sale: string; buyer: string; items: { item: string; quantity: number }[]; token?: string; key?: string; merchantId?: string },
) {
  const params = {
    sale: request.sale,
    buyer_reference: request.buyer,
    admission_token: request.token ?? `ok:${newId('qt')}`,
    items: request.items,
  };
  const ctx = {
    merchantId: request.merchantId ?? merchant.id,
    keyKind: 'publishable' as const,
    idempotencyKey: request.key ?? newId('key'),
    method: 'POST',
    path: '/v1/holds',
    fingerprint: fingerprint('POST', '/v1/holds', params),
  };
  return createHold(deps, ctx, params);
}

/** The pool, with every query of its clients passed through `around` with the statement's name. */
function intercepted(target: Pool, around: (name: string | undefined, run: () => Promise<unknown>) => Promise<unknown>): Pool {
  return new Proxy(target, {
    get(poolTarget, prop) {
      const value = Reflect.get(poolTarget, prop);
      if (prop !== 'connect') return typeof value === 'function' ? value.bind(poolTarget) : value;
      return async () => {
        const client = await poolTarget.connect();
        return new Proxy(client, {
          get(c, p) {
            const member = Reflect.get(c, p);
            if (p !== 'query') return typeof member === 'function' ? member.bind(c) : member;
            return (...args: unknown[]) =>
              around((args[0] as { name?: string })?.name, () => (c.query as (...a: unknown[]) => Promise<unknown>)(...args));
          },
        });
      };
    },
  });
}

const code = (reply: { body: unknown }) => (reply.body as { error?: { code: string } }).error?.code;

describe('batched holds', () => {
  test('5,000 concurrent holds on stock 100 across two nodes hold exactly 100, in batches', async () => {
    const { sale, item } = await createSale(100);
    const sizes: number[] = [];
    const nodes = pools.map((nodePool) => node(nodePool, sizes));
    const replies = await Promise.all(
      Array.from({ length: 5_000 }, (_, index) =>
        hold(nodes[index % 2] as SalesDeps, { sale: sale.id, buyer: `buyer-${index}`, items: [{ item: item.id, quantity: 1 }] }),
      ),
    );
    assert.equal(replies.filter((reply) => reply.status === 200).length, 100);
    assert.equal(replies.filter((reply) => code(reply) === 'sold_out').length, 4_900);
    const { rows } = await pool.query('select stock_available, stock_held from items where id = $1', [item.id]);
    assert.deepEqual(rows[0], { stock_available: 0, stock_held: 100 });
    assert.ok(
      sizes.some((size) => size > 1),
      `requests were allocated together (largest batch ${Math.max(...sizes)})`,
    );
    assert.deepEqual((await audit(pool)).violations, []);
  });

  test('the per-buyer limit is exact inside one batch, and one key twice in a batch makes one hold', async () => {
    const { sale, item } = await createSale(100, 4);
    const deps = node(pool);
    const replies = await Promise.all(
      Array.from({ length: 6 }, () => hold(deps, { sale: sale.id, buyer: 'greedy', items: [{ item: item.id, quantity: 1 }] })),
    );
    assert.equal(replies.filter((reply) => reply.status === 200).length, 4);
    assert.equal(replies.filter((reply) => code(reply) === 'buyer_limit_exceeded').length, 2);
    const same = { sale: sale.id, buyer: 'twice', items: [{ item: item.id, quantity: 1 }], token: 'ok:qt_same', key: newId('key') };
    const [first, second] = await Promise.all([hold(deps, same), hold(deps, same)]);
    assert.equal(first?.status, 200);
    assert.deepEqual(second?.body, first?.body, 'the second answer is the first one replayed');
    const { rows } = await pool.query('select count(*)::int as n from holds where buyer_reference = $1', ['twice']);
    assert.equal(rows[0].n, 1);
  });

  test("a retry in a batch of new requests replays, and its buyer's new requests still count its hold against the limit", async () => {
    // The batch reads its stock before it knows which requests are retries: the retry's rows
    // are read too, and must change nothing for the others.
    const { sale, item } = await createSale(100, 2);
    const deps = node(pool);
    const earlier = {
      sale: sale.id,
      buyer: 'returning',
      token: `ok:${newId('qt')}`,
      items: [{ item: item.id, quantity: 1 }],
      key: newId('key'),
    };
    const first = await hold(deps, earlier);
    assert.equal(first.status, 200);
    const [replayed, ...fresh] = await Promise.all([
      hold(deps, earlier),
      hold(deps, { sale: sale.id, buyer: 'returning', items: [{ item: item.id, quantity: 1 }] }),
      hold(deps, { sale: sale.id, buyer: 'returning', items: [{ item: item.id, quantity: 1 }] }),
    ]);
    assert.equal(replayed?.replayed, true);
    assert.deepEqual(replayed?.body, first.body);
    assert.deepEqual(fresh.map((reply) => reply.status === 200 || code(reply)).sort(), [true, 'buyer_limit_exceeded'].sort());
    const { rows } = await pool.query('select stock_held from items where id = $1', [item.id]);
    assert.equal(rows[0].stock_held, 2);
  });

  test('refusals in a batch are their own: the others are held, every answer replays identically, a 403 stores no key', async () => {
    const { sale, item } = await createSale(3, 10);
    const deps = node(pool);
    const requests = [
      { sale: sale.id, buyer: 'a', token: `ok:${newId('qt')}`, items: [{ item: item.id, quantity: 2 }], key: newId('key') },
      { sale: sale.id, buyer: 'b', token: `ok:${newId('qt')}`, items: [{ item: 'item_mistyped', quantity: 1 }], key: newId('key') },
      { sale: sale.id, buyer: 'c', items: [{ item: item.id, quantity: 1 }], token: 'forged', key: newId('key') },
      { sale: sale.id, buyer: 'd', token: `ok:${newId('qt')}`, items: [{ item: item.id, quantity: 2 }], key: newId('key') },
      { sale: sale.id, buyer: 'e', token: `ok:${newId('qt')}`, items: [{ item: item.id, quantity: 1 }], key: newId('key') },
    ];
    const replies = await Promise.all(requests.map((request) => hold(deps, request)));
    assert.deepEqual(
      replies.map((reply) => reply.status === 200 || code(reply)),
      [true, 'parameter_invalid', 'admission_invalid', 'sold_out', true],
    );
    const replays = await Promise.all(requests.map((request) => hold(deps, request)));
    for (const [index, replay] of replays.entries()) {
      // A refusal of authorization (403) is never stored: it is answered again, the same way.
      assert.equal(replay.replayed, replies[index]?.status === 403 ? undefined : true);
      assert.equal(replay.status, replies[index]?.status);
      assert.deepEqual(replay.body, replies[index]?.body);
    }
    const { rows } = await pool.query('select stock_available, stock_held from items where id = $1', [item.id]);
    assert.deepEqual(rows[0], { stock_available: 0, stock_held: 3 });
  });

  test('a batch whose transaction fails sends each request down the single path', async () => {
    const { sale, item } = await createSale(10);
    let failures = 0;
    const failing = intercepted(pool, (name, run) => {
      if (name !== 'sales_batch_write_holds' || failures > 0) return run();
      failures += 1;
      return Promise.reject(new Error('deadlock detected (simulated)'));
    });
    const deps = node(failing);
    const replies = await Promise.all(
      ['x', 'y', 'z'].map((buyer) => hold(deps, { sale: sale.id, buyer, items: [{ item: item.id, quantity: 1 }] })),
    );
    assert.equal(failures, 1);
    assert.deepEqual(
      replies.map((reply) => reply.status),
      [200, 200, 200],
    );
    assert.deepEqual((await audit(pool)).violations, []);
  });

  test('a batch for a sale that does not exist refuses each request with 404, and each replay answers the same', async () => {
    const deps = node(pool);
    const item = { item: 'item_doesnotexist', quantity: 1 };
    const requests = ['p', 'q'].map((buyer) => ({
      sale: 'sale_doesnotexist',
      buyer,
      key: newId('key'),
      token: `ok:${newId('qt')}`,
      items: [item],
    }));
    const replies = await Promise.all(requests.map((request) => hold(deps, request)));
    assert.deepEqual(
      replies.map((reply) => [reply.status, code(reply)]),
      [
        [404, 'resource_missing'],
        [404, 'resource_missing'],
      ],
    );
    const replays = await Promise.all(requests.map((request) => hold(deps, request)));
    assert.deepEqual(
      replays.map((reply) => reply.body),
      replies.map((reply) => reply.body),
    );
  });

  test("a hold is answered without waiting for the line's store, and its ticket is moved there once", async () => {
    const { sale, item } = await createSale(10);
    const moved: string[] = [];
    const deps: SalesDeps = {
      ...node(pool),
      // A line's store that takes the move and never answers (a Redis that hangs).
      confirmAdmission: (_sale, ticketId) => {
        moved.push(ticketId);
        return new Promise(() => {});
      },
    };
    const reply = await hold(deps, {
      sale: sale.id,
      buyer: 'hanging-store',
      token: 'ok:qt_hanging',
      items: [{ item: item.id, quantity: 1 }],
    });
    assert.equal(reply.status, 200);
    assert.deepEqual(moved, ['qt_hanging']);
  });

  test("a batch's expiry jobs are graphile-worker's own: its runner expires the holds, one job each", async () => {
    // A new database has a task row for each job our statements write themselves (migrateJobs).
    const fresh = await createTestDatabase();
    const tasks = await fresh.pool.query<{ identifier: string }>('select identifier from graphile_worker._private_tasks order by 1');
    assert.deepEqual(
      tasks.rows.map((task) => task.identifier),
      [...DIRECTLY_WRITTEN_TASKS].sort(),
    );
    // One migrated before they were registered has none until a job of the task is added.
    await fresh.pool.query(`delete from graphile_worker._private_tasks where identifier = 'expire_hold'`);
    const freshMerchant = await createTestMerchant(fresh.pool);
    const { sale, item } = await insertOpenSale(fresh.pool, freshMerchant.id, { stock: 10 });
    let batchWrites = 0;
    let failedWrites = 0;
    const counting = intercepted(fresh.pool, async (name, run) => {
      if (name !== 'sales_batch_write_holds') return run();
      try {
        const result = await run();
        batchWrites += 1;
        return result;
      } catch (error) {
        failedWrites += 1;
        throw error;
      }
    });
    const deps = node(counting);
    const holdAll = (buyers: string[]) =>
      Promise.all(
        buyers.map((buyer) =>
          hold(deps, { sale: sale.id, buyer, items: [{ item: item.id, quantity: 1 }], merchantId: freshMerchant.id }).then((reply) => {
            assert.equal(reply.status, 200, JSON.stringify(reply.body));
            return (reply.body as { id: string }).id;
          }),
        ),
      );
    // The first batch finds no task row and its requests take the single path, whose add_job
    // adds it; the second batch writes its jobs itself.
    const ids = [...(await holdAll(['a', 'b', 'c'])), ...(await holdAll(['d', 'e', 'f']))];
    assert.deepEqual({ failedWrites, batchWrites }, { failedWrites: 1, batchWrites: 1 });
    const jobs = await fresh.pool.query<{ key: string; id: string }>(
      `select key, id from graphile_worker.jobs where task_identifier = 'expire_hold' and key = any($1::text[])`,
      [ids.map((id) => `expire_hold:${id}`)],
    );
    assert.deepEqual(jobs.rows.map((job) => job.key).sort(), ids.map((id) => `expire_hold:${id}`).sort());
    // Due now: the holds' lifetime over, their jobs moved to now through graphile-worker's API.
    await fresh.pool.query(`update holds set expires_at = now() - interval '1 second' where id = any($1::text[])`, [ids]);
    await fresh.pool.query('select graphile_worker.reschedule_jobs($1::bigint[], run_at => now())', [jobs.rows.map((job) => job.id)]);
    const worker = await startWorker({
      pool: fresh.pool,
      tasks: salesTasks({ pool: fresh.pool, releaseAdmission: async () => undefined }),
      concurrency: 2,
      lockTimeoutMs: 5_000,
      pollIntervalMs: 50,
      log: createLogger(loadConfig({}, { logLevel: 'silent' })),
    });
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const { rows } = await fresh.pool.query<{ status: string }>('select status from holds where id = any($1::text[])', [ids]);
        if (rows.every((row) => row.status === 'expired')) break;
        assert.ok(Date.now() < deadline, `holds not expired: ${rows.map((row) => row.status).join(', ')}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      await worker.stop();
    }
    const { rows } = await fresh.pool.query<{ n: number }>(
      `select count(*)::int as n from graphile_worker.jobs where task_identifier = 'expire_hold'`,
    );
    assert.equal(rows[0]?.n, 0, 'every expiry job ran and is gone');
    assert.deepEqual((await audit(fresh.pool)).violations, []);
  });
});
