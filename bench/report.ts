/**
 * The comparison table and the JSON record of a run.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { best, CROWD_FACTOR } from './crowd.js';
import { faultCostText, type MachineInfo } from './machine.js';
import type { LatencySummary } from './stats.js';
import { median, round } from './stats.js';
import type { SurgePart } from './surge.js';

export type Side = 'api' | 'pgbench';
/**
 * `fanout` is a max phase for the merchant with a webhook endpoint: each creation's event fans
 * out to a delivery, which the paused worker leaves queued (issue 9's creation with fan-out).
 * `crowd` and `fanout_crowd` are the same max phases with CROWD_FACTOR times the connections.
 */
export type PhaseKind = 'max' | 'rate' | 'single' | 'fanout' | 'crowd' | 'fanout_crowd';

export interface PhaseResult {
  round: number;
  side: Side;
  kind: PhaseKind;
  clients: number;
  durationS: number;
  /** Offered rate for the fixed-rate phase, requests (transactions) per second. */
  rate?: number;
  throughput: number;
  latency: LatencySummary;
  errors: Record<string, number>;
  /** Rows in payment_intents after the phase: every success must have written one. */
  rows: number;
  overloaded?: boolean;
  cpu: {
    /** Share of all cores busy during the phase, whoever used them. */
    machineBusy: number;
    /** CPU per successful request (transaction) in µs: load generator or pgbench, API server, PostgreSQL backends. */
    clientUsPerTx: number;
    serverUsPerTx: number;
    backendsUsPerTx: number;
    /**
     * The API server's minor page faults per successful request (absent for pgbench's side and
     * in records made before they were counted): memory it had to map, each fault costing the
     * machine's pageFaultUs of CPU inside serverUsPerTx.
     */
    serverFaultsPerTx?: number;
    /** Cores used by everything else during the phase; high values mean a noisy measurement. */
    otherCores: number;
  };
}

/** What a run measures: the API against pgbench, the worker's jobs, its webhook deliveries. */
export const SECTIONS = ['payments', 'jobs', 'webhooks', 'surge'] as const;
export type Section = (typeof SECTIONS)[number];

export interface RunOptions {
  quick: boolean;
  sections: Section[];
  rounds: number;
  clients: number;
  warmupS: number;
  maxS: number;
  rateS: number;
  singleS: number;
  rateFraction: number;
  /** Each job and webhook drain is sized to take about this long. */
  drainS: number;
  /** The sustained webhook phase's length; 0 leaves it out. */
  sustainedS: number;
  /** The sustained phase's rate, as a share of the API's payment creation with the fan-out. */
  sustainedFraction: number;
  /** How long the webhook receiver takes to answer each delivery, ms. */
  receiverDelayMs: number;
  profile: boolean;
  /** The surge section's parts to run (bench/surge.ts). */
  surgeParts: SurgePart[];
  /** A paid checkout's requests: 2 (an order that confirms) or 3 (order, then confirm). */
  checkoutRequests: 2 | 3;
  /** Buyers holding the hot item through each checkout phase, each with a pending expiry job. */
  holdsPending: number;
}

export interface SummaryRow {
  metric: string;
  api: number;
  pgbench: number;
  ratio: number;
}

export interface Summary {
  rows: SummaryRow[];
  /** Where the CPU goes per transaction at max throughput, in µs. */
  cpuRows: SummaryRow[];
  /** pgbench's total CPU per transaction over the API's: the throughput ratio when CPU is all that limits. */
  cpuBoundRatio: number;
  /** Median cores used by other processes during the phases. */
  otherCores: number;
  goalRatio: number;
  /** The row the goal reads: each side's best max when the crowd phases ran, else the max at the run's concurrency. */
  goalRow: SummaryRow;
}

const GOAL_RATIO = 0.8;
// Above this many cores used by other processes, absolute numbers and the throughput ratio are noisy.
const NOISY_OTHER_CORES = 0.25;

function pick(phases: PhaseResult[], side: Side, kind: PhaseKind, value: (phase: PhaseResult) => number): number[] {
  return phases.filter((phase) => phase.side === side && phase.kind === kind).map(value);
}

const totalCpu = (phase: PhaseResult) => phase.cpu.clientUsPerTx + phase.cpu.serverUsPerTx + phase.cpu.backendsUsPerTx;

/** Medians over rounds; each ratio is the median of the rounds' own ratios, taken side by side in time. */
export function summarize(phases: PhaseResult[], rounds: number): Summary {
  const metric = (name: string, kind: PhaseKind, value: (phase: PhaseResult) => number): SummaryRow => {
    const api = pick(phases, 'api', kind, value);
    const pgbench = pick(phases, 'pgbench', kind, value);
    const ratios = Array.from({ length: rounds }, (_, index) => (api[index] as number) / (pgbench[index] as number));
    return { metric: name, api: median(api), pgbench: median(pgbench), ratio: round(median(ratios), 2) };
  };
  const cpuBound = metric('', 'max', totalCpu);
  const crowd = metric(`throughput, ${CROWD_FACTOR}x clients`, 'crowd', (phase) => phase.throughput);
  const throughputRow = metric('throughput (req/s)', 'max', (phase) => phase.throughput);
  const bestRow = bestThroughput(phases);
  const crowdRan = Number.isFinite(crowd.api);
  return {
    rows: [
      throughputRow,
      ...(crowdRan ? [crowd, bestRow] : []),
      metric('p50 @ max (ms)', 'max', (phase) => phase.latency.p50Ms),
      metric('p50 @ 60% rate (ms)', 'rate', (phase) => phase.latency.p50Ms),
      metric('p99 @ 60% rate (ms)', 'rate', (phase) => phase.latency.p99Ms),
      metric('1-client p50 (ms)', 'single', (phase) => phase.latency.p50Ms),
      metric('1-client p99 (ms)', 'single', (phase) => phase.latency.p99Ms),
    ],
    cpuRows: [
      metric('client (generator | pgbench)', 'max', (phase) => phase.cpu.clientUsPerTx),
      // pgbench has no server in between: its column stays empty rather than showing 0.
      { ...metric('API server', 'max', (phase) => phase.cpu.serverUsPerTx), pgbench: Number.NaN, ratio: Number.NaN },
      metric('PostgreSQL backends', 'max', (phase) => phase.cpu.backendsUsPerTx),
      metric('total', 'max', totalCpu),
      // At the same rate the backends' work must match; at max, pgbench's higher rate lets more
      // commits share each WAL flush, so its cost per transaction is lower there.
      metric('PostgreSQL backends @ 60% rate', 'rate', (phase) => phase.cpu.backendsUsPerTx),
    ],
    cpuBoundRatio: round(1 / cpuBound.ratio, 2),
    otherCores: round(median(phases.map((phase) => phase.cpu.otherCores)), 2),
    goalRatio: GOAL_RATIO,
    goalRow: crowdRan ? bestRow : throughputRow,
  };
}

/**
 * Each side's best max throughput (the median over rounds of its max phase or of its crowd
 * phase, whichever is higher), and their ratio.
 */
function bestThroughput(phases: PhaseResult[]): SummaryRow {
  const sideBest = (side: Side) =>
    best(...(['max', 'crowd'] as const).map((kind) => median(pick(phases, side, kind, (phase) => phase.throughput))));
  const api = sideBest('api');
  const pgbench = sideBest('pgbench');
  return { metric: 'best throughput (req/s)', api, pgbench, ratio: round(api / pgbench, 2) };
}

const pad = (text: string, width: number) => text.padEnd(width);
const num = (value: number) =>
  Number.isFinite(value) ? (value >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(2)) : '-';
const ratio = (value: number) => (Number.isFinite(value) ? value.toFixed(2) : '-');
const line = (row: SummaryRow) => `${pad(row.metric, 30)} ${pad(num(row.api), 10)} ${pad(num(row.pgbench), 10)} ${ratio(row.ratio)}`;

export function formatTable(summary: Summary, machine: MachineInfo, options: RunOptions, phases: PhaseResult[]): string {
  const rates = phases.filter((phase) => phase.side === 'api' && phase.kind === 'rate').map((phase) => phase.rate);
  const lines = [
    `machine: ${machine.cores} cores (${machine.cpuModel}), node ${machine.node}, PostgreSQL ${machine.postgres}, ` +
      `${machine.pgbench}, load average at start ${machine.loadAverage.join(' ')}${faultCostText(machine)}`,
    `${options.quick ? 'quick' : 'full'} run: ${options.rounds} round(s), medians shown; each phase ${options.maxS} s at max, ` +
      `${options.rateS} s at fixed rate, ${options.singleS} s with 1 client; ${options.warmupS} s HTTP warm-up`,
    `concurrency ${options.clients} (HTTP keep-alive connections = server pool size = pgbench clients; ` +
      `${options.clients * CROWD_FACTOR} HTTP connections and pgbench clients in the crowd phases); ` +
      `fixed rate = ${Math.round(options.rateFraction * 100)}% of the API's max, per round: ${rates.join(', ')} req/s`,
    '',
    `${pad('metric', 30)} ${pad('api', 10)} ${pad('pgbench', 10)} ratio`,
    ...summary.rows.map(line),
    '',
    `${pad('CPU per transaction @ max (µs)', 30)} ${pad('api', 10)} ${pad('pgbench', 10)} ratio`,
    ...summary.cpuRows.map(line),
    `${pad('throughput ratio if CPU-bound', 52)} ${ratio(summary.cpuBoundRatio)}`,
    '',
    `ratio = api / pgbench. Throughput: higher is better, goal >= ${summary.goalRatio.toFixed(2)}. Latency: lower is better;`,
    'api - pgbench is what the HTTP layer adds. PostgreSQL backends @ 60% rate near 1.00: both did the same SQL work.',
    'CPU-bound ratio = pgbench total / api total: the throughput ratio when the cores are the only limit.',
  ];
  // Other processes' load moves the measured throughput ratio either way (it read 0.46 and 0.80
  // for the same code), so a noisy run judges the goal by the CPU-bound ratio instead.
  const goal = summary.goalRatio.toFixed(2);
  const verdict = (value: number) => (value >= summary.goalRatio ? 'meets' : 'is below');
  if (summary.otherCores > NOISY_OTHER_CORES) {
    lines.push(
      `noisy: other processes used ${summary.otherCores} cores (median over phases), so the throughput ratio and the latencies`,
      `are not reliable; the CPU-bound ratio ${ratio(summary.cpuBoundRatio)} ${verdict(summary.cpuBoundRatio)} the goal of ${goal}`,
    );
  } else {
    // Each side's best max when the crowd phases ran (each at its best concurrency).
    const throughput = summary.goalRow.ratio;
    lines.push(
      `${summary.goalRow === summary.rows[0] ? 'throughput' : 'best throughput'} ratio ${ratio(throughput)} ${verdict(throughput)} the goal of ${goal}`,
    );
  }
  return lines.join('\n');
}

/** One line per phase, for watching a run as it goes. */
export function formatPhase(phase: PhaseResult): string {
  const errors = Object.entries(phase.errors)
    .map(([name, count]) => `${name}=${count}`)
    .join(' ');
  return (
    `  ${phase.round === 0 ? 'warm-up' : `round ${phase.round}`} ${pad(phase.side, 7)} ${pad(phase.kind, 6)} c=${pad(String(phase.clients), 3)}` +
    `${phase.rate ? ` rate=${phase.rate}` : ''} ${phase.throughput}/s p50=${num(phase.latency.p50Ms)} ` +
    `p99=${num(phase.latency.p99Ms)} ms | cpu µs/tx: client ${phase.cpu.clientUsPerTx} server ${phase.cpu.serverUsPerTx} ` +
    `db ${phase.cpu.backendsUsPerTx}${phase.cpu.serverFaultsPerTx === undefined ? '' : ` | faults/tx ${phase.cpu.serverFaultsPerTx}`} | machine ${Math.round(phase.cpu.machineBusy * 100)}% busy, others ${phase.cpu.otherCores} cores` +
    `${errors ? ` | errors: ${errors}` : ''}${phase.overloaded ? ' OVERLOADED' : ''}`
  );
}

const RESULTS_DIR = path.resolve(import.meta.dirname, 'results');

/** Writes the record under a timestamped name and as latest.json, each via a temporary file. */
export async function writeResults(record: { startedAt: string } & Record<string, unknown>): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const json = `${JSON.stringify(record, null, 2)}\n`;
  const file = path.join(RESULTS_DIR, `${record.startedAt.replace(/[:.]/g, '-')}.json`);
  for (const target of [file, path.join(RESULTS_DIR, 'latest.json')]) {
    await writeFile(`${target}.tmp`, json);
    await rename(`${target}.tmp`, target);
  }
  return file;
}
