/**
 * Percentiles and per-second timelines of what the drill saw. Pure functions.
 */

export interface Percentiles {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of values (milliseconds or seconds; the caller's unit). */
export function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { count: 0, p50: 0, p95: 0, p99: 0, max: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
  return { count: sorted.length, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: sorted[sorted.length - 1] as number };
}

/** Counts per whole second since start, for events at `ms` (milliseconds since start). */
export function perSecond(eventsMs: number[], seconds: number): number[] {
  const counts = new Array<number>(seconds).fill(0);
  for (const ms of eventsMs) {
    const second = Math.floor(ms / 1000);
    if (second >= 0 && second < seconds) counts[second] = (counts[second] as number) + 1;
  }
  return counts;
}

/** The p99 of the values that ended in each second (0 where none did). */
export function p99PerSecond(samples: Array<{ atMs: number; value: number }>, seconds: number): number[] {
  const buckets: number[][] = Array.from({ length: seconds }, () => []);
  for (const sample of samples) {
    const second = Math.floor(sample.atMs / 1000);
    if (second >= 0 && second < seconds) buckets[second]?.push(sample.value);
  }
  return buckets.map((values) => percentiles(values).p99);
}

/**
 * A reading taken every few seconds, per second: each second shows the last reading before it
 * (a scrape that failed leaves the one before standing); null before the first and past the
 * readings' end.
 */
export function carriedForward(readings: Array<number | null>, seconds: number): Array<number | null> {
  let last: number | null = null;
  return Array.from({ length: seconds }, (_, second) => {
    if (second >= readings.length) return null;
    last = readings[second] ?? last;
    return last;
  });
}
