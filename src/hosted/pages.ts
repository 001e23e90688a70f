/**
 * The hosted page's pages: which one a buyer's session is at, rendered and sent with its
 * Content-Security-Policy and caching headers. The routes (routes.ts) decide what to do; this
 * file decides what to show.
 */
import type { FastifyReply } from 'fastify';
import { retrievePaymentIntent } from '../payments/service.js';
import type { StaticAsset } from '../platform/http/static-assets.js';
import * as sales from '../sales/service.js';
import * as hosted from './service.js';
import type { StoredSession } from './sessions.js';
import { format, type Strings } from './strings/en.js';
import * as views from './views.js';

export interface HostedRouteDeps extends hosted.HostedDeps {
  readSale: (saleId: string) => Promise<hosted.HostedSale | null>;
  cookieSecret: string;
  /** Where buyers' browsers tokenize cards: the provider's public base URL. */
  providerPublicUrl: string;
  assets: { css: StaticAsset; js: StaticAsset; icon: StaticAsset };
}

export function progressOf(joined: number | undefined, position: number | null): number {
  if (position === 0) return 100;
  if (!joined || position === null) return 0;
  return Math.max(0, Math.min(100, Math.round(((joined - position) / joined) * 100)));
}

export function lineTexts(t: Strings, position: number | null, waitSeconds: number | null) {
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

export function sendNotFound(reply: FastifyReply, t: Strings) {
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
export function sendPublicPage(reply: FastifyReply, deps: HostedRouteDeps, t: Strings, sale: hosted.HostedSale, notice?: string) {
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

export async function sendSessionPage(
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
