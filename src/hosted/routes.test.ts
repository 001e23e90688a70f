/**
 * The hosted page's HTTP edge without a browser: the merchant's settings, the cookie's flags,
 * CSRF refusals, what a stolen ticket id is worth, static assets and the provider's tokens.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { brotliCompressSync } from 'node:zlib';
import { key } from '../../test/helpers.js';
import { startHarness } from '../../test/hosted/harness.js';

const h = await startHarness({ config: { trustProxy: 1 } });
const node = h.nodes[0] as { app: import('../platform/http/server.js').HttpServer; url: string };
const secret = { authorization: `Bearer ${h.merchant.secretKey}` };
const sameOrigin = { 'sec-fetch-site': 'same-origin', 'content-type': 'application/x-www-form-urlencoded' };

async function join(saleId: string, headers: Record<string, string> = sameOrigin) {
  return node.app.inject({ method: 'POST', url: `/s/${saleId}/join`, headers, payload: '' });
}

const cookieOf = (setCookie: unknown) => String(setCookie).split(';')[0] as string;

// A second node whose payments go through a gate the tests can close: the provider unreachable.
const g = await startHarness({ gate: true });
const gate = g.gate as NonNullable<typeof g.gate>;
const gnode = g.nodes[0] as typeof node;
const gjoin = (saleId: string) => gnode.app.inject({ method: 'POST', url: `/s/${saleId}/join`, headers: sameOrigin, payload: '' });

describe('merchant settings', () => {
  test('the hosted page is off by default and then 404; turned on, the sale names its URL', async () => {
    const sale = await h.createSale({ hosted_page: undefined, branding: undefined, success_url: undefined });
    assert.equal(sale.hosted_url, null);
    assert.equal((await node.app.inject({ url: `/s/${sale.id}` })).statusCode, 404);
    const patched = await node.app.inject({
      method: 'PATCH',
      url: `/v1/sales/${sale.id}`,
      headers: { ...secret, 'idempotency-key': key('patch') },
      payload: { hosted_page: true, branding: { name: 'Acme', color: '#AABBCC', logo_url: 'https://cdn.acme.test/logo.png' } },
    });
    assert.equal(patched.statusCode, 200, patched.body);
    const body = patched.json();
    assert.equal(body.hosted_url, `http://127.0.0.1:4000/s/${sale.id}`);
    assert.deepEqual(body.branding, { name: 'Acme', color: '#aabbcc', logo_url: 'https://cdn.acme.test/logo.png' });
    // The sale cache on this node may hold the page's sale for up to FLOODGATE_CACHE_STALE_MS.
    await new Promise((resolve) => setTimeout(resolve, 150));
    const page = await node.app.inject({ url: `/s/${sale.id}` });
    assert.equal(page.statusCode, 200);
    const csp = String(page.headers['content-security-policy']);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /img-src 'self' https:\/\/cdn\.acme\.test(;|$)/, 'the logo’s origin is the only other image source');
    assert.doesNotMatch(csp, /unsafe/);
    assert.match(page.body, /Sold by Acme/);
  });

  test('a bad colour or return URL is a 400 that says what to fix', async () => {
    const bad = await node.app.inject({
      method: 'POST',
      url: '/v1/sales',
      headers: { ...secret, 'idempotency-key': key('sale') },
      payload: {
        name: 'x',
        currency: 'usd',
        opens_at: new Date().toISOString(),
        items: [{ name: 'a', price: 1, stock: 1 }],
        branding: { color: 'red' },
      },
    });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().error.message, /color/);
  });
});

describe('session cookie and CSRF', () => {
  test('joining sets a signed, HttpOnly, SameSite=Lax cookie scoped to the sale; Secure behind TLS', async () => {
    const sale = await h.createSale();
    const plain = await join(sale.id);
    assert.equal(plain.statusCode, 303);
    const cookie = String(plain.headers['set-cookie']);
    assert.match(cookie, /^fg_hosted=[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}; /);
    assert.match(cookie, new RegExp(`Path=/s/${sale.id}`));
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Lax/);
    assert.doesNotMatch(cookie, /Secure/);
    const tls = await join(sale.id, { ...sameOrigin, 'x-forwarded-proto': 'https', 'x-forwarded-for': '10.0.0.9' });
    assert.match(String(tls.headers['set-cookie']), /; Secure/);
  });

  test('a cross-site or origin-less POST is refused; so is a form without the session’s token', async () => {
    const sale = await h.createSale();
    assert.equal((await join(sale.id, { 'content-type': 'application/x-www-form-urlencoded' })).statusCode, 403);
    assert.equal((await join(sale.id, { ...sameOrigin, 'sec-fetch-site': 'cross-site' })).statusCode, 403);
    assert.equal(
      (await join(sale.id, { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.test' })).statusCode,
      403,
    );
    const joined = await join(sale.id);
    const cookie = cookieOf(joined.headers['set-cookie']);
    const hold = (payload: string, extra: Record<string, string> = {}) =>
      node.app.inject({ method: 'POST', url: `/s/${sale.id}/hold`, headers: { ...sameOrigin, cookie, ...extra }, payload });
    const refused = await hold(`qty_${sale.items[0]?.id}=1&csrf=wrong`);
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.json().error.code, 'csrf_invalid');
    const page = await node.app.inject({ url: `/s/${sale.id}`, headers: { cookie } });
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)?.[1] as string;
    assert.equal((await hold(`qty_${sale.items[0]?.id}=1&csrf=${csrf}`)).statusCode, 303);
    const { rows } = await h.pool.query('select count(*)::int as n from holds where sale_id = $1', [sale.id]);
    assert.equal(rows[0].n, 1);
  });

  test('a cookie with a forged signature is no session', async () => {
    const sale = await h.createSale();
    const cookie = cookieOf((await join(sale.id)).headers['set-cookie']).replace(/\.[^.]+$/, '.AAAA');
    const page = await node.app.inject({ url: `/s/${sale.id}`, headers: { cookie } });
    assert.match(page.body, /Join the line/);
    assert.equal(page.headers['cache-control'], 'public, max-age=1', 'the public page, not a session’s');
  });

  test('a stolen ticket id admits nobody: its token is bound to a buyer reference only the server knows', async () => {
    const sale = await h.createSale();
    await join(sale.id);
    const { rows } = await h.pool.query<{ ticket: string }>(
      `select data->>'ticketId' as ticket from hosted_sessions where data->>'saleId' = $1`,
      [sale.id],
    );
    const ticket = rows[0]?.ticket as string;
    const publishable = { authorization: `Bearer ${h.merchant.publishableKey}` };
    const polled = await node.app.inject({ url: `/v1/sales/${sale.id}/queue/${ticket}`, headers: publishable });
    const token = polled.json().admission_token;
    assert.ok(token, 'the ticket is admitted');
    const hold = await node.app.inject({
      method: 'POST',
      url: '/v1/holds',
      headers: { ...publishable, 'idempotency-key': key('hold') },
      payload: { sale: sale.id, buyer_reference: 'thief', admission_token: token, items: [{ item: sale.items[0]?.id, quantity: 1 }] },
    });
    assert.equal(hold.statusCode, 403);
    assert.equal(hold.json().error.code, 'admission_invalid');
  });

  test('pay accepts only a provider token; anything card-shaped is neither used nor echoed', async () => {
    const sale = await h.createSale();
    const cookie = cookieOf((await join(sale.id)).headers['set-cookie']);
    const csrf = /name="csrf" value="([^"]+)"/.exec((await node.app.inject({ url: `/s/${sale.id}`, headers: { cookie } })).body)?.[1];
    const paid = await node.app.inject({
      method: 'POST',
      url: `/s/${sale.id}/pay`,
      headers: { ...sameOrigin, cookie },
      payload: `csrf=${csrf}&payment_method=4242424242424242`,
    });
    assert.equal(paid.statusCode, 303);
    assert.equal(paid.headers.location, `/s/${sale.id}?n=card_invalid`);
    assert.equal(h.sim.simulator.charges.size, 0);
  });
});

describe('static assets and the provider', () => {
  test('assets have content-hashed names, a year of cache, and the first page’s script is far under 50 KB compressed', async () => {
    const sale = await h.createSale();
    const page = await node.app.inject({ url: `/s/${sale.id}` });
    const script = /<script src="([^"]+)"/.exec(page.body)?.[1] as string;
    assert.match(script, /^\/assets\/hosted\/hosted\.[0-9a-f]{12}\.js$/);
    const asset = await node.app.inject({ url: script, headers: { 'accept-encoding': 'br, gzip' } });
    assert.equal(asset.statusCode, 200);
    assert.equal(asset.headers['content-encoding'], 'br');
    assert.equal(asset.headers['cache-control'], 'public, max-age=31536000, immutable');
    assert.ok(asset.rawPayload.length < 50 * 1024, `${asset.rawPayload.length} bytes`);
    assert.ok(brotliCompressSync(page.rawPayload).length < 50 * 1024);
    assert.equal((await node.app.inject({ url: '/assets/hosted/hosted.000000000000.js' })).statusCode, 404);
  });

  test('the simulator tokenizes test cards for browsers, refuses mistyped numbers, and charges by token', async () => {
    const tokenize = (number: string) =>
      fetch(`${h.sim.url}/v1/tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', origin: node.url },
        body: JSON.stringify({ card: { number, exp_month: 12, exp_year: 2034, cvc: '123' } }),
      });
    const bad = await tokenize('4242424242424241');
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'card_number_invalid');
    const good = await tokenize('4242 4242 4242 4242');
    assert.equal(good.headers.get('access-control-allow-origin'), '*');
    const token = (await good.json()) as { id: string; card: { last4: string } };
    assert.match(token.id, /^pm_tok_[0-9a-f]{24}$/);
    assert.equal(token.card.last4, '4242');
    const intent = await node.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: { ...secret, 'idempotency-key': key('pi') },
      payload: { amount: 1000, currency: 'usd', payment_method: token.id, confirm: true },
    });
    assert.equal(intent.json().status, 'succeeded');
    const declined = (await (await tokenize('4000000000000002')).json()) as { id: string };
    const refused = await node.app.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: { ...secret, 'idempotency-key': key('pi') },
      payload: { amount: 1000, currency: 'usd', payment_method: declined.id, confirm: true },
    });
    assert.equal(refused.json().error.code, 'card_declined');
    const preflight = await fetch(`${h.sim.url}/v1/tokens`, { method: 'OPTIONS', headers: { origin: node.url } });
    assert.equal(preflight.status, 204);
  });
});

describe('states of the sale and the payment', () => {
  test('not open yet shows a countdown and lets buyers join early; a closed sale says so', async () => {
    const later = await h.createSale({ opens_at: new Date(Date.now() + 3_600_000).toISOString() });
    const early = await node.app.inject({ url: `/s/${later.id}` });
    assert.match(early.body, /The sale has not opened yet/);
    assert.match(early.body, /data-countdown="[^"]+" data-label="Opens in \{countdown\}"/);
    assert.match(early.body, /Join the line/);
    const past = await h.createSale({
      opens_at: new Date(Date.now() - 7_200_000).toISOString(),
      closes_at: new Date(Date.now() - 3_600_000).toISOString(),
    });
    const closed = await node.app.inject({ url: `/s/${past.id}` });
    assert.match(closed.body, /The sale has closed/);
    assert.doesNotMatch(closed.body, /Join the line/);
  });

  test('provider unavailable: nothing is charged, the hold stays, and the next try pays once', async () => {
    const sale = await g.createSale();
    const cookie = cookieOf((await gjoin(sale.id)).headers['set-cookie']);
    const pageOf = async () => (await gnode.app.inject({ url: `/s/${sale.id}`, headers: { cookie } })).body;
    const csrf = /name="csrf" value="([^"]+)"/.exec(await pageOf())?.[1] as string;
    const post = (url: string, payload: string) =>
      gnode.app.inject({ method: 'POST', url, headers: { ...sameOrigin, cookie }, payload: `csrf=${csrf}&${payload}` });
    assert.equal((await post(`/s/${sale.id}/hold`, `qty_${sale.items[0]?.id}=1`)).statusCode, 303);
    const token = async () =>
      (
        (await (
          await fetch(`${g.sim.url}/v1/tokens`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ card: { number: '4242424242424242', exp_month: 12, exp_year: 2034, cvc: '123' } }),
          })
        ).json()) as { id: string }
      ).id;
    const first = await token();
    const charges = g.sim.simulator.charges.size;
    await gate.close();
    const down = await post(`/s/${sale.id}/pay`, `payment_method=${first}`);
    await gate.reopen();
    assert.equal(down.headers.location, `/s/${sale.id}?n=provider_unavailable`);
    assert.equal(g.sim.simulator.charges.size, charges, 'nothing charged');
    const notice = await gnode.app.inject({ url: `/s/${sale.id}?n=provider_unavailable`, headers: { cookie } });
    assert.match(notice.body, /payment provider is unavailable right now\. Nothing was charged/);
    assert.match(notice.body, /Your items are held/);
    const paid = await post(`/s/${sale.id}/pay`, `payment_method=${await token()}`);
    assert.equal(paid.headers.location, `/s/${sale.id}`);
    assert.match(await pageOf(), /Thank you: you have paid/);
    assert.equal(g.sim.simulator.charges.size, charges + 1);
  });
});
