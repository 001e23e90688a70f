/**
 * The hosted sale page's HTTP edge, /s/:sale: server-rendered pages for each state of the
 * buyer's flow, form posts that redirect back (so a reload never repeats a step), and one JSON
 * endpoint the page's script polls while the buyer waits in line.
 *
 * The browser holds a signed, HttpOnly, SameSite=Lax cookie naming its session (Secure when
 * the request came over TLS), scoped to the sale's path. Every POST must come from our own
 * origin (Origin / Sec-Fetch-Site) and, once there is a session, carry its CSRF token.
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { retrievePaymentIntent } from '../payments/service.js';
import { ApiError } from '../platform/http/errors.js';
import type { HttpServer } from '../platform/http/server.js';
import { parseCookies, serializeCookie, signCookieValue, verifyCookieValue } from '../platform/http/signed-cookie.js';
import { type StaticAsset, serveStaticAssets } from '../platform/http/static-assets.js';
import * as sales from '../sales/service.js';
import * as hosted from './service.js';
import { SESSION_ID_PATTERN, type StoredSession } from './sessions.js';
import { en, format, type Strings } from './strings/en.js';
import { stringsFor } from './strings/index.js';
import * as views from './views.js';

export interface HostedRouteDeps extends hosted.HostedDeps {
  readSale: (saleId: string) => Promise<hosted.HostedSale | null>;
  cookieSecret: string;
  /** Where buyers' browsers tokenize cards: the provider's public base URL. */
  providerPublicUrl: string;
  assets: { css: StaticAsset; js: StaticAsset; icon: StaticAsset };
}

const COOKIE_NAME = 'fg_hosted';
const SALE_ID = '^sale_[0-9A-Za-z]{1,60}$';
// Form bodies are a handful of fields; 8 KiB refuses anything else early.
const FORM_BODY_LIMIT_BYTES = 8_192;
const TOKEN_PATTERN = /^pm_tok_[0-9a-f]{24}$/;
// Notices a redirect may name in ?n=; anything else is ignored, so no one can put words on the page.
const NOTICES = [
  'declined',
  'provider_unavailable',
  'card_invalid',
  'buyer_limit',
  'choose',
  'items_gone',
  'turn_expired',
  'lost',
] as const;
type Notice = (typeof NOTICES)[number];
const DECLINE_REASONS = new Set(['card_declined', 'insufficient_funds', 'expired_card', 'incorrect_cvc']);

type SaleParams = { Params: { sale: string } };

export function registerHostedRoutes(app: HttpServer, deps: HostedRouteDeps): void {
  serveStaticAssets(app, new Map(Object.entries(deps.assets)));
  // Forms post urlencoded bodies, parsed only inside this scope; the API stays JSON-only.
  app.register(async (scope) => {
    scope.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'string', bodyLimit: FORM_BODY_LIMIT_BYTES },
      (_request, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))),
    );
    const params = { type: 'object', properties: { sale: { type: 'string', pattern: SALE_ID } }, required: ['sale'] } as const;
    const schema = { hide: true, params };

    scope.get<SaleParams>('/s/:sale', { schema }, async (request, reply) => {
      const t = stringsFor(request.headers['accept-language']);
      const sale = await findSale(deps, request.params.sale);
      if (!sale) return sendNotFound(reply, t);
      const stored = await loadSession(deps, request, sale.sale.id);
      const notice = noticeText(t, request.query as Record<string, string>, sale.sale.per_buyer_limit);
      if (!stored) return sendPublicPage(reply, deps, t, sale, notice);
      return sendSessionPage(reply, deps, t, sale, stored, notice);
    });

    scope.get<SaleParams>('/s/:sale/line', { schema }, async (request, reply) => {
      const t = stringsFor(request.headers['accept-language']);
      const sale = await findSale(deps, request.params.sale);
      if (!sale) throw new ApiError('resource_missing', `No such sale: '${request.params.sale}'`, 'sale');
      const stored = await loadSession(deps, request, sale.sale.id);
      reply.header('cache-control', 'no-store');
      if (!stored) return { status: 'none' };
      const line = await hosted.pollLine(deps, sale, stored);
      if (line.kind !== 'view') return { status: line.kind };
      const { view } = line;
      if (view.retryAfterSeconds !== undefined) reply.header('retry-after', String(view.retryAfterSeconds));
      return {
        status: view.status,
        position: view.position,
        estimated_wait_seconds: view.estimatedWaitSeconds,
        retry_after: view.retryAfterSeconds ?? null,
        progress: progressOf(line.joinedPosition, view.position),
        text: lineTexts(t, view.position, view.estimatedWaitSeconds),
      };
    });

    scope.post<SaleParams>('/s/:sale/join', { schema }, async (request, reply) => {
      const t = stringsFor(request.headers['accept-language']);
      const sale = await findSale(deps, request.params.sale);
      if (!sale) return sendNotFound(reply, t);
      let stored = await loadSession(deps, request, sale.sale.id);
      checkCsrf(request, stored);
      if (!stored) {
        stored = await hosted.startSession(deps, sale.sale.id);
        setSessionCookie(request, reply, deps, sale.sale.id, stored.session.id);
      }
      await hosted.joinLine(deps, sale, stored);
      return redirect(reply, sale.sale.id);
    });

    scope.post<SaleParams>('/s/:sale/hold', { schema }, async (request, reply) => {
      const t = stringsFor(request.headers['accept-language']);
      const sale = await findSale(deps, request.params.sale);
      if (!sale) return sendNotFound(reply, t);
      const stored = await requireSession(deps, request, sale.sale.id);
      const lines = quantitiesOf(request.body as Record<string, string>, sale);
      if (lines === 'none') return redirect(reply, sale.sale.id, 'choose');
      const total = lines.reduce((sum, line) => sum + line.quantity, 0);
      if (total > sale.sale.per_buyer_limit) return redirect(reply, sale.sale.id, 'buyer_limit');
      const result = await hosted.placeHold(deps, sale, stored, lines);
      if (result.kind === 'held') return redirect(reply, sale.sale.id);
      const notice: Notice =
        result.code === 'buyer_limit_exceeded' ? 'buyer_limit' : result.code === 'admission_invalid' ? 'turn_expired' : 'items_gone';
      return redirect(reply, sale.sale.id, notice);
    });

    scope.post<SaleParams>('/s/:sale/pay', { schema }, async (request, reply) => {
      const t = stringsFor(request.headers['accept-language']);
      const sale = await findSale(deps, request.params.sale);
      if (!sale) return sendNotFound(reply, t);
      const stored = await requireSession(deps, request, sale.sale.id);
      const token = (request.body as Record<string, string> | undefined)?.payment_method ?? '';
      // Only a provider token is accepted; whatever else was sent is neither used nor echoed.
      if (!TOKEN_PATTERN.test(token)) return redirect(reply, sale.sale.id, 'card_invalid');
      const result = await hosted.pay(deps, sale, stored, token);
      if (result.kind === 'declined') {
        const reason = DECLINE_REASONS.has(result.reason) ? result.reason : 'card_declined';
        return reply.redirect(`/s/${sale.sale.id}?n=declined&r=${reason}`, 303);
      }
      if (result.kind === 'unavailable') return redirect(reply, sale.sale.id, 'provider_unavailable');
      return redirect(reply, sale.sale.id);
    });

    scope.post<SaleParams>('/s/:sale/leave', { schema }, async (request, reply) => {
      const t = stringsFor(request.headers['accept-language']);
      const sale = await findSale(deps, request.params.sale);
      if (!sale) return sendNotFound(reply, t);
      const stored = await requireSession(deps, request, sale.sale.id);
      await hosted.leave(deps, sale, stored);
      reply.header('set-cookie', serializeCookie(COOKIE_NAME, 'gone', { path: cookiePath(sale.sale.id), maxAgeSeconds: 0 }));
      return reply.redirect(sale.sale.cancel_url ?? `/s/${sale.sale.id}`, 303);
    });
  });
}

async function findSale(deps: HostedRouteDeps, saleId: string) {
  return deps.readSale(saleId);
}

const cookiePath = (saleId: string) => `/s/${saleId}`;

async function loadSession(deps: HostedRouteDeps, request: FastifyRequest, saleId: string): Promise<StoredSession | undefined> {
  const id = verifyCookieValue(deps.cookieSecret, COOKIE_NAME, parseCookies(request.headers.cookie).get(COOKIE_NAME));
  if (!id || !SESSION_ID_PATTERN.test(id)) return undefined;
  const stored = await deps.sessions.get(id);
  return stored && stored.session.saleId === saleId ? stored : undefined;
}

async function requireSession(deps: HostedRouteDeps, request: FastifyRequest, saleId: string): Promise<StoredSession> {
  const stored = await loadSession(deps, request, saleId);
  if (!stored) throw new ApiError('csrf_invalid', en.sessionExpired);
  checkCsrf(request, stored);
  return stored;
}

function setSessionCookie(request: FastifyRequest, reply: FastifyReply, deps: HostedRouteDeps, saleId: string, id: string): void {
  const cookie = serializeCookie(COOKIE_NAME, signCookieValue(deps.cookieSecret, COOKIE_NAME, id), {
    path: cookiePath(saleId),
    maxAgeSeconds: deps.sessionTtlMs / 1000,
    httpOnly: true,
    // Over TLS (directly, or at a proxy we trust to say so) the cookie never travels in clear.
    secure: request.protocol === 'https',
    sameSite: 'Lax',
  });
  reply.header('set-cookie', cookie);
}

/**
 * A state-changing request must come from a page of ours: the browser's Origin (or
 * Sec-Fetch-Site) says so, and once the buyer has a session the form carries its token.
 */
function checkCsrf(request: FastifyRequest, stored: StoredSession | undefined): void {
  const refuse = () => {
    throw new ApiError('csrf_invalid', en.sessionExpired);
  };
  // Browsers say where a request comes from: Sec-Fetch-Site where they send it, else Origin.
  const site = request.headers['sec-fetch-site'];
  const origin = request.headers.origin;
  if (site !== undefined) {
    if (site !== 'same-origin') refuse();
  } else if (origin !== undefined && origin !== 'null') {
    if (origin !== `${request.protocol}://${request.host}`) refuse();
  } else if (!stored) {
    // No word on the origin and no session token to check: not a request a browser of ours made.
    refuse();
  }
  if (!stored) return;
  const body = request.body as Record<string, string> | undefined;
  const given = Buffer.from(String(body?.csrf ?? request.headers['x-csrf-token'] ?? ''));
  const wanted = Buffer.from(stored.session.csrfToken);
  if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) refuse();
}

function redirect(reply: FastifyReply, saleId: string, notice?: Notice) {
  return reply.redirect(notice ? `/s/${saleId}?n=${notice}` : `/s/${saleId}`, 303);
}

function noticeText(t: Strings, query: Record<string, string>, perBuyerLimit: number): string | undefined {
  const notice = NOTICES.find((name) => name === query.n);
  switch (notice) {
    case undefined:
      return undefined;
    case 'declined':
      return format(t.declined, { reason: (DECLINE_REASONS.has(query.r ?? '') ? query.r : 'card_declined')?.replace(/_/g, ' ') ?? '' });
    case 'provider_unavailable':
      return t.providerUnavailable;
    case 'card_invalid':
      return format(t.cardInvalid, { reason: t.cardNumber });
    case 'buyer_limit':
      return format(t.buyerLimit, { count: perBuyerLimit });
    case 'choose':
      return t.chooseSomething;
    case 'items_gone':
      return format(t.itemsGone, { reason: t.soldOutItem });
    case 'turn_expired':
      return t.turnExpired;
    case 'lost':
      return t.lineLost;
  }
}

function quantitiesOf(body: Record<string, string> | undefined, sale: hosted.HostedSale): { item: string; quantity: number }[] | 'none' {
  const lines: { item: string; quantity: number }[] = [];
  for (const item of sale.sale.items) {
    const raw = body?.[`qty_${item.id}`];
    const quantity = raw === undefined || raw === '' ? 0 : Number(raw);
    if (Number.isInteger(quantity) && quantity > 0 && quantity <= 100) lines.push({ item: item.id, quantity });
  }
  return lines.length > 0 ? lines : 'none';
}

function progressOf(joined: number | undefined, position: number | null): number {
  if (position === 0) return 100;
  if (!joined || position === null) return 0;
  return Math.max(0, Math.min(100, Math.round(((joined - position) / joined) * 100)));
}

function lineTexts(t: Strings, position: number | null, waitSeconds: number | null) {
  return {
    position: position === null ? t.positionBeforeOpen : format(t.position, { position }),
    wait: waitSeconds === null ? t.waitUnknown : format(t.estimatedWait, { wait: views.duration(t, waitSeconds) }),
  };
}

// ---- Sending pages ----

function csp(page: views.Page, providerPublicUrl: string): string {
  const provider = new URL(providerPublicUrl).origin;
  const images = page.imageOrigin ? `'self' ${page.imageOrigin}` : `'self'`;
  return [
    "default-src 'none'",
    "script-src 'self'",
    `style-src 'self' ${page.styleHash}`,
    `img-src ${images}`,
    // The only other origin the page talks to: the provider, which tokenizes the card.
    `connect-src 'self' ${provider}`,
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join('; ');
}

function send(reply: FastifyReply, deps: HostedRouteDeps, page: views.Page, cacheControl: string, status = 200) {
  return reply
    .code(status)
    .header('content-type', 'text/html; charset=utf-8')
    .header('content-security-policy', csp(page, deps.providerPublicUrl))
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'same-origin')
    .header('cache-control', cacheControl)
    .send(page.html);
}

function sendNotFound(reply: FastifyReply, t: Strings) {
  const body = `<!doctype html><html lang="${t.lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${views.esc(t.notFoundTitle)}</title></head><body><main><h1>${views.esc(t.notFoundTitle)}</h1><p>${views.esc(t.notFoundBody)}</p></main></body></html>`;
  return reply
    .code(404)
    .header('content-type', 'text/html; charset=utf-8')
    .header('content-security-policy', "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    .header('cache-control', 'no-store')
    .send(body);
}

function layoutFor(
  deps: HostedRouteDeps,
  t: Strings,
  sale: hosted.HostedSale,
  title: string,
  body: string,
  data: Record<string, string> = {},
) {
  return views.layout({ t, sale: sale.sale, assets: deps.assets, title, body, data: { sale: sale.sale.id, ...data } });
}

/** The sale page before a buyer joins: the same for everyone, so caches may keep it briefly. */
function sendPublicPage(reply: FastifyReply, deps: HostedRouteDeps, t: Strings, sale: hosted.HostedSale, notice?: string) {
  const body = `${views.notice(notice)}${saleStatus(t, sale, undefined)}`;
  const page = layoutFor(deps, t, sale, sale.sale.name, body, { opens: sale.sale.opens_at });
  const maxAge = Math.max(1, Math.floor(deps.staleMs / 1000));
  reply.header('vary', 'cookie, accept-language');
  return send(reply, deps, page, notice ? 'no-store' : `public, max-age=${maxAge}`);
}

function saleStatus(t: Strings, sale: hosted.HostedSale, csrf: string | undefined): string {
  const action = `/s/${sale.sale.id}/join`;
  const soldOut = sale.sale.items.every((item) => item.stock.available === 0);
  const table = views.itemsTable(t, sale.sale);
  if (sale.sale.status === 'closed') return `<h2>${views.esc(t.closedTitle)}</h2><p>${views.esc(t.closedBody)}</p>${table}`;
  if (soldOut) return `<h2>${views.esc(t.soldOutTitle)}</h2><p>${views.esc(t.soldOutBody)}</p>${table}`;
  const limit = `<p>${views.esc(format(t.perBuyerLimit, { count: sale.sale.per_buyer_limit }))}</p>`;
  if (sale.sale.status === 'scheduled') {
    const countdown = `<p class="countdown" data-countdown="${views.esc(sale.sale.opens_at)}" data-label="${views.esc(t.opensCountdown)}" aria-live="off"></p>`;
    return `<h2>${views.esc(t.notOpenTitle)}</h2><p>${format(views.esc(t.opensIn), { time: views.timeElement(sale.sale.opens_at) })}</p>${countdown}
<p>${views.esc(t.joinEarly)}</p>${table}${limit}${views.postButton(action, t.joinLine, csrf)}`;
  }
  return `<p>${views.esc(t.openNow)}</p>${table}${limit}${views.postButton(action, t.joinLine, csrf)}`;
}

async function sendSessionPage(
  reply: FastifyReply,
  deps: HostedRouteDeps,
  t: Strings,
  sale: hosted.HostedSale,
  stored: StoredSession,
  notice: string | undefined,
) {
  const session = stored.session;
  const page = (title: string, body: string, data?: Record<string, string>) =>
    send(reply, deps, layoutFor(deps, t, sale, title, `${views.notice(notice)}${body}`, data), 'no-store');
  const rejoin = views.postButton(`/s/${sale.sale.id}/join`, t.joinAgain, session.csrfToken);

  if (session.orderId) {
    const order = await sales.retrieveOrder(deps.sales.pool, sale.merchantId, session.orderId);
    if (order?.status === 'paid') return page(t.receiptTitle, receipt(t, sale, order));
    if (order && order.status === 'awaiting_payment') {
      const intent = await paymentsStatus(deps, sale.merchantId, order.payment_intent);
      if (intent === 'processing' || intent === 'succeeded') {
        return page(t.processingTitle, `<h2>${views.esc(t.processingTitle)}</h2><p>${views.esc(t.processingBody)}</p>`, { refresh: '3' });
      }
    }
  }
  if (session.holdId) {
    const hold = await sales.retrieveHold(deps.sales.pool, sale.merchantId, session.holdId);
    if (hold && hold.status === 'active' && new Date(hold.expires_at).getTime() > Date.now()) {
      return page(t.holdTitle, holdPage(t, sale, hold, session.csrfToken), {
        expires: hold.expires_at,
        provider: deps.providerPublicUrl,
      });
    }
    return page(t.holdExpiredTitle, `<h2>${views.esc(t.holdExpiredTitle)}</h2><p>${views.esc(t.holdExpiredBody)}</p>${rejoin}`);
  }
  if (session.admissionToken) return page(t.admittedTitle, admittedPage(t, sale, session.csrfToken));
  if (!session.ticketId) return page(sale.sale.name, saleStatus(t, sale, session.csrfToken));

  const line = await hosted.pollLine(deps, sale, stored);
  if (line.kind === 'lost' || line.kind === 'none') {
    return page(sale.sale.name, `${views.notice(t.lineLost, 'info')}${saleStatus(t, sale, session.csrfToken)}`);
  }
  const { view } = line;
  if (view.status === 'admitted' && line.session.admissionToken) return page(t.admittedTitle, admittedPage(t, sale, session.csrfToken));
  if (view.status === 'sold_out') {
    return page(t.soldOutTitle, `<h2>${views.esc(t.soldOutTitle)}</h2><p>${views.esc(t.soldOutBody)}</p>`, {
      poll: `/s/${sale.sale.id}/line`,
      retry: String(view.retryAfterSeconds ?? 5),
      status: view.status,
    });
  }
  if (view.status === 'closed') return page(t.closedTitle, `<h2>${views.esc(t.closedTitle)}</h2><p>${views.esc(t.closedBody)}</p>`);
  const texts = lineTexts(t, view.position, view.estimatedWaitSeconds);
  const progress = progressOf(line.joinedPosition, view.position);
  const body = `<h2>${views.esc(t.waitingTitle)}</h2>
<div role="status" aria-live="polite" aria-atomic="true"><p id="line-position">${views.esc(texts.position)}</p><p id="line-wait">${views.esc(texts.wait)}</p></div>
<label for="line-progress">${views.esc(t.progress)}</label>
<progress id="line-progress" max="100" value="${progress}">${progress}%</progress>
<p>${views.esc(t.keepTabOpen)}</p>
<noscript><a href="/s/${views.esc(sale.sale.id)}">${views.esc(t.checkAgain)}</a></noscript>
${views.postButton(`/s/${sale.sale.id}/leave`, t.leaveLine, session.csrfToken, 'secondary')}`;
  return page(t.waitingTitle, body, {
    poll: `/s/${sale.sale.id}/line`,
    retry: String(view.retryAfterSeconds ?? 2),
    status: view.status,
  });
}

async function paymentsStatus(deps: HostedRouteDeps, merchantId: string, intentId: string): Promise<string | undefined> {
  const intent = (await retrievePaymentIntent(deps.payments.pool, merchantId, intentId)) as { status?: string } | undefined;
  return intent?.status;
}

function admittedPage(t: Strings, sale: hosted.HostedSale, csrf: string): string {
  return `<h2>${views.esc(t.admittedTitle)}</h2><p>${views.esc(t.chooseQuantities)}</p><p>${views.esc(t.admittedExpires)}</p>
${views.quantityForm(t, sale.sale, `/s/${sale.sale.id}/hold`, csrf)}
${views.postButton(`/s/${sale.sale.id}/leave`, t.leaveLine, csrf, 'secondary')}`;
}

type ApiHold = NonNullable<Awaited<ReturnType<typeof sales.retrieveHold>>>;

function holdPage(t: Strings, sale: hosted.HostedSale, hold: ApiHold, csrf: string): string {
  const names = new Map(sale.sale.items.map((item) => [item.id, item]));
  const rows = hold.items
    .map((line) => `<li>${views.esc(line.quantity)} × ${views.esc(names.get(line.item)?.name ?? line.item)}</li>`)
    .join('');
  const amount = views.money(hold.amount, hold.currency);
  return `<h2>${views.esc(t.holdTitle)}</h2>
<ul class="lines">${rows}</ul>
<p class="total">${views.esc(t.total)}: <strong>${views.esc(amount)}</strong></p>
<p>${format(views.esc(t.holdExpiresAt), { time: views.timeElement(hold.expires_at) })}</p>
<p class="countdown" data-countdown="${views.esc(hold.expires_at)}" data-label="${views.esc(t.holdCountdown)}" aria-live="off"></p>
<h2>${views.esc(t.payTitle)}</h2>
${views.cardForm(t, `/s/${sale.sale.id}/pay`, csrf, amount)}
${views.postButton(`/s/${sale.sale.id}/leave`, t.cancelHold, csrf, 'secondary')}`;
}

function receipt(t: Strings, sale: hosted.HostedSale, order: { id: string; amount: number; currency: string }): string {
  const seller = sale.sale.branding.name ?? sale.sale.name;
  const onward = sale.sale.success_url
    ? `<p><a class="primary" href="${views.esc(withOrder(sale.sale.success_url, order.id))}">${views.esc(format(t.continueToMerchant, { name: seller }))}</a></p>`
    : '';
  return `<h2>${views.esc(t.receiptTitle)}</h2>
<dl class="receipt"><dt>${views.esc(t.orderId)}</dt><dd id="order-id">${views.esc(order.id)}</dd>
<dt>${views.esc(t.paidAmount)}</dt><dd>${views.esc(views.money(order.amount, order.currency))}</dd></dl>${onward}`;
}

function withOrder(url: string, orderId: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('order', orderId);
  return parsed.toString();
}
