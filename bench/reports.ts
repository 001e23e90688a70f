/**
 * `npm run bench:reports`: report latency on a streaming replica vs on the primary, under write
 * load on the primary, in the same run.
 *
 * Starts its own PostgreSQL primary and hot standby (test/pg-replica.ts: initdb + pg_basebackup
 * on free ports, as the postgres user), seeds a busy merchant, and keeps pgbench inserting
 * payments into the primary throughout. Then, in alternating phases of equal length, the
 * payments report and the sale report run in a loop through the read router, once with the
 * replica configured and once without (primary). Each phase records report latencies, where
 * the reports were served, the lag they reported, and the writes the primary took meanwhile.
 *
 *   npm run bench:reports                      3 rounds of 2 phases, 10 s each
 *   npm run bench:reports -- --rounds 2 --duration 5 --writers 4 --readers 4
 *
 * Both servers run on this machine and share its cores with pgbench: the ratio says what
 * moving reads off the primary's cores buys when they are the same cores, not what a replica
 * on its own machine buys. Absolute numbers are noisy on a shared machine; compare ratios.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createPool, type Pool } from '../src/platform/db/pool.js';
import { createReadRouter, type ReadRouter } from '../src/platform/db/replicas.js';
import { formatDay } from '../src/reporting/domain.js';
import * as reports from '../src/reporting/sql.js';
import { startStreamingPair } from '../test/pg-replica.js';

const RESULTS = path.resolve(import.meta.dirname, 'results');
const MERCHANT = `acct_${'1'.padStart(22, '0')}`;
const SALE = `sale_${'1007'.padStart(22, '0')}`;

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '10' },
    writers: { type: 'string', default: '4' },
    readers: { type: 'string', default: '4' },
    payments: { type: 'string', default: '60000' },
  },
});
const bounded = (name: string, raw: string | undefined, max: number) => {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > max) throw new Error(`--${name} must be a whole number from 1 to ${max}`);
  return value;
};
const ROUNDS = bounded('rounds', values.rounds, 20);
const DURATION_S = bounded('duration', values.duration, 600);
const WRITERS = bounded('writers', values.writers, 64);
const READERS = bounded('readers', values.readers, 64);
const PAYMENTS = bounded('payments', values.payments, 2_000_000);

async function seed(pool: Pool): Promise<void> {
  // One merchant with a month of payments and a sale of 40 items' worth of orders, among 100
  // small merchants: the shape of test/report-plans.test.ts, larger.
  await pool.query(`
    insert into merchants (merchant_id, name) select 'acct_' || lpad(m::text, 22, '0'), 'm' || m from generate_series(1, 101) m;
    insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, amount_received, created_at, updated_at)
      select 'acct_' || lpad(((n % 101) + 1)::text, 22, '0'), 'pi_' || lpad(n::text, 22, '0'), 1000 + n % 5000, (array['usd','eur','thb'])[1 + n % 3],
             (array['succeeded','requires_payment_method','canceled'])[1 + n % 3], 'automatic', case when n % 3 = 0 then 1000 + n % 5000 else 0 end,
             now() - make_interval(secs => n * 40), now()
      from generate_series(1, ${PAYMENTS}) n;
    insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, amount_received, created_at, updated_at)
      select '${MERCHANT}', 'pi_b' || lpad(n::text, 21, '0'), 2000, 'usd', 'succeeded', 'automatic', 2000, now() - make_interval(secs => n * 60), now()
      from generate_series(1, ${PAYMENTS}) n;
    insert into sales (merchant_id, id, name, currency, opens_at, per_buyer_limit, hold_seconds, admit_per_second, max_shoppers, grace_seconds)
      values ('${MERCHANT}', '${SALE}', 'sale', 'usd', now() - interval '1 day', 10, 600, 100, 1000, 30);
    insert into items (merchant_id, id, sale_id, name, price, stock_total, stock_available)
      select '${MERCHANT}', 'item_' || lpad(i::text, 22, '0'), '${SALE}', 'item', 500, 100000, 100000 from generate_series(0, 2) i;
    insert into holds (merchant_id, id, sale_id, buyer_reference, status, amount, currency, expires_at)
      select '${MERCHANT}', 'hold_' || lpad(n::text, 22, '0'), '${SALE}', 'buyer-' || n, 'converted', 500, 'usd', now() from generate_series(1, 5000) n;
    insert into hold_lines (merchant_id, hold_id, item_id, quantity)
      select '${MERCHANT}', 'hold_' || lpad(n::text, 22, '0'), 'item_' || lpad((n % 3)::text, 22, '0'), 1 from generate_series(1, 5000) n;
    insert into orders (merchant_id, id, sale_id, hold_id, payment_intent_id, amount, currency, status, paid_at)
      select '${MERCHANT}', 'ord_' || lpad(n::text, 22, '0'), '${SALE}', 'hold_' || lpad(n::text, 22, '0'), 'pi_b' || lpad(n::text, 21, '0'), 500, 'usd',
             case when n % 4 = 0 then 'awaiting_payment' else 'paid' end, now()
      from generate_series(1, 5000) n;
    analyze;`);
}

/** pgbench inserting payments for the busy merchant, until stopped. */
function startWriteLoad(url: string, dir: string) {
  const script = path.join(dir, 'write.sql');
  writeFileSync(
    script,
    `\\set n random(1, 1000000000000)
insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, created_at, updated_at)
values ('${MERCHANT}', 'pi_w' || lpad(:n::text, 21, '0') || :client_id, 1500, 'usd', 'requires_payment_method', 'automatic', now(), now())
on conflict do nothing;
`,
  );
  const child = spawn('pgbench', ['-n', '-f', script, '-c', String(WRITERS), '-j', '1', '-T', '3600', url], { stdio: 'ignore' });
  return () => child.kill('SIGINT');
}

interface Phase {
  target: 'replica' | 'primary';
  reports: number;
  latencyMs: { p50: number; p95: number; p99: number; mean: number };
  servedBy: Record<string, number>;
  lagMsMax: number;
  writesPerSecond: number;
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

async function phase(router: ReadRouter, primary: Pool, target: Phase['target']): Promise<Phase> {
  const countWrites = async () =>
    Number(
      (await primary.query(`select count(*) as n from payment_intents where merchant_id = $1 and id like 'pi_w%'`, [MERCHANT])).rows[0].n,
    );
  const writesBefore = await countWrites();
  const startedAt = performance.now();
  const deadline = startedAt + DURATION_S * 1000;
  const latencies: number[] = [];
  const servedBy: Record<string, number> = {};
  let lagMsMax = 0;
  const from = new Date(Date.now() - 30 * 86_400_000);
  const to = new Date(Date.now() + 86_400_000);
  const reader = async (index: number) => {
    for (let i = index; performance.now() < deadline; i++) {
      const began = performance.now();
      const { target: served } = await router.read(async (db) => {
        if (i % 2 === 0) return reports.selectPaymentTotals(db, MERCHANT, from, to);
        await reports.selectItemSales(db, MERCHANT, SALE);
        return reports.selectOrdersByStatus(db, MERCHANT, SALE);
      });
      latencies.push(performance.now() - began);
      const key = served.fallbackReason ? `${served.source} (${served.fallbackReason})` : served.source;
      servedBy[key] = (servedBy[key] ?? 0) + 1;
      lagMsMax = Math.max(lagMsMax, served.lagMs);
    }
  };
  await Promise.all(Array.from({ length: READERS }, (_, index) => reader(index)));
  const elapsedS = (performance.now() - startedAt) / 1000;
  const writes = (await countWrites()) - writesBefore;
  latencies.sort((a, b) => a - b);
  const round = (value: number) => Math.round(value * 100) / 100;
  return {
    target,
    reports: latencies.length,
    latencyMs: {
      p50: round(quantile(latencies, 0.5)),
      p95: round(quantile(latencies, 0.95)),
      p99: round(quantile(latencies, 0.99)),
      mean: round(latencies.reduce((sum, value) => sum + value, 0) / Math.max(1, latencies.length)),
    },
    servedBy,
    lagMsMax,
    writesPerSecond: Math.round(writes / elapsedS),
  };
}

async function main() {
  console.log(`# starting a primary and a streaming replica; seeding ${PAYMENTS * 2} payments`);
  const pair = await startStreamingPair({ database: 'floodgate_bench' });
  const primary = createPool({ connectionString: pair.primaryUrl, max: READERS + 2, statementTimeoutMs: 60_000 });
  const routers = {
    replica: createReadRouter({ primary, replicaUrls: [pair.replicaUrl], maxLagMs: 5_000, poolMax: READERS, statementTimeoutMs: 60_000 }),
    primary: createReadRouter({ primary, replicaUrls: [], maxLagMs: 5_000, poolMax: READERS, statementTimeoutMs: 60_000 }),
  };
  let stopWrites = () => {};
  try {
    await seed(primary);
    await pair.waitCaughtUp(120_000);
    stopWrites = startWriteLoad(pair.primaryUrl, pair.dir);
    // Let the write load settle before the first phase.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const phases: Array<Phase & { round: number }> = [];
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate which goes first, so a drift in the machine's load favours neither.
      const order: Phase['target'][] = round % 2 ? ['replica', 'primary'] : ['primary', 'replica'];
      for (const target of order) {
        const result = await phase(routers[target], primary, target);
        phases.push({ round, ...result });
        console.log(
          `round ${round} ${target.padEnd(7)} reports ${String(result.reports).padStart(6)}  p50 ${result.latencyMs.p50} ms  p95 ${result.latencyMs.p95} ms  p99 ${result.latencyMs.p99} ms  writes/s ${result.writesPerSecond}  served ${JSON.stringify(result.servedBy)}  max lag ${result.lagMsMax} ms`,
        );
      }
    }
    const sum = (target: Phase['target'], pick: (phase: Phase) => number) =>
      phases.filter((p) => p.target === target).reduce((total, p) => total + pick(p), 0) / ROUNDS;
    const ratios = {
      p50_replica_over_primary: Math.round((sum('replica', (p) => p.latencyMs.p50) / sum('primary', (p) => p.latencyMs.p50)) * 100) / 100,
      p95_replica_over_primary: Math.round((sum('replica', (p) => p.latencyMs.p95) / sum('primary', (p) => p.latencyMs.p95)) * 100) / 100,
      reports_replica_over_primary: Math.round((sum('replica', (p) => p.reports) / sum('primary', (p) => p.reports)) * 100) / 100,
      writes_during_replica_over_primary:
        Math.round((sum('replica', (p) => p.writesPerSecond) / sum('primary', (p) => p.writesPerSecond)) * 100) / 100,
    };
    console.log('\nmean over rounds, replica / primary:', ratios);
    const record = {
      bench: 'reports',
      at: new Date().toISOString(),
      day: formatDay(new Date()),
      options: { rounds: ROUNDS, durationS: DURATION_S, writers: WRITERS, readers: READERS, payments: PAYMENTS * 2 },
      note: 'primary, replica, pgbench and the readers share one 2-core machine with other work; compare ratios, not absolute numbers',
      phases,
      ratios,
    };
    mkdirSync(RESULTS, { recursive: true });
    const file = path.join(RESULTS, `reports-${record.at.replaceAll(':', '-').replace('.', '-')}.json`);
    writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
    console.log(`record: ${path.relative(process.cwd(), file)}`);
  } finally {
    stopWrites();
    await routers.replica.close();
    await routers.primary.close();
    await primary.end();
    await pair.stop();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
