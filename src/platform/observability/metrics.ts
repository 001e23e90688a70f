import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { SeriesHistogram } from './series-histogram.js';

// Buckets from 1 ms to 10 s: a payment API's p50 sits near the bottom, provider calls near the top.
const HTTP_BUCKETS_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

// Jobs run from milliseconds (bookkeeping) to the 10 s webhook timeout.
const JOB_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

// Webhook receivers answer in milliseconds to the 10 s timeout.
const WEBHOOK_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
// A surge's waiting room is passed in seconds when quiet and in up to an hour or two at peak.
const WAIT_BUCKETS_SECONDS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];
// Statements take from a fraction of a millisecond (a key lookup) to the statement timeout.
const QUERY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];
// Provider calls take tens of milliseconds when healthy and up to the provider timeout (10 s).
const PROVIDER_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface Metrics {
  registry: Registry;
  /** Observed on every HTTP answer: a series histogram (see series-histogram.ts). */
  httpDuration: SeriesHistogram<'method' | 'route' | 'status_class'>;
  jobDuration: Histogram<'task' | 'outcome'>;
  jobFailures: Counter<'task'>;
  jobRetries: Counter<'task'>;
  webhookDeliveryDuration: Histogram<'result'>;
  webhookDeliveries: Counter<'outcome'>;
  /**
   * Each sale's line as this node last saw it (waiting; admitted, pending and shopping): set on
   * every join and poll, read into floodgate_waiting_room_length and _admitted when scraped.
   */
  waitingRoomSeen: Map<string, { waiting: number; pending: number; shopping: number }>;
  waitingRoomAdmissions: Counter<'sale'>;
  waitingRoomWaitSeconds: Histogram<'sale'>;
  holdBatchSize: Histogram;
  intentBatchSize: Histogram;
  orderBatchSize: Histogram;
  confirmBatchSize: Histogram<'phase'>;
  dbQueryDuration: SeriesHistogram<'statement' | 'outcome'>;
  providerDuration: Histogram<'operation' | 'outcome'>;
}

/** A registry per app instance, so tests can build many apps in one process. */
export function createMetrics(options: { defaultMetrics: boolean }): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectProcessMetrics(registry);
  const httpDuration = new SeriesHistogram({
    name: 'floodgate_http_request_duration_seconds',
    help: 'HTTP request duration by route and status class',
    labelNames: ['method', 'route', 'status_class'] as const,
    buckets: HTTP_BUCKETS_SECONDS,
    registers: [registry],
  });
  const jobDuration = new Histogram({
    name: 'floodgate_job_duration_seconds',
    help: 'Job run time by task and outcome',
    labelNames: ['task', 'outcome'] as const,
    buckets: JOB_BUCKETS_SECONDS,
    registers: [registry],
  });
  const jobFailures = new Counter({
    name: 'floodgate_job_failures_total',
    help: 'Job runs that threw, by task',
    labelNames: ['task'] as const,
    registers: [registry],
  });
  const jobRetries = new Counter({
    name: 'floodgate_job_retries_total',
    help: 'Failed job runs that will be retried, by task',
    labelNames: ['task'] as const,
    registers: [registry],
  });
  const webhookDeliveryDuration = new Histogram({
    name: 'floodgate_webhook_delivery_duration_seconds',
    help: 'Webhook delivery attempt latency by result (2xx, 3xx, 4xx, 5xx, timeout, error)',
    labelNames: ['result'] as const,
    buckets: WEBHOOK_BUCKETS_SECONDS,
    registers: [registry],
  });
  const webhookDeliveries = new Counter({
    name: 'floodgate_webhook_delivery_attempts_total',
    help: 'Webhook delivery attempts by what followed: succeeded, retry_scheduled, dead, endpoint_disabled',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  // Every node sets the length it last saw of the shared line: aggregate with max, not sum.
  // Kept in a map and read when scraped: setting a labelled gauge on every join and poll cost
  // more than the value is worth between two scrapes.
  const waitingRoomSeen: Metrics['waitingRoomSeen'] = new Map();
  new Gauge({
    name: 'floodgate_waiting_room_length',
    help: "Buyers waiting in the sale's line, as last seen by this node",
    labelNames: ['sale'] as const,
    registers: [registry],
    collect() {
      for (const [sale, seen] of waitingRoomSeen) this.set({ sale }, seen.waiting);
    },
  });
  const waitingRoomAdmissions = new Counter({
    name: 'floodgate_waiting_room_admissions_total',
    help: "Buyers admitted from the sale's line by this node; rate() gives the admission rate",
    labelNames: ['sale'] as const,
    registers: [registry],
  });
  const waitingRoomWaitSeconds = new Histogram({
    name: 'floodgate_waiting_room_wait_seconds',
    help: 'Time admitted buyers waited in line, counted from joining or from opening if they joined before',
    labelNames: ['sale'] as const,
    buckets: WAIT_BUCKETS_SECONDS,
    registers: [registry],
  });
  const intentBatchSize = new Histogram({
    name: 'floodgate_payment_intent_batch_size',
    help: 'Unconfirmed PaymentIntent creations written together in one statement (coalesced creation)',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers: [registry],
  });
  const orderBatchSize = new Histogram({
    name: 'floodgate_order_batch_size',
    help: 'Orders written together in one statement (coalesced order creation)',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers: [registry],
  });
  const confirmBatchSize = new Histogram({
    name: 'floodgate_confirm_batch_size',
    help: 'PaymentIntent confirms written together, by phase: start (keys, intents, attempts in one statement), complete (one transaction)',
    labelNames: ['phase'] as const,
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers: [registry],
  });
  const holdBatchSize = new Histogram({
    name: 'floodgate_hold_batch_size',
    help: 'Hold requests allocated together in one transaction (batched stock allocation)',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers: [registry],
  });
  new Gauge({
    name: 'floodgate_waiting_room_admitted',
    help: 'Admitted buyers of the sale by state (pending: token not yet used; shopping: holding), as last seen by this node',
    labelNames: ['sale', 'state'] as const,
    registers: [registry],
    collect() {
      for (const [sale, seen] of waitingRoomSeen) {
        this.set({ sale, state: 'pending' }, seen.pending);
        this.set({ sale, state: 'shopping' }, seen.shopping);
      }
    },
  });
  // Observed on every statement: a series is found once per statement name, then held.
  const dbQueryDuration = new SeriesHistogram({
    name: 'floodgate_db_query_duration_seconds',
    help: 'SQL statement duration by prepared statement name (other: unnamed statements) and outcome (ok, error)',
    labelNames: ['statement', 'outcome'] as const,
    buckets: QUERY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const providerDuration = new Histogram({
    name: 'floodgate_provider_request_duration_seconds',
    help: 'Payment provider call duration by operation and outcome (answered, declined, unknown, unavailable)',
    labelNames: ['operation', 'outcome'] as const,
    buckets: PROVIDER_BUCKETS_SECONDS,
    registers: [registry],
  });
  return {
    registry,
    holdBatchSize,
    intentBatchSize,
    orderBatchSize,
    confirmBatchSize,
    dbQueryDuration,
    providerDuration,
    httpDuration,
    jobDuration,
    jobFailures,
    jobRetries,
    webhookDeliveryDuration,
    webhookDeliveries,
    waitingRoomSeen,
    waitingRoomAdmissions,
    waitingRoomWaitSeconds,
  };
}

// prom-client's defaults name three gauges with a `_total` suffix, which Prometheus reserves for
// counters (`promtool check metrics` refuses them); floodgate_nodejs_active_resources (by type)
// already says the same.
const MISNAMED_DEFAULTS = [
  'floodgate_nodejs_active_handles_total',
  'floodgate_nodejs_active_requests_total',
  'floodgate_nodejs_active_resources_total',
];

/** CPU, memory, event-loop lag, GC and heap of this process, all prefixed floodgate_. */
function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, prefix: 'floodgate_' });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(name);
}
