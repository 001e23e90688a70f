/**
 * A small `floodgate drill` inside the suite: the real command, against its own `floodgate
 * start` on this test's database, with the simulator's failure modes on. It must pass its
 * invariants, write its report, and its whole log (every request, at debug level) must hold
 * no key, secret or card number.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { luhnValid } from '../src/platform/observability/logging.js';
import { createTestDatabase } from './helpers.js';

const ROOT = path.resolve(import.meta.dirname, '..');
// Bounded: a few hundred buyers at a small surge take well under a minute on an idle machine.
const DRILL_TIMEOUT_MS = 240_000;

function stringsIn(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (value && typeof value === 'object') for (const item of Object.values(value)) stringsIn(item, out);
  return out;
}

test('a small drill passes its invariants, writes its report, and logs no secret', async () => {
  const { url: databaseUrl } = await createTestDatabase();
  const dir = await mkdtemp(path.join(tmpdir(), 'floodgate-drill-'));
  after(() => rm(dir, { recursive: true, force: true }));
  const report = path.join(dir, 'drill.html');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(ROOT, 'src/cli/main.ts'),
      'drill',
      '--buyers',
      '200',
      '--surge',
      '5',
      '--rate',
      '40',
      '--duration',
      '10',
      '--baseline',
      '40',
      '--report',
      report,
      '--json',
    ],
    {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        DATABASE_URL: databaseUrl,
        FLOODGATE_DATA_DIR: dir,
        FLOODGATE_LOG_LEVEL: 'debug',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), DRILL_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  clearTimeout(timer);
  assert.equal(code, 0, `drill exited ${code}\n${stdout}\n${stderr}`);

  const outcome = JSON.parse(stdout.trim().split('\n').at(-1) as string) as {
    verdict: {
      ok: boolean;
      invariants: Array<{ name: string; value: number | null }>;
      buyers: Record<string, number>;
      unexpected5xx: number;
      clientLoopDelayMs?: Record<'baseline' | 'surge', { p50: number; p99: number; max: number }>;
    };
    report: string;
    json: string;
  };
  assert.equal(outcome.verdict.ok, true);
  for (const invariant of outcome.verdict.invariants) assert.equal(invariant.value, 0, invariant.name);
  assert.ok((outcome.verdict.buyers.paid ?? 0) > 0, 'some buyers paid');
  assert.ok((outcome.verdict.buyers.sold_out ?? 0) > 0, 'the sale sold out (stock is half the buyers)');
  const buyers = Object.values(outcome.verdict.buyers).reduce((a, b) => a + b, 0);
  assert.equal(buyers, 200);
  // The drill reports its own event-loop delay per phase, which every latency it timed includes.
  const loop = outcome.verdict.clientLoopDelayMs;
  assert.ok(loop, 'the verdict carries the client loop delay');
  for (const phase of [loop.baseline, loop.surge]) {
    assert.ok(Number.isFinite(phase.p99) && phase.p99 >= phase.p50 && phase.max >= phase.p99, JSON.stringify(phase));
  }

  const html = await readFile(report, 'utf8');
  assert.match(html, /Floodgate drill: <span class="pass">PASS/);
  assert.match(html, /new uPlot\(/);
  assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=/, 'self-contained: nothing is fetched');
  const data = JSON.parse(await readFile(outcome.json, 'utf8')) as {
    timeline: { arrivals: number[]; sold: number[]; jobsWaiting: Array<number | null> };
  };
  assert.equal(
    data.timeline.arrivals.reduce((a, b) => a + b, 0),
    200,
  );
  assert.ok(data.timeline.sold.reduce((a, b) => a + b, 0) > 0);
  assert.ok(
    data.timeline.jobsWaiting.some((value) => typeof value === 'number'),
    "the queue depth was read from the target's /metrics",
  );

  // The whole drill's log: every request at debug level, errors, the worker's jobs.
  const log = await readFile(report.replace(/\.html$/, '.log'), 'utf8');
  const lines = log
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  const requests = lines.filter((line) => line.msg === 'request completed');
  assert.ok(requests.length > 500, `request lines: ${requests.length}`);
  for (const line of requests) {
    assert.match(String(line.request_id), /^req_/);
    assert.equal(typeof line.route, 'string');
  }
  assert.ok(
    requests.some((line) => typeof line.merchant_id === 'string' && line.route === '/v1/holds'),
    'authenticated requests name their merchant',
  );
  assert.doesNotMatch(log, /\b(sk|pk)_(test|live)_(?!\[REDACTED\])/, 'an API key in the logs');
  assert.doesNotMatch(log, /whsec_(?!\[REDACTED\])/, 'a webhook secret in the logs');
  for (const line of lines) {
    for (const text of stringsIn(line)) {
      for (const match of text.matchAll(/\b\d(?:[ -]?\d){12,18}\b/g)) {
        assert.ok(!luhnValid(match[0].replace(/[ -]/g, '')), `a card number in the logs: ${text}`);
      }
    }
  }
});
