/**
 * The worker's table: jobs and webhook deliveries per second beside the payment-creation rate
 * measured in the same run, with the CPU each costs, and the sustained phase's verdict.
 */
import type { PhaseResult, RunOptions } from './report.js';
import { median, round } from './stats.js';
import type { JobsPhaseResult, SustainedResult, WebhooksPhaseResult, WorkerCpu } from './worker.js';

// The issue's goal: the worker delivers at least twice as fast as the API creates payments, so
// the queue never grows under a sustained peak.
export const DELIVERY_GOAL_RATIO = 2;
// Issue 9's goal: a delivery costs the worker's side no more CPU than the payment that caused it
// costs the API's side (both in full: process, client or receiver, PostgreSQL backends).
export const DELIVERY_CPU_GOAL_RATIO = 1;
// As in report.ts: above this many cores used by other processes, measured rates are noisy.
const NOISY_OTHER_CORES = 0.25;
// The sustained phase's API is behind when it completes fewer requests per second than this share of the offered rate.
const BEHIND_SHARE = 0.95;

export interface WorkerSummaryRow {
  metric: string;
  value: number;
  /** value ÷ the API's max payment-creation rate, median of the rounds' own ratios. */
  ratio: number;
}

export interface WorkerSummary {
  rows: WorkerSummaryRow[];
  /** deliveries/s ÷ payment creation with the fan-out, median of the rounds' own ratios. */
  deliveriesPerFanOutCreation: number;
  /**
   * Payment creation with the fan-out ÷ pgbench running the naive one-statement creation (no
   * endpoint) in the same round: issue 9's goal of 1.0 for a webhook merchant. The creation is
   * the `fanout` max phase when it ran (warm and as long as the API max), else the burst that
   * fills the drain's queue; each side the better of its phases at the run's concurrency and with
   * a crowd, when those ran. NaN when the payments section (pgbench) did not run.
   */
  fanOutCreationPerPgbench: number;
  /** CPU per creation in the fan-out max phases (µs): API server + generator, PostgreSQL. */
  fanOutCpu?: { api: number; backends: number };
  cpuRows: { metric: string; payment: number; job: number; delivery: number }[];
  /** deliveries/s ÷ payments/s when the cores are the only limit: payment CPU ÷ delivery CPU. */
  cpuBoundDeliveryRatio: number;
  /** Delivery CPU ÷ payment CPU (totals), median of the rounds' own ratios; issue 9's goal is <= 1. */
  deliveryPerPaymentCpu: number;
  /** The worker's write system calls per job and per delivery (see WorkerCpu). */
  writes: { job: number; delivery: number };
  /** Minor page faults per unit: the API's per payment (the max phases), the worker's per job and per delivery. */
  faults: { payment: number; job: number; delivery: number };
  otherCores: number;
  goalRatio: number;
}

const totalCpu = (cpu: WorkerCpu) => cpu.workerUsPerJob + cpu.receiverUsPerJob + cpu.backendsUsPerJob;
const paymentCpu = (phase: PhaseResult) => phase.cpu.clientUsPerTx + phase.cpu.serverUsPerTx + phase.cpu.backendsUsPerTx;

/** Medians over rounds; each ratio is the median of the rounds' own ratios (rounds without a phase are skipped). */
export function summarizeWorker(
  apiMax: PhaseResult[],
  jobs: JobsPhaseResult[],
  webhooks: WebhooksPhaseResult[],
  pgbenchMax: PhaseResult[] = [],
  fanOutMax: PhaseResult[] = [],
): WorkerSummary {
  const maxOf = new Map(apiMax.map((phase) => [phase.round, phase]));
  // Each round's best of its phases (at the run's concurrency and with a crowd: crowd.ts).
  const bestOf = (phases: PhaseResult[]) => {
    const best = new Map<number, number>();
    for (const phase of phases) best.set(phase.round, Math.max(best.get(phase.round) ?? 0, phase.throughput));
    return best;
  };
  const pgbenchOf = bestOf(pgbenchMax);
  const fanOutCrowd = fanOutMax.filter((phase) => phase.kind === 'fanout_crowd');
  const fanOut = fanOutMax.filter((phase) => phase.kind !== 'fanout_crowd');
  const fanOutOf = bestOf(fanOut);
  const fanOutBestOf = bestOf(fanOutMax);
  // Each round's creation with fan-out: its max phase, or the burst when none ran (the
  // deliveries are read against it); against pgbench, the better of it and the crowd's.
  const fanOutCreation = (phase: WebhooksPhaseResult) => fanOutOf.get(phase.round) ?? phase.creation.throughput;
  const perPgbench = webhooks.flatMap((phase) => {
    const reference = pgbenchOf.get(phase.round);
    return reference ? [(fanOutBestOf.get(phase.round) ?? phase.creation.throughput) / reference] : [];
  });
  const ratios = <T extends { round: number }>(items: T[], value: (item: T) => number, base: (phase: PhaseResult, item: T) => number) =>
    median(
      items.flatMap((item) => {
        const phase = maxOf.get(item.round);
        return phase ? [value(item) / base(phase, item)] : [];
      }),
    );
  const row = <T extends { round: number }>(metric: string, items: T[], value: (item: T) => number): WorkerSummaryRow => ({
    metric,
    value: median(items.map(value)),
    ratio: round(
      ratios(items, value, (phase) => phase.throughput),
      2,
    ),
  });
  const apiCpu = median(apiMax.map(paymentCpu));
  const jobCpu = (pick: (cpu: WorkerCpu) => number) => median(jobs.map((phase) => pick(phase.cpu)));
  const deliveryCpu = (pick: (cpu: WorkerCpu) => number) => median(webhooks.map((phase) => pick(phase.cpu)));
  return {
    rows: [
      { metric: 'payment creation, API max (req/s)', value: median(apiMax.map((phase) => phase.throughput)), ratio: 1 },
      row('jobs drained (jobs/s)', jobs, (phase) => phase.throughput),
      row('webhook deliveries (deliveries/s)', webhooks, (phase) => phase.throughput),
      ...(fanOut.length > 0 ? [row('payment creation with fan-out, API max (req/s)', fanOut, (phase) => phase.throughput)] : []),
      ...(fanOutCrowd.length > 0 ? [row('creation with fan-out, crowd (req/s)', fanOutCrowd, (phase) => phase.throughput)] : []),
      row('payment creation with fan-out, burst (req/s)', webhooks, (phase) => phase.creation.throughput),
    ],
    deliveriesPerFanOutCreation: round(median(webhooks.map((phase) => phase.throughput / fanOutCreation(phase))), 2),
    fanOutCreationPerPgbench: perPgbench.length > 0 ? round(median(perPgbench), 2) : Number.NaN,
    fanOutCpu:
      fanOut.length > 0
        ? {
            api: median(fanOut.map((p) => p.cpu.serverUsPerTx + p.cpu.clientUsPerTx)),
            backends: median(fanOut.map((p) => p.cpu.backendsUsPerTx)),
          }
        : undefined,
    cpuRows: [
      {
        metric: 'worker | API server + generator',
        payment: median(apiMax.map((p) => p.cpu.serverUsPerTx + p.cpu.clientUsPerTx)),
        job: jobCpu((c) => c.workerUsPerJob),
        delivery: deliveryCpu((c) => c.workerUsPerJob),
      },
      { metric: 'webhook receiver', payment: Number.NaN, job: Number.NaN, delivery: deliveryCpu((c) => c.receiverUsPerJob) },
      {
        metric: 'PostgreSQL backends',
        payment: median(apiMax.map((p) => p.cpu.backendsUsPerTx)),
        job: jobCpu((c) => c.backendsUsPerJob),
        delivery: deliveryCpu((c) => c.backendsUsPerJob),
      },
      { metric: 'total', payment: apiCpu, job: jobCpu(totalCpu), delivery: deliveryCpu(totalCpu) },
    ],
    cpuBoundDeliveryRatio: round(
      ratios(
        webhooks,
        (phase) => 1 / totalCpu(phase.cpu),
        (phase) => 1 / paymentCpu(phase),
      ),
      2,
    ),
    deliveryPerPaymentCpu: round(
      ratios(
        webhooks,
        (phase) => totalCpu(phase.cpu),
        (phase) => paymentCpu(phase),
      ),
      2,
    ),
    writes: { job: jobCpu((c) => c.workerWritesPerJob), delivery: deliveryCpu((c) => c.workerWritesPerJob) },
    faults: {
      // median() skips the phases without a count (NaN).
      payment: median(apiMax.map((phase) => phase.cpu.serverFaultsPerTx ?? Number.NaN)),
      job: jobCpu((c) => c.workerFaultsPerJob),
      delivery: deliveryCpu((c) => c.workerFaultsPerJob),
    },
    otherCores: round(median([...jobs.map((phase) => phase.cpu.otherCores), ...webhooks.map((phase) => phase.cpu.otherCores)]), 2),
    goalRatio: DELIVERY_GOAL_RATIO,
  };
}

const pad = (text: string, width: number) => text.padEnd(width);
const num = (value: number) =>
  Number.isFinite(value) ? (value >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(2)) : '-';
const ratio = (value: number) => (Number.isFinite(value) ? value.toFixed(2) : '-');

export function formatWorkerTable(
  summary: WorkerSummary,
  sustained: SustainedResult | undefined,
  options: RunOptions,
  worker: { concurrency: number; jobTask: string },
): string {
  const lines = [
    `worker: floodgate worker with its defaults (concurrency ${worker.concurrency}); ${options.rounds} round(s), medians shown; each drain`,
    `from a full queue sized to take about ${options.drainS} s. Jobs: ${worker.jobTask} on an empty table (one statement each).`,
    `Deliveries: one endpoint at a local receiver answering 200${options.receiverDelayMs ? ` after ${options.receiverDelayMs} ms` : ' at once'}. ` +
      'ratio = value / the API max payment creation of the same round.',
    '',
    `${pad('metric', 40)} ${pad('value', 10)} ratio`,
    ...summary.rows.map((row) => `${pad(row.metric, 40)} ${pad(num(row.value), 10)} ${ratio(row.ratio)}`),
    `${pad('deliveries/s ÷ creation with fan-out', 51)} ${ratio(summary.deliveriesPerFanOutCreation)}`,
    `${pad('creation with fan-out ÷ pgbench (naive, no endpoint)', 51)} ${ratio(summary.fanOutCreationPerPgbench)}`,
    ...(summary.fanOutCpu
      ? [
          `${pad('creation with fan-out, CPU per creation (µs)', 51)} API + generator ${num(summary.fanOutCpu.api)}, ` +
            `PostgreSQL ${num(summary.fanOutCpu.backends)}`,
        ]
      : []),
    '',
    `${pad('CPU per unit of work (µs)', 32)} ${pad('payment', 9)} ${pad('job', 9)} delivery`,
    ...summary.cpuRows.map((row) => `${pad(row.metric, 32)} ${pad(num(row.payment), 9)} ${pad(num(row.job), 9)} ${num(row.delivery)}`),
    `${pad('deliveries/s ÷ payments/s if CPU-bound', 51)} ${ratio(summary.cpuBoundDeliveryRatio)}`,
    `${pad(`delivery CPU ÷ payment CPU (goal <= ${DELIVERY_CPU_GOAL_RATIO.toFixed(2)})`, 51)} ${ratio(summary.deliveryPerPaymentCpu)}`,
    `${pad("worker's write syscalls (≈ round trips)", 32)} ${pad('-', 9)} ${pad(num(summary.writes.job), 9)} ${num(summary.writes.delivery)}`,
    `${pad('page faults (API; worker)', 32)} ${pad(num(summary.faults.payment), 9)} ${pad(num(summary.faults.job), 9)} ${num(summary.faults.delivery)}`,
  ];
  if (sustained) lines.push('', ...formatSustained(sustained));
  const goal = summary.goalRatio.toFixed(2);
  const deliveries = summary.rows[2]?.ratio ?? Number.NaN;
  const verdict = (value: number) => (value >= summary.goalRatio ? 'meets' : 'is below');
  lines.push('');
  if (summary.otherCores > NOISY_OTHER_CORES) {
    lines.push(
      `noisy: other processes used ${summary.otherCores} cores (median over the worker's phases); deliveries/s ÷ payments/s`,
      `read ${ratio(deliveries)}, and ${ratio(summary.cpuBoundDeliveryRatio)} if CPU-bound, which ${verdict(summary.cpuBoundDeliveryRatio)} the goal of ${goal}`,
    );
  } else lines.push(`deliveries/s ÷ payments/s ${ratio(deliveries)} ${verdict(deliveries)} the goal of ${goal}`);
  return lines.join('\n');
}

function formatSustained(result: SustainedResult): string[] {
  const first = result.depth[0]?.deliveries ?? 0;
  const during = result.depth.filter((sample) => sample.atS <= result.durationS + 0.5);
  const last = during.at(-1)?.deliveries ?? 0;
  const after = result.depth.slice(during.length);
  const errors = Object.entries(result.api.errors)
    .map(([name, count]) => `${name}=${count}`)
    .join(' ');
  return [
    `sustained: API creating payments with fan-out at ${result.rate} req/s for ${result.durationS} s while the worker delivers`,
    `  API: ${result.api.throughput} req/s, p50 ${num(result.api.latency.p50Ms)} ms, p99 ${num(result.api.latency.p99Ms)} ms` +
      `${errors ? `, errors ${errors}` : ''}${result.api.overloaded ? ', OVERLOADED (could not keep the rate)' : ''}` +
      // Sharing the cores with the worker, the API may not keep up the offered rate; then it, not
      // the worker, is what limits the phase, and a flat queue says less.
      `${!result.api.overloaded && result.api.throughput < result.rate * BEHIND_SHARE ? `, behind the offered ${result.rate} req/s` : ''}`,
    `  queue depth (deliveries pending) ${first} -> ${last} over the phase, slope ${result.slopePerS} deliveries/s: ` +
      `${result.grows ? 'GROWS' : 'flat'}`,
    `  per second: ${during.map((sample) => sample.deliveries).join(' ')}${after.length ? ` | after the API stopped: ${after.map((sample) => sample.deliveries).join(' ')}` : ''}`,
    `  delivery latency, event created -> received: p50 ${num(result.latency.p50Ms)} ms, p99 ${num(result.latency.p99Ms)} ms, ` +
      `max ${num(result.latency.maxMs)} ms (${result.delivered} of ${result.deliveries} delivered` +
      `${result.drainS === undefined ? ', the rest not within the wait after the phase' : `, the last ${result.drainS} s after the API stopped`})`,
  ];
}

export function formatJobsPhase(phase: JobsPhaseResult): string {
  return (
    `  ${phase.round === 0 ? 'warm-up' : `round ${phase.round}`} jobs     ${phase.jobs} ${phase.task} in ${phase.elapsedMs} ms: ` +
    `${phase.throughput} jobs/s${phase.left ? ` (${phase.left} LEFT)` : ''} | ${cpuLine(phase.cpu, 'job')}`
  );
}

export function formatWebhooksPhase(phase: WebhooksPhaseResult): string {
  const errors = Object.entries(phase.creation.errors)
    .map(([name, count]) => `${name}=${count}`)
    .join(' ');
  const problems = [
    phase.left ? `${phase.left} LEFT pending` : '',
    phase.attempts > phase.deliveries ? `${phase.attempts - phase.deliveries} retries` : '',
    phase.received !== phase.succeeded ? `receiver got ${phase.received}` : '',
    phase.duplicates ? `${phase.duplicates} duplicates` : '',
    errors ? `creation errors: ${errors}` : '',
  ].filter(Boolean);
  return (
    `  ${phase.round === 0 ? 'warm-up' : `round ${phase.round}`} webhooks ${phase.deliveries} created at ${phase.creation.throughput} req/s` +
    `${phase.jobs === undefined ? '' : ` in ${phase.jobs} jobs`}, ` +
    `delivered in ${phase.elapsedMs} ms: ${phase.throughput} deliveries/s | ${cpuLine(phase.cpu, 'delivery')}` +
    `${problems.length ? ` | ${problems.join(', ')}` : ''}`
  );
}

function cpuLine(cpu: WorkerCpu, unit: string): string {
  return (
    `cpu µs/${unit}: worker ${cpu.workerUsPerJob}${cpu.receiverUsPerJob ? ` receiver ${cpu.receiverUsPerJob}` : ''} ` +
    `db ${cpu.backendsUsPerJob} | writes/${unit} ${cpu.workerWritesPerJob} faults/${unit} ${cpu.workerFaultsPerJob} | machine ${Math.round(cpu.machineBusy * 100)}% busy, others ${cpu.otherCores} cores`
  );
}
