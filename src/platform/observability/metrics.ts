import { collectDefaultMetrics, Histogram, Registry } from 'prom-client';

// Buckets from 1 ms to 10 s: a payment API's p50 sits near the bottom, provider calls near the top.
const HTTP_BUCKETS_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface Metrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status_class'>;
}

/** A registry per app instance, so tests can build many apps in one process. */
export function createMetrics(options: { defaultMetrics: boolean }): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'floodgate_' });
  const httpDuration = new Histogram({
    name: 'floodgate_http_request_duration_seconds',
    help: 'HTTP request duration by route and status class',
    labelNames: ['method', 'route', 'status_class'] as const,
    buckets: HTTP_BUCKETS_SECONDS,
    registers: [registry],
  });
  return { registry, httpDuration };
}
