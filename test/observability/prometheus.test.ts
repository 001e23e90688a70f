/**
 * The shipped monitoring, tested against the real thing: the alert rules pass `promtool check
 * rules` and their unit tests (`promtool test rules`), and a real Prometheus scraping a running
 * `floodgate start` under traffic evaluates every dashboard and alert expression without error,
 * with data in the panels an operator looks at first.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { binarySkip } from '../engines.js';
import { createTestDatabase } from '../helpers.js';
import { lines, startFloodgate } from '../processes.js';
import { generateTraffic } from '../traffic.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const PROMETHEUS_DIR = path.join(ROOT, 'deploy/prometheus');
const DASHBOARD = path.join(ROOT, 'deploy/grafana/floodgate.json');
const run = promisify(execFile);
const skip = binarySkip('promtool', 'prometheus');

// The panels an operator reads first: under traffic each must return series.
const KEY_PANELS = [
  'Requests per second by status class',
  'Latency p50 / p95 / p99',
  'Waiting room: waiting and admitted',
  'Admissions per second',
  'Stock by state',
  'Provider calls per second by outcome',
  'Circuit breaker (nodes in each state)',
  'Pool connections in use / max',
  'Query p99 by statement (top 10)',
  'CPU (cores)',
  'Resident memory',
];

interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr: string }>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  return typeof address === 'object' && address ? address.port : 0;
}

async function startPrometheus(target: string): Promise<{ url: string; child: ChildProcess }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'floodgate-prometheus-'));
  after(() => rm(dir, { recursive: true, force: true }));
  await copyFile(path.join(PROMETHEUS_DIR, 'alerts.yml'), path.join(dir, 'alerts.yml'));
  // The shipped file's rules, this test's target, and a 1 s interval so a short test has samples.
  const config = [
    'global: { scrape_interval: 1s, evaluation_interval: 1s }',
    'rule_files: [alerts.yml]',
    'scrape_configs:',
    '  - job_name: floodgate-api',
    `    static_configs: [{ targets: ["${target}"], labels: { role: api } }]`,
  ].join('\n');
  await writeFile(path.join(dir, 'prometheus.yml'), `${config}\n`);
  const port = await freePort();
  const child = spawn(
    'prometheus',
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output: string[] = [];
  lines(child.stderr, (line) => output.push(line));
  lines(child.stdout, (line) => output.push(line));
  after(async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  });
  const url = `http://127.0.0.1:${port}`;
  for (let tries = 0; ; tries += 1) {
    try {
      if ((await fetch(`${url}/-/ready`)).ok) return { url, child };
    } catch {}
    assert.ok(tries < 300 && child.exitCode === null, `prometheus did not become ready:\n${output.join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function query(url: string, expr: string): Promise<{ status: string; error?: string; data?: { result: unknown[] } }> {
  const response = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`);
  return (await response.json()) as { status: string; error?: string; data?: { result: unknown[] } };
}

describe('Prometheus rules and the Grafana dashboard', { skip }, () => {
  test('the alert rules pass promtool check rules and their unit tests', async () => {
    const checked = await run('promtool', ['check', 'rules', 'alerts.yml'], { cwd: PROMETHEUS_DIR });
    assert.match(checked.stdout, /SUCCESS: 8 rules found/);
    const tested = await run('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: PROMETHEUS_DIR });
    assert.match(tested.stdout, /SUCCESS/);
    // Every alert has at least one unit test.
    const rules = [...(await readFile(path.join(PROMETHEUS_DIR, 'alerts.yml'), 'utf8')).matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    const tests = await readFile(path.join(PROMETHEUS_DIR, 'alerts.test.yml'), 'utf8');
    for (const rule of rules) assert.match(tests, new RegExp(`alertname: ${rule}\\n`), `${rule} has no unit test`);
  });

  test('a real Prometheus scraping a running Floodgate evaluates every expression, and the key panels have data', async () => {
    const { url: databaseUrl } = await createTestDatabase();
    const dataDir = await mkdtemp(path.join(tmpdir(), 'floodgate-prom-start-'));
    after(() => rm(dataDir, { recursive: true, force: true }));
    const floodgate = await startFloodgate('start', {
      DATABASE_URL: databaseUrl,
      FLOODGATE_RATE_LIMIT_IP_PER_SECOND: '0',
      FLOODGATE_DATA_DIR: dataDir,
    });
    const demo = JSON.parse(await readFile(path.join(dataDir, 'demo-merchant.json'), 'utf8')) as {
      secret_key: string;
      publishable_key: string;
    };
    const keys = { secretKey: demo.secret_key, publishableKey: demo.publishable_key };
    const prometheus = await startPrometheus(new URL(floodgate.url).host);

    // Traffic throughout the scrapes, so rates over the window have something to show.
    let stopTraffic = false;
    const traffic = (async () => {
      while (!stopTraffic) await generateTraffic(floodgate.url, keys);
    })();
    try {
      for (let tries = 0; ; tries += 1) {
        const up = await query(prometheus.url, 'up{job="floodgate-api"} == 1');
        if ((up.data?.result.length ?? 0) > 0) break;
        assert.ok(tries < 200, 'Prometheus never scraped Floodgate successfully');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // A few scrapes, so rate() over the window has two samples or more.
      await new Promise((resolve) => setTimeout(resolve, 6_000));
    } finally {
      stopTraffic = true;
      await traffic;
    }
    await new Promise((resolve) => setTimeout(resolve, 1_500));

    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Panel[] };
    const panels = dashboard.panels.filter((panel) => panel.type !== 'row');
    assert.ok(panels.length >= 20);
    const empty: string[] = [];
    for (const panel of panels) {
      for (const target of panel.targets ?? []) {
        const expr = target.expr.replaceAll('$__rate_interval', '30s');
        const answer = await query(prometheus.url, expr);
        assert.equal(answer.status, 'success', `${panel.title}: ${expr}: ${answer.error}`);
        if (KEY_PANELS.includes(panel.title) && (answer.data?.result.length ?? 0) === 0) empty.push(`${panel.title}: ${expr}`);
      }
    }
    assert.deepEqual(empty, [], 'key panels without data');
    for (const title of KEY_PANELS)
      assert.ok(
        panels.some((panel) => panel.title === title),
        `no panel "${title}"`,
      );

    // Every alert expression evaluates, and Prometheus' own rule evaluation reports no error.
    const rulesText = await readFile(path.join(PROMETHEUS_DIR, 'alerts.yml'), 'utf8');
    const rulesAnswer = (await (await fetch(`${prometheus.url}/api/v1/rules`)).json()) as {
      data: { groups: Array<{ rules: Array<{ name: string; query: string; health: string; lastError?: string }> }> };
    };
    const { groups } = rulesAnswer.data;
    const rules = groups.flatMap((group) => group.rules);
    assert.equal(rules.length, [...rulesText.matchAll(/- alert: /g)].length);
    for (const rule of rules) {
      assert.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError}`);
      const answer = await query(prometheus.url, rule.query);
      assert.equal(answer.status, 'success', `${rule.name}: ${answer.error}`);
    }
  });
});
