/**
 * The drill's verdict: the invariants (each must be 0), what happened to the buyers, errors by
 * kind, and latency percentiles with the surge's admitted requests against the calm baseline's.
 * Pure: computed from what the drill recorded and what it checked afterwards.
 */
import type { BuyerOutcome, BuyerResult } from './buyer.js';
import type { RequestRecord } from './client.js';
import { type Percentiles, percentiles } from './stats.js';

export interface InvariantChecks {
  stockTotal: number;
  /** stock.sold of the sale's item after the drill. */
  soldUnits: number;
  /** Orders of the sale in status paid. */
  paidOrders: number;
  /** Payments authorized more than once at the provider (null: not checked, no database). */
  chargedTwice: number | null;
  /** The drill's payments still processing after reconciliation, plus attempts left open. */
  notFinal: number;
  /** Violations reported by `floodgate audit` (null: not run, no database). */
  auditViolations: number | null;
}

export interface InvariantRow {
  name: string;
  value: number | null;
  ok: boolean;
  note: string;
}

export interface Verdict {
  ok: boolean;
  invariants: InvariantRow[];
  buyers: Record<BuyerOutcome, number>;
  errors: Record<string, number>;
  /** 5xx answers other than 503 overloaded / provider_unavailable (which carry Retry-After). */
  unexpected5xx: number;
  timeInLineSeconds: Percentiles;
  holdLatencyMs: Percentiles;
  paymentLatencyMs: Percentiles;
  /** p99 of the admitted buyers' requests (hold, order, confirm), surge against baseline. */
  admittedP99: { baselineMs: number; surgeMs: number; ratio: number | null; baselineCount: number; surgeCount: number };
  byKind: Record<string, { baseline: Percentiles; surge: Percentiles }>;
  /**
   * The drill's own event-loop delay in each phase (ms): an answer that arrives while the
   * client's loop is busy waits that long before it is timed, so a surge phase's latencies
   * include it. Absent when not measured.
   */
  clientLoopDelayMs?: { baseline: LoopDelay; surge: LoopDelay };
}

export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
}

const OUTCOMES: BuyerOutcome[] = [
  'paid',
  'payment_pending',
  'declined',
  'sold_out',
  'abandoned_in_line',
  'abandoned_hold',
  'closed',
  'gave_up',
  'failed',
];
// Refusals that are the service working as designed under load: a client retries after Retry-After.
const EXPECTED_503 = new Set(['overloaded', 'provider_unavailable', 'service_unavailable']);

export function computeVerdict(surgeBuyers: BuyerResult[], records: RequestRecord[], checks: InvariantChecks): Verdict {
  const oversold = Math.max(0, checks.soldUnits - checks.stockTotal, checks.paidOrders - checks.stockTotal);
  const invariants: InvariantRow[] = [
    { name: 'oversold units', value: oversold, ok: oversold === 0, note: `sold ${checks.soldUnits} of ${checks.stockTotal}` },
    {
      name: 'sold units without a paid order',
      value: Math.abs(checks.soldUnits - checks.paidOrders),
      ok: checks.soldUnits === checks.paidOrders,
      note: `${checks.paidOrders} paid orders`,
    },
    {
      name: 'charged twice',
      value: checks.chargedTwice,
      ok: checks.chargedTwice === null || checks.chargedTwice === 0,
      note: checks.chargedTwice === null ? 'not checked: no database access (set DATABASE_URL)' : 'payments authorized more than once',
    },
    {
      name: 'payments not final after reconciliation',
      value: checks.notFinal,
      ok: checks.notFinal === 0,
      note: 'processing, or attempts left open',
    },
    {
      name: 'audit violations',
      value: checks.auditViolations,
      ok: checks.auditViolations === null || checks.auditViolations === 0,
      note: checks.auditViolations === null ? 'not run: no database access (set DATABASE_URL)' : 'floodgate audit',
    },
  ];
  const buyers = Object.fromEntries(OUTCOMES.map((outcome) => [outcome, 0])) as Record<BuyerOutcome, number>;
  for (const buyer of surgeBuyers) buyers[buyer.outcome] += 1;
  const errors: Record<string, number> = {};
  let unexpected5xx = 0;
  for (const record of records) {
    if (record.status !== 0 && record.status < 400) continue;
    const kind = `${record.status || 'no answer'} ${record.code ?? ''}`.trim();
    errors[kind] = (errors[kind] ?? 0) + 1;
    if (record.status >= 500 && !(record.status === 503 && EXPECTED_503.has(record.code ?? ''))) unexpected5xx += 1;
  }
  const ok2xx = (record: RequestRecord) => record.status >= 200 && record.status < 300;
  const admittedLatencies = (phase: RequestRecord['phase']) =>
    records.filter((record) => record.phase === phase && record.admitted && ok2xx(record)).map((record) => record.latencyMs);
  const baseline = percentiles(admittedLatencies('baseline'));
  const surge = percentiles(admittedLatencies('surge'));
  const byKind: Verdict['byKind'] = {};
  for (const kind of ['join', 'poll', 'hold', 'order', 'confirm'] as const) {
    const of = (phase: RequestRecord['phase']) =>
      percentiles(
        records
          .filter((r) => r.kind === kind && r.phase === phase && ok2xx(r) && (kind !== 'confirm' || r.admitted))
          .map((r) => r.latencyMs),
      );
    byKind[kind] = { baseline: of('baseline'), surge: of('surge') };
  }
  const pick = (values: Array<number | undefined>) => values.filter((value): value is number => value !== undefined);
  return {
    ok: invariants.every((row) => row.ok),
    invariants,
    buyers,
    errors,
    unexpected5xx,
    timeInLineSeconds: percentiles(pick(surgeBuyers.map((buyer) => buyer.waitMs)).map((ms) => ms / 1000)),
    holdLatencyMs: percentiles(pick(surgeBuyers.map((buyer) => buyer.holdLatencyMs))),
    paymentLatencyMs: percentiles(pick(surgeBuyers.map((buyer) => buyer.paymentLatencyMs))),
    admittedP99: {
      baselineMs: baseline.p99,
      surgeMs: surge.p99,
      ratio: baseline.count > 0 && baseline.p99 > 0 ? surge.p99 / baseline.p99 : null,
      baselineCount: baseline.count,
      surgeCount: surge.count,
    },
    byKind,
  };
}

const fmt = (value: number, digits = 0) => value.toFixed(digits);

/** The verdict as the terminal table the drill prints. */
export function formatVerdict(verdict: Verdict): string {
  const lines: string[] = [];
  const row = (name: string, value: string, mark = '') => lines.push(`  ${name.padEnd(42)} ${value.padStart(12)}  ${mark}`);
  // A pass with checks it could not run says so in its first line, not only in their rows.
  const unchecked = verdict.invariants.filter((invariant) => invariant.value === null).length;
  const caveat = unchecked > 0 ? ` (${unchecked} of ${verdict.invariants.length} invariants not checked: set DATABASE_URL)` : '';
  lines.push(`drill verdict: ${verdict.ok ? 'PASS' : 'FAIL'}${caveat}`, '', '  invariants (must be 0)');
  for (const invariant of verdict.invariants) {
    row(invariant.name, invariant.value === null ? 'n/a' : String(invariant.value), `${invariant.ok ? 'ok  ' : 'FAIL'}  ${invariant.note}`);
  }
  lines.push('', '  buyers of the surge');
  for (const [outcome, count] of Object.entries(verdict.buyers)) if (count > 0) row(outcome, String(count));
  lines.push('', '  errors by kind (all phases, every try)');
  const errors = Object.entries(verdict.errors).sort((a, b) => b[1] - a[1]);
  if (errors.length === 0) row('none', '0');
  for (const [kind, count] of errors) row(kind, String(count));
  row('5xx other than 503 with Retry-After', String(verdict.unexpected5xx));
  lines.push('', '  latency                                          p50        p95        p99');
  const pct = (name: string, p: Percentiles, unit: string, digits = 0) =>
    lines.push(
      `  ${name.padEnd(42)} ${`${fmt(p.p50, digits)}${unit}`.padStart(8)} ${`${fmt(p.p95, digits)}${unit}`.padStart(10)} ${`${fmt(p.p99, digits)}${unit}`.padStart(10)}`,
    );
  pct('time in line', verdict.timeInLineSeconds, ' s', 1);
  pct('hold', verdict.holdLatencyMs, ' ms');
  pct('payment (order + confirms)', verdict.paymentLatencyMs, ' ms');
  for (const [kind, { baseline, surge }] of Object.entries(verdict.byKind)) {
    if (baseline.count > 0) pct(`${kind}, no surge (${baseline.count})`, baseline, ' ms');
    if (surge.count > 0) pct(`${kind}, surge (${surge.count})`, surge, ' ms');
  }
  const loop = verdict.clientLoopDelayMs;
  if (loop) {
    const delay = (d: LoopDelay) => `p50 ${fmt(d.p50, 1)} / p99 ${fmt(d.p99, 1)} / max ${fmt(d.max)} ms`;
    lines.push(
      '',
      `  the drill's own event-loop delay (in every latency above): no surge ${delay(loop.baseline)}; surge ${delay(loop.surge)}`,
    );
  }
  const { baselineMs, surgeMs, ratio, baselineCount, surgeCount } = verdict.admittedP99;
  // The counts say how steady each p99 is: of a few hundred requests it is a handful of the slowest.
  lines.push(
    '',
    `  admitted requests' p99: surge ${fmt(surgeMs)} ms (${surgeCount} requests) vs no surge ${fmt(baselineMs)} ms (${baselineCount})` +
      (ratio === null ? ' (no baseline)' : ` = ${ratio.toFixed(2)}x (goal <= 2x)`),
  );
  return lines.join('\n');
}
