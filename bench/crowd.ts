/**
 * How much larger the crowd phases' concurrency is than a run's (bench/run.ts, bench/surge.ts).
 *
 * A closed loop of `clients` connections serves at most clients ÷ latency: a server that
 * batches (the API's group commit) is still waiting for its next batch to fill when that many
 * callers are all it has, with cores to spare, while pgbench's naive transactions queue on
 * PostgreSQL's own locks and flushes. So each side's max is also measured with this many times
 * the connections, and each is credited with the better of its two: its own best concurrency.
 */
export const CROWD_FACTOR = 3;

/** The better of a side's figures at the run's concurrency and with a crowd; NaN when neither ran. */
export function best(...values: number[]): number {
  const measured = values.filter(Number.isFinite);
  return measured.length > 0 ? Math.max(...measured) : Number.NaN;
}
