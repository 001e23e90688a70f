/**
 * The surge path's benchmark (`npm run bench`, or `npm run bench -- --only surge`):
 *
 *   - cached public sale reads (GET /v1/sales/:id, publishable key) through the API with Redis
 *     (both cache levels real) and in memory mode, beside a bare Fastify server answering the
 *     same bytes, with the same generator and connections;
 *   - holds per second on one hot item (POST /v1/holds, each spending a fresh admission token)
 *     beside pgbench running the SQL the API sends for a hold, captured from the server's code;
 *     then the latency of both at 60% of the API's max, offered as Poisson arrivals (open loop);
 *   - paid checkouts per second on that item (hold → order → confirm with pm_card_visa, the
 *     provider simulator in its own process), with the stock counters checked exact afterwards;
 *   - waiting-room joins (admitted at once, or left waiting) and polls per second (Redis mode).
 *
 * See bench/README.md, "Surge", for what each number means.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { createMerchant } from '../src/merchants/service.js';
import { createPool } from '../src/platform/db/pool.js';
import { insertJobsSql } from '../src/platform/jobs/queue.js';
import { SERVER_NODE_FLAGS } from '../src/platform/node-flags.js';
import { EXPIRE_HOLD_TASK } from '../src/sales/holds.js';
import { BackendCpuSampler } from './backends.js';
import { CROWD_FACTOR, SURGE_CROWD_FACTOR } from './crowd.js';
import { busyFraction, busyMs, cpuSnapshot, freePort, outsideCpu, processCpuMs, processTable } from './machine.js';
import { runPgbench } from './pgbench.js';
import { PHASE_WINDOWS_FILE, type PhaseWindow } from './profile-summary.js';
import { type ApiServer, type BenchDatabase, type SimulatorProcess, startApiServer, startSimulatorProcess } from './setup.js';
import type { SurgeJob, SurgeRequestKind, SurgeResult } from './surge-loadgen.js';
import {
  formatSurgeTable,
  phaseLine,
  type StockCheck,
  type SurgePhase,
  type SurgePhaseName,
  type SurgeSummary,
  summarizeSurge,
} from './surge-report.js';
import { captureHold, type HoldCapture } from './surge-statement.js';

const REDIS_URL = process.env.FLOODGATE_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DRAIN_TIMEOUT_MS = 10_000;
// A bound on a closed loop's requests, well above any rate seen: the 2-core machine has read
// 80,000 sale pages a second, and at 50,000 the fastest read phases stopped a third early.
const REQUESTS_PER_SECOND_MAX = 200_000;
// The hot item never sells out within a run: far more units than two cores can hold.
const HOT_STOCK = 10_000_000;
// Waiting rooms: one that admits everyone at once (it mints the hold phase's tokens), one that
// admits no one (its tickets stay waiting, for the poll phase).
const ADMIT_ALL = { admit_per_second: 10_000, max_shoppers: 1_000_000 };
// Tokens are minted at this share of ADMIT_ALL's admission rate (see mintTokens).
const MINT_RATE_FRACTION = 0.8;
const ADMIT_NONE = { admit_per_second: 1, max_shoppers: 0 };
// Admission tokens minted for a hold phase: this many seconds of the last measured hold rate.
const TOKEN_HEADROOM = 1.5;
const TOKENS_MIN = 2_000;
// Before any hold phase has run (the warm-up, or --surge-parts without the line's joins, which
// leave tokens over), tokens are minted for this rate: above what two cores have held.
const HOLD_RATE_GUESS = 4_000;
// The open-loop hold phase offers this share of the round's measured hold max, as the payments'
// rate phase does (bench/run.ts): enough load that batches form, not so much that they queue.
const RATE_FRACTION = 0.6;
// Open loop: more than this many seconds of scheduled holds waiting for a connection means the
// rate is not being served; the phase stops and is marked overloaded (as in bench/run.ts).
const BACKLOG_SECONDS_MAX = 2;
// pgbench -R that completes less than this share of its schedule fell behind it: its latency
// then counts the lag, and the phase is marked overloaded.
const SCHEDULE_KEPT_MIN = 0.9;
// Long enough for the server's pool to open and prepare all its connections (after pgbench).
const RECONNECT_S = 1;
// A phase lists the processes outside the bench that used at least this much CPU during it (a
// machine's background services use a few ms a second; a neighbour's burst, hundreds).
const OUTSIDE_LISTED_MS = 20;

/** The surge benchmark's parts; `--surge-parts` runs some of them (a profile of one part, say). */
export const SURGE_PARTS = ['reads', 'line', 'holds', 'checkouts'] as const;
export type SurgePart = (typeof SURGE_PARTS)[number];

export interface SurgeOptions {
  quick: boolean;
  parts: ReadonlySet<SurgePart>;
  clients: number;
  profile: boolean;
  profileDir: string;
  /** A paid checkout's requests: 2, an order that confirms; 3, an order and then a confirm. */
  checkoutRequests: 2 | 3;
  /** Buyers holding the hot item through each checkout phase, each with a pending expiry job. */
  holdsPending: number;
}

class SurgeLoadGenerator {
  private readonly child: ChildProcess;

  constructor() {
    this.child = fork(path.join(import.meta.dirname, 'surge-loadgen.ts'), [], { execArgv: ['--import', 'tsx'] });
  }

  run(job: SurgeJob): Promise<SurgeResult> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('surge load generator did not answer in time')),
        job.durationMs + job.drainTimeoutMs + 10_000,
      );
      this.child.once('message', (message: { ok: boolean; result?: SurgeResult; error?: string }) => {
        clearTimeout(timer);
        if (message.ok && message.result) resolve(message.result);
        else reject(new Error(`surge load generator failed: ${message.error}`));
      });
      this.child.send(job);
    });
  }

  stop(): void {
    if (this.child.connected) this.child.disconnect();
    this.child.kill();
  }
}

interface BareServer {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

async function startBareServer(response: { body: string; etag: string; cacheControl: string }, nodeArgs: string[]): Promise<BareServer> {
  const port = await freePort();
  // Profiled with the API (--profile): the reference's profile is what the API's is read against.
  // The same runtime flags as the API's process: the reference differs only in what it runs.
  const child = fork(path.join(import.meta.dirname, 'bare-server.ts'), [], {
    execArgv: [...SERVER_NODE_FLAGS, ...nodeArgs, '--import', 'tsx'],
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('bare server did not start')), 30_000);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => reject(new Error(`bare server exited with ${code}`)));
    child.send({ port, ...response });
  });
  return {
    port,
    pid: child.pid as number,
    async stop() {
      // Disconnected, it exits by itself, writing its profile when it has one; killed if it does not.
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      if (child.connected) child.disconnect();
      const timer = setTimeout(() => child.kill(), BARE_EXIT_WAIT_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}

const BARE_EXIT_WAIT_MS = 5_000;

/** The Redis server's pid, for its CPU time, if it runs on this machine. */
function redisPid(): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'redis-server') return Number(entry);
    } catch {
      // Gone meanwhile.
    }
  }
  return undefined;
}

async function api(port: number, key: string, method: string, url: string, body?: unknown) {
  const response = await fetch(`http://127.0.0.1:${port}${url}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json', 'idempotency-key': `bench-setup-${Math.random()}` }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${method} ${url} answered ${response.status}: ${text}`);
  return { json: JSON.parse(text), text, headers: response.headers };
}

interface Surge {
  options: SurgeOptions;
  db: BenchDatabase;
  sampler: BackendCpuSampler;
  redisApi: ApiServer;
  memoryApi: ApiServer;
  bare: BareServer;
  loadgen: SurgeLoadGenerator;
  publishableKey: string;
  hotSale: string;
  hotItem: string;
  lineSale: string;
  capture: HoldCapture;
  readBody: string;
  redisPid: number | undefined;
  /** The card provider the Redis-mode API pays through, for the checkout phase. */
  simulator: SimulatorProcess;
  secretKey: string;
  adminPool: pg.Pool;
  durationS: number;
  buyerSeq: number;
  lastHoldRate: number;
  lastCheckoutRate: number;
}

const perTx = (cpuMs: number, transactions: number) => Math.round((cpuMs * 1000) / Math.max(transactions, 1));

async function measured<T extends { ok: number; cpuMs: number }>(
  surge: Surge,
  serverPid: number | undefined,
  run: () => Promise<T>,
  paysThroughProvider = false,
): Promise<{ result: T; cpu: SurgePhase['cpu'] }> {
  await surge.sampler.start();
  const processesBefore = processTable();
  const machineBefore = cpuSnapshot();
  const serverBefore = processCpuMs(serverPid) ?? 0;
  const redisBefore = processCpuMs(surge.redisPid) ?? 0;
  const providerBefore = processCpuMs(surge.simulator.pid) ?? 0;
  const startedAt = performance.now();
  const result = await run();
  const elapsedMs = performance.now() - startedAt;
  const serverMs = (processCpuMs(serverPid) ?? 0) - serverBefore;
  const redisMs = (processCpuMs(surge.redisPid) ?? 0) - redisBefore;
  // Idle in every phase but the checkouts' (a few ms, GC after the checkouts): never "other",
  // but reported only where the phase pays through it.
  const providerMs = (processCpuMs(surge.simulator.pid) ?? 0) - providerBefore;
  const machineAfter = cpuSnapshot();
  const outside = outsideCpu(processesBefore, processTable(), process.pid).filter((entry) => entry.ms >= OUTSIDE_LISTED_MS);
  const backendsMs = await surge.sampler.stop();
  const otherMs = busyMs(machineBefore, machineAfter) - result.cpuMs - serverMs - backendsMs - redisMs - providerMs;
  return {
    result,
    cpu: {
      machineBusy: busyFraction(machineBefore, machineAfter),
      clientUsPerTx: perTx(result.cpuMs, result.ok),
      serverUsPerTx: perTx(serverMs, result.ok),
      backendsUsPerTx: perTx(backendsMs, result.ok),
      redisUsPerTx: surge.redisPid === undefined ? Number.NaN : perTx(redisMs, result.ok),
      providerUsPerTx: paysThroughProvider ? perTx(providerMs, result.ok) : Number.NaN,
      otherCores: Math.round((Math.max(otherMs, 0) / elapsedMs) * 100) / 100,
      outside,
    },
  };
}

function job(surge: Surge, kind: SurgeRequestKind, port: number, durationS: number, extra: Partial<SurgeJob> = {}): SurgeJob {
  return {
    kind,
    port,
    connections: surge.options.clients,
    durationMs: durationS * 1000,
    authorization: `Bearer ${surge.publishableKey}`,
    saleId: surge.hotSale,
    itemId: surge.hotItem,
    requestsMax: REQUESTS_PER_SECOND_MAX * durationS,
    drainTimeoutMs: DRAIN_TIMEOUT_MS,
    ...extra,
  };
}

async function loadPhase(
  surge: Surge,
  round: number,
  name: SurgePhaseName,
  server: { port: number; pid: number },
  kind: SurgeRequestKind,
  extra: Partial<SurgeJob> = {},
  durationS = surge.durationS,
): Promise<SurgePhase> {
  // The API's reads are answered by its fast lane or by the pipeline: the share says which ran.
  const laneBefore = kind === 'read' && server !== surge.bare ? await laneAnswers(server.port) : undefined;
  // A hold's or checkout's CPU is part per request and part per batch: the batches' mean sizes say which.
  const batchesBefore = kind === 'hold' || kind === 'checkout' ? await batchCounts(server.port) : undefined;
  const startedUs = monotonicUs();
  const { result, cpu } = await measured(
    surge,
    server.pid,
    () => surge.loadgen.run(job(surge, kind, server.port, durationS, extra)),
    kind === 'checkout',
  );
  if (surge.options.profile)
    recordPhaseWindow(surge.options.profileDir, { name, round, pid: server.pid, startUs: startedUs, endUs: monotonicUs() });
  // Of the requests sent: a phase that ends early (its request bound, a drain) sent fewer than its rate times its duration.
  const laneShare =
    laneBefore === undefined || result.sent === 0 ? undefined : ((await laneAnswers(server.port)) - laneBefore) / result.sent;
  const batchMeans = batchesBefore && meanBatches(batchesBefore, await batchCounts(server.port), kind);
  const phase: SurgePhase = {
    round,
    name,
    clients: extra.connections ?? surge.options.clients,
    durationS,
    ...(extra.mode === 'open' ? { rate: extra.rate, overloaded: result.overloaded } : {}),
    throughput: result.throughput,
    latency: result.latency,
    errors: result.errors,
    ...(kind === 'hold' || kind === 'checkout' ? { tokensRanOut: result.tokensRanOut } : {}),
    ...(laneShare === undefined ? {} : { laneShare }),
    ...(batchMeans === undefined ? {} : { batchMeans }),
    ...(result.steps ? { steps: result.steps, stepLatency: result.stepLatency } : {}),
    cpu,
  };
  if (kind === 'hold') phase.rows = await countHolds(surge);
  console.log(phaseLine(phase));
  if (kind === 'read' && result.sampleBody !== surge.readBody)
    console.log('  warning: the read answered other bytes than the reference body');
  if (phase.rows !== undefined && phase.rows !== result.ok)
    console.log(`  warning: ${result.ok} holds answered but ${phase.rows} rows in holds`);
  return phase;
}

/**
 * The clock of V8's CPU profiles (CLOCK_MONOTONIC, in µs), which every process on the machine
 * shares: a phase's window in it picks that phase's samples out of a profile of the whole run.
 */
function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Adds a phase's window to the profile folder's phases.json, for `profile-summary --phase`. */
function recordPhaseWindow(profileDir: string, window: PhaseWindow): void {
  const file = path.join(profileDir, PHASE_WINDOWS_FILE);
  const windows: PhaseWindow[] = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : [];
  mkdirSync(profileDir, { recursive: true });
  writeFileSync(file, JSON.stringify([...windows, window], null, 1));
}

/**
 * Samples of the API's /metrics, by their exact names and labels (0 when absent), from one
 * scrape: a scrape costs the node about 10 ms of CPU.
 */
async function metricSamples(port: number, samples: string[]): Promise<number[]> {
  const lines = (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).split('\n');
  return samples.map((sample) => Number(lines.find((line) => line.startsWith(`${sample} `))?.slice(sample.length + 1) ?? 0));
}

/** The sale page reads the API's fast lane has answered so far. */
async function laneAnswers(port: number): Promise<number> {
  const [answers] = await metricSamples(port, ['floodgate_http_fast_lane_answers_total{route="/v1/sales/:id"}']);
  return answers ?? 0;
}

/** The API's batched writes, by step: its histogram of batch sizes and the series' labels (src/platform/observability/metrics.ts). */
const BATCH_HISTOGRAMS = {
  hold: ['floodgate_hold_batch_size', ''],
  order: ['floodgate_order_batch_size', ''],
  start: ['floodgate_confirm_batch_size', '{phase="start"}'],
  complete: ['floodgate_confirm_batch_size', '{phase="complete"}'],
} as const;
type BatchedStep = keyof typeof BATCH_HISTOGRAMS;
/** The steps of a kind of request that the API batches. */
const BATCHED_STEPS: Partial<Record<SurgeRequestKind, BatchedStep[]>> = {
  hold: ['hold'],
  checkout: ['hold', 'order', 'start', 'complete'],
};

/** Each batched step's batches so far, and the requests they carried. */
async function batchCounts(port: number): Promise<Record<BatchedStep, { count: number; sum: number }>> {
  // A labelled histogram's _count and _sum carry its labels after the suffix.
  const names = Object.values(BATCH_HISTOGRAMS).flatMap(([name, labels]) => [`${name}_count${labels}`, `${name}_sum${labels}`]);
  const samples = await metricSamples(port, names);
  return Object.fromEntries(
    Object.keys(BATCH_HISTOGRAMS).map((step, index) => [step, { count: samples[2 * index] ?? 0, sum: samples[2 * index + 1] ?? 0 }]),
  ) as Record<BatchedStep, { count: number; sum: number }>;
}

/** The mean batch size of each of kind's batched steps between two readings (a step with no batch is left out). */
function meanBatches(
  before: Record<BatchedStep, { count: number; sum: number }>,
  after: Record<BatchedStep, { count: number; sum: number }>,
  kind: SurgeRequestKind,
): Partial<Record<BatchedStep, number>> {
  const means: Partial<Record<BatchedStep, number>> = {};
  for (const step of BATCHED_STEPS[kind] ?? []) {
    const batches = after[step].count - before[step].count;
    if (batches > 0) means[step] = (after[step].sum - before[step].sum) / batches;
  }
  return means;
}

async function countHolds(surge: Surge): Promise<number> {
  const { rows } = await surge.adminPool.query<{ count: number }>('select count(*)::int as count from holds');
  return rows[0]?.count ?? 0;
}

/** Every hold phase starts alike: no holds, orders, payments, keys or jobs, full stock, nothing dirty. */
async function resetHolds(surge: Surge): Promise<void> {
  // Statistics first, from the rows the phase (or its unmeasured burst) just wrote: they outlive
  // the truncation, as a production database has statistics. A bench database younger than
  // autovacuum's first pass has none, and the planner then read a batch's keys, buyers and
  // tickets by scanning the merchant's or the sale's every row and filtering (the worker's
  // phases met the same, see worker.ts): each batch grew slower as the phase went on.
  await surge.adminPool.query(
    'analyze hold_lines, holds, idempotency_keys, orders, payment_intents, payment_attempts, events, graphile_worker._private_jobs',
  );
  // Orders go with their holds and payments (cascade), attempts with their payments. The ledger
  // is append-only (the database refuses to truncate it): it keeps every checkout's capture.
  await surge.adminPool.query('truncate hold_lines, holds, idempotency_keys, payment_intents, events cascade');
  await surge.adminPool.query('truncate graphile_worker._private_jobs');
  await surge.adminPool.query('update sale_items set stock_allocated = 0');
  await surge.adminPool.query('checkpoint');
}

/**
 * Joins the admitting sale until the generator holds at least `wanted` admission tokens. At a
 * fixed rate below the sale's admission rate: joins faster than the waiting room admits leave
 * the surplus waiting, and once anyone waits every later join queues behind them, so no token
 * comes at all (a 2-core machine that joined at 18,000/s against the cap of 10,000 minted none
 * after its first hold phase).
 */
async function mintTokens(surge: Surge, have: number, wanted: number): Promise<number> {
  let tokens = have;
  const rate = Math.floor(ADMIT_ALL.admit_per_second * MINT_RATE_FRACTION);
  for (let attempt = 0; attempt < 4 && tokens < wanted; attempt++) {
    const result = await surge.loadgen.run(
      job(surge, 'join', surge.redisApi.port, Math.ceil((wanted - tokens) / rate) + 1, {
        mode: 'open',
        rate,
        queueMax: rate,
        requestsMax: wanted - tokens,
        expectStatus: 'admitted',
        buyerPrefix: `mint-${surge.buyerSeq++}`,
      }),
    );
    tokens = result.tokensLeft;
  }
  return tokens;
}

async function holdPhases(surge: Surge, round: number, tokensLeft: number): Promise<SurgePhase[]> {
  const { durationS } = surge;
  // Enough tokens for a 1 s reconnect burst and the phase, with headroom.
  const expected = surge.lastHoldRate || HOLD_RATE_GUESS;
  const wanted = Math.max(TOKENS_MIN, Math.ceil(expected * (durationS + RECONNECT_S) * TOKEN_HEADROOM));
  await mintTokens(surge, tokensLeft, wanted);
  const apiPhase = await apiHoldPhase(surge, round, 'hold_api', surge.options.clients);
  const pgPhase = await pgbenchHoldPhase(surge, round, 'hold_pgbench');
  // Each side's max again with a crowd of connections (crowd.ts): a closed loop of
  // `clients` buyers leaves the API's batches waiting to fill with cores to spare.
  const crowd = surge.options.clients * CROWD_FACTOR;
  // A crowd may take more holds: twice the tokens (the joins that mint them are quick).
  const crowdTokens = () => 2 * Math.max(wanted, Math.ceil(surge.lastHoldRate * (durationS + RECONNECT_S) * TOKEN_HEADROOM));
  await mintTokens(surge, await tokensHeld(surge), crowdTokens());
  const apiCrowdPhase = await apiHoldPhase(surge, round, 'hold_api_crowd', crowd);
  const pgCrowdPhase = await pgbenchHoldPhase(surge, round, 'hold_pgbench_crowd', undefined, crowd);
  // And the API alone with a surge's crowd (crowd.ts: pgbench only slows down with more clients).
  await mintTokens(surge, await tokensHeld(surge), crowdTokens());
  const apiSurgePhase = await apiHoldPhase(surge, round, 'hold_api_surge', surge.options.clients * SURGE_CROWD_FACTOR);
  // Both sides get the same offered load: a share of what the API itself did this round at its
  // best, over the connections it did it with.
  const best = [apiCrowdPhase, apiSurgePhase].reduce((top, phase) => (phase.throughput > top.throughput ? phase : top), apiPhase);
  const rate = Math.max(1, Math.round(best.throughput * RATE_FRACTION));
  await mintTokens(surge, await tokensHeld(surge), Math.ceil((best.throughput * RECONNECT_S + rate * durationS) * TOKEN_HEADROOM));
  await surge.loadgen.run(job(surge, 'hold', surge.redisApi.port, RECONNECT_S, { connections: best.clients }));
  await resetHolds(surge);
  const apiRatePhase = await loadPhase(surge, round, 'hold_api_rate', surge.redisApi, 'hold', {
    connections: best.clients,
    mode: 'open',
    rate,
    queueMax: Math.ceil(rate * BACKLOG_SECONDS_MAX),
    requestsMax: Math.ceil(rate * durationS * TOKEN_HEADROOM),
  });
  const pgRatePhase = await pgbenchHoldPhase(surge, round, 'hold_pgbench_rate', rate);
  return [apiPhase, pgPhase, apiCrowdPhase, pgCrowdPhase, apiSurgePhase, apiRatePhase, pgRatePhase];
}

/** The API taking holds as fast as `connections` closed-loop buyers let it, from full stock. */
async function apiHoldPhase(surge: Surge, round: number, name: SurgePhaseName, connections: number): Promise<SurgePhase> {
  // The server's pool was closed for pgbench; reopen and re-prepare before the clock starts.
  await surge.loadgen.run(job(surge, 'hold', surge.redisApi.port, RECONNECT_S, { connections }));
  await resetHolds(surge);
  const phase = await loadPhase(surge, round, name, surge.redisApi, 'hold', { connections });
  // The warm-up's rate too: it sizes the next phase's tokens, nothing it measures.
  surge.lastHoldRate = Math.max(surge.lastHoldRate, phase.throughput);
  return phase;
}

/** pgbench running the captured hold SQL on the hot item: as fast as it can, or at `rate` (-R). */
async function pgbenchHoldPhase(
  surge: Surge,
  round: number,
  name: SurgePhaseName,
  rate?: number,
  clients = surge.options.clients,
): Promise<SurgePhase> {
  const { durationS } = surge;
  await surge.db.closeServerConnections();
  await resetHolds(surge);
  const { result, cpu } = await measured(surge, undefined, async () => {
    const job = { databaseUrl: surge.db.url, clients, durationS, rate };
    const run = await runPgbench(surge.capture.pgbench, job);
    return { ...run, ok: run.transactions };
  });
  const phase: SurgePhase = {
    round,
    name,
    clients,
    durationS,
    ...(rate ? { rate, overloaded: result.tps < rate * SCHEDULE_KEPT_MIN } : {}),
    throughput: result.tps,
    latency: result.latency,
    errors: result.failed > 0 ? { failed: result.failed } : {},
    rows: await countHolds(surge),
    cpu: { ...cpu, redisUsPerTx: Number.NaN },
  };
  console.log(phaseLine(phase));
  if (phase.rows !== result.transactions) console.log(`  warning: ${result.transactions} transactions but ${phase.rows} rows in holds`);
  // Full stock again, so the next round's sale reads answer the same bytes as the bare server.
  await resetHolds(surge);
  return phase;
}

/**
 * Paid checkouts on the hot item, closed loop: each connection runs one buyer's hold, order and
 * confirm after another, at the run's connections and again with two crowds of them (crowd.ts: a
 * surge has far more buyers in flight than 20, and each step's batches fill with them). After
 * each phase the stock must add up exactly, or the phase fails.
 */
async function checkoutPhases(surge: Surge, round: number): Promise<SurgePhase[]> {
  return [
    await checkoutPhase(surge, round, 'checkout_api', surge.options.clients),
    await checkoutPhase(surge, round, 'checkout_api_crowd', surge.options.clients * CROWD_FACTOR),
    await checkoutPhase(surge, round, 'checkout_api_surge', surge.options.clients * SURGE_CROWD_FACTOR),
  ];
}

async function checkoutPhase(surge: Surge, round: number, name: SurgePhaseName, connections: number): Promise<SurgePhase> {
  const { durationS } = surge;
  const expected = Math.max(surge.lastCheckoutRate, surge.lastHoldRate) || HOLD_RATE_GUESS;
  // A crowd may check out faster: twice the tokens, as the holds' crowd.
  const crowdFactor = connections > surge.options.clients ? 2 : 1;
  const wanted = crowdFactor * Math.ceil(expected * (durationS + RECONNECT_S) * TOKEN_HEADROOM);
  await mintTokens(surge, await tokensHeld(surge), Math.max(TOKENS_MIN, wanted));
  const options = { secretAuthorization: `Bearer ${surge.secretKey}`, connections, checkoutRequests: surge.options.checkoutRequests };
  // The pgbench phase closed the server's pool: reopen it (and the provider's sockets) unmeasured.
  await surge.loadgen.run(job(surge, 'checkout', surge.redisApi.port, RECONNECT_S, options));
  await resetHolds(surge);
  await seedPendingHolds(surge, surge.options.holdsPending);
  const phase = await loadPhase(surge, round, name, surge.redisApi, 'checkout', options);
  surge.lastCheckoutRate = Math.max(surge.lastCheckoutRate, phase.throughput);
  phase.stock = await checkStock(surge, phase, surge.options.holdsPending);
  if (phase.stock.problems.length > 0)
    console.error(`  FAILED: ${phase.name} stock counters are not exact: ${phase.stock.problems.join('; ')}`);
  await resetHolds(surge);
  return phase;
}

/**
 * Buyers holding the hot item who have not paid yet, as a surge has thousands while its
 * checkouts run: each a hold of one unit for an hour with its line, its allocation and its
 * pending expiry job, as writeHolds leaves them (without keys or admission tickets, which no
 * checkout reads). Written in SQL, since the API would spend the phase's tokens on them; then
 * analyzed, as autovacuum would have by then.
 */
async function seedPendingHolds(surge: Surge, count: number): Promise<void> {
  if (count === 0) return;
  await surge.adminPool.query(
    `with item as (
       select i.merchant_id, i.id, i.sale_id, i.price, s.currency
       from sale_items i join sales s on s.merchant_id = i.merchant_id and s.id = i.sale_id
       where i.id = $1),
     hold as (
       insert into holds (merchant_id, id, sale_id, buyer_reference, status, amount, currency, expires_at)
       select item.merchant_id, 'hold_pending' || lpad(n::text, 15, '0'), item.sale_id, 'pending-' || n, 'active',
              item.price, item.currency, now() + interval '1 hour'
       from item, generate_series(1, $2::int) n
       returning merchant_id, id, expires_at),
     line as (
       insert into hold_lines (merchant_id, hold_id, item_id, quantity)
       select hold.merchant_id, hold.id, item.id, 1 from hold, item),
     expiry as (
       ${insertJobsSql({
         task: '$3::text',
         payload: "json_build_object('merchant_id', hold.merchant_id, 'hold_id', hold.id)",
         runAt: 'hold.expires_at',
         key: "$3 || ':' || hold.id",
         from: 'from hold',
       })})
     update sale_items set stock_allocated = stock_allocated + $2 where id = $1`,
    [surge.hotItem, count, EXPIRE_HOLD_TASK],
  );
  await surge.adminPool.query('analyze holds, hold_lines, graphile_worker._private_jobs');
}

/**
 * The hot item's stock after a checkout phase, from the database, against what the generator
 * was answered. Nothing expired or was released in the phase (holds last an hour), so every
 * hold answered is still held or sold, and the allocation counter is exactly held + sold.
 * `pending` holds were seeded before the phase and are still held.
 */
async function checkStock(surge: Surge, phase: SurgePhase, pending: number): Promise<StockCheck> {
  const { rows } = await surge.adminPool.query<Omit<StockCheck, 'problems'>>(
    `select i.stock_total as total, i.stock_available as available, i.stock_held as held, i.stock_sold as sold,
            s.stock_allocated as allocated,
            (select coalesce(sum(quantity), 0)::int from stock_returns r where r.item_id = i.id) as returned,
            (select count(*)::int from orders o where o.status = 'paid') as "paidOrders"
     from items i join sale_items s on s.merchant_id = i.merchant_id and s.id = i.id
     where i.id = $1`,
    [surge.hotItem],
  );
  const stock = rows[0];
  assert.ok(stock, 'the hot item exists');
  // The step that answers the payment: the order that confirms, or the confirm after the order.
  const paid = (surge.options.checkoutRequests === 3 ? phase.steps?.confirm : phase.steps?.order) ?? 0;
  const held = (phase.steps?.hold ?? 0) + pending;
  // An answer the generator gave up on (a timeout) may still have committed: only then may the
  // database count more than the generator was told, and by no more than that.
  const unanswered = phase.errors.timeout ?? 0;
  const problems: string[] = [];
  const expect = (ok: boolean, what: string) => {
    if (!ok) problems.push(what);
  };
  expect(
    stock.available + stock.held + stock.sold === stock.total,
    `available ${stock.available} + held ${stock.held} + sold ${stock.sold} != total ${stock.total}`,
  );
  expect(
    stock.allocated === stock.held + stock.sold + stock.returned,
    `allocated ${stock.allocated} != held ${stock.held} + sold ${stock.sold} + returned ${stock.returned}`,
  );
  expect(stock.sold === stock.paidOrders, `sold ${stock.sold} != paid orders ${stock.paidOrders}`);
  expect(stock.sold >= paid && stock.sold <= paid + unanswered, `sold ${stock.sold} != paid checkouts ${paid}`);
  expect(
    stock.held + stock.sold >= held && stock.held + stock.sold <= held + unanswered,
    `held + sold ${stock.held + stock.sold} != holds answered ${held}`,
  );
  return { ...stock, problems };
}

async function runRound(surge: Surge, round: number): Promise<SurgePhase[]> {
  const phases: SurgePhase[] = [];
  const warm = round === 0;
  const durationS = warm ? (surge.options.quick ? 2 : 3) : surge.durationS;
  const parts = surge.options.parts;
  if (parts.has('reads')) {
    phases.push(await loadPhase(surge, round, 'read_api', surge.redisApi, 'read', {}, durationS));
    phases.push(await loadPhase(surge, round, 'read_bare', surge.bare, 'read', {}, durationS));
    phases.push(await loadPhase(surge, round, 'read_api_memory', surge.memoryApi, 'read', {}, durationS));
  }
  if (parts.has('line')) {
    phases.push(
      await loadPhase(
        surge,
        round,
        'join_admitted',
        surge.redisApi,
        'join',
        { expectStatus: 'admitted', buyerPrefix: `r${round}-admit-${surge.buyerSeq++}` },
        durationS,
      ),
    );
  }
  if (parts.has('holds')) phases.push(...(await holdPhases(surge, round, await tokensHeld(surge))));
  if (parts.has('checkouts')) phases.push(...(await checkoutPhases(surge, round)));
  if (parts.has('line')) {
    phases.push(
      await loadPhase(
        surge,
        round,
        'join_waiting',
        surge.redisApi,
        'join',
        { saleId: surge.lineSale, expectStatus: 'waiting', buyerPrefix: `r${round}-wait-${surge.buyerSeq++}` },
        durationS,
      ),
    );
    phases.push(await loadPhase(surge, round, 'poll', surge.redisApi, 'poll', { saleId: surge.lineSale }, durationS));
  }
  return phases;
}

/** Tokens the generator holds now (a zero-request join answers with its count). */
async function tokensHeld(surge: Surge): Promise<number> {
  const result = await surge.loadgen.run(
    job(surge, 'join', surge.redisApi.port, 1, { requestsMax: 0, expectStatus: 'admitted', buyerPrefix: 'none' }),
  );
  return result.tokensLeft;
}

async function deleteRedisKeys(prefix: string): Promise<number> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  let deleted = 0;
  try {
    let cursor = '0';
    // Bounded: a bench run writes at most a few hundred thousand keys.
    for (let scans = 0; scans < 100_000; scans++) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      if (keys.length > 0) deleted += await redis.unlink(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
  } finally {
    redis.disconnect();
  }
  return deleted;
}

export interface SurgeRecord {
  table: string;
  summary: SurgeSummary;
  /** Checks that failed (the checkouts' stock counters); the run exits non-zero if any did. */
  failures: string[];
  phases: SurgePhase[];
  holdStatements: HoldCapture['statements'];
  pgbench: HoldCapture['pgbench'];
  readBody: string;
  redisKeyPrefix: string;
}

/** Runs the surge benchmark on the bench database; prints its phases and table, returns its record. */
export async function runSurge(db: BenchDatabase, options: SurgeOptions): Promise<SurgeRecord> {
  const rounds = options.quick ? 1 : 3;
  const durationS = options.quick ? 3 : 5;
  const prefix = `floodgate_bench_${db.name.slice('floodgate_bench_'.length)}:`;
  const cleanups: (() => unknown)[] = [];
  const adminPool = createPool({ connectionString: db.url, max: 2, statementTimeoutMs: 120_000, applicationName: 'floodgate-bench' });
  cleanups.push(() => adminPool.end());
  const sampler = await BackendCpuSampler.open(db.url, db.name);
  cleanups.push(() => sampler.close());
  cleanups.push(() => deleteRedisKeys(prefix).then((count) => console.log(`surge: deleted ${count} Redis keys under ${prefix}`)));
  try {
    const merchant = await createMerchant(adminPool, 'Surge bench merchant');
    const nodeArgs = options.profile ? ['--cpu-prof', `--cpu-prof-dir=${options.profileDir}`] : [];
    // This run's phases only: an earlier run's processes may have had the same pids.
    if (options.profile) rmSync(path.join(options.profileDir, PHASE_WINDOWS_FILE), { force: true });
    const simulator = await startSimulatorProcess();
    cleanups.push(() => simulator.stop());
    const redisApi = await startApiServer({
      databaseUrl: db.url,
      poolMax: options.clients,
      nodeArgs,
      // The checkouts pay through the simulator over HTTP, as a node pays through its provider.
      env: { REDIS_URL, FLOODGATE_REDIS_KEY_PREFIX: prefix, FLOODGATE_PROVIDER_URL: simulator.url },
    });
    cleanups.push(() => redisApi.stop());
    // Profiled too, so that the two modes' reads can be set side by side.
    const memoryApi = await startApiServer({ databaseUrl: db.url, poolMax: options.clients, nodeArgs, env: { REDIS_URL: '' } });
    cleanups.push(() => memoryApi.stop());
    const secret = merchant.secret_key;
    const opensAt = new Date(Date.now() - 60_000).toISOString();
    const base = { currency: 'usd', opens_at: opensAt, per_buyer_limit: 4, hold_seconds: 3600, grace_seconds: 3600 };
    const hot = await api(redisApi.port, secret, 'POST', '/v1/sales', {
      ...base,
      name: 'Bench surge',
      ...ADMIT_ALL,
      items: [{ name: 'Hot item', price: 5000, stock: HOT_STOCK }],
    });
    const line = await api(redisApi.port, secret, 'POST', '/v1/sales', {
      ...base,
      name: 'Bench line',
      ...ADMIT_NONE,
      items: [{ name: 'Line item', price: 5000, stock: 1000 }],
    });
    const capture = await captureHold({
      databaseUrl: db.url,
      merchantId: merchant.merchant.id,
      saleId: hot.json.id,
      itemId: hot.json.items[0].id,
      clients: options.clients,
    });
    await adminPool.query('truncate hold_lines, holds, idempotency_keys cascade');
    await adminPool.query('update sale_items set stock_allocated = 0');
    // Past the cache's staleness bound, so the reference body shows the full stock.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const read = await api(redisApi.port, merchant.publishable_key, 'GET', `/v1/sales/${hot.json.id}`);
    const bare = await startBareServer(
      {
        body: read.text,
        etag: read.headers.get('etag') ?? '',
        cacheControl: read.headers.get('cache-control') ?? '',
      },
      nodeArgs,
    );
    cleanups.push(() => bare.stop());
    const loadgen = new SurgeLoadGenerator();
    cleanups.push(() => loadgen.stop());
    const surge: Surge = {
      options,
      db,
      sampler,
      redisApi,
      memoryApi,
      bare,
      loadgen,
      publishableKey: merchant.publishable_key,
      hotSale: hot.json.id,
      hotItem: hot.json.items[0].id,
      lineSale: line.json.id,
      capture,
      readBody: read.text,
      redisPid: redisPid(),
      simulator,
      secretKey: secret,
      adminPool,
      durationS,
      buyerSeq: 0,
      lastHoldRate: 0,
      lastCheckoutRate: 0,
    };
    console.log(`surge: hot sale ${surge.hotSale}, ${rounds} round(s) of ${durationS} s phases; warming up`);
    const phases: SurgePhase[] = [];
    for (let r = 0; r <= rounds; r++) phases.push(...(await runRound(surge, r)));
    const summary = summarizeSurge(phases, rounds);
    const table = formatSurgeTable(summary, { quick: options.quick, rounds, durationS, clients: options.clients });
    console.log(`\n${table}`);
    return {
      table,
      summary,
      failures: summary.failures,
      phases,
      holdStatements: capture.statements,
      pgbench: capture.pgbench,
      readBody: read.text,
      redisKeyPrefix: prefix,
    };
  } finally {
    for (const step of cleanups.reverse()) await Promise.resolve(step()).catch((error) => console.error(`surge cleanup: ${error}`));
  }
}
