/**
 * Every role's live /metrics passes Prometheus' own linter (`promtool check metrics`), and
 * carries the series an operator needs (RED for requests and provider calls, USE for the
 * process and the database pool, the job queue, the waiting room and stock).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { binarySkip } from '../engines.js';
import { createTestDatabase, startTestSimulator, TEST_ADMISSION_SECRET, TEST_PROVIDER_WEBHOOK_SECRET } from '../helpers.js';
import { startFloodgate } from '../processes.js';
import { generateTraffic } from '../traffic.js';

const skip = binarySkip('promtool');
const ROOT = path.resolve(import.meta.dirname, '../..');

async function promtoolCheckMetrics(text: string): Promise<{ code: number; output: string }> {
  const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk) => {
    output += chunk;
  });
  child.stderr.on('data', (chunk) => {
    output += chunk;
  });
  child.stdin.end(text);
  const code = await new Promise<number>((resolve) => child.on('exit', (exitCode) => resolve(exitCode ?? 1)));
  return { code, output };
}

async function scrape(url: string): Promise<string> {
  const response = await fetch(`${url}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /text\/plain; version=0\.0\.4/);
  return response.text();
}

function metricNames(text: string): Set<string> {
  return new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((match) => match[1] as string));
}

// What an operator watches, by the RED and USE methods; the dashboard and alerts use these.
const API_METRICS = [
  'floodgate_http_request_duration_seconds',
  'floodgate_http_in_flight_requests',
  'floodgate_http_shed_total',
  'floodgate_event_loop_delay_seconds',
  'floodgate_process_cpu_seconds_total',
  'floodgate_process_resident_memory_bytes',
  'floodgate_db_pool_connections',
  'floodgate_db_pool_max_connections',
  'floodgate_db_pool_waiting_clients',
  'floodgate_db_query_duration_seconds',
  'floodgate_db_replica_lag_seconds',
  'floodgate_provider_request_duration_seconds',
  'floodgate_provider_breaker_state',
  'floodgate_jobs_waiting',
  'floodgate_jobs_oldest_waiting_seconds',
  'floodgate_waiting_room_length',
  'floodgate_waiting_room_admitted',
  'floodgate_waiting_room_admissions_total',
  'floodgate_stock_units',
  'floodgate_holds_active',
  'floodgate_cache_requests_total',
];
const WORKER_METRICS = [
  'floodgate_process_cpu_seconds_total',
  'floodgate_nodejs_eventloop_lag_p99_seconds',
  'floodgate_db_pool_connections',
  'floodgate_db_query_duration_seconds',
  'floodgate_jobs_waiting',
  'floodgate_jobs_oldest_waiting_seconds',
  'floodgate_job_duration_seconds',
  'floodgate_webhook_delivery_attempts_total',
  'floodgate_provider_breaker_state',
];

describe('/metrics of every role', { skip }, () => {
  test('start, api and worker each pass promtool check metrics and export what the dashboard uses', async () => {
    const { url: databaseUrl } = await createTestDatabase();
    const sim = await startTestSimulator({ webhookSecret: TEST_PROVIDER_WEBHOOK_SECRET });
    const dataDir = await mkdtemp(path.join(tmpdir(), 'floodgate-metrics-'));
    after(() => rm(dataDir, { recursive: true, force: true }));
    const common = {
      DATABASE_URL: databaseUrl,
      FLOODGATE_LOG_LEVEL: 'info',
      FLOODGATE_RATE_LIMIT_IP_PER_SECOND: '0',
      FLOODGATE_DATA_DIR: dataDir,
    };
    const shared = {
      ...common,
      FLOODGATE_PROVIDER_URL: sim.url,
      FLOODGATE_ADMISSION_SECRET: TEST_ADMISSION_SECRET,
      FLOODGATE_PROVIDER_WEBHOOK_SECRET: TEST_PROVIDER_WEBHOOK_SECRET,
    };
    const [start, api, worker] = await Promise.all([
      startFloodgate('start', common),
      startFloodgate('api', shared),
      startFloodgate('worker', { ...shared, FLOODGATE_WORKER_METRICS_PORT: '0' }),
    ]);
    const demo = JSON.parse(await readFile(path.join(dataDir, 'demo-merchant.json'), 'utf8')) as {
      secret_key: string;
      publishable_key: string;
    };
    const keys = { secretKey: demo.secret_key, publishableKey: demo.publishable_key };
    await generateTraffic(start.url, keys);
    await generateTraffic(api.url, keys);

    const exported = new Set<string>();
    for (const [role, proc, wanted] of [
      ['start', start, API_METRICS],
      ['api', api, API_METRICS],
      ['worker', worker, WORKER_METRICS],
    ] as const) {
      const text = await scrape(proc.url);
      const checked = await promtoolCheckMetrics(text);
      assert.equal(checked.code, 0, `promtool check metrics on ${role}:\n${checked.output}`);
      const names = metricNames(text);
      for (const name of names) exported.add(name);
      const missing = wanted.filter((name) => !names.has(name));
      assert.deepEqual(missing, [], `${role} lacks ${missing.join(', ')}`);
    }
    // The dashboard and the alerts use exactly the names the processes export.
    const shipped = [
      await readFile(path.join(ROOT, 'deploy/grafana/floodgate.json'), 'utf8'),
      await readFile(path.join(ROOT, 'deploy/prometheus/alerts.yml'), 'utf8'),
    ].join('\n');
    const used = new Set([...shipped.matchAll(/\bfloodgate_[a-z0-9_]+/g)].map((m) => (m[0] as string).replace(/_(bucket|count|sum)$/, '')));
    const unknown = [...used].filter((name) => !exported.has(name));
    assert.deepEqual(unknown, [], 'names in the dashboard or alerts that no process exports');
    // The API's statements are timed by name, and its provider calls by operation.
    const startText = await scrape(start.url);
    assert.match(
      startText,
      /floodgate_db_query_duration_seconds_count\{statement="sales_(batch_write_holds|insert_hold)",outcome="ok"\} [1-9]/,
    );
    assert.match(startText, /floodgate_provider_request_duration_seconds_count\{operation="authorize",outcome="succeeded"\} [1-9]/);
    assert.match(startText, /floodgate_provider_breaker_state\{state="closed"\} 1/);
    // The worker ran the payments' follow-up jobs (the refund's, the hold's) or at least timed its queries.
    const workerText = await scrape(worker.url);
    assert.match(workerText, /floodgate_db_query_duration_seconds_count\{[^}]*\} [1-9]/);
    const notFound = await fetch(`${worker.url}/anything`);
    assert.equal(notFound.status, 404);
  });
});
