/// <reference lib="dom" />
/**
 * The operator dashboard end to end, in Debian's Chromium: a user made with `floodgate users
 * create` signs in (a wrong password is refused), watches the live chart move under load,
 * finds a payment, refunds part of it after confirming, redelivers a webhook, reads the balance
 * and a sale's live view, and signs out; an expired session and forged form posts are refused.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { SESSION_COOKIE } from '../../src/dashboard/routes.js';
import { createTestDatabase, key, setupTestContext } from '../helpers.js';
import { chromiumSkip, launchBrowser, screenshot } from './browser.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const skip = chromiumSkip();
const PASSWORD = 'correct horse battery staple';

async function usersCreate(
  databaseUrl: string,
  merchantId: string,
  email: string,
  password: string,
): Promise<{ code: number; out: string }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), 'users', 'create', '--merchant', merchantId, '--email', email, '--json'],
    {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATABASE_URL: databaseUrl, FLOODGATE_LOG_LEVEL: 'warn' },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
  });
  child.stderr.on('data', (chunk) => {
    out += chunk;
  });
  child.stdin.end(`${password}\n`);
  const code = await new Promise<number>((resolve) => child.on('exit', (exitCode) => resolve(exitCode ?? 1)));
  return { code, out };
}

describe('operator dashboard in a browser', { skip }, () => {
  test('sign in, live chart under load, find and refund a payment, redeliver, balance, sale view, sign out; expired sessions and forged posts refused', async () => {
    const db = await createTestDatabase();
    const t = await setupTestContext({ pool: db.pool, listen: true, config: { webhookAllowPrivate: true } });
    const base = t.url as string;
    const email = `ops+${key('u')}@example.com`;

    const created = await usersCreate(db.url, t.merchant.id, email, PASSWORD);
    assert.equal(created.code, 0, created.out);
    assert.doesNotMatch(created.out, /correct horse/, 'a password given on stdin is not echoed');
    assert.equal((await usersCreate(db.url, t.merchant.id, email, PASSWORD)).code, 1, 'the same email twice is refused');
    assert.equal((await usersCreate(db.url, t.merchant.id, `x${email}`, 'short')).code, 2, 'a short password is refused');
    const { rows } = await db.pool.query<{ password_hash: string }>('select password_hash from dashboard_users where email = $1', [email]);
    assert.match(rows[0]?.password_hash ?? '', /^scrypt\$32768\$8\$1\$/);

    // A payment to find, a webhook endpoint so that its events have deliveries, and a sale.
    await t.app.inject({
      method: 'POST',
      url: '/v1/webhook_endpoints',
      headers: t.auth(),
      payload: { url: 'http://127.0.0.1:9/hook', enabled_events: ['*'] },
    });
    const paid = await t.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 2000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true, description: '<b>Conference ticket</b>' },
    });
    assert.equal(paid.statusCode, 200, paid.body);
    const paymentId = paid.json().id as string;
    const sale = await t.app.inject({
      method: 'POST',
      url: '/v1/sales',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: {
        name: 'Launch day',
        currency: 'usd',
        opens_at: new Date(Date.now() - 1000).toISOString(),
        items: [{ name: 'Seat', price: 500, stock: 42 }],
      },
    });
    assert.equal(sale.statusCode, 200, sale.body);

    const browser = await launchBrowser();
    after(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.setDefaultTimeout(30_000);

    // Not signed in: every page leads to the sign-in form. A wrong password is refused.
    await page.goto(`${base}/dashboard/payments`);
    assert.match(page.url(), /\/dashboard\/login$/);
    await page.fill('input[name=email]', email);
    await page.fill('input[name=password]', 'not the password');
    await page.click('button[type=submit]');
    await page.getByText('Wrong email or password.').waitFor();
    await screenshot(page, '01-wrong-password');

    await page.fill('input[name=password]', PASSWORD);
    await page.click('button[type=submit]');
    await page.waitForURL(`${base}/dashboard`);
    const cookie = (await page.context().cookies()).find((c) => c.name === SESSION_COOKIE);
    assert.ok(cookie?.httpOnly, 'the session cookie is HttpOnly');
    assert.equal(cookie?.sameSite, 'Strict');
    assert.equal(cookie?.path, '/dashboard');

    // Load while the live page polls: the chart gains points and shows requests per second.
    let loading = true;
    const load = (async () => {
      while (loading) {
        await Promise.all(
          Array.from({ length: 10 }, () => fetch(`${base}/v1/payment_intents?limit=5`, { headers: t.auth() }).then((r) => r.arrayBuffer())),
        );
      }
    })();
    try {
      await page.waitForFunction(
        () => {
          const chart = document.querySelector('figure.chart[aria-label="Requests per second"]') as HTMLElement | null;
          const rate = Number(document.querySelector('[data-field=requestsPerSecond]')?.textContent);
          return chart && Number(chart.dataset.points ?? 0) >= 3 && rate > 0;
        },
        undefined,
        { timeout: 45_000 },
      );
    } finally {
      loading = false;
      await load;
    }
    await screenshot(page, '02-live-under-load');

    // Find the payment by id; the description is shown as text, not markup.
    await page.click('nav >> text=Payments');
    await page.fill('input[name=q]', paymentId);
    await page.click('form.search button');
    await page.waitForURL(`${base}/dashboard/payments/${paymentId}`);
    await page.getByText('<b>Conference ticket</b>').waitFor();
    assert.ok(await page.getByText('payment_intent.succeeded').count());
    await screenshot(page, '03-payment');

    // Refund part of it: the confirmation page must be confirmed.
    await page.click('text=Refund…');
    await page.fill('input[name=amount]', '500');
    await page.click('button.danger');
    assert.match(page.url(), /\/refund$/, 'not submitted without the confirmation box');
    await page.check('input[name=confirm]');
    await screenshot(page, '04-refund-confirm');
    await page.click('button.danger');
    await page.waitForURL(/\?refunded=re_/);
    await page.getByText(/Refund re_\w+ created\./).waitFor();
    await screenshot(page, '05-refunded');
    const after1 = await t.app.inject({ method: 'GET', url: `/v1/payment_intents/${paymentId}`, headers: t.auth() });
    assert.equal(after1.json().amount_refunded, 500);

    // Webhook deliveries, and a redelivery.
    await page.click('nav >> text=Webhooks');
    const rowsBefore = await page.locator('tbody tr').count();
    assert.ok(rowsBefore > 0, 'the payment events have deliveries');
    await page.locator('tbody tr button', { hasText: 'Redeliver' }).first().click();
    await page.getByText(/queued for delivery again/).waitFor();
    await screenshot(page, '06-webhooks');

    // Balance: the payment less the refund.
    await page.click('nav >> text=Balance');
    await page.getByRole('cell', { name: 'USD', exact: true }).waitFor();
    assert.ok(await page.getByRole('cell', { name: '15.00 USD', exact: true }).count(), await page.content());

    // A sale's live view.
    await page.goto(`${base}/dashboard/sales/${sale.json().id}`);
    await page.waitForFunction(() => document.querySelector('[data-field=available]')?.textContent === '42');
    await screenshot(page, '07-sale');

    // Forged posts: another origin, or the right origin without the CSRF token.
    const sessionHeader = `${SESSION_COOKIE}=${cookie?.value}`;
    const crossSite = await fetch(`${base}/dashboard/payments/${paymentId}/refund`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: sessionHeader, origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=100&confirm=yes&idempotency_key=forged1',
    });
    assert.equal(crossSite.status, 403);
    const noToken = await fetch(`${base}/dashboard/payments/${paymentId}/refund`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: sessionHeader, origin: base, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=100&confirm=yes&idempotency_key=forged2',
    });
    assert.equal(noToken.status, 403);
    const still = await t.app.inject({ method: 'GET', url: `/v1/payment_intents/${paymentId}`, headers: t.auth() });
    assert.equal(still.json().amount_refunded, 500, 'no forged refund went through');

    // Sign out: the session is gone, on this browser and for the old cookie.
    await page.click('nav button:has-text("Sign out")');
    await page.waitForURL(`${base}/dashboard/login`);
    const oldCookie = await fetch(`${base}/dashboard/balance`, { redirect: 'manual', headers: { cookie: sessionHeader } });
    assert.equal(oldCookie.status, 303);
    await screenshot(page, '08-signed-out');

    // An expired session is refused.
    await page.fill('input[name=email]', email);
    await page.fill('input[name=password]', PASSWORD);
    await page.click('button[type=submit]');
    await page.waitForURL(`${base}/dashboard`);
    await db.pool.query(`update dashboard_sessions set expires_at = now() - interval '1 second'`);
    await page.goto(`${base}/dashboard/balance`);
    assert.match(page.url(), /\/dashboard\/login$/);
  });
});
