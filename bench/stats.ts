/**
 * Latency summaries shared by the load generator and the pgbench runner, so that both sides'
 * percentiles are computed by the same code from raw per-request samples.
 */

export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

/** Nearest-rank percentile of sorted samples: the smallest value with at least q of all at or below it. */
function nearestRank(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1] as number;
}

/** Summarises latencies given in microseconds; the summary is in milliseconds. */
export function summarize(samplesUs: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(samplesUs).sort();
  let total = 0;
  for (const value of sorted) total += value;
  const ms = (us: number) => round(us / 1000, 3);
  return {
    count: sorted.length,
    meanMs: ms(sorted.length ? total / sorted.length : Number.NaN),
    p50Ms: ms(nearestRank(sorted, 0.5)),
    p90Ms: ms(nearestRank(sorted, 0.9)),
    p99Ms: ms(nearestRank(sorted, 0.99)),
    p999Ms: ms(nearestRank(sorted, 0.999)),
    maxMs: ms(sorted.length ? (sorted[sorted.length - 1] as number) : Number.NaN),
  };
}

export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export function median(values: number[]): number {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}
