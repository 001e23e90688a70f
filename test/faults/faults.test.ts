/**
 * Faults a deployment must survive, on a real local cluster (src/cli/cluster): etcd, two
 * PostgreSQL nodes under Patroni with a synchronous standby, HAProxy, Redis, two API nodes,
 * a worker. One cluster serves every scenario in turn (it takes ~10-40 s to start); each
 * scenario repairs what it broke and ends with `floodgate audit` clean.
 *
 * The cluster is started and stopped as an operator does, through the real command
 * (`floodgate cluster up`, `status`, `down`), so the CLI is tested end to end on the same
 * cluster the faults use; the scenarios then drive it through the handle LocalCluster.load
 * makes from what `up` recorded.
 *
 * Each scenario is bounded: a few seconds of load from a handful of clients, and waits with
 * deadlines. Timings are printed (`# ...`), not asserted, except the issue's own bounds: a
 * 503 while the primary is frozen comes fast, not after a hang.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { LocalCluster } from '../../src/cli/cluster/cluster.js';
import type { ClusterStatus } from '../../src/cli/cluster/health.js';
import { findMarked, isRunning, signal, signalGroup, sleep, waitFor } from '../../src/cli/cluster/processes.js';
import { isDatabaseUnavailable } from '../../src/platform/db/errors.js';
import { createPool, SyncReplicationCanceledError, withAutocommit, withTransaction } from '../../src/platform/db/pool.js';
import { faultsSkip } from './engines.js';
import { type Attempt, PaymentLoad, tally } from './load.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const skip = faultsSkip();
const CLIENTS = 6;
// How long the synchronous standby may take to report no lag while the cluster writes.
const STANDBY_CATCH_UP_MS = 10_000;
// `cluster up` waits at most 90 s for each of its phases; a loaded machine needs several of them.
const UP_TIMEOUT_MS = 300_000;
// The API nodes' settings, given to `cluster up` in its environment, as an operator would.
const NODE_ENV = {
  // One client address (the test, through HAProxy) sends all the load.
  FLOODGATE_RATE_LIMIT_IP_PER_SECOND: '0',
  FLOODGATE_SHED_EVENT_LOOP_DELAY_MS: '2000',
  // A key held by a request whose node died is free for a retry after this.
  FLOODGATE_IDEMPOTENCY_LOCK_TIMEOUT_MS: '8000',
  FLOODGATE_PROVIDER_TIMEOUT_MS: '3000',
  FLOODGATE_DB_POOL_MAX: '10',
};

let dir: string;
let cluster: LocalCluster;
let db: pg.Pool;
let merchant: { id: string; secretKey: string; publishableKey: string };

describe('faults on a local HA cluster', { skip, concurrency: 1 }, () => {
  before(
    async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'floodgate-faults-'));
      const up = await shell(
        `"${process.execPath}" --import tsx src/cli/main.ts cluster up --api 2 --workers 1 --dir "${dir}"`,
        NODE_ENV,
        UP_TIMEOUT_MS,
      );
      for (const line of up.output.trim().split('\n')) console.log(`# cluster up: ${line}`);
      assert.equal(up.code, 0, `floodgate cluster up failed; its logs are in ${dir}`);
      cluster = await LocalCluster.load(dir);
      const created = await cluster.runFloodgate(['merchants', 'create', 'Faults', '--json']);
      assert.equal(created.code, 0, created.stderr);
      const parsed = JSON.parse(created.stdout);
      merchant = { id: parsed.merchant.id, secretKey: parsed.secret_key, publishableKey: parsed.publishable_key };
      db = new pg.Pool({ connectionString: cluster.databaseUrl, max: 2, connectionTimeoutMillis: 5_000 });
      db.on('error', () => {});
    },
    { timeout: UP_TIMEOUT_MS + 60_000 },
  );

  after(async () => {
    await db?.end().catch(() => {});
    // Whatever the tests left (a failed `up`, a `down` that missed something): every process
    // naming the directory is killed and the directory removed.
    if (!dir) return;
    for (const pid of findMarked(dir)) signal(pid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  test('floodgate cluster status names each part, its role and health', async () => {
    const status = await cluster.runFloodgate(['cluster', 'status', '--dir', dir]);
    assert.equal(status.code, 0, `${status.stdout}${status.stderr}`);
    assert.match(status.stdout, /etcd +up/);
    assert.match(status.stdout, /pg\d +leader +running/);
    assert.match(status.stdout, /pg\d +sync_standby +(running|streaming)/);
    assert.match(status.stdout, /haproxy +pg_primary +pg\d UP, pg\d DOWN|haproxy +pg_primary +pg\d DOWN, pg\d UP/);
    assert.match(status.stdout, /api1 +port \d+ +running +ready/);
    assert.match(status.stdout, /api2 +port \d+ +running +ready/);
    assert.match(status.stdout, /worker1 +running/);

    const statusJson = async () => {
      const json = await cluster.runFloodgate(['cluster', 'status', '--json', '--dir', dir]);
      assert.equal(json.code, 0, `${json.stdout}${json.stderr}`);
      return JSON.parse(json.stdout) as ClusterStatus & { healthy: boolean; urls: Record<string, string> };
    };
    // The cluster writes as it runs (the worker's jobs): a status read between a write and its
    // replay on the standby sees a few bytes of lag. The standby must catch up; an instant
    // with no write in flight is not what this checks (one run read 56 bytes).
    const report = await waitFor(
      'the synchronous standby reports no lag',
      STANDBY_CATCH_UP_MS,
      async () => {
        const status = await statusJson();
        const lag = status.members.find((m) => m.role === 'sync_standby')?.lag;
        if (Number(lag) !== 0) throw new Error(`standby lag ${lag}`);
        return status;
      },
      250,
    );
    assert.equal(report.healthy, true);
    assert.equal(report.etcd, true);
    const leaders = report.members.filter((m) => m.role === 'leader' && m.state === 'running');
    const standbys = report.members.filter((m) => m.role === 'sync_standby' && (m.state === 'running' || m.state === 'streaming'));
    assert.equal(report.members.length, 2, JSON.stringify(report.members));
    assert.equal(leaders.length, 1, 'one Patroni primary');
    assert.equal(standbys.length, 1, 'one synchronous standby');
    assert.equal(Number(standbys[0]?.lag), 0, 'the standby caught up with everything');
    const up = (section: string) =>
      Object.entries(report.haproxy[section] ?? {})
        .filter(([, state]) => state === 'UP')
        .map(([server]) => server);
    assert.deepEqual(up('pg_primary'), [leaders[0]?.name], "HAProxy's primary port goes to the leader alone");
    assert.deepEqual(up('pg_replica'), [standbys[0]?.name], "HAProxy's replica port goes to the standby");
    assert.deepEqual(up('api').sort(), ['api1', 'api2']);
    assert.deepEqual(
      report.api.map((a) => ({ running: a.running, ready: a.ready })),
      [
        { running: true, ready: true },
        { running: true, ready: true },
      ],
    );
    assert.deepEqual(report.workers, [true], '--workers 1: one worker, running');
    assert.equal(report.redis, true);
    assert.equal(report.simulator, true);
    assert.equal(report.urls.api, cluster.apiUrl);
    assert.equal(report.urls.database, cluster.databaseUrl);
  });

  test("a payment through HAProxy's API port succeeds and is in the ledger", async () => {
    // A merchant of its own, made as an operator makes one: the load tests count every payment
    // of theirs made while they run, and this one must not be among them.
    const created = await cluster.runFloodgate(['merchants', 'create', 'Cluster CLI', '--json']);
    assert.equal(created.code, 0, created.stderr);
    const own = JSON.parse(created.stdout) as { merchant: { id: string }; secret_key: string };
    const paid = await api('POST', '/v1/payment_intents', own.secret_key, {
      amount: 2_500,
      currency: 'usd',
      payment_method: 'pm_card_visa',
      confirm: true,
    });
    assert.equal(paid.status, 200, JSON.stringify(paid.body));
    assert.equal(paid.body.status, 'succeeded');
    const { rows } = await db.query(
      `select p.status, (select count(*)::int from ledger_transactions l where l.merchant_id = p.merchant_id
         and l.payment_intent_id = p.id and l.kind = 'capture') as captures
       from payment_intents p where p.merchant_id = $1 and p.id = $2`,
      [own.merchant.id, paid.body.id],
    );
    assert.deepEqual(rows, [{ status: 'succeeded', captures: 1 }]);
  });

  test('SIGKILL an API node under load: retrying clients see no failed payment, none lost or doubled', async () => {
    const load = new PaymentLoad({ baseUrl: cluster.apiUrl, secretKey: merchant.secretKey, concurrency: CLIENTS, retry: true }).start();
    await sleep(2_000);
    cluster.signalApi(0, 'SIGKILL');
    await sleep(4_000);
    await load.stop();
    report('api node killed', load);
    assert.deepEqual(load.failed(), [], 'every key ends 200 after retries');
    await assertLedgerMatches(load);
    await cluster.startApi(0);
    await cluster.waitApiUp(0, 60_000);
    await assertAuditClean();
  });

  test('SIGTERM an API node under load: it drains first and no request fails', async () => {
    const load = new PaymentLoad({ baseUrl: cluster.apiUrl, secretKey: merchant.secretKey, concurrency: CLIENTS, retry: false }).start();
    await sleep(2_000);
    const signalledAt = Date.now();
    cluster.signalApi(1, 'SIGTERM');
    await waitFor('api2 exits after draining', 40_000, async () => (cluster.apiRunning(1) ? undefined : true), 100);
    console.log(`# api2 drained and exited ${((Date.now() - signalledAt) / 1000).toFixed(1)} s after SIGTERM`);
    await sleep(1_000);
    await load.stop();
    report('api node drained', load);
    assert.ok(load.successesBetween(signalledAt, Date.now()) > 0, 'payments kept flowing during the drain');
    assert.deepEqual(tally(load.failed()), {}, 'no request failed, not even once');
    await assertLedgerMatches(load);
    await cluster.startApi(1);
    await cluster.waitApiUp(1, 60_000);
    await assertAuditClean();
  });

  test('SIGKILL the PostgreSQL primary under load: the standby takes over and every 200 is in the ledger', async () => {
    const oldPrimary = await cluster.primaryName();
    assert.ok(oldPrimary, 'a primary before the fault');
    const load = new PaymentLoad({ baseUrl: cluster.apiUrl, secretKey: merchant.secretKey, concurrency: CLIENTS, retry: true }).start();
    await sleep(2_000);
    const crashedAt = Date.now();
    cluster.crashPgNode(oldPrimary);
    const newPrimary = await waitFor('standby promoted', 60_000, async () => {
      const name = await cluster.primaryName();
      return name && name !== oldPrimary ? name : undefined;
    });
    const firstSuccess = await waitFor(
      'a payment succeeds on the new primary',
      60_000,
      async () => firstSuccessStartedAfter(load, crashedAt),
      100,
    );
    await sleep(2_000);
    await load.stop();
    console.log(
      `# primary ${oldPrimary} killed: ${newPrimary} promoted; payments succeed again after ${((firstSuccess - crashedAt) / 1000).toFixed(1)} s`,
    );
    report('primary killed', load);
    assert.deepEqual(load.failed(), [], 'every key ends 200 after retries');
    await assertLedgerMatches(load);
    await assertWorkerResumed();
    // The old primary rejoins as the synchronous standby (pg_rewind), ready for the next scenario.
    await cluster.startPatroni(oldPrimary);
    await cluster.waitDatabaseHealthy(90_000);
    await assertAuditClean();
  });

  test('SIGSTOP the primary for 10 s: requests fail fast with 503, throughput comes back after SIGCONT', async () => {
    const primary = await cluster.primaryName();
    assert.ok(primary);
    const load = new PaymentLoad({ baseUrl: cluster.apiUrl, secretKey: merchant.secretKey, concurrency: CLIENTS, retry: true }).start();
    await sleep(2_000);
    const frozenAt = Date.now();
    const frozen = cluster.freezePostgres(primary, 'SIGSTOP');
    assert.ok(frozen.length > 0, 'postgres processes to freeze');
    await sleep(10_000);
    cluster.freezePostgres(primary, 'SIGCONT', frozen);
    const thawedAt = Date.now();
    const back = await waitFor('payments succeed after SIGCONT', 60_000, async () => firstSuccessStartedAfter(load, thawedAt), 100);
    await sleep(2_000);
    await load.stop();
    const during = load.attempts.filter((a) => a.startedAt >= frozenAt && a.endedAt <= thawedAt);
    const slowest = Math.max(0, ...during.map((a) => a.endedAt - a.startedAt));
    console.log(
      `# primary frozen 10 s: ${during.length} attempts meanwhile ${JSON.stringify(tally(during))}, slowest ${slowest} ms; payments again ${((back - thawedAt) / 1000).toFixed(1)} s after SIGCONT`,
    );
    report('primary frozen', load);
    const refusals = during.filter((a) => a.status === 503);
    assert.ok(refusals.length > 0, 'the frozen primary was answered with 503s');
    for (const refusal of refusals) assert.ok(refusal.retryAfter, 'every 503 says when to retry');
    assert.equal(during.filter((a) => a.status === 500 || a.status === 0).length, 0, 'no 500 and no hang while the primary is frozen');
    // The "fast": a request meets the frozen database within the pool's 5 s connect
    // timeout or HAProxy's check (2 failures 1 s apart), never by waiting the freeze out.
    assert.ok(slowest < 8_000, `the slowest request during the freeze took ${slowest} ms`);
    assert.deepEqual(load.failed(), [], 'every key ends 200 after retries');
    await assertLedgerMatches(load);
    await cluster.waitDatabaseHealthy(90_000);
    await assertAuditClean();
  });

  test('a commit the synchronous standby never confirmed is not acknowledged (the orphan-primary trap)', async () => {
    const primary = await cluster.primaryName();
    const standby = cluster.state.ports.nodes.find((node) => node.name !== primary);
    const primaryNode = cluster.state.ports.nodes.find((node) => node.name === primary);
    assert.ok(primary && standby && primaryNode);
    // Straight to the primary, as a client of an orphaned old primary would be. The COMMIT waits
    // for the frozen standby; then it is cancelled. PostgreSQL's statement_timeout never cancels
    // that wait (it is off during commit), but a cancel request does: an operator's
    // pg_cancel_backend, a driver's or a pooler's timeout. Floodgate itself never sends one.
    const direct = createPool({
      connectionString: `postgres://postgres@127.0.0.1:${primaryNode.pgPort}/floodgate`,
      max: 1,
      statementTimeoutMs: 10_000,
    });
    const admin = createPool({
      connectionString: `postgres://postgres@127.0.0.1:${primaryNode.pgPort}/floodgate`,
      max: 1,
      statementTimeoutMs: 10_000,
    });
    try {
      await direct.query('create table if not exists faults_sync_probe (id int)');
      // Both ways a request commits: a transaction (withTransaction), and one autocommit
      // statement (withAutocommit: the payment fast path and its coalesced batches).
      const commits = {
        transaction: () =>
          withTransaction(direct, async (client) => {
            await client.query('insert into faults_sync_probe values (1)');
          }),
        autocommit: () =>
          withAutocommit(direct, async (client) => {
            await client.query('insert into faults_sync_probe values (2)');
          }),
      };
      for (const [way, commit] of Object.entries(commits)) {
        const frozen = cluster.freezePostgres(standby.name, 'SIGSTOP');
        let outcome: unknown;
        try {
          const committing = commit().then(
            () => 'acknowledged',
            (error: unknown) => error,
          );
          await waitFor(
            'the commit waits for the standby',
            10_000,
            async () => {
              const { rows } = await admin.query<{ pid: number }>("select pid from pg_stat_activity where wait_event = 'SyncRep'");
              return rows[0]?.pid;
            },
            100,
          ).then((pid) => admin.query('select pg_cancel_backend($1)', [pid]));
          outcome = await committing;
        } finally {
          cluster.freezePostgres(standby.name, 'SIGCONT', frozen);
        }
        assert.ok(outcome instanceof SyncReplicationCanceledError, `${way}: the commit must not be acknowledged, got ${String(outcome)}`);
        assert.ok(isDatabaseUnavailable(outcome), `${way}: answered as 503, retryable`);
      }
      await direct.query('drop table faults_sync_probe');
    } finally {
      await direct.end();
      await admin.end();
    }
    await cluster.waitDatabaseHealthy(60_000);
  });

  test('kill Redis during a sale: payments go on, the waiting room refuses, no oversell or double charge', async () => {
    const stock = 12;
    const sale = await api('POST', '/v1/sales', merchant.secretKey, {
      name: 'Drop',
      currency: 'usd',
      opens_at: new Date(Date.now() - 60_000).toISOString(),
      per_buyer_limit: 2,
      hold_seconds: 300,
      max_shoppers: 1000,
      admit_per_second: 1000,
      items: [{ name: 'Sneaker', price: 12_000, stock }],
    });
    assert.equal(sale.status, 200, JSON.stringify(sale.body));
    const saleId = sale.body.id as string;
    const itemId = sale.body.items[0].id as string;
    // Before the outage: ten buyers join, are admitted, hold one unit and order.
    const orders: { id: string; payment_intent: string }[] = [];
    for (let i = 0; i < 10; i++) orders.push(await buyerOrders(saleId, itemId, `before-${i}`));

    cluster.killRedis();
    await sleep(500);
    // During the outage: the line refuses new buyers rather than admitting them.
    const joins = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        api('POST', `/v1/sales/${saleId}/queue`, merchant.publishableKey, { buyer_reference: `during-${i}` }),
      ),
    );
    for (const join of joins) {
      assert.equal(join.status, 503, JSON.stringify(join.body));
      assert.equal(join.body.error.code, 'waiting_room_unavailable');
      assert.ok(join.retryAfter, 'the refusal says when to come back');
    }
    // Payments keep working: the orders placed before are paid, and plain payments go through.
    for (const order of orders) {
      const paid = await api(
        'POST',
        `/v1/payment_intents/${order.payment_intent}/confirm`,
        merchant.secretKey,
        { payment_method: 'pm_card_visa' },
        `confirm-${order.id}`,
      );
      assert.equal(paid.status, 200, JSON.stringify(paid.body));
      assert.equal(paid.body.status, 'succeeded');
    }
    const load = new PaymentLoad({ baseUrl: cluster.apiUrl, secretKey: merchant.secretKey, concurrency: 2, retry: false }).start();
    await sleep(2_000);
    await load.stop();
    report('redis down', load);
    assert.ok(load.succeeded().length > 0);
    assert.deepEqual(tally(load.failed()), {}, 'payments need no Redis');
    const ready = await fetch(`${cluster.apiNodeUrl(0)}/readyz`);
    assert.equal(ready.status, 200, 'a node without Redis stays in the balancer');
    assert.match(((await ready.json()) as { degraded: string }).degraded, /^redis: /);

    await cluster.startRedis();
    await waitFor(
      'the waiting room admits again',
      30_000,
      async () => {
        const join = await api('POST', `/v1/sales/${saleId}/queue`, merchant.publishableKey, { buyer_reference: 'after-0' });
        return join.status === 200 ? true : undefined;
      },
      500,
    );
    const { rows } = await db.query('select stock_available, stock_held, stock_sold from items where merchant_id = $1 and id = $2', [
      merchant.id,
      itemId,
    ]);
    assert.deepEqual(rows[0], { stock_available: stock - 10, stock_held: 0, stock_sold: 10 }, 'ten sold, none oversold');
    const charges = await db.query(
      `select payment_intent_id, count(*)::int as n from ledger_transactions where merchant_id = $1 and kind = 'capture'
       and payment_intent_id = any($2) group by 1`,
      [merchant.id, orders.map((o) => o.payment_intent)],
    );
    assert.equal(charges.rows.length, orders.length, 'every order charged');
    assert.ok(
      charges.rows.every((row) => row.n === 1),
      'none charged twice',
    );
    await assertAuditClean();
  });

  test('floodgate cluster down kills every part, orphans included, and removes the directory', async () => {
    const pids = cluster.state.pids;
    // One node's Patroni dies alone, as in a crash of Patroni only: its postmaster lives on, an
    // orphan that no recorded pid names.
    const node = ['pg1', 'pg2'].find((name) => cluster.postgresPids(name).length > 0);
    assert.ok(node, 'a PostgreSQL node runs before down');
    const patroni = pids.patroni[node];
    if (patroni !== undefined) signalGroup(patroni, 'SIGKILL');
    await waitFor(`${node} Patroni gone`, 10_000, async () => (patroni !== undefined && isRunning(patroni) ? undefined : true), 100);
    const orphans = cluster.postgresPids(node);
    assert.ok(orphans.length > 0, `${node}'s postmaster outlives its Patroni`);
    const started = [
      pids.etcd,
      pids.haproxy,
      pids.redis,
      pids.simulator,
      ...Object.values(pids.patroni),
      ...pids.api,
      ...pids.workers,
      ...cluster.postgresPids('pg1'),
      ...cluster.postgresPids('pg2'),
    ];
    // Only what runs now counts: a pid that died earlier may belong to someone else by the end.
    const alive = started.filter((pid): pid is number => pid !== undefined && isRunning(pid));
    for (const [name, pid] of Object.entries({ etcd: pids.etcd, haproxy: pids.haproxy, redis: pids.redis, simulator: pids.simulator })) {
      assert.ok(pid !== undefined && alive.includes(pid), `${name} runs before down`);
    }
    // Through a shell whose own command line names the directory too: down must not kill its caller.
    const down = await shell(`"${process.execPath}" --import tsx src/cli/main.ts cluster down --dir "${dir}"`);
    assert.equal(down.code, 0, down.output);
    assert.match(down.output, /stopped and removed/);
    assert.equal(existsSync(dir), false, 'the directory is removed');
    const left = alive.filter((pid) => isRunning(pid));
    assert.deepEqual(left, [], 'every process the cluster started is gone, the orphan postmaster too');
    assert.deepEqual(findMarked(dir), [], 'no process names the directory any more');
  });
});

/**
 * Runs a shell command line (as an operator's shell or npm would) with env added to ours, and
 * resolves with its exit code and output; killed after timeoutMs.
 */
function shell(command: string, env: Record<string, string> = {}, timeoutMs = 60_000): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      'sh',
      ['-c', command],
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, output: `${stdout}${stderr}` }),
    );
  });
}

/** The first success among attempts that started after `at`: its end time. */
function firstSuccessStartedAfter(load: PaymentLoad, at: number): number | undefined {
  const ends = load.attempts.filter((a) => a.status === 200 && a.startedAt >= at).map((a) => a.endedAt);
  return ends.length > 0 ? Math.min(...ends) : undefined;
}

function report(label: string, load: PaymentLoad) {
  console.log(`# ${label}: ${load.finals.size} payments, ${load.attempts.length} attempts ${JSON.stringify(tally(load.attempts))}`);
}

/**
 * The client's log against the database: every payment answered 200 exists, succeeded, and
 * has exactly one capture in the ledger; each key made exactly one payment.
 */
async function assertLedgerMatches(load: PaymentLoad) {
  const ok = load.succeeded();
  const ids = ok.map((a) => a.paymentId as string);
  assert.equal(new Set(ids).size, ids.length, 'two keys never answered with the same payment');
  const { rows } = await db.query(
    `select p.id, p.status, (select count(*)::int from ledger_transactions l
        where l.merchant_id = p.merchant_id and l.payment_intent_id = p.id and l.kind = 'capture') as captures
     from payment_intents p where p.merchant_id = $1 and p.id = any($2)`,
    [merchant.id, ids],
  );
  const found = new Map(rows.map((row) => [row.id as string, row]));
  const lost = ids.filter((id) => !found.has(id));
  assert.deepEqual(lost, [], 'payments answered 200 but missing from the database');
  for (const row of rows) {
    assert.equal(row.status, 'succeeded', row.id);
    assert.equal(row.captures, 1, `${row.id} has exactly one capture in the ledger`);
  }
  // No doubles: only this load created payments for the merchant while it ran, and each key
  // made one; a key that made two payments would show as more payments than keys answered 200.
  const from = Math.min(...load.attempts.map((a: Attempt) => a.startedAt));
  const to = Math.max(...load.attempts.map((a: Attempt) => a.endedAt));
  const made = await db.query<{ n: number }>(
    `select count(*)::int as n from payment_intents where merchant_id = $1
       and created_at between to_timestamp($2::float8 / 1000) and to_timestamp($3::float8 / 1000)`,
    [merchant.id, from - 1_000, to + 1_000],
  );
  assert.equal(made.rows[0]?.n, ids.length, 'one payment per key answered 200, none doubled, none left over');
}

/** The worker that ran before the failover, never restarted, runs a job added on the new primary. */
async function assertWorkerResumed() {
  const pid = cluster.state.pids.workers[0];
  assert.ok(pid !== undefined && isRunning(pid), 'the worker process is still the one started before the fault');
  const jobKey = `faults-probe-${Date.now()}`;
  await db.query("select graphile_worker.add_job('cleanup_idempotency_keys', '{}'::json, job_key => $1)", [jobKey]);
  await waitFor(
    'the worker runs a job on the new primary',
    60_000,
    async () => {
      const { rowCount } = await db.query('select 1 from graphile_worker.jobs where key = $1', [jobKey]);
      return rowCount === 0 ? true : undefined;
    },
    250,
  );
}

async function assertAuditClean() {
  const audit = await cluster.runFloodgate(['audit']);
  assert.equal(audit.code, 0, `floodgate audit: ${audit.stdout}${audit.stderr}`);
}

async function api(method: string, path: string, key: string, body: unknown, idempotencyKey?: string) {
  const response = await fetch(`${cluster.apiUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': 'application/json',
      ...(idempotencyKey || method === 'POST' ? { 'idempotency-key': idempotencyKey ?? crypto.randomUUID() } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await response.text();
  // biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field.
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON: kept as text for the message.
  }
  return { status: response.status, body: parsed, retryAfter: response.headers.get('retry-after') };
}

async function buyerOrders(saleId: string, itemId: string, buyer: string) {
  const joined = await api('POST', `/v1/sales/${saleId}/queue`, merchant.publishableKey, { buyer_reference: buyer });
  assert.equal(joined.body.status, 'admitted', JSON.stringify(joined.body));
  const hold = await api('POST', '/v1/holds', merchant.publishableKey, {
    sale: saleId,
    buyer_reference: buyer,
    admission_token: joined.body.admission_token,
    items: [{ item: itemId, quantity: 1 }],
  });
  assert.equal(hold.status, 200, JSON.stringify(hold.body));
  const order = await api('POST', '/v1/orders', merchant.secretKey, { hold: hold.body.id });
  assert.equal(order.status, 200, JSON.stringify(order.body));
  return order.body as { id: string; payment_intent: string };
}
