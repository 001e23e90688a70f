/**
 * `npm run bench:ha`: the local HA cluster (src/cli/cluster) measured.
 *
 *   1. Payment throughput (create + confirm, the simulator answering) with one API node called
 *      directly, and with two API nodes behind HAProxy, alternating in each round, same clients.
 *      On a 2-core machine running everything (PostgreSQL pair, etcd, HAProxy, Redis, the
 *      nodes and the load) the ratio says what the balancer and a second process cost, not
 *      how the API scales across machines.
 *   2. Failover time over several runs: the PostgreSQL primary SIGKILLed (Patroni and
 *      postmaster, a node crash) under retrying load → the first payment started after the
 *      crash that succeeds. The old primary rejoins (pg_rewind) before the next run.
 *
 *   npm run bench:ha                               3 rounds of 10 s, 3 failovers
 *   npm run bench:ha -- --rounds 1 --duration 5 --failovers 1 --clients 8
 *
 * The record goes to bench/results/ha-<timestamp>.json.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { LocalCluster } from '../src/cli/cluster/cluster.js';
import { sleep, waitFor } from '../src/cli/cluster/processes.js';
import { PaymentLoad, tally } from '../test/faults/load.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '10' },
    failovers: { type: 'string', default: '3' },
    clients: { type: 'string', default: '8' },
  },
});
const ROUNDS = Number(values.rounds);
const DURATION_MS = Number(values.duration) * 1000;
const FAILOVERS = Number(values.failovers);
const CLIENTS = Number(values.clients);

interface ThroughputPhase {
  kind: 'one_node_direct' | 'two_nodes_haproxy';
  round: number;
  payments: number;
  perSecond: number;
  statuses: Record<string, number>;
}

interface FailoverRun {
  run: number;
  killed: string;
  promoted: string;
  promotedAfterS: number;
  paymentsAgainAfterS: number;
  lost: number;
  statuses: Record<string, number>;
}

async function throughput(
  cluster: LocalCluster,
  secretKey: string,
  kind: ThroughputPhase['kind'],
  round: number,
): Promise<ThroughputPhase> {
  const baseUrl = kind === 'one_node_direct' ? cluster.apiNodeUrl(0) : cluster.apiUrl;
  // A short warm-up, not counted: connections opened, code paths compiled.
  const warm = new PaymentLoad({ baseUrl, secretKey, concurrency: CLIENTS, retry: false }).start();
  await sleep(1_000);
  await warm.stop();
  const load = new PaymentLoad({ baseUrl, secretKey, concurrency: CLIENTS, retry: false });
  const started = Date.now();
  load.start();
  await sleep(DURATION_MS);
  await load.stop();
  const seconds = (Date.now() - started) / 1000;
  const payments = load.succeeded().length;
  const phase = { kind, round, payments, perSecond: Math.round((payments / seconds) * 10) / 10, statuses: tally(load.attempts) };
  console.log(`  round ${round} ${kind.padEnd(18)} ${String(phase.perSecond).padStart(7)} payments/s  ${JSON.stringify(phase.statuses)}`);
  return phase;
}

async function failover(cluster: LocalCluster, secretKey: string, run: number, db: import('pg').Pool): Promise<FailoverRun> {
  const killed = await cluster.primaryName();
  if (!killed) throw new Error('no primary');
  const load = new PaymentLoad({ baseUrl: cluster.apiUrl, secretKey, concurrency: CLIENTS, retry: true }).start();
  await sleep(2_000);
  const crashedAt = Date.now();
  cluster.crashPgNode(killed);
  const promoted = await waitFor(
    'promotion',
    60_000,
    async () => {
      const name = await cluster.primaryName();
      return name && name !== killed ? name : undefined;
    },
    100,
  );
  const promotedAt = Date.now();
  const againAt = await waitFor(
    'a payment succeeds',
    60_000,
    async () => {
      const ends = load.attempts.filter((a) => a.status === 200 && a.startedAt >= crashedAt).map((a) => a.endedAt);
      return ends.length > 0 ? Math.min(...ends) : undefined;
    },
    100,
  );
  await sleep(1_000);
  await load.stop();
  const ids = load.succeeded().map((a) => a.paymentId);
  const found = await db.query('select count(*)::int as n from payment_intents where id = any($1) and status = $2', [ids, 'succeeded']);
  const result = {
    run,
    killed,
    promoted,
    promotedAfterS: Math.round((promotedAt - crashedAt) / 100) / 10,
    paymentsAgainAfterS: Math.round((againAt - crashedAt) / 100) / 10,
    lost: ids.length - found.rows[0].n,
    statuses: tally(load.attempts),
  };
  console.log(
    `  failover ${run}: ${killed} killed, ${promoted} primary after ${result.promotedAfterS} s, payments again after ${result.paymentsAgainAfterS} s, ${result.lost} of ${ids.length} acknowledged lost`,
  );
  await cluster.startPatroni(killed);
  await cluster.waitDatabaseHealthy(120_000);
  return result;
}

async function main() {
  const pg = (await import('pg')).default;
  console.log(
    `bench:ha — ${os.cpus().length} cores, load ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}; starting the cluster`,
  );
  const cluster = await LocalCluster.up({
    apiNodes: 2,
    workers: 1,
    env: { FLOODGATE_RATE_LIMIT_IP_PER_SECOND: '0', FLOODGATE_IDEMPOTENCY_LOCK_TIMEOUT_MS: '8000', FLOODGATE_PROVIDER_TIMEOUT_MS: '3000' },
    log: (message) => console.log(`  ${message}`),
  });
  const db = new pg.Pool({ connectionString: cluster.databaseUrl, max: 2 });
  db.on('error', () => {});
  try {
    const created = await cluster.runFloodgate(['merchants', 'create', 'Bench', '--json']);
    const secretKey = JSON.parse(created.stdout).secret_key as string;
    const phases: ThroughputPhase[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternating order, so a drift in the machine's load does not favour one kind.
      const kinds: ThroughputPhase['kind'][] =
        round % 2 ? ['one_node_direct', 'two_nodes_haproxy'] : ['two_nodes_haproxy', 'one_node_direct'];
      for (const kind of kinds) phases.push(await throughput(cluster, secretKey, kind, round));
    }
    const one = median(phases.filter((p) => p.kind === 'one_node_direct').map((p) => p.perSecond));
    const two = median(phases.filter((p) => p.kind === 'two_nodes_haproxy').map((p) => p.perSecond));
    const ratios = phases
      .filter((p) => p.kind === 'two_nodes_haproxy')
      .map((p) => {
        const direct = phases.find((q) => q.kind === 'one_node_direct' && q.round === p.round);
        return direct ? Math.round((p.perSecond / direct.perSecond) * 100) / 100 : Number.NaN;
      });
    const runs: FailoverRun[] = [];
    for (let run = 1; run <= FAILOVERS; run++) runs.push(await failover(cluster, secretKey, run, db));
    const audit = await cluster.runFloodgate(['audit']);
    const record = {
      at: new Date().toISOString(),
      machine: { cores: os.cpus().length, model: os.cpus()[0]?.model, loadavg: os.loadavg() },
      options: { rounds: ROUNDS, durationS: DURATION_MS / 1000, failovers: FAILOVERS, clients: CLIENTS },
      throughput: { phases, medianPerSecond: { one_node_direct: one, two_nodes_haproxy: two }, ratioTwoOverOnePerRound: ratios },
      failover: {
        runs,
        medianPaymentsAgainAfterS: median(runs.map((r) => r.paymentsAgainAfterS)),
        maxPaymentsAgainAfterS: Math.max(...runs.map((r) => r.paymentsAgainAfterS)),
        acknowledgedLost: runs.reduce((sum, r) => sum + r.lost, 0),
      },
      auditClean: audit.code === 0,
    };
    console.log(`
payments/s (median of ${ROUNDS})   one node direct ${one}   two nodes behind HAProxy ${two}   ratio per round ${ratios.join(', ')}
failover (primary killed → first payment succeeding), ${FAILOVERS} runs: ${runs.map((r) => r.paymentsAgainAfterS).join(', ')} s; promotion ${runs.map((r) => r.promotedAfterS).join(', ')} s; acknowledged payments lost: ${record.failover.acknowledgedLost}
audit: ${audit.code === 0 ? 'clean' : audit.stdout}`);
    const dir = path.join(import.meta.dirname, 'results');
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, `ha-${record.at.replaceAll(':', '-').replace('.', '-')}.json`);
    await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
    console.log(`record: ${path.relative(process.cwd(), file)}`);
  } finally {
    await db.end().catch(() => {});
    await cluster.down();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
