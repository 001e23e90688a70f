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

/**
 * The hot item's phases (bench/surge.ts) measure the API once more with this many times the
 * connections: a surge's buyers in flight, as many as its waiting room admits (3,000 holds a
 * second at 30 ms each are 90 at once). The API's batches grow with them and its CPU per hold
 * falls, so 60 connections left it short of its best. pgbench is not run there: its naive
 * transactions only queue longer on the hot row (its holds per second fall from 20 to 60
 * clients), and 120 clients are more than the machine's PostgreSQL admits (max_connections 100).
 */
export const SURGE_CROWD_FACTOR = 6;

/** The best of a side's figures at the run's concurrency and with a crowd; NaN when none ran. */
export function best(...values: number[]): number {
  const measured = values.filter(Number.isFinite);
  return measured.length > 0 ? Math.max(...measured) : Number.NaN;
}
