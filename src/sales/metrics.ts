/**
 * Stock and hold gauges, read from the database when Prometheus scrapes: what operators watch
 * during a release (how much is left, how much is held, how much sold).
 */
import { Gauge } from 'prom-client';
import type { Pool } from '../platform/db/pool.js';
import type { Metrics } from '../platform/observability/metrics.js';

// Gauges label by item; a scrape reads at most this many of the most recent sales' items so a
// merchant with years of sales does not turn every scrape into a table scan.
const SCRAPE_ITEMS_MAX = 500;

export function registerSalesMetrics(metrics: Metrics, pool: Pool): void {
  new Gauge({
    name: 'floodgate_stock_units',
    help: 'Units per item by state: available, held, sold',
    labelNames: ['sale', 'item', 'state'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      const { rows } = await pool.query<{ sale_id: string; id: string; stock_available: number; stock_held: number; stock_sold: number }>(
        `select sale_id, id, stock_available, stock_held, stock_sold from items order by sale_id desc, id limit $1`,
        [SCRAPE_ITEMS_MAX],
      );
      for (const row of rows) {
        this.set({ sale: row.sale_id, item: row.id, state: 'available' }, row.stock_available);
        this.set({ sale: row.sale_id, item: row.id, state: 'held' }, row.stock_held);
        this.set({ sale: row.sale_id, item: row.id, state: 'sold' }, row.stock_sold);
      }
    },
  });
  new Gauge({
    name: 'floodgate_holds_active',
    help: 'Active holds per sale',
    labelNames: ['sale'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      const { rows } = await pool.query<{ sale_id: string; active: number }>(
        `select sale_id, count(*)::int as active from holds where status = 'active' group by sale_id`,
      );
      for (const row of rows) this.set({ sale: row.sale_id }, row.active);
    },
  });
}
