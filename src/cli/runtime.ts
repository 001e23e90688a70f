/**
 * Wiring shared by the process roles: the database (embedded or DATABASE_URL), migrations,
 * the provider (in-process simulator or FLOODGATE_PROVIDER_URL), Redis (REDIS_URL, else
 * single-node mode), logging and shutdown.
 */
import type { pino } from 'pino';
import { type Config, maskUrl } from '../config.js';
import { startEmbeddedPostgres } from '../platform/db/embedded.js';
import { migrate } from '../platform/db/migrate.js';
import { createPool, type Pool } from '../platform/db/pool.js';
import { migrateJobs } from '../platform/jobs/runner.js';
import { createLogger as createProcessLogger } from '../platform/observability/logging.js';
import type { Metrics } from '../platform/observability/metrics.js';
import { openRedis, type RedisConnections } from '../platform/redis/client.js';
import { HttpProvider } from '../providers/http-provider.js';
import { observeProviderCalls, registerBreakerMetric } from '../providers/metrics.js';
import { buildSimulatorApp } from '../providers/simulator/app.js';
import { ProviderSimulator } from '../providers/simulator/server.js';
import { DIRECTLY_WRITTEN_TASKS } from '../sales/jobs.js';

export type Logger = pino.Logger;

export function createLogger(config: Pick<Config, 'logLevel'>): Logger {
  return createProcessLogger({ level: config.logLevel });
}

export interface Database {
  pool: Pool;
  connectionString: string;
  embedded: boolean;
  close(): Promise<void>;
}

/** Connects to DATABASE_URL, or starts the embedded PostgreSQL; applies migrations either way. */
export async function openDatabase(config: Config, log: Logger, options: { migrate: boolean }): Promise<Database> {
  let connectionString = config.databaseUrl;
  let stopEmbedded: (() => Promise<void>) | undefined;
  if (!connectionString) {
    log.info({ dataDir: config.dataDir, port: config.embeddedPostgresPort }, 'DATABASE_URL not set: starting embedded PostgreSQL');
    const embedded = await startEmbeddedPostgres({
      dataDir: config.dataDir,
      port: config.embeddedPostgresPort,
      relocateDir: config.embeddedPostgresRelocateDir,
      log: (message) => log.info(`embedded PostgreSQL: ${message}`),
    }).catch((error: unknown) => {
      // One message that says what failed and the way around it, whatever the cause.
      throw new Error(
        `could not start the embedded PostgreSQL: ${error instanceof Error ? error.message : String(error)}\n` +
          'Fix the cause above, or set DATABASE_URL=postgres://... to use a PostgreSQL of your own.',
      );
    });
    connectionString = embedded.connectionString;
    stopEmbedded = embedded.stop;
  }
  const pool = createPool({ connectionString, max: config.dbPoolMax, statementTimeoutMs: config.dbStatementTimeoutMs });
  try {
    if (options.migrate) {
      const applied = await migrate(pool);
      if (applied.length > 0) log.info({ applied }, 'migrations applied');
      await migrateJobs(pool, DIRECTLY_WRITTEN_TASKS);
    }
  } catch (error) {
    await pool.end();
    await stopEmbedded?.();
    throw error;
  }
  return {
    pool,
    connectionString,
    embedded: stopEmbedded !== undefined,
    async close() {
      await pool.end();
      await stopEmbedded?.();
    },
  };
}

/**
 * Connects to REDIS_URL; without it, says plainly that shared state stays in this process
 * (single-node mode) and returns undefined.
 */
export async function openSharedState(config: Config, log: Logger): Promise<RedisConnections | undefined> {
  if (!config.redisUrl) {
    log.info(
      "REDIS_URL not set: single-node mode. The cache, rate limits and waiting room are kept in this process's memory; run one API node only, or set REDIS_URL.",
    );
    return undefined;
  }
  const redis = await openRedis({ url: config.redisUrl, keyPrefix: config.redisKeyPrefix, log });
  log.info(
    { url: maskUrl(config.redisUrl), keyPrefix: config.redisKeyPrefix },
    'Redis connected: cache, rate limits and waiting room are shared with every node on it',
  );
  return redis;
}

export interface ProviderHandle {
  provider: HttpProvider;
  simulatorUrl?: string;
  /** The in-process simulator, when one runs: its webhook URL is set once the API listens. */
  simulator?: ProviderSimulator;
  close(): Promise<void>;
}

/**
 * The provider connector; without FLOODGATE_PROVIDER_URL, a simulator runs in this process and
 * sends its webhooks to `webhookUrl` (our own API), signed with the config's secret.
 */
export async function openProvider(
  config: Config,
  log: Logger,
  options: { webhookUrl?: string; metrics?: Metrics } = {},
): Promise<ProviderHandle> {
  let baseUrl = config.providerUrl;
  let close = async () => {};
  let simulator: ProviderSimulator | undefined;
  if (!baseUrl) {
    const started = await startSimulator({ ...config, simulatorWebhookUrl: options.webhookUrl ?? config.simulatorWebhookUrl });
    baseUrl = started.url;
    close = started.close;
    simulator = started.simulator;
    log.info({ url: baseUrl }, 'provider simulator running in-process');
  }
  const provider = new HttpProvider({
    baseUrl,
    timeoutMs: config.providerTimeoutMs,
    breakerThreshold: config.providerBreakerThreshold,
    breakerWindow: config.providerBreakerWindow,
    halfOpenMs: config.providerBreakerHalfOpenMs,
    observe: options.metrics ? observeProviderCalls(options.metrics) : undefined,
  });
  if (options.metrics) registerBreakerMetric(options.metrics, provider);
  return { provider, simulatorUrl: config.providerUrl ? undefined : baseUrl, simulator, close };
}

export async function startSimulator(config: Config, host = '127.0.0.1') {
  const simulator = new ProviderSimulator({
    latencyMs: config.simulatorLatencyMs,
    errorRate: config.simulatorErrorRate,
    webhookUrl: config.simulatorWebhookUrl,
    webhookSecret: config.providerWebhookSecret,
  });
  const app = buildSimulatorApp(simulator);
  await app.listen({ host, port: config.simulatorPort });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.simulatorPort;
  return {
    simulator,
    url: `http://${host}:${port}`,
    close: async () => {
      simulator.releaseHeld();
      app.server.closeAllConnections();
      await app.close();
    },
  };
}

/**
 * Runs cleanup once on SIGINT or SIGTERM, then exits: 0 when it finished, 1 when it failed or
 * took longer than timeoutMs (what is still running then is cut off).
 */
export function onShutdown(log: Logger, timeoutMs: number, cleanup: () => Promise<void>): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, timeoutMs }, 'shutting down');
    setTimeout(() => {
      log.error({ timeoutMs }, 'shutdown took too long: exiting with work unfinished');
      process.exit(1);
    }, timeoutMs).unref();
    try {
      await cleanup();
      process.exit(0);
    } catch (error) {
      log.error({ err: error }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
}

/**
 * What a process does when its job runner stops by itself: it exits non-zero, so that a
 * supervisor (systemd, Kubernetes, a shell loop) sees it and starts a new one, rather than
 * running on without ever running a job again.
 */
export function exitOnWorkerFailure(log: Logger): (error: Error) => void {
  return (error) => {
    log.fatal({ err: error }, 'the job runner stopped by itself; exiting so that a supervisor restarts this process');
    process.exit(WORKER_FAILED_EXIT_CODE);
  };
}

// EX_SOFTWARE from sysexits.h: an internal failure, not a usage or configuration error.
const WORKER_FAILED_EXIT_CODE = 70;
