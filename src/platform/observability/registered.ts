/**
 * Metrics that several instances share on one registry (one counter for every cache, say):
 * the first instance registers the metric, the others find it. prom-client throws on a
 * second registration of the same name.
 */
import assert from 'node:assert/strict';
import { Counter, type CounterConfiguration, Gauge, type GaugeConfiguration, type LabelValues, type Registry } from 'prom-client';

// The tallies of each counter made here, added to it whenever it is collected.
const tallies = new WeakMap<Counter<string>, Set<Tally<string>>>();

export function registeredCounter<T extends string>(registry: Registry, config: Omit<CounterConfiguration<T>, 'registers'>): Counter<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing) return existing as Counter<T>;
  const own = new Set<Tally<string>>();
  const counter = new Counter<T>({
    ...config,
    registers: [registry],
    collect() {
      for (const tally of own) tally.fold();
      return config.collect?.call(this);
    },
  });
  tallies.set(counter as Counter<string>, own);
  return counter;
}

/**
 * Counts one set of labels of a shared counter by adding to a number, folded into the counter
 * when the registry collects it (a scrape), so /metrics shows every count. For events on the
 * hot path (a cache hit per request): prom-client's inc validates and hashes its labels on
 * every call, which costs more than the thing counted. `close` folds what is left and detaches.
 */
export class Tally<T extends string> {
  private pending = 0;

  constructor(
    private readonly counter: Counter<T>,
    private readonly labels: LabelValues<T>,
  ) {
    const own = tallies.get(counter as Counter<string>);
    assert.ok(own, 'a tally counts into a counter made by registeredCounter');
    own.add(this as Tally<string>);
  }

  inc(): void {
    this.pending += 1;
  }

  fold(): void {
    if (this.pending === 0) return;
    this.counter.inc(this.labels, this.pending);
    this.pending = 0;
  }

  close(): void {
    this.fold();
    tallies.get(this.counter as Counter<string>)?.delete(this as Tally<string>);
  }
}

export function registeredGauge<T extends string>(registry: Registry, config: Omit<GaugeConfiguration<T>, 'registers'>): Gauge<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing) return existing as Gauge<T>;
  return new Gauge({ ...config, registers: [registry] });
}
