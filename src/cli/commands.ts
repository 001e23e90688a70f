/**
 * The roles (start, api, worker, simulator, cluster, drill) and, from admin-commands.ts, the
 * one-shot admin commands. A role returns -1 when it keeps running (a server), or the exit code
 * when done.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { RedisQueueStore } from '../admission/redis-store.js';
import { appWaitingRoom, buildApp, WAITING_ROOM_KEY_PREFIX } from '../app.js';
import { type Config, describeConfig } from '../config.js';
import { DrillOptionError, type DrillOptions, parseDrillOptions } from '../drill/options.js';
import { formatVerdict, runDrill } from '../drill/run.js';
import * as merchants from '../merchants/service.js';
import { PROVIDER_WEBHOOK_PATH } from '../payments/provider-webhooks.js';
import { instrumentPool } from '../platform/db/metrics.js';
import { registerQueueMetrics } from '../platform/jobs/metrics.js';
import { createMetrics } from '../platform/observability/metrics.js';
import { startMetricsServer } from '../platform/observability/server.js';
import { registerSalesMetrics } from '../sales/metrics.js';
import { ADMIN_COMMANDS, missingSecretsKeys, type Role } from './admin-commands.js';
import { clusterCommand } from './cluster/command.js';
import {
  createLogger,
  exitOnWorkerFailure,
  type Logger,
  onShutdown,
  openDatabase,
  openProvider,
  openSharedState,
  startSimulator,
} from './runtime.js';
import { runWorker } from './worker.js';

const DEMO_MERCHANT = 'Demo merchant';
const RUNNING = -1;

async function serve(config: Config, log: Logger, options: { demo: boolean; worker: boolean }): Promise<number> {
  // Redis first: a REDIS_URL that does not answer stops the process before anything starts.
  const redis = await openSharedState(config, log);
  const db = await openDatabase(config, log, { migrate: true });
  const metrics = createMetrics({ defaultMetrics: true });
  instrumentPool(db.pool, metrics, { name: 'primary', max: config.dbPoolMax });
  const webhookUrl = `http://127.0.0.1:${config.port}${PROVIDER_WEBHOOK_PATH}`;
  const provider = await openProvider(config, log, { webhookUrl, metrics });
  registerQueueMetrics(metrics, db.pool);
  registerSalesMetrics(metrics, db.pool);
  // On SIGTERM the node fails /readyz first, so the balancer stops sending it requests, then
  // stops accepting and finishes those it has (docs/operations.md, "Graceful drain").
  // One waiting room for the API and the worker: in single-node mode the line is in memory,
  // and the worker frees the slots of paid and expired holds in it.
  const waitingRoom = appWaitingRoom(config, redis, metrics);
  let draining = false;
  const drainCheck = {
    name: 'shutdown',
    check: async () => {
      if (draining) throw new Error('draining: this node is shutting down');
    },
  };
  const app = await buildApp({
    config,
    pool: db.pool,
    provider: provider.provider,
    logger: log,
    metrics,
    redis,
    readinessChecks: [drainCheck],
    waitingRoom,
    providerPublicUrl: config.providerPublicUrl ?? provider.simulatorUrl,
  });
  const releaseAdmission = (saleId: string, ticketId: string) => waitingRoom.releaseAdmission(saleId, ticketId);
  const worker = options.worker
    ? await runWorker({
        config,
        pool: db.pool,
        provider: provider.provider,
        metrics,
        log,
        releaseAdmission,
        onFailure: exitOnWorkerFailure(log),
      })
    : undefined;
  // One process (`start`) has no balancer in front to tell: it stops at once.
  const drainDelayMs = options.demo ? 0 : config.shutdownDrainDelayMs;
  onShutdown(log, config.shutdownTimeoutMs + drainDelayMs, async () => {
    draining = true;
    if (drainDelayMs > 0) {
      log.info({ drainDelayMs }, 'draining: /readyz now fails; still serving until the balancer has noticed');
      await new Promise((resolve) => setTimeout(resolve, drainDelayMs));
    }
    // Stops accepting, answers the requests in flight, then resolves.
    await app.close();
    await worker?.stop();
    await provider.close();
    await redis?.close();
    await db.close();
  });
  await app.listen({ host: config.host, port: config.port });
  // FLOODGATE_PORT=0 takes any free port: say which, and point the in-process simulator's
  // webhooks at it.
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const base = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}`;
  if (provider.simulator) provider.simulator.webhookUrl = `${base}${PROVIDER_WEBHOOK_PATH}`;
  log.info({ config: describeConfig(config) }, 'configuration');
  if (options.demo) await announceDemo(config, db.pool, base);
  // Last: a supervisor (or a test) waiting for this line finds the demo merchant ready too.
  log.info({ url: base }, 'API listening');
  return RUNNING;
}

/** Creates the demo merchant on first run and prints how to use it. */
async function announceDemo(config: Config, pool: import('../platform/db/pool.js').Pool, base: string) {
  const file = path.join(config.dataDir, 'demo-merchant.json');
  let demo: merchants.CreatedMerchant | undefined;
  try {
    demo = JSON.parse(await readFile(file, 'utf8'));
  } catch {
    demo = undefined;
  }
  if (!demo || !(await merchants.findMerchantNamed(pool, DEMO_MERCHANT))) {
    demo = await merchants.createMerchant(pool, DEMO_MERCHANT);
    // The demo's keys are kept in the local data directory (mode 0600) so that later starts can
    // print them again; the database itself stores only their hashes.
    await mkdir(config.dataDir, { recursive: true });
    await writeFile(file, `${JSON.stringify(demo, null, 2)}\n`, { mode: 0o600 });
    await chmod(file, 0o600);
  }
  console.log(`
Floodgate is running.
  API        ${base}/v1
  Docs       ${base}/docs   (OpenAPI: ${base}/openapi.json)
  Health     ${base}/livez  ${base}/readyz
  Metrics    ${base}/metrics

Demo merchant ${demo.merchant.id}
  secret key       ${demo.secret_key}
  publishable key  ${demo.publishable_key}
  (kept in ${file})

Try:
  curl -s ${base}/v1/payment_intents -H "Authorization: Bearer ${demo.secret_key}" \\
    -H "Idempotency-Key: $(uuidgen 2>/dev/null || date +%s%N)" -H "Content-Type: application/json" \\
    -d '{"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": true}'
`);
}

export const ROLES: Record<string, Role> = {
  ...ADMIN_COMMANDS,
  async start(config, _args, options) {
    // One process: the in-process simulator and our webhook route share a secret made up here
    // unless one is configured. The waiting room's secret is made up here too: only this process
    // signs and checks admission tokens, and a restart loses its in-memory line with them.
    const secret = config.providerWebhookSecret ?? randomBytes(32).toString('base64url');
    const admissionSecret = config.admissionSecret ?? randomBytes(32).toString('base64url');
    const log = createLogger(config);
    if (!config.secretsKeys) {
      log.warn(
        'FLOODGATE_SECRETS_KEYS not set: webhook signing secrets are sealed with the published development key. ' +
          'Fine on a laptop; in production set FLOODGATE_SECRETS_KEYS (openssl rand -base64 32).',
      );
    }
    return serve(Object.freeze({ ...config, providerWebhookSecret: secret, admissionSecret }), log, {
      demo: options['no-demo'] !== true,
      worker: true,
    });
  },

  async worker(config) {
    if (!config.databaseUrl || !config.providerUrl) {
      console.error('floodgate worker needs DATABASE_URL and FLOODGATE_PROVIDER_URL. Use `floodgate start` for a single process.');
      return 78;
    }
    if (!config.secretsKeys) return missingSecretsKeys('worker');
    const log = createLogger(config);
    const db = await openDatabase(config, log, { migrate: true });
    const metrics = createMetrics({ defaultMetrics: true });
    instrumentPool(db.pool, metrics, { name: 'primary', max: config.dbPoolMax });
    registerQueueMetrics(metrics, db.pool);
    const provider = await openProvider(config, log, { metrics });
    // Paid and expired holds free their buyers' waiting-room slots, which live in Redis. Without
    // it the line is in the API process's memory, out of reach: slots then free themselves at
    // the shopping limit.
    const redis = await openSharedState(config, log);
    const store = redis ? new RedisQueueStore(redis.client, WAITING_ROOM_KEY_PREFIX) : undefined;
    const releaseAdmission = async (saleId: string, ticketId: string) => store?.release(saleId, ticketId);
    const worker = await runWorker({
      config,
      pool: db.pool,
      provider: provider.provider,
      metrics,
      log,
      releaseAdmission,
      onFailure: exitOnWorkerFailure(log),
    });
    // A worker serves no API; Prometheus scrapes it here.
    // Its probes ask here too: live while the process answers, ready while its database does (a
    // runner that stops by itself ends the process, see exitOnWorkerFailure).
    const metricsServer = await startMetricsServer({
      registry: metrics.registry,
      host: config.host,
      port: config.workerMetricsPort,
      ready: async () => {
        await db.pool.query('select 1');
      },
    });
    log.info({ concurrency: config.workerConcurrency, metrics: `${metricsServer.url}/metrics` }, 'worker running');
    // Running jobs finish; jobs fetched but not started are handed back unlocked.
    onShutdown(log, config.shutdownTimeoutMs, async () => {
      await metricsServer.close();
      await worker.stop();
      await redis?.close();
      await db.close();
    });
    return RUNNING;
  },

  async api(config) {
    if (!config.databaseUrl || !config.providerUrl || !config.admissionSecret) {
      console.error(
        'floodgate api needs DATABASE_URL, FLOODGATE_PROVIDER_URL and FLOODGATE_ADMISSION_SECRET: API nodes share one database, ' +
          'provider and admission secret. Use `floodgate start` for a single process.',
      );
      return 78;
    }
    if (!config.secretsKeys) return missingSecretsKeys('api');
    return serve(config, createLogger(config), { demo: false, worker: false });
  },

  async cluster(_config, args, options) {
    const text = (value: unknown) => (typeof value === 'string' ? value : undefined);
    return clusterCommand(args, {
      dir: text(options.dir),
      api: text(options.api),
      workers: text(options.workers),
      json: options.json === true,
    });
  },

  async simulator(config) {
    const log = createLogger(config);
    const simulator = await startSimulator(config, config.host);
    log.info({ url: simulator.url }, 'provider simulator listening');
    onShutdown(log, 5_000, simulator.close);
    return RUNNING;
  },

  async drill(config, _args, options) {
    let drillOptions: DrillOptions;
    try {
      drillOptions = parseDrillOptions(options, config.dataDir);
    } catch (error) {
      if (!(error instanceof DrillOptionError)) throw error;
      console.error(`floodgate drill: ${error.message}`);
      return 2;
    }
    const quiet = createLogger({ ...config, logLevel: 'warn' });
    const outcome = await runDrill(config, drillOptions, {
      progress: drillOptions.json ? undefined : process.stderr,
      openDatabase: (drillConfig) => openDatabase(drillConfig, quiet, { migrate: true }),
    });
    if (drillOptions.json) console.log(JSON.stringify({ verdict: outcome.verdict, report: outcome.reportFile, json: outcome.jsonFile }));
    else {
      console.log(formatVerdict(outcome.verdict));
      console.log(`\nreport: ${outcome.reportFile}\ndata:   ${outcome.jsonFile}${outcome.logFile ? `\nlogs:   ${outcome.logFile}` : ''}`);
    }
    // 1: an invariant failed, as `floodgate audit` does.
    return outcome.verdict.ok ? 0 : 1;
  },
};
