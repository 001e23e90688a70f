/**
 * Queue gauges, read from the job table when Prometheus scrapes: how many jobs wait per task
 * and how old the oldest waiting one is (the number that says whether workers keep up).
 */
import { Gauge } from 'prom-client';
import type { Pool } from '../db/pool.js';
import type { Metrics } from '../observability/metrics.js';
import { selectQueue } from './queue.js';

export function registerQueueMetrics(metrics: Metrics, pool: Pool): void {
  let pending: Promise<Awaited<ReturnType<typeof selectQueue>>> | undefined;
  // Both gauges are filled from one query per scrape.
  const read = () => {
    pending ??= selectQueue(pool).finally(() => {
      pending = undefined;
    });
    return pending;
  };
  new Gauge({
    name: 'floodgate_jobs_waiting',
    help: 'Jobs due and not yet running, by task',
    labelNames: ['task'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      for (const row of await read()) this.set({ task: row.task }, row.waiting);
    },
  });
  new Gauge({
    name: 'floodgate_jobs_oldest_waiting_seconds',
    help: 'Age of the oldest job due and not yet running, by task',
    labelNames: ['task'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      for (const row of await read()) this.set({ task: row.task }, row.oldest_waiting_seconds ?? 0);
    },
  });
}
