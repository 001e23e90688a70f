/**
 * `npm run bench`: creating an unconfirmed PaymentIntent through the HTTP API, against pgbench
 * running the very statement the API sends for it, on the same database in the same run; then
 * the worker's jobs and webhook deliveries per second beside that payment-creation rate.
 *
 *   npm run bench                  full run (5 rounds, about 4 to 5 minutes)
 *   npm run bench -- --quick       one short round (under a minute)
 *   options: --rounds N --clients N --duration S (each measured API and pgbench phase)
 *            --only payments|jobs|webhooks|surge (comma-separated; the API's max phase runs with
 *            any of the first three; surge is bench/surge.ts)
 *            --drain S (each job and webhook drain) --sustained S (0: no sustained phase)
 *            --receiver-delay MS (the webhook receiver answers this long after each request)
 *            --profile (writes the server's and the worker's CPU profiles to bench/results/profiles/)
 *            --surge-parts reads|line|holds|checkouts (comma-separated; default all: the surge
 *            section's parts, to profile or time one of them alone)
 *            --checkout-requests 2|3 (a paid checkout's requests: 2, the default, orders with
 *            confirm: true; 3 orders, then confirms the PaymentIntent, as before 2026-12-03)
 *            --holds-pending N (buyers holding the hot item through each checkout phase, each
 *            hold with its pending expiry job, as in a surge where most holders are still
 *            deciding; default 0)
 *
 * See bench/README.md for what each number means.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { BackendCpuSampler } from './backends.js';
import { CROWD_FACTOR } from './crowd.js';
import { LoadGenerator, type LoadResult } from './loadgen.js';
import { busyFraction, busyMs, cpuSnapshot, faultCostText, machineInfo, processCpuMs, processMinorFaults } from './machine.js';
import { runPgbench } from './pgbench.js';
import { Receiver } from './receiver.js';
import {
  formatPhase,
  formatTable,
  type PhaseKind,
  type PhaseResult,
  type RunOptions,
  SECTIONS,
  type Section,
  summarize,
  writeResults,
} from './report.js';
import { type ApiServer, type BenchDatabase, createBenchDatabase, startApiServer, startWorkerProcess } from './setup.js';
import { buildPgbenchScript, type PgbenchScript } from './statement.js';
import { median, round } from './stats.js';
import { runSurge, SURGE_PARTS, type SurgePart, type SurgeRecord } from './surge.js';
import {
  dropQueuedDeliveries,
  JOB_TASK,
  type JobsPhaseResult,
  jobsPhase,
  primeWorker,
  registerEndpoint,
  type SustainedResult,
  sustainedPhase,
  type WebhooksPhaseResult,
  type WorkerContext,
  webhooksPhase,
} from './worker.js';
import { formatJobsPhase, formatWebhooksPhase, formatWorkerTable, summarizeWorker, type WorkerSummary } from './worker-report.js';

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
// Buyers holding through a checkout phase: a stadium's on-sale, well within the hot item's stock.
const HOLDS_PENDING_MAX = 1_000_000;

function parseOptions(argv: string[]): RunOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      clients: { type: 'string' },
      duration: { type: 'string' },
      only: { type: 'string' },
      drain: { type: 'string' },
      sustained: { type: 'string' },
      'receiver-delay': { type: 'string' },
      profile: { type: 'boolean', default: false },
      'surge-parts': { type: 'string' },
      'checkout-requests': { type: 'string' },
      'holds-pending': { type: 'string' },
    },
  });
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
  const sections = values.only === undefined ? [...SECTIONS] : values.only.split(',').map((name) => name.trim());
  for (const name of sections) {
    if (!(SECTIONS as readonly string[]).includes(name))
      throw new Error(`--only takes ${SECTIONS.join(', ')} (comma-separated); got ${name}`);
  }
  const surgeParts = values['surge-parts'] === undefined ? [...SURGE_PARTS] : values['surge-parts'].split(',').map((name) => name.trim());
  for (const name of surgeParts) {
    if (!(SURGE_PARTS as readonly string[]).includes(name))
      throw new Error(`--surge-parts takes ${SURGE_PARTS.join(', ')} (comma-separated); got ${name}`);
  }
  const checkoutRequests = values['checkout-requests'] === undefined ? 2 : Number(values['checkout-requests']);
  if (checkoutRequests !== 2 && checkoutRequests !== 3) throw new Error('--checkout-requests takes 2 or 3');
  const holdsPending = values['holds-pending'] === undefined ? 0 : Number(values['holds-pending']);
  if (!Number.isInteger(holdsPending) || holdsPending < 0 || holdsPending > HOLDS_PENDING_MAX)
    throw new Error(`--holds-pending must be a whole number from 0 to ${HOLDS_PENDING_MAX}`);
  return {
    quick,
    sections: sections as Section[],
    surgeParts: surgeParts as SurgePart[],
    checkoutRequests: checkoutRequests as 2 | 3,
    holdsPending,
    rounds: positive(values.rounds, quick ? 1 : 5, 'rounds'),
    clients: positive(values.clients, CLIENTS_DEFAULT, 'clients'),
    warmupS: quick ? 3 : 5,
    maxS: duration,
    rateS: duration,
    singleS: Math.max(1, Math.round(duration / 2)),
    rateFraction: RATE_FRACTION,
    drainS: positive(values.drain, quick ? 3 : 4, 'drain'),
    sustainedS: values.sustained === '0' ? 0 : positive(values.sustained, quick ? 5 : 15, 'sustained'),
    sustainedFraction: RATE_FRACTION,
    receiverDelayMs:
      values['receiver-delay'] === undefined || values['receiver-delay'] === '0'
        ? 0
        : positive(values['receiver-delay'], 0, 'receiver-delay'),
    profile: values.profile ?? false,
  };
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
  /** Minor page faults the API server took. */
  serverFaults: number;
  backendsMs: number;
  elapsedMs: number;
}

/** Runs one phase from a freshly reset database, taking CPU readings around it. */
async function measured<T>(bench: Bench, run: () => Promise<T>): Promise<{ result: T; cpu: PhaseCpu }> {
  await bench.db.reset();
  await bench.sampler.start();
  const machineBefore = cpuSnapshot();
  const serverBefore = processCpuMs(bench.server.pid) ?? 0;
  const serverFaultsBefore = processMinorFaults(bench.server.pid) ?? 0;
  const startedAt = performance.now();
  const result = await run();
  const elapsedMs = performance.now() - startedAt;
  const serverMs = (processCpuMs(bench.server.pid) ?? 0) - serverBefore;
  const serverFaults = (processMinorFaults(bench.server.pid) ?? 0) - serverFaultsBefore;
  const machineAfter = cpuSnapshot();
  const backendsMs = await bench.sampler.stop();
  return {
    result,
    cpu: {
      machineBusy: busyFraction(machineBefore, machineAfter),
      machineMs: busyMs(machineBefore, machineAfter),
      serverMs,
      serverFaults,
      backendsMs,
      elapsedMs,
    },
  };
}

const perTx = (cpuMs: number, transactions: number) => Math.round((cpuMs * 1000) / Math.max(transactions, 1));

function apiLoad(bench: Bench, clients: number, durationS: number, rate?: number, secretKey = bench.db.secretKey): Promise<LoadResult> {
  return bench.loadgen.run({
    mode: rate ? 'open' : 'closed',
    port: bench.server.port,
    connections: clients,
    durationMs: durationS * 1000,
    rate,
    authorization: `Bearer ${secretKey}`,
    requestsMax: Math.ceil(rate ? rate * durationS * 1.5 : REQUESTS_PER_SECOND_MAX * durationS),
    drainTimeoutMs: DRAIN_TIMEOUT_MS,
    queueMax: rate ? Math.ceil(rate * BACKLOG_SECONDS_MAX) : undefined,
  });
}

async function apiPhase(bench: Bench, round: number, kind: PhaseKind, clients: number, durationS: number, rate?: number) {
  // The fan-out phase creates payments for the merchant with a webhook endpoint.
  const secretKey = kind === 'fanout' ? bench.db.webhookSecretKey : bench.db.secretKey;
  // The server's pool was closed for the pgbench phase; reopen (and re-prepare) its
  // connections before the clock starts, as a long-running server would have them.
  await apiLoad(bench, clients, RECONNECT_S, undefined, secretKey);
  const { result, cpu } = await measured(bench, () => apiLoad(bench, clients, durationS, rate, secretKey));
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
    cpu: cpuReport(cpu, result.ok, { clientMs: result.cpuMs, serverMs: cpu.serverMs, serverFaults: cpu.serverFaults }),
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
function cpuReport(
  cpu: PhaseCpu,
  transactions: number,
  own: { clientMs: number; serverMs: number; serverFaults?: number },
): PhaseResult['cpu'] {
  const otherMs = cpu.machineMs - own.clientMs - own.serverMs - cpu.backendsMs;
  return {
    machineBusy: cpu.machineBusy,
    clientUsPerTx: perTx(own.clientMs, transactions),
    serverUsPerTx: perTx(own.serverMs, transactions),
    backendsUsPerTx: perTx(cpu.backendsMs, transactions),
    ...(own.serverFaults === undefined ? {} : { serverFaultsPerTx: round(own.serverFaults / Math.max(transactions, 1), 2) }),
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
  // Each side's max again with a crowd of connections (crowd.ts); the API's pool
  // stays at `clients` connections, pgbench gets one per client.
  const apiCrowd = await apiPhase(bench, round, 'crowd', clients * CROWD_FACTOR, maxS);
  const pgCrowd = await pgbenchPhase(bench, round, 'crowd', clients * CROWD_FACTOR, maxS);
  // Both sides get the same offered load: a share of what the API itself can do.
  const rate = Math.max(1, Math.round(apiMax.throughput * bench.options.rateFraction));
  const apiRate = await apiPhase(bench, round, 'rate', clients, rateS, rate);
  const pgRate = await pgbenchPhase(bench, round, 'rate', clients, rateS, rate);
  const apiSingle = await apiPhase(bench, round, 'single', 1, singleS);
  const pgSingle = await pgbenchPhase(bench, round, 'single', 1, singleS);
  return [apiMax, pgMax, apiCrowd, pgCrowd, apiRate, pgRate, apiSingle, pgSingle];
}

/** The worker's phases of one round, each sized by the rates the previous round measured. */
async function runWorkerRound(bench: Bench, ctx: WorkerContext, round: number, sizes: WorkerSizes, results: WorkerResults) {
  const { sections, drainS } = bench.options;
  if (sections.includes('jobs')) {
    const phase = await jobsPhase(ctx, round, sizes.jobs);
    console.log(formatJobsPhase(phase));
    if (round > 0) results.jobs.push(phase);
    sizes.jobs = drainSize(phase.throughput, drainS, JOBS_MIN, JOBS_MAX);
  }
  if (sections.includes('webhooks')) {
    // Creation for the webhook merchant measured as the plain API max is (warm, as long, CPU
    // read), with the worker paused: what issue 9 compares with pgbench's naive creation. The
    // burst below, which fills the queue for the drain, starts cold after a reset.
    const fanOut = await apiPhase(bench, round, 'fanout', bench.options.clients, bench.options.maxS);
    await dropQueuedDeliveries(ctx.db);
    if (round > 0) results.fanOut.push(fanOut);
    // With a crowd, as the payments section's crowd phases (read against pgbench's best).
    if (round > 0 && bench.options.sections.includes('payments')) {
      results.fanOut.push(await apiPhase(bench, round, 'fanout_crowd', bench.options.clients * CROWD_FACTOR, bench.options.maxS));
      await dropQueuedDeliveries(ctx.db);
    }
    // The pgbench phases closed the server's connections; reopen them before the clock starts.
    await apiLoad(bench, bench.options.clients, RECONNECT_S);
    const phase = await webhooksPhase(ctx, round, sizes.deliveries);
    console.log(formatWebhooksPhase(phase));
    if (round > 0) results.webhooks.push(phase);
    sizes.deliveries = drainSize(phase.throughput, drainS, DELIVERIES_MIN, DELIVERIES_MAX);
  }
}

interface WorkerSizes {
  jobs: number;
  deliveries: number;
}

interface WorkerResults {
  jobs: JobsPhaseResult[];
  fanOut: PhaseResult[];
  webhooks: WebhooksPhaseResult[];
  sustained?: SustainedResult;
}

// The warm-up's drains (quick run, full run): long enough that the worker's hot path is
// compiled before round 1, as the API's is by its own warm-up (thousands of requests). After
// only 300 deliveries, round 1's worker still spent about a third more CPU per delivery than
// later rounds; after 500, a quarter of its CPU in round 1 (perf, with --perf-basic-prof) was
// V8 compiling, and the receiver's CPU per delivery was three times its warm figure. After
// 5,000, compiling was 2%. Every later drain is sized to take about --drain seconds at the rate
// the one before it measured, within the bounds below.
const JOBS_WARMUP = [1_500, 3_000];
const DELIVERIES_WARMUP = [5_000, 5_000];
const JOBS_MIN = 500;
const JOBS_MAX = 100_000;
const DELIVERIES_MIN = 200;
const DELIVERIES_MAX = 50_000;
// After the sustained phase, the worker gets this long to deliver what is left.
const SUSTAINED_DRAIN_WAIT_S = 20;

const drainSize = (rate: number, seconds: number, min: number, max: number) =>
  Math.min(max, Math.max(min, Math.round(((Number.isFinite(rate) ? rate : 0) * seconds) / 100) * 100));

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
    console.log(
      `bench database ${db.name}; ${machine.cores} cores, node ${machine.node}, PostgreSQL ${machine.postgres}${faultCostText(machine)}`,
    );
    const surge = options.sections.includes('surge')
      ? await runSurge(db, { ...options, parts: new Set(options.surgeParts), profileDir: PROFILE_DIR })
      : undefined;
    if (options.sections.every((section) => section === 'surge')) {
      const file = await writeResults({ startedAt, machine, options, surge });
      console.log(`\nresults: ${path.relative(process.cwd(), file)} (and bench/results/latest.json)`);
      return surgeExitCode(surge);
    }
    // CPU profiles of the server and the worker, for finding their hot paths; profiling slows
    // them, so the numbers of a profiled run are not comparable with others. Each process writes
    // one file per thread (its main thread, tid 0, and tsx's module loader) into a folder named
    // after the run and its role; bench/profile-summary.ts summarizes one.
    const nodeArgs = (role: string) =>
      options.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.join(PROFILE_DIR, startedAt.replace(/[:.]/g, '-'), role)}`] : [];
    const server = await startApiServer({ databaseUrl: db.url, poolMax: options.clients, nodeArgs: nodeArgs('api') });
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

    const payments = options.sections.includes('payments');
    const workerSections = options.sections.filter((section) => section === 'jobs' || section === 'webhooks');
    let ctx: WorkerContext | undefined;
    if (workerSections.length > 0) {
      const receiver = await Receiver.start(options.receiverDelayMs);
      cleanups.push(() => receiver.stop());
      const worker = await startWorkerProcess({ databaseUrl: db.url, nodeArgs: nodeArgs('worker') });
      cleanups.push(() => worker.stop());
      ctx = { db, server, loadgen, sampler, worker, receiver, clients: options.clients };
      // From here on the worker is paused whenever its own phases do not run, so it takes no
      // CPU from the others.
      await primeWorker(ctx);
      await registerEndpoint(ctx);
    }

    // JIT-compile the server's and the generator's hot paths before anything is measured.
    console.log(`warming up for ${options.warmupS} s`);
    await apiPhase(bench, 0, 'max', options.clients, options.warmupS);
    const warmup = options.quick ? 0 : 1;
    const sizes: WorkerSizes = { jobs: JOBS_WARMUP[warmup] as number, deliveries: DELIVERIES_WARMUP[warmup] as number };
    const worker: WorkerResults = { jobs: [], fanOut: [], webhooks: [] };
    if (ctx) await runWorkerRound(bench, ctx, 0, sizes, worker);
    const phases: PhaseResult[] = [];
    for (let round = 1; round <= options.rounds; round++) {
      // Without pgbench's side, the API's max phase still runs: the worker's rates are read against it.
      phases.push(...(payments ? await runRound(bench, round) : [await apiPhase(bench, round, 'max', options.clients, options.maxS)]));
      if (ctx) await runWorkerRound(bench, ctx, round, sizes, worker);
    }
    if (ctx && options.sections.includes('webhooks') && options.sustainedS > 0) {
      const creation = median(worker.webhooks.map((phase) => phase.creation.throughput));
      const rate = Math.max(1, Math.round(creation * options.sustainedFraction));
      console.log(`  sustained: ${rate} req/s with fan-out for ${options.sustainedS} s while the worker delivers`);
      worker.sustained = await sustainedPhase(ctx, rate, options.sustainedS, SUSTAINED_DRAIN_WAIT_S);
    }

    const summary = payments ? summarize(phases, options.rounds) : undefined;
    if (surge) console.log(`\n${surge.table}`);
    if (summary) console.log(`\n${formatTable(summary, machine, options, phases)}`);
    else
      console.log(
        `\nmachine: ${machine.cores} cores (${machine.cpuModel}), node ${machine.node}, PostgreSQL ${machine.postgres}${faultCostText(machine)}`,
      );
    let workerSummary: WorkerSummary | undefined;
    if (ctx) {
      const apiMax = phases.filter((phase) => phase.side === 'api' && phase.kind === 'max');
      const pgbenchMax = phases.filter((phase) => phase.side === 'pgbench' && (phase.kind === 'max' || phase.kind === 'crowd'));
      workerSummary = summarizeWorker(apiMax, worker.jobs, worker.webhooks, pgbenchMax, worker.fanOut);
      console.log(
        `\n${formatWorkerTable(workerSummary, worker.sustained, options, { concurrency: workerConcurrency(), jobTask: JOB_TASK })}`,
      );
    }
    const file = await writeResults({
      startedAt,
      machine,
      options,
      pgbench: script,
      summary,
      phases,
      worker: ctx ? { concurrency: workerConcurrency(), jobTask: JOB_TASK, summary: workerSummary, ...worker } : undefined,
      surge,
    });
    console.log(`\nresults: ${path.relative(process.cwd(), file)} (and bench/results/latest.json)`);
    return surgeExitCode(surge);
  } finally {
    await cleanup();
  }
}

/** A surge check that failed (stock counters not exact) fails the run, after its record is written. */
function surgeExitCode(surge: SurgeRecord | undefined): number {
  if (!surge || surge.failures.length === 0) return 0;
  for (const failure of surge.failures) console.error(`surge FAILED: stock counters not exact, ${failure}`);
  return 1;
}

/** The worker runs with the environment's setting, else the default: the same reading as its own. */
function workerConcurrency(): number {
  return loadConfig({ FLOODGATE_WORKER_CONCURRENCY: process.env.FLOODGATE_WORKER_CONCURRENCY }).workerConcurrency;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
