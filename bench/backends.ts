/**
 * CPU time spent by the PostgreSQL backends serving the bench database during a phase. It
 * checks the claim that both sides ask the database for the same work: the backends' CPU per
 * transaction should match whether the statement came from the API's pool or from pgbench.
 *
 * Backends are found in pg_stat_activity and read from /proc every POLL_MS. A backend first
 * seen during the phase (pgbench connects at its start) is counted from zero, so its whole
 * life is included; one already there (the API's pooled connections) is counted from the
 * phase's start. pgbench's backends exit with it, so up to POLL_MS of their last CPU is missed:
 * under 2% of a 6 s phase, against pgbench.
 *
 * The bench's own connections (application_name floodgate-bench...: resets, the worker phases'
 * polling of the queue) are left out: they are the observer, not the work measured.
 */
import pg from 'pg';
import { processCpuMs } from './machine.js';

const POLL_MS = 100;

export class BackendCpuSampler {
  private readonly client: pg.Client;
  private readonly baseline = new Map<number, number>();
  private readonly latest = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> = Promise.resolve();

  private constructor(
    databaseUrl: string,
    private readonly database: string,
  ) {
    this.client = new pg.Client({ connectionString: databaseUrl, application_name: 'floodgate-bench-sampler' });
  }

  static async open(databaseUrl: string, database: string): Promise<BackendCpuSampler> {
    const sampler = new BackendCpuSampler(databaseUrl, database);
    await sampler.client.connect();
    return sampler;
  }

  /** Starts a phase: backends that exist now are counted from their current CPU time. */
  async start(): Promise<void> {
    this.baseline.clear();
    this.latest.clear();
    for (const [pid, cpuMs] of await this.read()) this.baseline.set(pid, cpuMs);
    this.timer = setInterval(() => {
      this.polling = this.poll();
    }, POLL_MS);
  }

  /** Ends the phase; returns the backends' CPU time during it, in ms. */
  async stop(): Promise<number> {
    clearInterval(this.timer);
    await this.polling;
    await this.poll();
    let total = 0;
    for (const [pid, cpuMs] of this.latest) total += cpuMs - (this.baseline.get(pid) ?? 0);
    return total;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.client.end();
  }

  private async poll(): Promise<void> {
    for (const [pid, cpuMs] of await this.read()) this.latest.set(pid, cpuMs);
  }

  private async read(): Promise<Map<number, number>> {
    const { rows } = await this.client.query<{ pid: number }>(
      `select pid from pg_stat_activity
       where datname = $1 and backend_type = 'client backend' and pid <> pg_backend_pid()
         and application_name not like 'floodgate-bench%'`,
      [this.database],
    );
    const readings = new Map<number, number>();
    for (const { pid } of rows) {
      const cpuMs = processCpuMs(pid);
      if (cpuMs !== undefined) readings.set(pid, cpuMs);
    }
    return readings;
  }
}
