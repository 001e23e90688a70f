/**
 * Two API nodes behind one Redis, with a balancer in front that sends each request to the
 * other node: every step of one buyer's session (join, poll, hold, pay, receipt) is served by
 * whichever node gets it, from the session in Redis.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, describe, test } from 'node:test';
import { openTestRedis, redisSkip } from '../redis.js';
import { chromiumSkip, launchBrowser, openPage, screenshot } from './browser.js';
import { CARDS, startHarness } from './harness.js';

const skip = chromiumSkip() || redisSkip;

/** A round-robin HTTP balancer on a free port; counts what each node served, by method and path. */
async function startBalancer(targets: string[]) {
  let next = 0;
  const served: { node: number; method: string; path: string }[] = [];
  const server = http.createServer((request, response) => {
    const node = next++ % targets.length;
    served.push({ node, method: request.method ?? '', path: (request.url ?? '').split('?')[0] ?? '' });
    const target = new URL(request.url ?? '/', targets[node]);
    const upstream = http.request(target, { method: request.method, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(response);
    });
    upstream.on('error', () => response.writeHead(502).end());
    request.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const address = server.address();
  return { url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`, served };
}

describe('two API nodes behind one Redis', { skip }, async () => {
  if (skip) return;
  const first = await openTestRedis();
  const second = await openTestRedis(first.keyPrefix);
  const h = await startHarness({ nodes: 2, redis: [first, second] });
  const balancer = await startBalancer(h.nodes.map((node) => node.url));
  const browser = await launchBrowser();

  test('alternate nodes serve the steps of one session, from the line to a receipt', async () => {
    const sale = await h.createSale({ max_shoppers: 1 });
    // Another buyer shops first, so this one waits and polls across both nodes.
    const other = await openPage(browser, 'desktop');
    await other.page.goto(`${balancer.url}/s/${sale.id}`);
    await other.page.getByRole('button', { name: 'Join the line' }).click();
    await other.page.getByRole('heading', { name: 'It is your turn' }).waitFor();

    const watched = await openPage(browser, 'phone');
    const { page } = watched;
    await page.goto(`${balancer.url}/s/${sale.id}`);
    await page.getByRole('button', { name: 'Join the line' }).click();
    await page.getByRole('heading', { name: 'You are in line' }).waitFor();
    // A few polls go round both nodes before the other buyer leaves.
    const pollsBefore = balancer.served.filter((entry) => entry.path.endsWith('/line')).length;
    await page.waitForTimeout(2_500);
    await other.page.getByRole('button', { name: 'Leave' }).click();
    await page.getByRole('heading', { name: 'It is your turn' }).waitFor({ timeout: 15_000 });
    await page.getByLabel('Quantity of Ticket').fill('1');
    await page.getByRole('button', { name: 'Hold my tickets' }).click();
    await page.getByRole('heading', { name: 'Your items are held' }).waitFor();
    await page.fill('#card-number', CARDS.good);
    await page.fill('#card-expiry', '12/34');
    await page.fill('#card-cvc', '123');
    await page.getByRole('button', { name: /^Pay/ }).click();
    await page.getByRole('heading', { name: 'Thank you: you have paid' }).waitFor();
    await screenshot(page, 'phone-two-nodes-receipt');

    const steps = balancer.served.filter((entry) => entry.path.startsWith(`/s/${sale.id}`));
    const nodesFor = (method: string, suffix: string) =>
      new Set(steps.filter((entry) => entry.method === method && entry.path.endsWith(suffix)).map((entry) => entry.node));
    assert.ok(balancer.served.filter((entry) => entry.path.endsWith('/line')).length > pollsBefore, 'the waiting page polled');
    assert.deepEqual([...nodesFor('GET', '/line')].sort(), [0, 1], 'polls were served by both nodes');
    assert.deepEqual([...new Set(steps.map((entry) => entry.node))].sort(), [0, 1], 'both nodes served this sale’s steps');
    const posts = steps.filter((entry) => entry.method === 'POST');
    assert.ok(posts.length >= 4, `join, join, hold and pay were posted: ${JSON.stringify(posts)}`);
    const { rows } = await h.pool.query(`select status from orders where sale_id = $1`, [sale.id]);
    assert.deepEqual(rows, [{ status: 'paid' }]);
    // Sessions lived in Redis, not in PostgreSQL.
    const stored = await h.pool.query('select count(*)::int as n from hosted_sessions');
    assert.equal(stored.rows[0].n, 0);
    await other.context.close();
    await watched.context.close();
  });
});
