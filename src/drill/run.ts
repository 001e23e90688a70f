/**
 * `floodgate drill`: rehearses a sale. A calm baseline first (buyers arriving at half the
 * sustainable rate), then the surge (buyers arriving at --surge times that rate), each buyer
 * walking the whole journey; then reconciliation is waited for, the invariants are checked,
 * the verdict printed and the report written.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { audit } from '../audit/service.js';
import type { Config } from '../config.js';
import { createAuthenticator } from '../merchants/service.js';
import { attemptAnomalies } from '../payments/service.js';
import type { Pool } from '../platform/db/pool.js';
import { type BuyerResult, runBuyer } from './buyer.js';
import { type Answer, DrillClient, sleep } from './client.js';
import { type Deployment, type OpenDatabase, openDeployment } from './deployment.js';
import type { DrillOptions } from './options.js';
import { type DrillReport, renderReport, type Timeline } from './report.js';
import { carriedForward, p99PerSecond, perSecond } from './stats.js';
import { computeVerdict, formatVerdict, type InvariantChecks, type LoopDelay, type Verdict } from './verdict.js';

export interface DrillOutcome {
  verdict: Verdict;
  reportFile: string;
  jsonFile: string;
  logFile?: string;
}

// Sockets the crowd shares: a browser opens a few per buyer, but the drill is one machine and
// must not exhaust the target's file descriptors.
const SOCKETS_MAX = 256;
// How long a timed-out payment may take to settle once the drill's buyers are done.
const RECONCILE_WAIT_MS = 60_000;
const PAGE_LIMIT = 100;
// How often the drill scrapes the target's /metrics for its queue depth, from the calm phase's
// first arrival to the end, as a Prometheus would. A scrape is not free (the server renders
// every series and counts its jobs in SQL: about 10 ms of its CPU, in slices that hold up the
// requests in flight), so both phases must carry it for their latencies to compare: scraped in
// the surge only, it was load the surge's requests shared and the calm baseline did not. Once a
// second was too much of it; as seldom as Prometheus' default (15 s) would leave the chart too
// coarse.
const QUEUE_SCRAPE_EVERY_S = 5;

interface Sale {
  id: string;
  itemId: string;
}

export async function runDrill(
  config: Config,
  options: DrillOptions,
  deps: { progress: NodeJS.WriteStream | undefined; openDatabase: OpenDatabase },
): Promise<DrillOutcome> {
  const deployment = await openDeployment(config, options, deps.openDatabase);
  const client = new DrillClient(deployment.url, { socketsMax: SOCKETS_MAX });
  try {
    return await rehearse(deployment, client, options, deps.progress);
  } finally {
    client.close();
    await deployment.close();
  }
}

async function rehearse(deployment: Deployment, client: DrillClient, options: DrillOptions, progress: NodeJS.WriteStream | undefined) {
  const startedAt = new Date().toISOString();
  const baselineSale = await createSale(client, deployment, options, 'baseline', options.baselineBuyers || 1);
  const surgeSale = await createSale(client, deployment, options, 'surge', options.stock);
  const buyerPlan = (sale: Sale, phase: 'baseline' | 'surge', deadlineMs: number) => ({
    saleId: sale.id,
    itemId: sale.itemId,
    buyerKey: deployment.buyerKey,
    secretKey: deployment.secretKey,
    phase,
    deadlineMs,
    random: Math.random,
    abandonShare: options.abandonShare,
  });

  // --- No surge: arrivals at half the sustainable rate, so nobody waits long.
  const calmRate = options.rate / 2;
  const baselineDeadline = client.now() + (options.baselineBuyers / calmRate) * 1000 + 60_000;
  const queue = scrapeQueue(deployment.url);
  const calmLoop = loopDelay();
  try {
    await arrive(options.baselineBuyers, calmRate, Number.POSITIVE_INFINITY, () =>
      runBuyer(client, buyerPlan(baselineSale, 'baseline', baselineDeadline)),
    );
  } catch (error) {
    queue.stop();
    throw error;
  } finally {
    calmLoop.disable();
  }

  // --- The surge.
  const surgeRate = options.rate * options.surge;
  const surgeStartMs = client.now();
  const drainMs = Math.max(30, options.durationSeconds * 2) * 1000;
  const deadlineMs = surgeStartMs + options.durationSeconds * 1000 + drainMs;
  const live = { arrived: 0, inLine: 0, done: 0, paid: 0 };
  const samples: Array<{ waiting: number; jobsWaiting: number | null }> = [];
  const sampler = setInterval(() => samples.push({ waiting: live.inLine, jobsWaiting: queue.fresh() }), 1000);
  const bar = startProgress(progress, options, live);
  const surgeLoop = loopDelay();
  let surgeBuyers: BuyerResult[];
  try {
    surgeBuyers = await arrive(options.buyers, surgeRate, options.durationSeconds * 1000, async () => {
      live.arrived += 1;
      live.inLine += 1;
      let inLine = true;
      const leaveLine = () => {
        if (inLine) live.inLine -= 1;
        inLine = false;
      };
      const result = await runBuyer(client, { ...buyerPlan(surgeSale, 'surge', deadlineMs), onAdmitted: leaveLine });
      leaveLine();
      live.done += 1;
      if (result.outcome === 'paid') live.paid += 1;
      return result;
    });
  } finally {
    surgeLoop.disable();
    clearInterval(sampler);
    queue.stop();
    bar.stop();
  }
  const surgeEndMs = client.now();

  // --- Reconciliation settles the payments whose outcome was unknown.
  const notFinal = await waitForFinal(client, deployment, surgeBuyers.concat());
  const checks = await checkInvariants(client, deployment, surgeSale, options.stock, notFinal);
  const records = client.records.filter((record) => record.phase !== 'setup');
  const verdict = computeVerdict(surgeBuyers, records, checks);
  verdict.clientLoopDelayMs = { baseline: loopSummary(calmLoop), surge: loopSummary(surgeLoop) };
  const timeline = buildTimeline(surgeBuyers, client, surgeStartMs, surgeEndMs, samples);
  const report: DrillReport = {
    startedAt,
    target: options.target ?? `its own floodgate start (${deployment.url})`,
    options: { ...options, secretKey: options.secretKey ? 'sk_...(masked)' : undefined },
    verdict,
    timeline,
    machine: { cpus: cpus().length, loadAverage: loadavg(), node: process.version },
  };
  await mkdir(path.dirname(options.reportFile), { recursive: true });
  const jsonFile = options.reportFile.replace(/\.html$/, '') + '.json';
  await writeFile(options.reportFile, await renderReport(report));
  await writeFile(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  return { verdict, reportFile: options.reportFile, jsonFile, logFile: deployment.logFile };
}

// Node times a timer of this interval; what it records beyond it is the loop's delay.
const LOOP_RESOLUTION_MS = 10;

/** The drill's own event-loop delay from now until disabled. */
function loopDelay(): IntervalHistogram {
  const histogram = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  histogram.enable();
  return histogram;
}

function loopSummary(histogram: IntervalHistogram): LoopDelay {
  const ms = (ns: number) => Math.round(Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS) * 10) / 10;
  if (histogram.count === 0) return { p50: 0, p99: 0, max: 0 };
  return { p50: ms(histogram.percentile(50)), p99: ms(histogram.percentile(99)), max: ms(histogram.max) };
}

/**
 * Starts `count` buyers at `perSecond`, stopping after `windowMs` even if not all came; resolves
 * with every buyer's result once all have finished.
 */
async function arrive(count: number, perSecond: number, windowMs: number, start: () => Promise<BuyerResult>): Promise<BuyerResult[]> {
  const journeys: Array<Promise<BuyerResult>> = [];
  const began = Date.now();
  // Buyers are started in ticks: a timer per buyer would be late by more than their spacing.
  const tickMs = 20;
  while (journeys.length < count) {
    const elapsed = Date.now() - began;
    if (elapsed > windowMs) break;
    const due = Math.min(count, Math.floor((elapsed / 1000) * perSecond) + 1);
    while (journeys.length < due) journeys.push(start());
    await sleep(tickMs);
  }
  return Promise.all(journeys);
}

async function createSale(client: DrillClient, deployment: Deployment, options: DrillOptions, label: string, stock: number): Promise<Sale> {
  const answer = await client.send('setup', 'POST', '/v1/sales', {
    key: deployment.secretKey,
    phase: 'setup',
    idempotencyKey: `drill_sale_${label}_${Date.now()}_${Math.random().toString(36).slice(2)}`,
    body: {
      name: `Drill ${label} ${new Date().toISOString()}`,
      currency: 'usd',
      opens_at: new Date(Date.now() - 1000).toISOString(),
      per_buyer_limit: 1,
      // The shortest hold the API allows: abandoned holds return their stock within the drill.
      hold_seconds: 30,
      admit_per_second: options.rate,
      grace_seconds: 30,
      items: [{ name: 'Drill ticket', price: 2500, stock }],
    },
  });
  if (answer.status !== 200) throw new Error(`could not create the drill's sale: ${answer.status} ${JSON.stringify(answer.body)}`);
  return { id: answer.body.id as string, itemId: (answer.body.items as Array<{ id: string }>)[0]?.id as string };
}

/** Waits for the drill's pending payments to settle; returns how many did not (plus open attempts). */
async function waitForFinal(client: DrillClient, deployment: Deployment, buyers: BuyerResult[]): Promise<number> {
  let pending = buyers.filter((buyer) => buyer.outcome === 'payment_pending').flatMap((buyer) => buyer.paymentIntents);
  const until = Date.now() + RECONCILE_WAIT_MS;
  while (pending.length > 0 && Date.now() < until) {
    const still: string[] = [];
    for (const id of pending) {
      const answer = await client.send('read', 'GET', `/v1/payment_intents/${id}`, { key: deployment.secretKey, phase: 'setup' });
      if (answer.status !== 200 || answer.body.status === 'processing') still.push(id);
    }
    pending = still;
    if (pending.length > 0) await sleep(1000);
  }
  let openAttempts = 0;
  if (deployment.pool) {
    const merchantId = await merchantOf(deployment.pool, deployment.secretKey);
    if (merchantId) openAttempts = (await attemptAnomalies(deployment.pool, merchantId)).open;
  }
  return pending.length + openAttempts;
}

async function merchantOf(pool: Pool, secretKey: string): Promise<string | undefined> {
  const result = await createAuthenticator(pool, 0)(`Bearer ${secretKey}`);
  return result.kind === 'authenticated' ? result.principal.merchantId : undefined;
}

export async function checkInvariants(
  client: DrillClient,
  deployment: Deployment,
  sale: Pick<Sale, 'id'>,
  stock: number,
  notFinal: number,
): Promise<InvariantChecks> {
  const key = deployment.secretKey;
  const read = (url: string): Promise<Answer> => client.send('read', 'GET', url, { key, phase: 'setup' });
  let paidOrders = 0;
  let after: string | undefined;
  for (;;) {
    const page = await read(`/v1/orders?sale=${sale.id}&limit=${PAGE_LIMIT}${after ? `&starting_after=${after}` : ''}`);
    if (page.status !== 200) throw new Error(`could not list the drill's orders: ${page.status} ${JSON.stringify(page.body)}`);
    const orders = page.body.data as Array<{ id: string; status: string }>;
    paidOrders += orders.filter((order) => order.status === 'paid').length;
    if (!page.body.has_more || orders.length === 0) break;
    after = orders[orders.length - 1]?.id;
  }
  // Every payment is final by now, so the orders are; the sale page is a cached read, stale by
  // under max-age + 1 seconds (max-age is the bound rounded down). A copy loaded before the last
  // payments completed may still show fewer sold: read again once the bound has passed, so the
  // check compares the page with the orders, not with the cache's age.
  let soldUnits = await soldOnSalePage(read, sale.id);
  if (soldUnits.sold !== paidOrders) {
    await sleep(((soldUnits.maxAgeSeconds ?? 0) + 1) * 1000);
    soldUnits = await soldOnSalePage(read, sale.id);
  }
  let chargedTwice: number | null = null;
  let auditViolations: number | null = null;
  if (deployment.pool) {
    const merchantId = await merchantOf(deployment.pool, key);
    if (!merchantId) throw new Error('the drill could not find its own merchant in the database it was given');
    chargedTwice = (await attemptAnomalies(deployment.pool, merchantId)).authorized_twice;
    auditViolations = (await audit(deployment.pool)).violations.length;
  }
  return { stockTotal: stock, soldUnits: soldUnits.sold, paidOrders, chargedTwice, notFinal, auditViolations };
}

async function soldOnSalePage(read: (url: string) => Promise<Answer>, saleId: string) {
  const answer = await read(`/v1/sales/${saleId}`);
  const item = (answer.body.items as Array<{ stock: { total: number; sold: number } }> | undefined)?.[0];
  if (answer.status !== 200 || !item) throw new Error(`could not read the drill's sale: ${answer.status}`);
  return { sold: item.stock.sold, maxAgeSeconds: answer.maxAgeSeconds };
}

/**
 * The target's queue depth, scraped every QUEUE_SCRAPE_EVERY_S until stopped. `fresh` gives a
 * scrape's reading once, the first time it is asked after the scrape landed, and null otherwise
 * (the chart carries the last reading forward).
 */
function scrapeQueue(base: string): { fresh(): number | null; stop(): void } {
  let reading: number | null = null;
  const scrape = () =>
    void jobsWaiting(base).then((value) => {
      reading = value;
    });
  scrape();
  const timer = setInterval(scrape, QUEUE_SCRAPE_EVERY_S * 1000);
  return {
    fresh() {
      const value = reading;
      reading = null;
      return value;
    },
    stop: () => clearInterval(timer),
  };
}

/** Sum of floodgate_jobs_waiting on the target's /metrics; null when it cannot be read. */
async function jobsWaiting(base: string): Promise<number | null> {
  try {
    const response = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(2_000) });
    if (!response.ok) return null;
    let sum = 0;
    for (const match of (await response.text()).matchAll(/^floodgate_jobs_waiting\{[^}]*\} (\S+)$/gm)) sum += Number(match[1]);
    return sum;
  } catch {
    return null;
  }
}

function buildTimeline(
  buyers: BuyerResult[],
  client: DrillClient,
  surgeStartMs: number,
  surgeEndMs: number,
  samples: Array<{ waiting: number; jobsWaiting: number | null }>,
): Timeline {
  const seconds = Math.max(1, Math.ceil((surgeEndMs - surgeStartMs) / 1000));
  const since = (values: Array<number | undefined>) =>
    values.filter((value): value is number => value !== undefined).map((ms) => ms - surgeStartMs);
  const surgeRecords = client.records.filter((record) => record.phase === 'surge');
  return {
    seconds: Array.from({ length: seconds }, (_, i) => i),
    arrivals: perSecond(since(buyers.map((buyer) => buyer.arrivedMs)), seconds),
    admitted: perSecond(since(buyers.map((buyer) => buyer.admittedMs)), seconds),
    held: perSecond(since(buyers.map((buyer) => buyer.heldMs)), seconds),
    sold: perSecond(since(buyers.map((buyer) => buyer.paidMs)), seconds),
    polls: perSecond(since(surgeRecords.filter((record) => record.kind === 'poll').map((record) => record.atMs)), seconds),
    errors: perSecond(
      since(surgeRecords.filter((record) => record.status === 0 || record.status >= 400).map((record) => record.atMs)),
      seconds,
    ),
    p99Ms: p99PerSecond(
      surgeRecords.map((record) => ({ atMs: record.atMs - surgeStartMs, value: record.latencyMs })),
      seconds,
    ).map((value) => Math.round(value * 10) / 10),
    waiting: Array.from({ length: seconds }, (_, i) => samples[i]?.waiting ?? 0),
    jobsWaiting: carriedForward(
      samples.map((sample) => sample.jobsWaiting),
      seconds,
    ),
  };
}

interface Live {
  arrived: number;
  inLine: number;
  done: number;
  paid: number;
}

/** A progress bar on a terminal; a line every 5 s elsewhere (CI logs); nothing with --no-progress. */
function startProgress(stream: NodeJS.WriteStream | undefined, options: DrillOptions, live: Live): { stop(): void } {
  if (!stream || !options.progress) return { stop() {} };
  const width = 30;
  const render = () => {
    const share = Math.min(1, live.done / Math.max(1, options.buyers));
    const filled = Math.round(share * width);
    return `  surge [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.round(share * 100)).padStart(3)}%  arrived ${live.arrived}/${options.buyers}  in line ${live.inLine}  paid ${live.paid}  done ${live.done}`;
  };
  const tty = stream.isTTY === true;
  const timer = setInterval(() => stream.write(tty ? `\r${render()}` : `${render()}\n`), tty ? 250 : 5_000);
  return {
    stop() {
      clearInterval(timer);
      stream.write(tty ? `\r${render()}\n` : `${render()}\n`);
    },
  };
}

export { formatVerdict };
