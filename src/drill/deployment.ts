/**
 * What the drill runs against: a deployment given by --target, or a `floodgate start` of its
 * own, started as a child process on the embedded database (or DATABASE_URL), with the
 * simulator's failure modes switched on and its logs kept beside the report.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config.js';
import { createMerchant } from '../merchants/service.js';
import { createPool, type Pool } from '../platform/db/pool.js';
import { SERVER_NODE_FLAGS } from '../platform/node-flags.js';
import type { DrillOptions } from './options.js';

export interface Deployment {
  url: string;
  secretKey: string;
  /** The key buyers' pages use; the secret key when the drill was only given that. */
  buyerKey: string;
  /** For the audit and the double-charge check; absent for a target without DATABASE_URL. */
  pool?: Pool;
  /** The own start's log file. */
  logFile?: string;
  close(): Promise<void>;
}

// The failure modes of the simulator during a drill on its own start: a few provider errors and
// some latency, as a real provider has on a busy day; a short provider timeout and quick
// reconciliation so that timed-out payments settle within the drill.
const OWN_START_ENV = {
  FLOODGATE_SIMULATOR_ERROR_RATE: '0.02',
  FLOODGATE_SIMULATOR_LATENCY_MS: '20',
  FLOODGATE_PROVIDER_TIMEOUT_MS: '2000',
  FLOODGATE_RECONCILE_BASE_DELAY_MS: '500',
  FLOODGATE_RECONCILE_MAX_DELAY_MS: '5000',
  // One machine sends every buyer's requests: the per-address limit would refuse the crowd.
  FLOODGATE_RATE_LIMIT_IP_PER_SECOND: '0',
} as const;

// tsx compiles the sources when the child starts; on a loaded machine that takes a while.
const START_TIMEOUT_MS = 120_000;

/** How the drill opens its own database (embedded, or DATABASE_URL, migrated): the CLI's way. */
export type OpenDatabase = (config: Config) => Promise<{ pool: Pool; connectionString: string; close(): Promise<void> }>;

export async function openDeployment(config: Config, options: DrillOptions, openDatabase: OpenDatabase): Promise<Deployment> {
  if (options.target) {
    const pool = config.databaseUrl ? createPool({ connectionString: config.databaseUrl, max: 2, statementTimeoutMs: 60_000 }) : undefined;
    const key = options.secretKey as string;
    return { url: options.target, secretKey: key, buyerKey: key, pool, close: async () => pool?.end() };
  }
  return startOwn(config, options, openDatabase);
}

async function startOwn(config: Config, options: DrillOptions, openDatabase: OpenDatabase): Promise<Deployment> {
  const db = await openDatabase(config);
  const merchant = await createMerchant(db.pool, `Drill ${new Date().toISOString()}`);
  const logFile = options.reportFile.replace(/\.html$/, '') + '.log';
  await mkdir(path.dirname(logFile), { recursive: true });
  const log = createWriteStream(logFile);
  // The same entry point and loader this process was started with (bin/floodgate.js or tsx),
  // with the flags a server process runs with (those `npm run floodgate` gave this one already
  // come once).
  const serverFlags = SERVER_NODE_FLAGS.filter((flag) => !process.execArgv.includes(flag));
  const child = spawn(process.execPath, [...serverFlags, ...process.execArgv, process.argv[1] as string, 'start', '--no-demo'], {
    env: {
      ...process.env,
      ...OWN_START_ENV,
      ...pickSet(process.env, Object.keys(OWN_START_ENV)),
      DATABASE_URL: db.connectionString,
      FLOODGATE_PORT: '0',
      FLOODGATE_SIMULATOR_PORT: '0',
      FLOODGATE_LOG_LEVEL: config.logLevel,
      FLOODGATE_DATA_DIR: path.join(config.dataDir, 'drill-start'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  const url = await new Promise<string>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(
      () => reject(new Error(`the drill's floodgate start did not listen within ${START_TIMEOUT_MS / 1000} s; see ${logFile}`)),
      START_TIMEOUT_MS,
    );
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      const match = /"msg":"API listening"/.test(buffered)
        ? /\{[^\n]*"url":"([^"]+)"[^\n]*"msg":"API listening"[^\n]*\}/.exec(buffered)
        : null;
      if (match?.[1]) {
        clearTimeout(timer);
        buffered = '';
        resolve(match[1]);
      } else if (buffered.length > 1_000_000) buffered = buffered.slice(-10_000);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the drill's floodgate start exited with ${code}; see ${logFile}`));
    });
  });
  return {
    url,
    secretKey: merchant.secret_key,
    buyerKey: merchant.publishable_key,
    pool: db.pool,
    logFile,
    async close() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
      await new Promise((resolve) => log.end(resolve));
      await db.close();
    },
  };
}

/** The variables of `names` that the caller's environment sets: an operator's choice wins. */
function pickSet(env: NodeJS.ProcessEnv, names: string[]): Record<string, string> {
  return Object.fromEntries(names.filter((name) => env[name] !== undefined).map((name) => [name, env[name] as string]));
}
