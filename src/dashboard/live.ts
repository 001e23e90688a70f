/**
 * What the live operations page plots, from this node's own metrics: a point each time a viewer
 * polls (at most one a second), kept for the last few minutes. Rates and percentiles are over
 * the interval between two points. Every node serves the dashboard; each shows its own traffic
 * (Prometheus and the Grafana dashboard show the whole cluster).
 */
import type { Registry } from 'prom-client';
import type { Metrics } from '../platform/observability/metrics.js';

export interface LivePoint {
  /** Unix seconds. */
  t: number;
  requestsPerSecond: number;
  errorRatio: number;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  jobsWaiting: number | null;
  oldestJobSeconds: number | null;
  breakerOpen: number | null;
  replicaLagSeconds: number | null;
  inFlight: number | null;
}

interface Snapshot {
  atMs: number;
  count: number;
  errors: number;
  /** Cumulative count per bucket upper bound (seconds), +Inf last. */
  buckets: Map<number, number>;
}

// Five minutes of points at one a second.
const POINTS_MAX = 300;
const POINT_INTERVAL_MIN_MS = 1_000;
// Operations traffic is not what operators ask about.
const OPS_ROUTES = /^\/(metrics|livez|readyz|dashboard)/;

async function snapshot(metrics: Metrics): Promise<Snapshot> {
  const { values } = await metrics.httpDuration.get();
  const buckets = new Map<number, number>();
  let count = 0;
  let errors = 0;
  for (const value of values) {
    const labels = value.labels as Record<string, string | number | undefined>;
    if (OPS_ROUTES.test(String(labels.route ?? ''))) continue;
    if (value.metricName?.endsWith('_bucket')) {
      const le = labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(labels.le);
      buckets.set(le, (buckets.get(le) ?? 0) + value.value);
    } else if (value.metricName?.endsWith('_count')) {
      count += value.value;
      if (labels.status_class === '5xx') errors += value.value;
    }
  }
  return { atMs: Date.now(), count, errors, buckets };
}

/** The q-quantile of the observations between two snapshots, interpolated inside its bucket as Prometheus does. */
export function quantileBetween(before: Map<number, number>, after: Map<number, number>, q: number): number | null {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const deltas = bounds.map((le) => (after.get(le) ?? 0) - (before.get(le) ?? 0));
  const total = deltas[deltas.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if ((deltas[i] as number) >= rank) {
      const upper = bounds[i] as number;
      const lower = i === 0 ? 0 : (bounds[i - 1] as number);
      if (!Number.isFinite(upper)) return lower;
      const below = i === 0 ? 0 : (deltas[i - 1] as number);
      const inBucket = (deltas[i] as number) - below;
      return inBucket <= 0 ? upper : lower + ((upper - lower) * (rank - below)) / inBucket;
    }
  }
  return null;
}

async function gauge(registry: Registry, name: string, pick: (labels: Record<string, string | number>) => boolean, reduce: 'sum' | 'max') {
  const metric = registry.getSingleMetric(name);
  if (!metric) return null;
  const { values } = await metric.get();
  const chosen = values.filter((value) => pick(value.labels as Record<string, string | number>)).map((value) => value.value);
  if (chosen.length === 0) return reduce === 'sum' ? 0 : null;
  return reduce === 'sum' ? chosen.reduce((a, b) => a + b, 0) : Math.max(...chosen);
}

export function createLiveSeries(metrics: Metrics) {
  const points: LivePoint[] = [];
  let previous: Snapshot | undefined;
  let pending: Promise<void> | undefined;

  const sample = async () => {
    const now = await snapshot(metrics);
    const registry = metrics.registry;
    const all = () => true;
    const [jobsWaiting, oldestJobSeconds, breakerOpen, replicaLagSeconds, inFlight] = await Promise.all([
      gauge(registry, 'floodgate_jobs_waiting', all, 'sum'),
      gauge(registry, 'floodgate_jobs_oldest_waiting_seconds', all, 'max'),
      gauge(registry, 'floodgate_provider_breaker_state', (labels) => labels.state === 'open', 'max'),
      gauge(registry, 'floodgate_db_replica_lag_seconds', all, 'max'),
      gauge(registry, 'floodgate_http_in_flight_requests', all, 'sum'),
    ]);
    if (previous) {
      const seconds = Math.max(0.001, (now.atMs - previous.atMs) / 1000);
      const requests = now.count - previous.count;
      const ms = (q: number) => {
        const value = quantileBetween(previous?.buckets ?? new Map(), now.buckets, q);
        return value === null ? null : Math.round(value * 10_000) / 10;
      };
      points.push({
        t: Math.round(now.atMs / 1000),
        requestsPerSecond: Math.round((requests / seconds) * 10) / 10,
        errorRatio: requests > 0 ? (now.errors - previous.errors) / requests : 0,
        p50Ms: ms(0.5),
        p95Ms: ms(0.95),
        p99Ms: ms(0.99),
        jobsWaiting,
        oldestJobSeconds,
        breakerOpen,
        replicaLagSeconds,
        inFlight,
      });
      if (points.length > POINTS_MAX) points.splice(0, points.length - POINTS_MAX);
    }
    previous = now;
  };

  return {
    /** The series, with a new point if the last is older than a second. */
    async read(): Promise<LivePoint[]> {
      if (!previous || Date.now() - previous.atMs >= POINT_INTERVAL_MIN_MS) {
        pending ??= sample().finally(() => {
          pending = undefined;
        });
        await pending;
      }
      return points;
    },
  };
}

/** A sale's live numbers from this node's waiting-room metrics (as this node last saw the line). */
export async function saleLine(metrics: Metrics, saleId: string) {
  const registry = metrics.registry;
  const ofSale = (labels: Record<string, string | number>) => labels.sale === saleId;
  const [waiting, pending, shopping, admittedTotal] = await Promise.all([
    gauge(registry, 'floodgate_waiting_room_length', ofSale, 'max'),
    gauge(registry, 'floodgate_waiting_room_admitted', (l) => ofSale(l) && l.state === 'pending', 'max'),
    gauge(registry, 'floodgate_waiting_room_admitted', (l) => ofSale(l) && l.state === 'shopping', 'max'),
    gauge(registry, 'floodgate_waiting_room_admissions_total', ofSale, 'sum'),
  ]);
  return { waiting: waiting ?? 0, admittedPending: pending ?? 0, shopping: shopping ?? 0, admittedTotal: admittedTotal ?? 0 };
}
