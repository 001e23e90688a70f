/**
 * Database metrics: how full the pool is (the USE method's utilisation and saturation for the
 * one resource every request needs), how long each statement takes by its prepared-statement
 * name, and how far each streaming replica lags, as the primary sees it.
 */
import { performance } from 'node:perf_hooks';
import { Gauge } from 'prom-client';
import type { Metrics } from '../observability/metrics.js';
import type { HistogramSeries } from '../observability/series-histogram.js';
import { SpanKind, SpanStatusCode, tracer, tracingStarted } from '../observability/tracing.js';
import type { Client, Pool } from './pool.js';

const INSTRUMENTED = Symbol('floodgate.instrumented');

type QueryFn = (...args: unknown[]) => unknown;

/** The label for a statement: its prepared-statement name, else `other` (bounded cardinality). */
export function statementLabel(first: unknown): string {
  if (first && typeof first === 'object' && 'name' in first) {
    const name = (first as { name?: unknown }).name;
    if (typeof name === 'string' && name.length > 0 && name.length <= 64) return name;
  }
  return 'other';
}

function queryText(first: unknown): string {
  if (typeof first === 'string') return first;
  if (first && typeof first === 'object' && 'text' in first) return String((first as { text: unknown }).text);
  return '';
}

function instrumentClient(client: Client, metrics: Metrics): void {
  const tagged = client as Client & { [INSTRUMENTED]?: true };
  if (tagged[INSTRUMENTED]) return;
  tagged[INSTRUMENTED] = true;
  const original = client.query as unknown as QueryFn;
  const durations = statementDurations(metrics);
  const wrapped: QueryFn = function (this: unknown, ...args: unknown[]) {
    const started = performance.now();
    const statement = statementLabel(args[0]);
    // Without a tracing SDK a span is a no-op, but its attributes (a copy of the statement's
    // text) were still built for every statement.
    const span = tracingStarted() ? statementSpan(statement, queryText(args[0])) : undefined;
    const finished = (error: unknown) => {
      const series = durations(statement);
      (error ? series.error : series.ok).observe((performance.now() - started) / 1000);
      if (error) span?.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error | undefined)?.message });
      span?.end();
    };
    // A callback-style call is how pool.query runs its statement (pg-pool passes a callback):
    // timed when its callback is called. Without this every autocommit statement sent through
    // the pool was missing from the durations.
    const last = args.length - 1;
    const callback = args[last];
    if (typeof callback === 'function') {
      args[last] = function (this: unknown, error: unknown, ...rest: unknown[]) {
        finished(error);
        return callback.call(this, error, ...rest);
      };
    }
    const result = original.apply(this, args);
    if (result instanceof Promise) result.then(() => finished(undefined), finished);
    // A submittable (a cursor) returns neither a promise nor takes a callback: not timed.
    else if (typeof callback !== 'function') span?.end();
    return result;
  };
  (client as unknown as { query: QueryFn }).query = wrapped;
}

/** A client span per statement (database semantic conventions): the text, never the values. */
function statementSpan(statement: string, text: string) {
  return tracer.startSpan(statement === 'other' ? (text.split(/\s+/, 1)[0]?.toUpperCase() ?? 'SQL') : statement, {
    kind: SpanKind.CLIENT,
    attributes: {
      'db.system.name': 'postgresql',
      'db.system': 'postgresql',
      'db.query.text': text.slice(0, 2_000),
      'db.query.summary': statement,
    },
  });
}

// Each registry's duration series by statement name, shared by every connection of its pools.
const durationsByMetrics = new WeakMap<Metrics, (statement: string) => StatementSeries>();

interface StatementSeries {
  ok: HistogramSeries;
  error: HistogramSeries;
}

function statementDurations(metrics: Metrics): (statement: string) => StatementSeries {
  let durations = durationsByMetrics.get(metrics);
  if (!durations) {
    const byStatement = new Map<string, StatementSeries>();
    durations = (statement) => {
      let series = byStatement.get(statement);
      if (!series) {
        series = {
          ok: metrics.dbQueryDuration.series({ statement, outcome: 'ok' }),
          error: metrics.dbQueryDuration.series({ statement, outcome: 'error' }),
        };
        byStatement.set(statement, series);
      }
      return series;
    };
    durationsByMetrics.set(metrics, durations);
  }
  return durations;
}

/**
 * Times every statement that runs on a connection of this pool (pool.query checks one out too,
 * and runs its statement with a callback), and exports the pool's use and the replicas' lag
 * when scraped.
 */
export function instrumentPool(pool: Pool, metrics: Metrics, options: { name: string; max: number }): void {
  pool.on('acquire', (client) => instrumentClient(client, metrics));
  const labels = { pool: options.name };
  new Gauge({
    name: 'floodgate_db_pool_connections',
    help: 'Connections of the pool by state: in_use (checked out), idle',
    labelNames: ['pool', 'state'] as const,
    registers: [metrics.registry],
    collect() {
      this.set({ ...labels, state: 'in_use' }, pool.totalCount - pool.idleCount);
      this.set({ ...labels, state: 'idle' }, pool.idleCount);
    },
  });
  new Gauge({
    name: 'floodgate_db_pool_max_connections',
    help: 'The most connections the pool opens',
    labelNames: ['pool'] as const,
    registers: [metrics.registry],
    collect() {
      this.set(labels, options.max);
    },
  });
  new Gauge({
    name: 'floodgate_db_pool_waiting_clients',
    help: 'Callers waiting for a free connection of the pool: above zero, the pool is saturated',
    labelNames: ['pool'] as const,
    registers: [metrics.registry],
    collect() {
      this.set(labels, pool.waitingCount);
    },
  });
  new Gauge({
    name: 'floodgate_db_replica_lag_seconds',
    help: 'Replay lag of each streaming replica, as the primary reports it (pg_stat_replication); no series without replicas',
    labelNames: ['replica'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      try {
        const { rows } = await pool.query<{ replica: string; lag: number }>({
          name: 'observability_replica_lag',
          text: `select coalesce(application_name, client_addr::text, 'unknown') as replica,
                        coalesce(extract(epoch from replay_lag), 0)::float8 as lag
                   from pg_stat_replication`,
        });
        for (const row of rows) this.set({ replica: row.replica }, row.lag);
      } catch {
        // A scrape must not fail because the database is down: the pool gauges say so already.
      }
    },
  });
}
