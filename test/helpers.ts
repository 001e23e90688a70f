/**
 * Call these at a test file's top level (top-level await), so their after() hooks close
 * everything when the file's tests end.
 *
 * Test wiring: a fresh database per test file, cloned from the template `npm test` migrated;
 * the provider simulator on a real HTTP port; and an app built exactly as a process builds it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import pg from 'pg';
import { buildApp } from '../src/app.js';
import { type Config, loadConfig } from '../src/config.js';
import { createMerchant } from '../src/merchants/service.js';
import { PROVIDER_WEBHOOK_PATH } from '../src/payments/provider-webhooks.js';
import { createPool, type Pool } from '../src/platform/db/pool.js';
import type { HttpServer } from '../src/platform/http/server.js';
import { HttpProvider } from '../src/providers/http-provider.js';
import { buildSimulatorApp } from '../src/providers/simulator/app.js';
import { ProviderSimulator, type SimulatorOptions } from '../src/providers/simulator/server.js';

function testEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with npm test, which prepares the database`);
  return value;
}

/** A new database cloned from the migrated template, dropped when the file's tests end. */
export async function createTestDatabase(options: { empty?: boolean } = {}): Promise<{ pool: Pool; url: string }> {
  const adminUrl = testEnv('FLOODGATE_TEST_ADMIN_URL');
  const template = testEnv('FLOODGATE_TEST_TEMPLATE');
  const name = `floodgate_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  // An empty database (no migrations applied) is for testing the migrations themselves.
  await admin.query(options.empty ? `create database ${name}` : `create database ${name} template ${template}`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const pool = createPool({ connectionString: url.toString(), max: 20, statementTimeoutMs: 30_000 });
  after(async () => {
    await pool.end();
    const cleanup = new pg.Client({ connectionString: adminUrl });
    await cleanup.connect();
    await cleanup.query(`drop database if exists ${name} with (force)`);
    await cleanup.end();
  });
  return { pool, url: url.toString() };
}

export interface TestSimulator {
  simulator: ProviderSimulator;
  url: string;
  /** How many HTTP requests reached this server. */
  readonly requests: number;
  close(): Promise<void>;
}

/**
 * The simulator on a real port. Pass `simulator` to serve an existing one (its charges kept)
 * on a new port, as a provider that comes back after an outage.
 */
export async function startTestSimulator(options: SimulatorOptions = {}, simulator?: ProviderSimulator): Promise<TestSimulator> {
  const served = simulator ?? new ProviderSimulator({ timeoutHoldMs: 5_000, ...options });
  const app = buildSimulatorApp(served);
  let requests = 0;
  app.server.on('request', () => {
    requests += 1;
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    served.releaseHeld();
    app.server.closeAllConnections();
    await app.close();
  };
  after(close);
  return {
    simulator: served,
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return requests;
    },
    close,
  };
}

export interface TestApp {
  app: HttpServer;
  config: Config;
  provider: HttpProvider;
}

/**
 * Tests send bursts from one address as fast as the machine allows; rate limits and load
 * shedding would refuse them. Their own tests set limits; everything else runs without.
 */
export const TEST_TRAFFIC_LIMITS_OFF = {
  rateLimitKeyPerSecond: 0,
  rateLimitIpPerSecond: 0,
  rateLimitProviderWebhookPerSecond: 0,
  shedInFlightMax: 1_000_000,
  shedEventLoopDelayMs: 60_000,
} as const satisfies Partial<Config>;

/**
 * For tests that time out many provider calls on purpose (pm_card_timeout) and are not about
 * the circuit breaker: timeouts count toward it, and it would open after five in a row.
 */
export const MANY_TIMEOUTS = { providerBreakerThreshold: 1_000 } as const satisfies Partial<Config>;

/**
 * Provider timeouts in tests. Where a call is expected to succeed the timeout is long, so a
 * busy two-core machine cannot turn a slow success into a timeout; only the calls meant to time
 * out (pm_card_timeout, which the test simulator holds for 5 s) go through an app built with
 * the short one (`shortTimeoutApp`).
 */
export const PROVIDER_TIMEOUT_MS = 10_000;
export const PROVIDER_TIMEOUT_SHORT_MS = 200;

/** The app as a process builds it, on `pool`, calling the provider at `providerUrl`. */
export async function buildTestApp(pool: Pool, providerUrl: string, overrides: Partial<Config> = {}): Promise<TestApp> {
  const config = loadConfig(
    {},
    {
      providerUrl,
      providerTimeoutMs: PROVIDER_TIMEOUT_MS,
      apiKeyCacheTtlMs: 0,
      providerWebhookSecret: TEST_PROVIDER_WEBHOOK_SECRET,
      admissionSecret: TEST_ADMISSION_SECRET,
      ...TEST_TRAFFIC_LIMITS_OFF,
      ...overrides,
    },
  );
  const provider = new HttpProvider({
    baseUrl: providerUrl,
    timeoutMs: config.providerTimeoutMs,
    breakerThreshold: config.providerBreakerThreshold,
    breakerWindow: config.providerBreakerWindow,
    halfOpenMs: config.providerBreakerHalfOpenMs,
  });
  const app = await buildApp({ config, pool, provider });
  after(() => app.close());
  return { app, config, provider };
}

export interface TestContext extends TestApp {
  pool: Pool;
  /** The app's base URL when it listens. */
  url: string | undefined;
  sim: TestSimulator;
  merchant: TestMerchant;
  /** Headers for the merchant's secret key, plus any extra. */
  auth(extra?: Record<string, string>): Record<string, string>;
}

/** Signs the test apps' admission tokens. */
export const TEST_ADMISSION_SECRET = 'test_admission_secret_0123456789abcdef_app';

/** Shared by the test simulator and the app, so provider webhooks verify. */
export const TEST_PROVIDER_WEBHOOK_SECRET = 'test_provider_webhook_secret_0123456789abcdef';

export interface TestMerchant {
  id: string;
  secretKey: string;
  publishableKey: string;
}

export async function createTestMerchant(pool: Pool): Promise<TestMerchant> {
  const created = await createMerchant(pool, `Test merchant ${randomBytes(3).toString('hex')}`);
  return { id: created.merchant.id, secretKey: created.secret_key, publishableKey: created.publishable_key };
}

export async function setupTestContext(
  options: {
    config?: Partial<Config>;
    simulator?: SimulatorOptions;
    pool?: Pool;
    /** Listen on a real port and let the simulator send its webhooks there. */
    listen?: boolean;
  } = {},
): Promise<TestContext> {
  const pool = options.pool ?? (await createTestDatabase()).pool;
  const sim = await startTestSimulator({ webhookSecret: TEST_PROVIDER_WEBHOOK_SECRET, ...options.simulator });
  const { app, config, provider } = await buildTestApp(pool, sim.url, options.config);
  let url: string | undefined;
  if (options.listen) {
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    sim.simulator.webhookUrl = `${url}${PROVIDER_WEBHOOK_PATH}`;
  }
  const merchant = await createTestMerchant(pool);
  return {
    pool,
    app,
    url,
    config,
    sim,
    provider,
    merchant,
    auth: (extra = {}) => ({ authorization: `Bearer ${merchant.secretKey}`, ...extra }),
  };
}

/**
 * A second app on the context's database and simulator whose provider calls time out after
 * PROVIDER_TIMEOUT_SHORT_MS: for the requests that are meant to time out (pm_card_timeout).
 */
export async function shortTimeoutApp(ctx: TestContext, overrides: Partial<Config> = {}): Promise<HttpServer> {
  const { app } = await buildTestApp(ctx.pool, ctx.sim.url, { ...overrides, providerTimeoutMs: PROVIDER_TIMEOUT_SHORT_MS });
  return app;
}

/** A unique Idempotency-Key. */
export function key(label = 'test'): string {
  return `${label}_${randomBytes(8).toString('hex')}`;
}

/** A sale created through the API as its merchant would (its first item's id beside its own). */
export async function createSaleThroughApi(t: TestContext, payload: Record<string, unknown>): Promise<{ id: string; itemId: string }> {
  const response = await t.app.inject({
    method: 'POST',
    url: '/v1/sales',
    headers: t.auth({ 'idempotency-key': key('sale') }),
    payload: { currency: 'usd', ...payload },
  });
  assert.equal(response.statusCode, 200, response.body);
  return { id: response.json().id as string, itemId: response.json().items[0].id as string };
}
