/**
 * The benchmark's own database and API server: created for the run, reset before every
 * measured phase, removed at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { createMerchant } from '../src/merchants/service.js';
import { migrate } from '../src/platform/db/migrate.js';
import { createPool } from '../src/platform/db/pool.js';
import { SERVER_NODE_FLAGS } from '../src/platform/node-flags.js';
import { freePort } from './machine.js';

const ROOT = path.resolve(import.meta.dirname, '..');

/** `floodgate <role>` as a server process is launched: the server flags, then the caller's (a profiler's). */
function serverArgs(role: 'api' | 'worker', nodeArgs: string[] = []): string[] {
  return [...SERVER_NODE_FLAGS, ...nodeArgs, '--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), role];
}
// The server answers /livez well within this once its modules are loaded; tsx's first
// compile of the sources takes a few seconds on a busy machine.
const SERVER_START_TIMEOUT_MS = 30_000;
// Terminated backends exit within milliseconds; this only bounds the wait.
const SERVER_DISCONNECT_TIMEOUT_MS = 5_000;

export interface BenchDatabase {
  name: string;
  url: string;
  merchantId: string;
  secretKey: string;
  /** A second merchant, for the webhook phases: its events fan out to the endpoint they register. */
  webhookMerchantId: string;
  webhookSecretKey: string;
  postgresVersion: string;
  /** A query on the bench's own connection (application_name floodgate-bench, not measured). */
  query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  /**
   * Empties the tables the statement writes (and, by cascade, webhook deliveries and their
   * attempts) and checkpoints, so every phase starts alike.
   */
  reset(): Promise<void>;
  /** Closes the API server's idle pooled connections; its pool opens new ones when next used. */
  closeServerConnections(): Promise<void>;
  drop(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

async function adminQuery(adminUrl: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

export async function createBenchDatabase(adminUrl: string): Promise<BenchDatabase> {
  const name = `floodgate_bench_${randomBytes(4).toString('hex')}`;
  await adminQuery(adminUrl, `create database ${name}`);
  const url = withDatabase(adminUrl, name);
  const pool = createPool({ connectionString: url, max: 1, statementTimeoutMs: 120_000, applicationName: 'floodgate-bench' });
  const drop = async () => {
    await pool.end().catch(() => {});
    await adminQuery(adminUrl, `drop database if exists ${name} with (force)`);
  };
  try {
    await migrate(pool);
    const merchant = await createMerchant(pool, 'Bench merchant');
    const webhookMerchant = await createMerchant(pool, 'Bench webhook merchant');
    const { rows } = await pool.query<{ server_version: string }>('show server_version');
    return {
      name,
      url,
      merchantId: merchant.merchant.id,
      secretKey: merchant.secret_key,
      webhookMerchantId: webhookMerchant.merchant.id,
      webhookSecretKey: webhookMerchant.secret_key,
      postgresVersion: rows[0]?.server_version ?? 'unknown',
      query: (text, values) => pool.query(text, values),
      async reset() {
        // Truncating is only safe because nothing else writes these tables during a run: the
        // worker has drained its jobs (or is paused) whenever a phase resets.
        await pool.query('truncate idempotency_keys, events, payment_intents cascade');
        // A checkpoint now means neither side inherits the other's dirty pages or pays for a
        // checkpoint the other triggered (all phases start with the same WAL debt: none).
        await pool.query('checkpoint');
      },
      async closeServerConnections() {
        // The server's pool names its connections 'floodgate' (createPool's default).
        const serverBackends = `from pg_stat_activity where datname = $1 and application_name = 'floodgate'`;
        await pool.query(`select pg_terminate_backend(pid) ${serverBackends}`, [name]);
        const deadline = Date.now() + SERVER_DISCONNECT_TIMEOUT_MS;
        while (Date.now() < deadline) {
          const { rows } = await pool.query<{ count: number }>(`select count(*)::int as count ${serverBackends}`, [name]);
          if (rows[0]?.count === 0) return;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      },
      drop,
    };
  } catch (error) {
    await drop();
    throw error;
  }
}

export interface ApiServer {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** Environment shared by the server and the worker: the bench database, a provider nobody calls. */
function floodgateEnv(databaseUrl: string, extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: databaseUrl,
    // The unconfirmed create never calls the provider, nor does any job the bench runs; the URL
    // only satisfies the api and worker roles. Nothing listens on the discard port, so a stray
    // call would fail at once and locally. (The surge's checkouts pay: they pass the URL of a
    // simulator process instead, see startSimulatorProcess.)
    FLOODGATE_PROVIDER_URL: 'http://127.0.0.1:9',
    // The webhook phases' receiver listens on 127.0.0.1: the API must accept the endpoint's URL
    // and the worker must connect to it. Nothing else depends on this setting.
    FLOODGATE_WEBHOOK_ALLOW_PRIVATE: '1',
    // API nodes refuse to start without a shared admission secret.
    FLOODGATE_ADMISSION_SECRET: 'bench_admission_secret_0123456789abcdef',
    // API and worker nodes refuse to start without the key that seals webhook secrets; both
    // must have the same one (the worker opens what the API sealed).
    FLOODGATE_SECRETS_KEYS: 'YmVuY2ggc2VjcmV0cyBrZXkgMDEyMzQ1Njc4OWFiY2Q=',
    ...extra,
  };
}

function stopper(child: ChildProcess): () => Promise<void> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    // A paused process cannot handle SIGTERM until it runs again.
    child.kill('SIGCONT');
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(killer);
  };
}

/**
 * Starts `floodgate api` as its own process, exactly as it is deployed (the same entry point,
 * logger and metrics), and waits until it answers /livez.
 */
export async function startApiServer(options: {
  databaseUrl: string;
  poolMax: number;
  nodeArgs?: string[];
  /** Added to (or overriding) the environment below, e.g. REDIS_URL. */
  env?: Record<string, string>;
}): Promise<ApiServer> {
  const port = await freePort();
  const child = spawn(process.execPath, serverArgs('api', options.nodeArgs), {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: floodgateEnv(options.databaseUrl, {
      FLOODGATE_HOST: '127.0.0.1',
      FLOODGATE_PORT: String(port),
      FLOODGATE_LOG_LEVEL: 'warn',
      FLOODGATE_DB_POOL_MAX: String(options.poolMax),
      // The load comes from one address and one key by design: rate limits would measure
      // themselves, and shedding at the default in-flight cap would cut the closed loop short.
      FLOODGATE_RATE_LIMIT_IP_PER_SECOND: '0',
      FLOODGATE_RATE_LIMIT_KEY_PER_SECOND: '0',
      ...options.env,
    }),
  });
  const stop = stopper(child);
  try {
    await waitUntilLive(child, port);
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, pid: child.pid as number, stop };
}

export interface SimulatorProcess {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `floodgate simulator` (the card provider, over HTTP) as its own process, so that its
 * CPU is counted apart from the API's: no latency, no errors and no webhooks, so every
 * pm_card_visa confirm is settled by the provider's own answer.
 */
export async function startSimulatorProcess(): Promise<SimulatorProcess> {
  const port = await freePort();
  const args = ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), 'simulator'];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      FLOODGATE_HOST: '127.0.0.1',
      FLOODGATE_SIMULATOR_PORT: String(port),
      FLOODGATE_SIMULATOR_LATENCY_MS: '0',
      FLOODGATE_SIMULATOR_ERROR_RATE: '0',
      FLOODGATE_SIMULATOR_WEBHOOK_URL: '',
      FLOODGATE_LOG_LEVEL: 'warn',
    },
  });
  const stop = stopper(child);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitUntilAnswering(child, `${url}/healthz`, 'floodgate simulator');
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, pid: child.pid as number, stop };
}

export interface WorkerProcess {
  pid: number;
  /** Freezes the process (SIGSTOP): it runs no job and uses no CPU until resumed. */
  pause(): void;
  /** Lets it run again (SIGCONT). */
  resume(): void;
  stop(): Promise<void>;
}

// The worker's connections carry this name, so closing the API server's connections before a
// pgbench phase (application_name 'floodgate') leaves them alone.
export const WORKER_APPLICATION_NAME = 'floodgate-worker';

/**
 * Starts `floodgate worker` as its own process with its default settings (concurrency, pool,
 * poll interval, the production task list and crontab), and waits until it says it runs.
 * Its log goes to a pipe, read for the 'worker running' line; warnings and errors are passed on.
 */
export async function startWorkerProcess(options: { databaseUrl: string; nodeArgs?: string[] }): Promise<WorkerProcess> {
  const url = new URL(options.databaseUrl);
  url.searchParams.set('application_name', WORKER_APPLICATION_NAME);
  const child = spawn(process.execPath, serverArgs('worker', options.nodeArgs), {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    // Its metrics listener on any free port: the default (4002) is taken by any other worker on
    // the machine, another developer's bench included, and the worker would not start.
    env: floodgateEnv(url.toString(), { FLOODGATE_LOG_LEVEL: 'info', FLOODGATE_WORKER_METRICS_PORT: '0' }),
  });
  const stop = stopper(child);
  const running = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`floodgate worker did not start within ${SERVER_START_TIMEOUT_MS} ms`)),
      SERVER_START_TIMEOUT_MS,
    );
    child.once('exit', (code) => reject(new Error(`floodgate worker exited with ${code} before it was running`)));
    let pending = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        let entry: { level?: number; msg?: string } = {};
        try {
          entry = JSON.parse(line);
        } catch {
          console.log(line);
          continue;
        }
        if (entry.msg === 'worker running') {
          clearTimeout(timer);
          resolve();
        } else if ((entry.level ?? 0) >= 40) console.log(`  worker: ${line}`);
      }
    });
  });
  try {
    await running;
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    pid: child.pid as number,
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    stop,
  };
}

async function waitUntilLive(child: ChildProcess, port: number): Promise<void> {
  await waitUntilAnswering(child, `http://127.0.0.1:${port}/livez`, 'floodgate api');
}

async function waitUntilAnswering(child: ChildProcess, url: string, name: string): Promise<void> {
  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode} before it was ready`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`${name} did not answer ${new URL(url).pathname} within ${SERVER_START_TIMEOUT_MS} ms`);
}
