/**
 * The roles and admin commands. A role returns -1 when it keeps running (a server), or the
 * exit code when done.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildApp } from '../app.js';
import { audit, formatReport } from '../audit/service.js';
import { type Config, describeConfig } from '../config.js';
import * as merchants from '../merchants/service.js';
import { PROVIDER_WEBHOOK_PATH } from '../payments/provider-webhooks.js';
import { registerQueueMetrics } from '../platform/jobs/metrics.js';
import { formatQueue, selectQueue } from '../platform/jobs/queue.js';
import { createMetrics } from '../platform/observability/metrics.js';
import { registerSalesMetrics } from '../sales/metrics.js';
import { createLogger, type Logger, onShutdown, openDatabase, openProvider, openSharedState, startSimulator } from './runtime.js';
import { runWorker } from './worker.js';

type Options = { json?: boolean; merchant?: string; kind?: string };
type Role = (config: Config, args: string[], options: Options) => Promise<number>;

const DEMO_MERCHANT = 'Demo merchant';
const RUNNING = -1;

/** Runs fn against the database and closes it after, for one-shot admin commands. */
async function withDatabase(config: Config, fn: (db: Awaited<ReturnType<typeof openDatabase>>) => Promise<number>) {
  const log = createLogger({ ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel });
  const db = await openDatabase(config, log, { migrate: true });
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

async function serve(config: Config, log: Logger, options: { demo: boolean; worker: boolean }): Promise<number> {
  // Redis first: a REDIS_URL that does not answer stops the process before anything starts.
  const redis = await openSharedState(config, log);
  const db = await openDatabase(config, log, { migrate: true });
  const webhookUrl = `http://127.0.0.1:${config.port}${PROVIDER_WEBHOOK_PATH}`;
  const provider = await openProvider(config, log, webhookUrl);
  const metrics = createMetrics({ defaultMetrics: true });
  registerQueueMetrics(metrics, db.pool);
  registerSalesMetrics(metrics, db.pool);
  const app = await buildApp({
    config,
    pool: db.pool,
    provider: provider.provider,
    logger: log,
    metrics,
    redis,
    providerPublicUrl: config.providerPublicUrl ?? provider.simulatorUrl,
  });
  const worker = options.worker ? await runWorker({ config, pool: db.pool, provider: provider.provider, metrics, log }) : undefined;
  onShutdown(log, async () => {
    await app.close();
    await worker?.stop();
    await provider.close();
    await redis?.close();
    await db.close();
  });
  await app.listen({ host: config.host, port: config.port });
  const base = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${config.port}`;
  log.info({ config: describeConfig(config) }, 'configuration');
  if (options.demo) await announceDemo(config, db.pool, base);
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
  async start(config) {
    // One process: the in-process simulator and our webhook route share a secret made up here
    // unless one is configured. The waiting room's secret is made up here too: only this process
    // signs and checks admission tokens, and a restart loses its in-memory line with them.
    const secret = config.providerWebhookSecret ?? randomBytes(32).toString('base64url');
    const admissionSecret = config.admissionSecret ?? randomBytes(32).toString('base64url');
    return serve(Object.freeze({ ...config, providerWebhookSecret: secret, admissionSecret }), createLogger(config), {
      demo: true,
      worker: true,
    });
  },

  async worker(config) {
    if (!config.databaseUrl || !config.providerUrl) {
      console.error('floodgate worker needs DATABASE_URL and FLOODGATE_PROVIDER_URL. Use `floodgate start` for a single process.');
      return 78;
    }
    const log = createLogger(config);
    const db = await openDatabase(config, log, { migrate: true });
    const provider = await openProvider(config, log);
    const worker = await runWorker({ config, pool: db.pool, provider: provider.provider, log });
    log.info({ concurrency: config.workerConcurrency }, 'worker running');
    onShutdown(log, async () => {
      await worker.stop();
      await db.close();
    });
    return RUNNING;
  },

  async jobs(config, _args, options) {
    return withDatabase(config, async (db) => {
      const queue = await selectQueue(db.pool);
      if (options.json) console.log(JSON.stringify(queue));
      else console.log(formatQueue(queue));
      return 0;
    });
  },

  async api(config) {
    if (!config.databaseUrl || !config.providerUrl || !config.admissionSecret) {
      console.error(
        'floodgate api needs DATABASE_URL, FLOODGATE_PROVIDER_URL and FLOODGATE_ADMISSION_SECRET: API nodes share one database, ' +
          'provider and admission secret. Use `floodgate start` for a single process.',
      );
      return 78;
    }
    return serve(config, createLogger(config), { demo: false, worker: false });
  },

  async simulator(config) {
    const log = createLogger(config);
    const simulator = await startSimulator(config, config.host);
    log.info({ url: simulator.url }, 'provider simulator listening');
    onShutdown(log, simulator.close);
    return RUNNING;
  },

  async migrate(config) {
    const log = createLogger(config);
    const db = await openDatabase(config, log, { migrate: false });
    try {
      const { migrate } = await import('../platform/db/migrate.js');
      const applied = await migrate(db.pool);
      const { migrateJobs } = await import('../platform/jobs/runner.js');
      await migrateJobs(db.pool);
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
      return 0;
    } finally {
      await db.close();
    }
  },

  async merchants(config, args, options) {
    const [action, ...names] = args;
    const name = names.join(' ').trim();
    if (action !== 'create' || !name) {
      console.error('usage: floodgate merchants create NAME [--json]');
      return 2;
    }
    if (name.length > 200) {
      console.error('floodgate: a merchant name is at most 200 characters');
      return 2;
    }
    return withDatabase(config, async (db) => {
      const created = await merchants.createMerchant(db.pool, name);
      if (options.json) console.log(JSON.stringify(created));
      else {
        console.log(`merchant ${created.merchant.id} (${created.merchant.name})`);
        console.log(`secret key:      ${created.secret_key}`);
        console.log(`publishable key: ${created.publishable_key}`);
        console.log('These keys are shown once; only their hashes are stored.');
      }
      return 0;
    });
  },

  async keys(config, args, options) {
    const [action, keyId] = args;
    if (action === 'revoke') {
      if (!keyId) {
        console.error('usage: floodgate keys revoke KEY_ID');
        return 2;
      }
      return withDatabase(config, async (db) => {
        const revoked = await merchants.revokeKey(db.pool, keyId);
        if (!revoked) {
          console.error(`floodgate: no key ${keyId}`);
          return 1;
        }
        console.log(options.json ? JSON.stringify(revoked) : `revoked ${revoked.key_id} (${revoked.display_prefix}...)`);
        return 0;
      });
    }
    if ((action !== 'create' && action !== 'list') || !options.merchant) {
      console.error('usage: floodgate keys create|list --merchant MERCHANT_ID [--kind secret|publishable] [--json]');
      return 2;
    }
    const merchantId = options.merchant;
    if (action === 'list') {
      return withDatabase(config, async (db) => {
        const keys = await merchants.listKeys(db.pool, merchantId);
        if (options.json) console.log(JSON.stringify(keys));
        else
          for (const key of keys)
            console.log(`${key.key_id}  ${key.kind.padEnd(11)}  ${key.display_prefix}...  ${key.revoked_at ? 'revoked' : 'active'}`);
        return 0;
      });
    }
    if (options.kind !== 'secret' && options.kind !== 'publishable') {
      console.error('floodgate: --kind is secret or publishable');
      return 2;
    }
    const kind = options.kind;
    return withDatabase(config, async (db) => {
      const created = await merchants.createKey(db.pool, merchantId, kind);
      if (created.kind === 'merchant_missing') {
        console.error(`floodgate: no merchant ${merchantId}`);
        return 1;
      }
      const out = { key_id: created.keyId, kind, key: created.key };
      console.log(options.json ? JSON.stringify(out) : `${created.keyId}: ${created.key}\nShown once; only its hash is stored.`);
      return 0;
    });
  },

  async audit(config, _args, options) {
    try {
      return await withDatabase(config, async (db) => {
        const report = await audit(db.pool);
        console.log(options.json ? JSON.stringify(report) : formatReport(report));
        return report.violations.length === 0 ? 0 : 1;
      });
    } catch (error) {
      // 1 means violations found; 2 means the audit could not run, so they are not confused.
      console.error(`floodgate audit could not run: ${error instanceof Error ? error.message : String(error)}`);
      return 2;
    }
  },
};
