/**
 * An API node (or several) serving the hosted page on a real port, with a merchant, the
 * provider simulator and a way to create hosted sales: what the browser tests drive.
 */
import { Writable } from 'node:stream';
import { after } from 'node:test';
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import { type Config, loadConfig } from '../../src/config.js';
import type { Pool } from '../../src/platform/db/pool.js';
import type { HttpServer } from '../../src/platform/http/server.js';
import type { RedisConnections } from '../../src/platform/redis/client.js';
import { HttpProvider } from '../../src/providers/http-provider.js';
import { buildSimulatorApp } from '../../src/providers/simulator/app.js';
import type { ProviderSimulator } from '../../src/providers/simulator/server.js';
import {
  createTestDatabase,
  createTestMerchant,
  key,
  startTestSimulator,
  TEST_ADMISSION_SECRET,
  TEST_PROVIDER_WEBHOOK_SECRET,
  TEST_TRAFFIC_LIMITS_OFF,
  type TestMerchant,
  type TestSimulator,
} from '../helpers.js';

export interface Node {
  app: HttpServer;
  url: string;
}

export interface Harness {
  pool: Pool;
  sim: TestSimulator;
  /** With `gate: true`: the provider's door for payments, to close and reopen. */
  gate?: Awaited<ReturnType<typeof startProviderGate>>;
  merchant: TestMerchant;
  nodes: Node[];
  /** Everything every node logged, at trace level: checked for card numbers. */
  logs: string[];
  createSale(settings?: Record<string, unknown>): Promise<HostedSaleInfo>;
}

export interface HostedSaleInfo {
  id: string;
  items: { id: string; name: string }[];
  hosted_url: string;
}

/**
 * A second server for the simulator's state on a port of its own, which a test closes (the
 * provider is unreachable: connections refused) and opens again on the same port.
 */
export async function startProviderGate(simulator: ProviderSimulator) {
  let app = buildSimulatorApp(simulator);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  let open = true;
  const gate = {
    url: `http://127.0.0.1:${port}`,
    async close() {
      if (!open) return;
      open = false;
      app.server.closeAllConnections();
      await app.close();
    },
    async reopen() {
      app = buildSimulatorApp(simulator);
      await app.listen({ host: '127.0.0.1', port });
      open = true;
    },
  };
  after(() => gate.close());
  return gate;
}

export async function startHarness(options: { nodes?: number; redis?: RedisConnections[]; config?: Partial<Config>; gate?: boolean } = {}) {
  const { pool } = await createTestDatabase();
  const sim = await startTestSimulator({ webhookSecret: TEST_PROVIDER_WEBHOOK_SECRET });
  // Payments go through the gate when asked, so a test can take the provider away; browsers
  // tokenize at the simulator itself.
  const gate = options.gate ? await startProviderGate(sim.simulator) : undefined;
  const providerUrl = gate?.url ?? sim.url;
  const merchant = await createTestMerchant(pool);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const nodes: Node[] = [];
  for (let index = 0; index < (options.nodes ?? 1); index++) {
    const config = loadConfig(
      {},
      {
        providerUrl,
        providerPublicUrl: sim.url,
        providerTimeoutMs: 1_000,
        apiKeyCacheTtlMs: 0,
        providerWebhookSecret: TEST_PROVIDER_WEBHOOK_SECRET,
        admissionSecret: TEST_ADMISSION_SECRET,
        // Availability may lag the database by this much: short, so the tests need not wait.
        cacheStaleMs: 100,
        ...TEST_TRAFFIC_LIMITS_OFF,
        ...options.config,
      },
    );
    const provider = new HttpProvider({ baseUrl: providerUrl, timeoutMs: 1_000, breakerThreshold: 5, halfOpenMs: 1_000 });
    const logger = pino({ level: 'trace' }, sink);
    const app = await buildApp({ config, pool, provider, logger, redis: options.redis?.[index] });
    await app.listen({ host: '127.0.0.1', port: 0 });
    after(() => app.close());
    const address = app.server.address();
    nodes.push({ app, url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}` });
  }
  const first = nodes[0] as Node;
  const createSale = async (settings: Record<string, unknown> = {}): Promise<HostedSaleInfo> => {
    const response = await first.app.inject({
      method: 'POST',
      url: '/v1/sales',
      headers: { authorization: `Bearer ${merchant.secretKey}`, 'idempotency-key': key('sale') },
      payload: {
        name: 'Spring concert',
        currency: 'usd',
        opens_at: new Date(Date.now() - 60_000).toISOString(),
        hosted_page: true,
        branding: { name: 'Hall of Tests', color: '#0f766e' },
        success_url: 'https://merchant.example/thanks',
        items: [{ name: 'Ticket', price: 2500, stock: 10 }],
        admit_per_second: 100,
        max_shoppers: 100,
        grace_seconds: 30,
        ...settings,
      },
    });
    if (response.statusCode !== 200) throw new Error(`sale not created: ${response.body}`);
    return response.json();
  };
  return { pool, sim, gate, merchant, nodes, logs, createSale } satisfies Harness;
}

/** Card numbers the tests use; none may be found in the database or the logs. */
export const CARDS = { good: '4242424242424242', declined: '4000000000000002' } as const;

/** Rows anywhere in the public schema whose text contains a test card number. */
export async function cardShapedRows(pool: Pool): Promise<string[]> {
  const { rows: tables } = await pool.query<{ name: string }>(
    `select quote_ident(table_schema) || '.' || quote_ident(table_name) as name from information_schema.tables
     where table_schema in ('public', 'graphile_worker') and table_type = 'BASE TABLE'`,
  );
  const found: string[] = [];
  for (const { name } of tables) {
    const { rows } = await pool.query<{ n: number }>(`select count(*)::int as n from ${name} t where t::text ~ $1`, [
      Object.values(CARDS).join('|'),
    ]);
    if ((rows[0]?.n ?? 0) > 0) found.push(name);
  }
  return found;
}
