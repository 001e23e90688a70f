/**
 * Reports on a real streaming replica (a PostgreSQL primary and hot standby started for this
 * file): served by the replica while it keeps up, by the primary — saying so and why — when it
 * lags, hangs or dies; and reads that must see the caller's own writes never go to it.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createPool, type Pool } from '../../src/platform/db/pool.js';
import { buildTestApp, createTestMerchant, key, startTestSimulator, TEST_PROVIDER_WEBHOOK_SECRET } from '../helpers.js';
import { startStreamingPair, streamingPairSkip } from '../pg-replica.js';

const skip = streamingPairSkip();
// The lag bound these tests run with: long enough that a replica keeping up on a loaded machine
// is inside it, short enough that a paused one leaves it within a second or two.
const MAX_LAG_MS = 1_000;
const today = () => new Date().toISOString().slice(0, 10);

async function setup() {
  const pair = await startStreamingPair();
  after(() => pair.stop());
  // Each node has its own pool, as separate processes would.
  const pools = [0, 1].map(() => createPool({ connectionString: pair.primaryUrl, max: 10, statementTimeoutMs: 30_000 }));
  after(() => Promise.all(pools.map((pool) => pool.end())));
  const sim = await startTestSimulator({ webhookSecret: TEST_PROVIDER_WEBHOOK_SECRET });
  const config = { replicaUrls: [pair.replicaUrl], replicaMaxLagMs: MAX_LAG_MS };
  const nodes = [await buildTestApp(pools[0] as Pool, sim.url, config), await buildTestApp(pools[1] as Pool, sim.url, config)];
  const merchant = await createTestMerchant(pools[0] as Pool);
  return { pair, nodes, merchant };
}

// Started at the file's top level, so the helpers' after() hooks run when the file ends.
const ctx = skip ? undefined : await setup();

describe('reports on a streaming replica', { skip }, () => {
  const { pair, nodes, merchant } = ctx as Awaited<ReturnType<typeof setup>>;

  const auth = () => ({ authorization: `Bearer ${merchant.secretKey}` });
  const pay = async (node = 0, confirm = true) => {
    const response = await nodes[node]!.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: { ...auth(), 'idempotency-key': key('pi') },
      payload: confirm
        ? { amount: 1000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true }
        : { amount: 1000, currency: 'usd' },
    });
    assert.equal(response.statusCode, 200, response.body);
    return response.json() as { id: string; status: string };
  };
  const report = async (node = 0) => {
    const response = await nodes[node]!.app.inject({ method: 'GET', url: `/v1/reports/payments?from=${today()}`, headers: auth() });
    assert.equal(response.statusCode, 200, response.body);
    const body = response.json();
    const rows = body.data as Array<{ status: string; count: number }>;
    const succeeded = rows.find((row) => row.status === 'succeeded');
    const all = rows.reduce((sum, row) => sum + row.count, 0);
    return { source: body.source, headers: response.headers, count: (succeeded?.count ?? 0) as number, all };
  };

  test('a replica that keeps up serves the report and says how fresh it is', async () => {
    await pay();
    await pay();
    await pair.waitCaughtUp();
    const { source, headers, count } = await report();
    assert.equal(source.served_by, 'replica');
    assert.equal(source.replica, `127.0.0.1:${pair.replicaPort}`);
    assert.equal(source.fallback_reason, null);
    assert.ok(source.lag_ms <= MAX_LAG_MS, JSON.stringify(source));
    assert.equal(headers['floodgate-read-source'], 'replica');
    assert.equal(headers['floodgate-read-lag-ms'], String(source.lag_ms));
    assert.equal(count, 2);
  });

  test('a lagging replica: the report falls back to the primary, says so, and has the newest payments', async () => {
    await pair.pauseReplay();
    try {
      const before = (await report()).count;
      await pay();
      // The replica stays at its last replayed commit; once that is older than the bound it is skipped.
      await new Promise((resolve) => setTimeout(resolve, MAX_LAG_MS + 300));
      const { source, headers, count } = await report();
      assert.equal(source.served_by, 'primary');
      assert.equal(source.fallback_reason, 'replica_lagging');
      assert.equal(headers['floodgate-read-fallback'], 'replica_lagging');
      assert.equal(count, before + 1);
      // And the replica itself really is behind: what it would have answered is stale.
      const stale = createPool({ connectionString: pair.replicaUrl, max: 1, statementTimeoutMs: 5_000 });
      const { rows } = await stale.query(`select count(*)::int as n from payment_intents where merchant_id = $1 and status = 'succeeded'`, [
        merchant.id,
      ]);
      await stale.end();
      assert.equal(rows[0].n, before);
    } finally {
      await pair.resumeReplay();
    }
    await pair.waitCaughtUp();
    const back = await report();
    assert.equal(back.source.served_by, 'replica');
  });

  test('1,000 create-then-read pairs across two nodes: every read sees its write, even with the replica paused', async () => {
    // With replay paused, any read of an object that went to the replica would miss its write.
    await pair.pauseReplay();
    const before = (await report()).all;
    const PAIRS = 1_000;
    const CONCURRENCY = 10;
    let misses = 0;
    let next = 0;
    const worker = async () => {
      while (next < PAIRS) {
        const i = next++;
        // Created without confirming: the pair is about the database, not the provider.
        const created = await pay(i % 2, false);
        const reader = nodes[(i + 1) % 2]!;
        const read = await reader.app.inject({ method: 'GET', url: `/v1/payment_intents/${created.id}`, headers: auth() });
        if (read.statusCode !== 200 || read.json().id !== created.id || read.json().status !== created.status) misses++;
        if (i % 100 === 0) {
          const list = await reader.app.inject({ method: 'GET', url: '/v1/payment_intents?limit=100', headers: auth() });
          if (!list.json().data.some((intent: { id: string }) => intent.id === created.id)) misses++;
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    assert.equal(misses, 0);
    // The report meanwhile says it read the primary, and counts every one of them.
    const { source, all } = await report(1);
    assert.equal(source.served_by, 'primary');
    assert.equal(all, before + PAIRS);
    await pair.resumeReplay();
    await pair.waitCaughtUp();
  });

  test('a replica that hangs (SIGSTOP), then one that is gone: reports come from the primary and say why', async () => {
    pair.freezeReplica();
    try {
      const { source, count } = await report();
      assert.equal(source.served_by, 'primary');
      assert.equal(source.fallback_reason, 'replica_unreachable');
      assert.ok(count > 0);
      // The next report does not wait on the hung replica again.
      const again = await report(0);
      assert.equal(again.source.fallback_reason, 'replica_unreachable');
    } finally {
      pair.thawReplica();
    }
    pair.killReplica();
    const { source } = await report(1);
    assert.equal(source.served_by, 'primary');
    assert.equal(source.fallback_reason, 'replica_unreachable');
    const sale = await nodes[1]!.app.inject({ method: 'GET', url: '/v1/reports/sales/sale_0000000000000000000000', headers: auth() });
    assert.equal(sale.statusCode, 404);
    assert.equal(sale.headers['floodgate-read-fallback'], 'replica_unreachable');
  });
});
