/**
 * Metrics that several instances share on one registry (one counter for every cache, say):
 * the first instance registers the metric, the others find it. prom-client throws on a
 * second registration of the same name.
 */
import { Counter, type CounterConfiguration, Gauge, type GaugeConfiguration, type Registry } from 'prom-client';

export function registeredCounter<T extends string>(registry: Registry, config: Omit<CounterConfiguration<T>, 'registers'>): Counter<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing) return existing as Counter<T>;
  return new Counter({ ...config, registers: [registry] });
}

export function registeredGauge<T extends string>(registry: Registry, config: Omit<GaugeConfiguration<T>, 'registers'>): Gauge<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing) return existing as Gauge<T>;
  return new Gauge({ ...config, registers: [registry] });
}
