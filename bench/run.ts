/**
 * `npm run bench`: creating an unconfirmed PaymentIntent through the HTTP API, against pgbench
 * running the very statement the API sends for it, on the same database in the same run.
 *
 *   npm run bench                  full run (5 rounds, about 3 minutes)
 *   npm run bench -- --quick       one short round (under a minute)
 *   options: --rounds N --clients N --duration S (each measured phase)
 *            --profile (writes the server's CPU profile to bench/results/profiles/)
 *            --only payments|surge (one part; both by default; surge: bench/surge.ts)
 *
 * See bench/README.md for what each number means.
 */
import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { BackendCpuSampler } from './backends.js';
import type { LoadJob, LoadResult } from './loadgen.js';
import { busyFraction, busyMs, cpuSnapshot, machineInfo, processCpuMs } from './machine.js';
import { runPgbench } from './pgbench.js';
import { formatPhase, formatTable, type PhaseKind, type PhaseResult, type RunOptions, summarize, writeResults } from './report.js';
import { type ApiServer, type BenchDatabase, createBenchDatabase, startApiServer } from './setup.js';
import { buildPgbenchScript, type PgbenchScript } from './statement.js';
import { runSurge } from './surge.js';

const ADMIN_URL = process.env.FLOODGATE_BENCH_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
// The API's default pool size (FLOODGATE_DB_POOL_MAX), so the server runs as deployed.
const CLIENTS_DEFAULT = 20;
const RATE_FRACTION = 0.6;
const PROFILE_DIR = path.join(import.meta.dirname, 'results', 'profiles');
// Bounds on the load generator whatever the server does: far above what two cores can serve,
// they only cap memory and time.
const REQUESTS_PER_SECOND_MAX = 50_000;
const DRAIN_TIMEOUT_MS = 10_000;
// Open loop: more than this many seconds of scheduled requests waiting means the rate is not
// being served; the phase stops and is marked overloaded instead of queueing without end.
const BACKLOG_SECONDS_MAX = 2;
// Long enough for the server's pool to open and prepare all its connections.
const RECONNECT_S = 1;

function parseOptions(argv: string[]): RunOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      clients: { type: 'string' },
      duration: { type: 'string' },
      profile: { type: 'boolean', default: false },
      only: { type: 'string' },
    },
  });
  if (values.only !== undefined && values.only !== 'payments' && values.only !== 'surge')
    throw new Error('--only must be payments or surge');
  const quick = values.quick ?? false;
  const positive = (raw: string | undefined, fallback: number, name: string) => {
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < 1 || value > 600) throw new Error(`--${name} must be a whole number from 1 to 600`);
    return value;
  };
  // Shorter phases in more rounds beat longer ones in fewer on a shared machine: each round's
  // pair of phases sees about the same background load, and the median drops the odd one out.
  const duration = positive(values.duration, quick ? 4 : 6, 'duration');
  return {
    quick,
    rounds: positive(values.rounds, quick ? 1 : 5, 'rounds'),
    clients: positive(values.clients, CLIENTS_DEFAULT, 'clients'),
    warmupS: quick ? 3 : 5,
    maxS: duration,
    rateS: duration,
    singleS: Math.max(1, Math.round(duration / 2)),
    rateFraction: RATE_FRACTION,
    profile: values.profile ?? false,
    only: values.only as RunOptions['only'],
  };
}

/** The forked load generator: one job at a time over IPC, each bounded in time. */
class LoadGenerator {
  private readonly child: ChildProcess;

  constructor() {
    this.child = fork(path.join(import.meta.dirname, 'loadgen.ts'), [], { execArgv: ['--import', 'tsx'] });
  }

  run(job: LoadJob): Promise<LoadResult> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('load generator did not answer in time')),
        job.durationMs + DRAIN_TIMEOUT_MS + 10_000,
      );
      this.child.once('message', (message: { ok: boolean; result?: LoadResult; error?: string }) => {
        clearTimeout(timer);
        if (message.ok && message.result) resolve(message.result);
        else reject(new Error(`load generator failed: ${message.error}`));
      });
      this.child.send(job);
    });
  }

  stop(): void {
    if (this.child.connected) this.child.disconnect();
    this.child.kill();
  }
}

interface Bench {
  options: RunOptions;
  db: BenchDatabase;
  server: ApiServer;
  loadgen: LoadGenerator;
  sampler: BackendCpuSampler;
  script: PgbenchScript;
}

async function countRows(bench: Bench): Promise<number> {
  const client = new pg.Client({ connectionString: bench.db.url });
  await client.connect();
  try {
    const { rows } = await client.query<{ count: string }>('select count(*) from payment_intents');
    return Number(rows[0]?.count);
  } finally {
    await client.end();
  }
}

/** What a phase cost in CPU: the machine's, the server's and the database backends', in ms. */
interface PhaseCpu {
  machineBusy: number;
  machineMs: number;
  serverMs: number;
  backendsMs: number;
  elapsedMs: number;
}

/** Runs one phase from a freshly reset database, taking CPU readings around it. */
async function measured<T>(bench: Bench, run: () => Promise<T>): Promise<{ result: T; cpu: PhaseCpu }> {
  await bench.db.reset();
  await bench.sampler.start();
  const machineBefore = cpuSnapshot();
  const serverBefore = processCpuMs(bench.server.pid) ?? 0;
  const startedAt = performance.now();
  const result = await run();
  const elapsedMs = performance.now() - startedAt;
  const serverMs = (processCpuMs(bench.server.pid) ?? 0) - serverBefore;
  const machineAfter = cpuSnapshot();
  const backendsMs = await bench.sampler.stop();
  return {
    result,
    cpu: {
      machineBusy: busyFraction(machineBefore, machineAfter),
      machineMs: busyMs(machineBefore, machineAfter),
      serverMs,
      backendsMs,
      elapsedMs,
    },
  };
}

const perTx = (cpuMs: number, transactions: number) => Math.round((cpuMs * 1000) / Math.max(transactions, 1));

function apiLoad(bench: Bench, clients: number, durationS: number, rate?: number): Promise<LoadResult> {
  return bench.loadgen.run({
    mode: rate ? 'open' : 'closed',
    port: bench.server.port,
    connections: clients,
    durationMs: durationS * 1000,
    rate,
    authorization: `Bearer ${bench.db.secretKey}`,
    requestsMax: Math.ceil(rate ? rate * durationS * 1.5 : REQUESTS_PER_SECOND_MAX * durationS),
    drainTimeoutMs: DRAIN_TIMEOUT_MS,
    queueMax: rate ? Math.ceil(rate * BACKLOG_SECONDS_MAX) : undefined,
  });
}

async function apiPhase(bench: Bench, round: number, kind: PhaseKind, clients: number, durationS: number, rate?: number) {
  // The server's pool was closed for the pgbench phase; reopen (and re-prepare) its
  // connections before the clock starts, as a long-running server would have them.
  await apiLoad(bench, clients, RECONNECT_S);
  const { result, cpu } = await measured(bench, () => apiLoad(bench, clients, durationS, rate));
  const phase: PhaseResult = {
    round,
    side: 'api',
    kind,
    clients,
    durationS,
    rate,
    throughput: result.throughput,
    latency: result.latency,
    errors: result.errors,
    rows: await countRows(bench),
    overloaded: result.overloaded,
    cpu: cpuReport(cpu, result.ok, { clientMs: result.cpuMs, serverMs: cpu.serverMs }),
  };
  return report(phase, result.ok);
}

async function pgbenchPhase(bench: Bench, round: number, kind: PhaseKind, clients: number, durationS: number, rate?: number) {
  // Idle, the server's pool would still hold its connections: with pgbench's that is twice the
  // connections on a PostgreSQL that other developers' tests share (max_connections 100).
  await bench.db.closeServerConnections();
  const { result, cpu } = await measured(bench, () => runPgbench(bench.script, { databaseUrl: bench.db.url, clients, durationS, rate }));
  const phase: PhaseResult = {
    round,
    side: 'pgbench',
    kind,
    clients,
    durationS,
    rate,
    throughput: result.tps,
    latency: result.latency,
    errors: result.failed > 0 ? { failed: result.failed } : {},
    rows: await countRows(bench),
    // The idle API server still spends a little CPU (metrics timers); it counts as "other".
    cpu: cpuReport(cpu, result.transactions, { clientMs: result.cpuMs, serverMs: 0 }),
  };
  return report(phase, result.transactions);
}

/**
 * CPU per transaction for each party, and how many cores everything else used meanwhile:
 * other developers' processes, PostgreSQL's background writers, the kernel's own threads.
 */
function cpuReport(cpu: PhaseCpu, transactions: number, own: { clientMs: number; serverMs: number }): PhaseResult['cpu'] {
  const otherMs = cpu.machineMs - own.clientMs - own.serverMs - cpu.backendsMs;
  return {
    machineBusy: cpu.machineBusy,
    clientUsPerTx: perTx(own.clientMs, transactions),
    serverUsPerTx: perTx(own.serverMs, transactions),
    backendsUsPerTx: perTx(cpu.backendsMs, transactions),
    otherCores: Math.round((Math.max(otherMs, 0) / cpu.elapsedMs) * 100) / 100,
  };
}

function report(phase: PhaseResult, succeeded: number): PhaseResult {
  console.log(formatPhase(phase));
  // Every success is a new row; fewer rows would mean the statement did not do its work.
  if (phase.rows !== succeeded) console.log(`  warning: ${succeeded} successes but ${phase.rows} rows in payment_intents`);
  return phase;
}

async function runRound(bench: Bench, round: number): Promise<PhaseResult[]> {
  const { clients, maxS, rateS, singleS } = bench.options;
  const apiMax = await apiPhase(bench, round, 'max', clients, maxS);
  const pgMax = await pgbenchPhase(bench, round, 'max', clients, maxS);
  // Both sides get the same offered load: a share of what the API itself can do.
  const rate = Math.max(1, Math.round(apiMax.throughput * bench.options.rateFraction));
  const apiRate = await apiPhase(bench, round, 'rate', clients, rateS, rate);
  const pgRate = await pgbenchPhase(bench, round, 'rate', clients, rateS, rate);
  const apiSingle = await apiPhase(bench, round, 'single', 1, singleS);
  const pgSingle = await pgbenchPhase(bench, round, 'single', 1, singleS);
  return [apiMax, pgMax, apiRate, pgRate, apiSingle, pgSingle];
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const startedAt = new Date().toISOString();
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await Promise.resolve(step()).catch((error) => console.error(`cleanup: ${error}`));
    cleanups.length = 0;
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void cleanup().finally(() => process.exit(130)));
  }
  try {
    const db = await createBenchDatabase(ADMIN_URL);
    cleanups.push(() => db.drop());
    const machine = machineInfo(db.postgresVersion);
    console.log(`bench database ${db.name}; ${machine.cores} cores, node ${machine.node}, PostgreSQL ${machine.postgres}`);
    const surge = options.only === 'payments' ? undefined : await runSurge(db, { ...options, profileDir: PROFILE_DIR });
    if (options.only === 'surge') {
      const file = await writeResults({ startedAt, machine, options, surge });
      console.log(`\nresults: ${path.relative(process.cwd(), file)} (and bench/results/latest.json)`);
      return 0;
    }
    // A CPU profile of the server, for finding its hot path; profiling slows it, so the
    // numbers of a profiled run are not comparable with others.
    const nodeArgs = options.profile ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] : [];
    const server = await startApiServer({ databaseUrl: db.url, poolMax: options.clients, nodeArgs });
    cleanups.push(() => server.stop());
    const loadgen = new LoadGenerator();
    cleanups.push(() => loadgen.stop());
    const script = await buildPgbenchScript({
      merchantId: db.merchantId,
      ttlHours: loadConfig({}).idempotencyKeyTtlHours,
      clients: options.clients,
    });
    const sampler = await BackendCpuSampler.open(db.url, db.name);
    cleanups.push(() => sampler.close());
    const bench: Bench = { options, db, server, loadgen, sampler, script };

    // JIT-compile the server's and the generator's hot paths before anything is measured.
    console.log(`warming up for ${options.warmupS} s`);
    await apiPhase(bench, 0, 'max', options.clients, options.warmupS);
    const phases: PhaseResult[] = [];
    for (let round = 1; round <= options.rounds; round++) phases.push(...(await runRound(bench, round)));

    const summary = summarize(phases, options.rounds);
    if (surge) console.log(`\n${surge.table}`);
    console.log(`\n${formatTable(summary, machine, options, phases)}`);
    const file = await writeResults({ startedAt, machine, options, pgbench: script, summary, phases, surge });
    console.log(`\nresults: ${path.relative(process.cwd(), file)} (and bench/results/latest.json)`);
    return 0;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
