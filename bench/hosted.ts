/**
 * `npm run bench:hosted`: the hosted sale page on one `floodgate api` node (its own process,
 * single-node mode: sessions in PostgreSQL, the line in memory; `--redis` puts both in Redis).
 *
 *   1. Page weight of the sale page: HTML, JavaScript, CSS, as sent (brotli, gzip, none).
 *   2. Time to first render on a phone viewport: Debian's Chromium loads the sale page with a
 *      cold cache, several times; first contentful paint and the navigation's timings.
 *   3. Polls per second one node sustains: waiting buyers polling the hosted page's
 *      GET /s/:sale/line (session cookie, session read, waiting-room poll) beside the API's own
 *      GET /v1/sales/:sale/queue/:ticket, in the same run, and how many waiting buyers each
 *      rate keeps polling at the Retry-After the server gives them.
 *
 *   npm run bench:hosted                    # about a minute
 *   npm run bench:hosted -- --duration 4 --rounds 3 --connections 16 --buyers 200 --loads 5 --redis
 *
 * Numbers depend on the machine and on whatever else runs on it: compare the ratios of one run.
 * The client runs in this process (keep-alive sockets); the server in its own.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import { createBenchDatabase, startApiServer } from './setup.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '16' },
    buyers: { type: 'string', default: '200' },
    loads: { type: 'string', default: '5' },
    redis: { type: 'boolean', default: false },
  },
});
const DURATION_MS = Number(values.duration) * 1000;
const CONNECTIONS = Number(values.connections);
const BUYERS = Number(values.buyers);
const LOADS = Number(values.loads);
const ROUNDS = Number(values.rounds);
// A bound on every phase whatever the server does.
const REQUESTS_MAX = 2_000_000;

const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });

function request(
  port: number,
  method: string,
  urlPath: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

/** Closed loop: CONNECTIONS requests in flight, each followed at once by the next, for DURATION_MS. */
async function closedLoop(next: () => Promise<{ status: number }>) {
  let done = 0;
  let failed = 0;
  const started = performance.now();
  const deadline = started + DURATION_MS;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < deadline && done + failed < REQUESTS_MAX) {
        const answer = await next().catch(() => ({ status: 0 }));
        if (answer.status === 200) done += 1;
        else failed += 1;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { perSecond: Math.round(done / seconds), failed };
}

const median = (numbers: number[]) => {
  const sorted = [...numbers].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

async function main() {
  const adminUrl = process.env.FLOODGATE_BENCH_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const db = await createBenchDatabase(adminUrl);
  const redisPrefix = `bench_hosted_${randomBytes(4).toString('hex')}:`;
  const env: Record<string, string> = values.redis ? { REDIS_URL: 'redis://127.0.0.1:6379', FLOODGATE_REDIS_KEY_PREFIX: redisPrefix } : {};
  const server = await startApiServer({ databaseUrl: db.url, poolMax: 10, env });
  const port = server.port;
  try {
    const auth = { authorization: `Bearer ${db.secretKey}`, 'content-type': 'application/json' };
    const created = await request(
      port,
      'POST',
      '/v1/sales',
      { ...auth, 'idempotency-key': `bench_${randomBytes(6).toString('hex')}` },
      JSON.stringify({
        name: 'Bench concert',
        currency: 'usd',
        opens_at: new Date(Date.now() - 60_000).toISOString(),
        hosted_page: true,
        // Nobody is admitted: every buyer keeps waiting and polling.
        max_shoppers: 0,
        grace_seconds: 600,
        items: [{ name: 'Ticket', price: 2500, stock: 1000 }],
      }),
    );
    const sale = JSON.parse(created.body.toString()) as { id: string };
    const page = `/s/${sale.id}`;

    // 1. Page weight.
    const weight: Record<string, { raw: number; gzip: number; brotli: number }> = {};
    const html = (await request(port, 'GET', page)).body;
    weight.html = { raw: html.length, gzip: gzipSync(html).length, brotli: brotliCompressSync(html).length };
    for (const [kind, pattern] of [
      ['js', /<script src="([^"]+)"/],
      ['css', /<link rel="stylesheet" href="([^"]+)"/],
    ] as const) {
      const url = pattern.exec(html.toString())?.[1] as string;
      const raw = (await request(port, 'GET', url)).body.length;
      const gzip = (await request(port, 'GET', url, { 'accept-encoding': 'gzip' })).body.length;
      const brotli = (await request(port, 'GET', url, { 'accept-encoding': 'br' })).body.length;
      weight[kind] = { raw, gzip, brotli };
    }

    // 2. Time to first render on a phone, cold cache each time.
    const browser = await chromium.launch({
      executablePath: process.env.FLOODGATE_CHROMIUM_PATH || '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const renders: { fcp: number; responseEnd: number; domContentLoaded: number; transferred: number }[] = [];
    for (let load = 0; load < LOADS; load++) {
      const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
      const tab = await context.newPage();
      await tab.goto(`http://127.0.0.1:${port}${page}`, { waitUntil: 'load' });
      renders.push(
        (await tab.evaluate(`(() => {
          const nav = performance.getEntriesByType('navigation')[0];
          const fcp = performance.getEntriesByName('first-contentful-paint')[0];
          const resources = performance.getEntriesByType('resource');
          return { fcp: fcp ? fcp.startTime : -1, responseEnd: nav.responseEnd, domContentLoaded: nav.domContentLoadedEventEnd,
            transferred: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0) };
        })()`)) as (typeof renders)[number],
      );
      await context.close();
    }
    await browser.close();

    // 3. Polls per second: hosted sessions against API tickets, on the same node and sale.
    const cookies: string[] = [];
    for (let buyer = 0; buyer < BUYERS; buyer++) {
      const joined = await request(port, 'POST', `${page}/join`, { 'sec-fetch-site': 'same-origin' });
      cookies.push(String(joined.headers['set-cookie']).split(';')[0] as string);
    }
    const tickets: string[] = [];
    for (let buyer = 0; buyer < BUYERS; buyer++) {
      const joined = await request(port, 'POST', `/v1/sales/${sale.id}/queue`, auth, JSON.stringify({ buyer_reference: `bench_${buyer}` }));
      tickets.push((JSON.parse(joined.body.toString()) as { ticket: string }).ticket);
    }
    const pick = <T>(list: T[]) => list[Math.floor(Math.random() * list.length)] as T;
    // The Retry-After each buyer is given depends on their place: the mean over a spread of places.
    const RETRY_SAMPLES = 40;
    const spread = <T>(list: T[]) =>
      Array.from({ length: RETRY_SAMPLES }, (_, index) => list[Math.floor((index * list.length) / RETRY_SAMPLES)] as T);
    const meanRetry = async (paths: { path: string; headers: Record<string, string> }[]) => {
      let sum = 0;
      for (const sample of paths) sum += Number((await request(port, 'GET', sample.path, sample.headers)).headers['retry-after'] ?? 0);
      return Number((sum / paths.length).toFixed(2));
    };
    const retryAfter = await meanRetry(spread(cookies).map((cookie) => ({ path: `${page}/line`, headers: { cookie } })));
    const apiRetryAfter = await meanRetry(
      spread(tickets).map((ticket) => ({ path: `/v1/sales/${sale.id}/queue/${ticket}`, headers: { authorization: auth.authorization } })),
    );
    const pollHosted = () => closedLoop(() => request(port, 'GET', `${page}/line`, { cookie: pick(cookies) }));
    const pollApi = () =>
      closedLoop(() => request(port, 'GET', `/v1/sales/${sale.id}/queue/${pick(tickets)}`, { authorization: auth.authorization }));
    // Rounds alternate which side goes first, so warm-up and the machine's other load fall on
    // both alike; the median round of each side is reported.
    // A first round of each, not counted: both code paths compiled before anything is measured.
    await pollHosted();
    await pollApi();
    const hostedRounds: number[] = [];
    const apiRounds: number[] = [];
    let failedPolls = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [pollHosted, pollApi] : [pollApi, pollHosted];
      for (const phase of order) {
        const result = await phase();
        failedPolls += result.failed;
        (phase === pollHosted ? hostedRounds : apiRounds).push(result.perSecond);
      }
    }
    const hosted = { perSecond: median(hostedRounds), rounds: hostedRounds };
    const api = { perSecond: median(apiRounds), rounds: apiRounds };

    const commonRetry = (retryAfter + apiRetryAfter) / 2;
    const record = {
      startedAt: new Date().toISOString(),
      machine: { cpus: os.cpus().length, load: os.loadavg() },
      options: { durationMs: DURATION_MS, connections: CONNECTIONS, buyers: BUYERS, loads: LOADS, redis: values.redis },
      weight,
      firstPageCompressedBytes: {
        js: weight.js?.brotli,
        total: (weight.html?.brotli ?? 0) + (weight.js?.brotli ?? 0) + (weight.css?.brotli ?? 0),
      },
      render: {
        medianFirstContentfulPaintMs: Math.round(median(renders.map((r) => r.fcp))),
        medianResponseEndMs: Math.round(median(renders.map((r) => r.responseEnd))),
        medianDomContentLoadedMs: Math.round(median(renders.map((r) => r.domContentLoaded))),
        transferredBytes: median(renders.map((r) => r.transferred)),
        loads: renders,
      },
      polls: {
        hostedPerSecond: hosted.perSecond,
        hostedRounds: hosted.rounds,
        apiPerSecond: api.perSecond,
        apiRounds: api.rounds,
        failedPolls,
        ratioHostedToApi: Number((hosted.perSecond / Math.max(1, api.perSecond)).toFixed(2)),
        retryAfterSeconds: retryAfter,
        apiRetryAfterSeconds: apiRetryAfter,
        // A buyer polls once per Retry-After: the buyers one node keeps waiting at that pace.
        // Both kinds of buyer wait in one line and are told the same Retry-After for the same
        // place, so both rates are read at the mean over every place sampled.
        waitingBuyersOneNodeKeeps: Math.round(hosted.perSecond * commonRetry),
        waitingBuyersOneNodeKeepsViaApi: Math.round(api.perSecond * commonRetry),
      },
    };
    const dir = path.resolve(import.meta.dirname, 'results');
    const file = path.join(dir, `hosted-${record.startedAt.replace(/[:.]/g, '-')}.json`);
    await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
    const kb = (bytes: number | undefined) => `${((bytes ?? 0) / 1024).toFixed(1)} KB`;
    console.log(`
Hosted sale page (${values.redis ? 'Redis' : 'single-node: PostgreSQL sessions, line in memory'}), ${os.cpus().length} cores
  page weight, brotli (gzip):  HTML ${kb(weight.html?.brotli)} (${kb(weight.html?.gzip)}), JS ${kb(weight.js?.brotli)} (${kb(weight.js?.gzip)}), CSS ${kb(weight.css?.brotli)} (${kb(weight.css?.gzip)})
  first page, compressed:      JS ${kb(record.firstPageCompressedBytes.js)}, total ${kb(record.firstPageCompressedBytes.total)}
  phone, cold cache (median of ${LOADS}): first contentful paint ${record.render.medianFirstContentfulPaintMs} ms, response end ${record.render.medianResponseEndMs} ms
  polls/s, one node, ${CONNECTIONS} connections, median of ${ROUNDS} rounds of ${DURATION_MS / 1000} s (mean Retry-After ${commonRetry} s):
    hosted GET /s/:sale/line          ${hosted.perSecond}/s ${JSON.stringify(hosted.rounds)} → ${record.polls.waitingBuyersOneNodeKeeps} waiting buyers
    API GET /v1/sales/:id/queue/:t    ${api.perSecond}/s ${JSON.stringify(api.rounds)} → ${record.polls.waitingBuyersOneNodeKeepsViaApi} waiting buyers
    ratio hosted / API                ${record.polls.ratioHostedToApi}
  record: ${path.relative(process.cwd(), file)}
`);
  } finally {
    agent.destroy();
    await server.stop();
    await db.drop();
    if (values.redis) {
      const { Redis } = await import('ioredis');
      const redis = new Redis('redis://127.0.0.1:6379');
      let cursor = '0';
      do {
        const [nextCursor, keys] = await redis.scan(cursor, 'MATCH', `${redisPrefix}*`, 'COUNT', 500);
        cursor = nextCursor;
        if (keys.length > 0) await redis.del(...keys);
      } while (cursor !== '0');
      redis.disconnect();
    }
  }
}

await main();
