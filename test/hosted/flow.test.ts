/**
 * The hosted sale page end to end, in Debian's Chromium: one API node (sessions in
 * PostgreSQL, single-node mode), the provider simulator over HTTP.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { expireHold } from '../../src/sales/holds.js';
import { chromiumSkip, launchBrowser, openPage, screenshot, seriousViolations, type WatchedPage } from './browser.js';
import { CARDS, cardShapedRows, type Harness, type HostedSaleInfo, startHarness } from './harness.js';

const skip = chromiumSkip();

/** axe-core finds no serious or critical violation on the page as it is now. */
async function assertAccessible(page: Page, state: string) {
  const violations = await seriousViolations(page);
  assert.deepEqual(violations, [], `accessibility violations on the ${state} page: ${JSON.stringify(violations)}`);
}

async function fillCard(page: Page, number: string) {
  await page.fill('#card-number', number);
  await page.fill('#card-expiry', '12/34');
  await page.fill('#card-cvc', '123');
}

/** Every request went to the API node or the provider, and no CSP violation was reported. */
function assertOnlyOwnRequests(watched: WatchedPage, origins: string[]) {
  const foreign = watched.requests.filter((url) => !origins.includes(new URL(url).origin));
  assert.deepEqual(foreign, [], 'no third-party requests');
  assert.deepEqual(watched.errors, [], 'no console errors (CSP violations among them)');
}

async function chargesOf(h: Harness) {
  return [...h.sim.simulator.charges.values()].filter((charge) => charge.status === 'captured').length;
}

describe('hosted sale page in a browser', { skip }, async () => {
  if (skip) return;
  const h = await startHarness();
  const node = h.nodes[0] as { url: string };
  const browser = await launchBrowser();
  const origins = () => [node.url, h.sim.url];

  for (const viewport of ['phone', 'desktop'] as const) {
    test(`${viewport}: a buyer goes from the sale page through the line to a receipt`, async () => {
      const sale = await h.createSale({ per_buyer_limit: 4 });
      const watched = await openPage(browser, viewport);
      const { page } = watched;
      await page.goto(`${node.url}/s/${sale.id}`);
      await assert.doesNotReject(page.getByRole('button', { name: 'Join the line' }).waitFor());
      await assertAccessible(page, 'sale');
      await screenshot(page, `${viewport}-1-sale`);

      await page.getByRole('button', { name: 'Join the line' }).click();
      await page.getByRole('heading', { name: 'It is your turn' }).waitFor();
      await assertAccessible(page, 'admitted');
      await screenshot(page, `${viewport}-2-admitted`);

      await page.getByLabel('Quantity of Ticket').fill('2');
      await page.getByRole('button', { name: 'Hold my tickets' }).click();
      await page.getByRole('heading', { name: 'Your items are held' }).waitFor();
      assert.match((await page.locator('.countdown').textContent()) ?? '', /Time left: \d+:\d\d/);
      await assertAccessible(page, 'hold');
      await screenshot(page, `${viewport}-3-hold`);

      await fillCard(page, CARDS.good);
      await page.getByRole('button', { name: /^Pay/ }).click();
      await page.getByRole('heading', { name: 'Thank you: you have paid' }).waitFor();
      const orderId = (await page.locator('#order-id').textContent()) ?? '';
      assert.match(orderId, /^ord_/);
      assert.match((await page.getByRole('link', { name: /Continue to/ }).getAttribute('href')) ?? '', new RegExp(`order=${orderId}`));
      await assertAccessible(page, 'receipt');
      await screenshot(page, `${viewport}-4-receipt`);

      const { rows } = await h.pool.query('select status, amount from orders where id = $1', [orderId]);
      assert.deepEqual(rows, [{ status: 'paid', amount: 5000 }]);
      assertOnlyOwnRequests(watched, origins());
      // A reload of the receipt shows the receipt again and charges nothing more.
      const before = await chargesOf(h);
      await page.reload();
      await page.getByRole('heading', { name: 'Thank you: you have paid' }).waitFor();
      assert.equal(await chargesOf(h), before);
      await watched.context.close();
    });
  }

  test('a declined card, then a good one: the hold is kept and one charge is made', async () => {
    const sale = await h.createSale();
    const watched = await openPage(browser, 'phone');
    const { page } = watched;
    await page.goto(`${node.url}/s/${sale.id}`);
    await page.getByRole('button', { name: 'Join the line' }).click();
    await page.getByLabel('Quantity of Ticket').fill('1');
    await page.getByRole('button', { name: 'Hold my tickets' }).click();
    await fillCard(page, CARDS.declined);
    await page.getByRole('button', { name: /^Pay/ }).click();
    await page.getByRole('alert').filter({ hasText: 'declined' }).waitFor();
    await page.getByRole('heading', { name: 'Your items are held' }).waitFor();
    await assertAccessible(page, 'declined');
    await screenshot(page, 'phone-declined');
    const before = await chargesOf(h);
    await fillCard(page, CARDS.good);
    await page.getByRole('button', { name: /^Pay/ }).click();
    await page.getByRole('heading', { name: 'Thank you: you have paid' }).waitFor();
    assert.equal((await chargesOf(h)) - before, 1);
    assertOnlyOwnRequests(watched, origins());
    await watched.context.close();
  });

  test('a double click on pay charges once', async () => {
    const sale = await h.createSale();
    const watched = await openPage(browser, 'desktop');
    const { page } = watched;
    await page.goto(`${node.url}/s/${sale.id}`);
    await page.getByRole('button', { name: 'Join the line' }).click();
    await page.getByLabel('Quantity of Ticket').fill('1');
    await page.getByRole('button', { name: 'Hold my tickets' }).click();
    await fillCard(page, CARDS.good);
    const before = await chargesOf(h);
    // Past the page's own guard too: two pay requests with two tokens sent at once.
    const statuses = await page.evaluate(`(async () => {
      const form = document.getElementById('pay-form');
      const token = async () => (await (await fetch(document.body.dataset.provider + '/v1/tokens', { method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ card: { number: '4242424242424242', exp_month: 12, exp_year: 2034, cvc: '123' } }) })).json()).id;
      const send = async () => {
        const body = new URLSearchParams({ csrf: form.elements.csrf.value, payment_method: await token() });
        return (await fetch(form.action, { method: 'POST', body, redirect: 'manual' })).type;
      };
      return Promise.all([send(), send()]);
    })()`);
    assert.deepEqual(statuses, ['opaqueredirect', 'opaqueredirect']);
    await page.getByRole('button', { name: /^Pay/ }).dblclick();
    await page.getByRole('heading', { name: 'Thank you: you have paid' }).waitFor();
    assert.equal((await chargesOf(h)) - before, 1, 'one charge for the order');
    const { rows } = await h.pool.query(
      `select count(*)::int as n from payment_attempts a join orders o on o.payment_intent_id = a.payment_intent_id
       where o.sale_id = $1 and a.status = 'succeeded'`,
      [sale.id],
    );
    assert.equal(rows[0].n, 1);
    await watched.context.close();
  });

  test('a reload while waiting keeps the place in line', async () => {
    // One shopper at a time: the first buyer shops, the second waits behind them.
    const sale = await h.createSale({ max_shoppers: 1 });
    const first = await openPage(browser, 'desktop');
    await first.page.goto(`${node.url}/s/${sale.id}`);
    await first.page.getByRole('button', { name: 'Join the line' }).click();
    await first.page.getByRole('heading', { name: 'It is your turn' }).waitFor();

    const second = await openPage(browser, 'phone');
    await second.page.goto(`${node.url}/s/${sale.id}`);
    await second.page.getByRole('button', { name: 'Join the line' }).click();
    await second.page.getByRole('heading', { name: 'You are in line' }).waitFor();
    assert.equal(await second.page.locator('#line-position').textContent(), 'Your place in line: 1');
    await assertAccessible(second.page, 'waiting');
    await screenshot(second.page, 'phone-waiting');
    const ticketBefore = await ticketOf(h, sale);
    await second.page.reload();
    await second.page.getByRole('heading', { name: 'You are in line' }).waitFor();
    assert.equal(await second.page.locator('#line-position').textContent(), 'Your place in line: 1');
    assert.deepEqual(await ticketOf(h, sale), ticketBefore, 'the same session and ticket after the reload');

    // The first buyer leaves: the waiting page's own polling lets the second in.
    await first.page.getByRole('button', { name: 'Leave' }).click();
    await first.context.close();
    await second.page.getByRole('heading', { name: 'It is your turn' }).waitFor({ timeout: 15_000 });
    assertOnlyOwnRequests(second, origins());
    await second.context.close();
  });

  test('the waiting page polls while visible and stops while hidden', async () => {
    const sale = await h.createSale({ max_shoppers: 1 });
    const first = await openPage(browser, 'desktop');
    await first.page.goto(`${node.url}/s/${sale.id}`);
    await first.page.getByRole('button', { name: 'Join the line' }).click();
    await first.page.getByRole('heading', { name: 'It is your turn' }).waitFor();
    const second = await openPage(browser, 'phone');
    await second.page.goto(`${node.url}/s/${sale.id}`);
    await second.page.getByRole('button', { name: 'Join the line' }).click();
    await second.page.getByRole('heading', { name: 'You are in line' }).waitFor();
    const polls = () => second.requests.filter((url) => url.endsWith(`/s/${sale.id}/line`)).length;
    const visible = polls();
    await second.page.waitForTimeout(3_500);
    assert.ok(polls() > visible, 'a visible waiting page polls');
    const setHidden = (hidden: boolean) =>
      second.page.evaluate(`(() => {
        Object.defineProperty(document, 'hidden', { get: () => ${hidden}, configurable: true });
        Object.defineProperty(document, 'visibilityState', { get: () => '${hidden ? 'hidden' : 'visible'}', configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      })()`);
    await setHidden(true);
    await second.page.waitForTimeout(500);
    const hidden = polls();
    await second.page.waitForTimeout(3_500);
    assert.equal(polls(), hidden, 'a hidden page does not poll');
    await setHidden(false);
    await second.page.waitForResponse((response) => response.url().endsWith(`/s/${sale.id}/line`));
    assert.ok(polls() > hidden, 'it polls again at once when shown');
    await first.context.close();
    await second.context.close();
  });

  test('sold out while waiting: the waiting page says so', async () => {
    // Two units, one shopper at a time: the first buyer holds both while the second waits.
    const sale = await h.createSale({ max_shoppers: 1, per_buyer_limit: 2, items: [{ name: 'Ticket', price: 2500, stock: 2 }] });
    const first = await openPage(browser, 'desktop');
    await first.page.goto(`${node.url}/s/${sale.id}`);
    await first.page.getByRole('button', { name: 'Join the line' }).click();
    const second = await openPage(browser, 'phone');
    await second.page.goto(`${node.url}/s/${sale.id}`);
    await second.page.getByRole('button', { name: 'Join the line' }).click();
    await second.page.getByRole('heading', { name: 'You are in line' }).waitFor();

    await first.page.getByLabel('Quantity of Ticket').fill('2');
    await first.page.getByRole('button', { name: 'Hold my tickets' }).click();
    await fillCard(first.page, CARDS.good);
    await first.page.getByRole('button', { name: /^Pay/ }).click();
    await first.page.getByRole('heading', { name: 'Thank you: you have paid' }).waitFor();

    await second.page.getByRole('heading', { name: 'Sold out' }).waitFor({ timeout: 15_000 });
    await assertAccessible(second.page, 'sold out');
    await screenshot(second.page, 'phone-sold-out');
    await first.context.close();
    await second.context.close();
  });

  test('the hold expires while the tab sleeps: the page says so and payment is refused', async () => {
    const sale = await h.createSale();
    const watched = await openPage(browser, 'phone');
    const { page } = watched;
    // The page's clock is the test's to move: the tab sleeps through the hold's ten minutes.
    await page.clock.install();
    await page.goto(`${node.url}/s/${sale.id}`);
    await page.getByRole('button', { name: 'Join the line' }).click();
    await page.getByLabel('Quantity of Ticket').fill('1');
    await page.getByRole('button', { name: 'Hold my tickets' }).click();
    await page.getByRole('heading', { name: 'Your items are held' }).waitFor();
    const cdp = await watched.context.newCDPSession(page);
    await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
    // While the tab is frozen its hold runs out: time moves on and the expiry job runs.
    const { rows } = await h.pool.query<{ id: string; merchant_id: string }>(
      `update holds set expires_at = now() - interval '1 second' where sale_id = $1 returning id, merchant_id`,
      [sale.id],
    );
    const hold = rows[0] as { id: string; merchant_id: string };
    assert.equal(await expireHold(h.pool, { merchant_id: hold.merchant_id, hold_id: hold.id }), 'released');
    await cdp.send('Page.setWebLifecycleState', { state: 'active' });
    await page.clock.fastForward('10:01');
    await page.clock.runFor(2_000);
    await page.getByRole('heading', { name: 'Your hold has expired' }).waitFor({ timeout: 10_000 });
    await assertAccessible(page, 'hold expired');
    await screenshot(page, 'phone-hold-expired');
    const before = await chargesOf(h);
    assert.equal(await page.getByRole('button', { name: 'Join the line again' }).isVisible(), true);
    assert.equal(await chargesOf(h), before);
    const stock = await h.pool.query('select stock_available from items where sale_id = $1', [sale.id]);
    assert.equal(stock.rows[0].stock_available, 10, 'the stock went back');
    await watched.context.close();
  });

  test('several browsers race for the last unit: exactly one gets it', async () => {
    const sale = await h.createSale({ items: [{ name: 'Ticket', price: 2500, stock: 1 }] });
    const buyers = await Promise.all([1, 2, 3, 4].map(() => openPage(browser, 'phone')));
    await Promise.all(buyers.map(({ page }) => page.goto(`${node.url}/s/${sale.id}`)));
    await Promise.all(buyers.map(({ page }) => page.getByRole('button', { name: 'Join the line' }).click()));
    const outcomes = await Promise.all(buyers.map(({ page }) => raceToTheEnd(page)));
    assert.equal(outcomes.filter((outcome) => outcome === 'paid').length, 1, `one buyer paid: ${outcomes}`);
    assert.equal(outcomes.filter((outcome) => outcome === 'sold_out').length, buyers.length - 1, `${outcomes}`);
    const { rows } = await h.pool.query('select stock_sold, stock_available, stock_held from items where sale_id = $1', [sale.id]);
    assert.deepEqual(rows, [{ stock_sold: 1, stock_available: 0, stock_held: 0 }]);
    for (const buyer of buyers) await buyer.context.close();
  });

  test('no card number reached the database or the logs', () => {
    return cardShapedRows(h.pool).then((tables) => {
      assert.deepEqual(tables, []);
      const cardInLogs = h.logs.filter((line) => Object.values(CARDS).some((card) => line.includes(card)));
      assert.deepEqual(cardInLogs, []);
      assert.ok(h.sim.simulator.tokens.size > 0, 'cards were tokenized at the provider');
    });
  });
});

/** Goes as far as the page lets a buyer: hold one and pay, or be told it sold out. */
async function raceToTheEnd(page: Page): Promise<'paid' | 'sold_out' | string> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const heading =
      (await page
        .locator('main h2')
        .first()
        .textContent()
        .catch(() => '')) ?? '';
    if (heading === 'Sold out') return 'sold_out';
    if (heading === 'Thank you: you have paid') return 'paid';
    if (heading === 'It is your turn') {
      await page
        .getByLabel('Quantity of Ticket')
        .fill('1')
        .catch(() => {});
      await page
        .getByRole('button', { name: 'Hold my tickets' })
        .click()
        .catch(() => {});
    } else if (heading === 'Your items are held') {
      await fillCard(page, CARDS.good);
      await page.getByRole('button', { name: /^Pay/ }).click();
      await page.getByRole('heading', { name: 'Thank you: you have paid' }).waitFor();
    } else {
      await page.waitForTimeout(250);
    }
  }
  return `stuck at ${await page.locator('main').textContent()}`;
}

async function ticketOf(h: Harness, sale: HostedSaleInfo): Promise<string[]> {
  const { rows } = await h.pool.query<{ ticket: string }>(
    `select data->>'ticketId' as ticket from hosted_sessions where data->>'saleId' = $1 and data->>'ticketId' is not null order by data->>'createdAtMs'`,
    [sale.id],
  );
  return rows.map((row) => row.ticket);
}
