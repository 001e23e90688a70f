/**
 * The provider connector's metrics: call latency and outcome come through the connector's
 * `observe` option; the circuit breaker's state is read when Prometheus scrapes.
 */
import { Gauge } from 'prom-client';
import type { Metrics } from '../platform/observability/metrics.js';
import type { HttpProviderOptions } from './http-provider.js';

const BREAKER_STATES = ['closed', 'half_open', 'open'] as const;

/** The `observe` option of an HttpProvider that records into these metrics. */
export function observeProviderCalls(metrics: Metrics): NonNullable<HttpProviderOptions['observe']> {
  return (operation, outcome, seconds) => metrics.providerDuration.observe({ operation, outcome }, seconds);
}

/** 1 for the breaker's current state, 0 for the others: alert on state="open". */
export function registerBreakerMetric(metrics: Metrics, provider: { readonly breakerState: (typeof BREAKER_STATES)[number] }): void {
  new Gauge({
    name: 'floodgate_provider_breaker_state',
    help: "The provider circuit breaker's state: 1 for the current one of closed, half_open, open",
    labelNames: ['state'] as const,
    registers: [metrics.registry],
    collect() {
      const current = provider.breakerState;
      for (const state of BREAKER_STATES) this.set({ state }, state === current ? 1 : 0);
    },
  });
}
