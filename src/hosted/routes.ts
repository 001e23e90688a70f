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
import { ApiError } from '../platform/http/errors.js';
import type { HttpServer } from '../platform/http/server.js';
import { parseCookies, serializeCookie, signCookieValue, verifyCookieValue } from '../platform/http/signed-cookie.js';
import { serveStaticAssets } from '../platform/http/static-assets.js';
import { type HostedRouteDeps, lineTexts, progressOf, sendNotFound, sendPublicPage, sendSessionPage } from './pages.js';
import * as hosted from './service.js';
import { SESSION_ID_PATTERN, type StoredSession } from './sessions.js';
import { en, format, type Strings } from './strings/en.js';
import { stringsFor } from './strings/index.js';

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

export type { HostedRouteDeps } from './pages.js';

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
    // The sale page and the line are the crowd's; holding and paying are an admitted buyer's.
    const LINE = { shedding: 'line' } as const;

    scope.get<SaleParams>('/s/:sale', { schema, config: LINE }, async (request, reply) => {
      const t = stringsFor(request.headers['accept-language']);
      const sale = await findSale(deps, request.params.sale);
      if (!sale) return sendNotFound(reply, t);
      const stored = await loadSession(deps, request, sale.sale.id);
      const notice = noticeText(t, request.query as Record<string, string>, sale.sale.per_buyer_limit);
      if (!stored) return sendPublicPage(reply, deps, t, sale, notice);
      return sendSessionPage(reply, deps, t, sale, stored, notice);
    });

    scope.get<SaleParams>('/s/:sale/line', { schema, config: LINE }, async (request, reply) => {
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
        retry_after_ms: view.retryAfterMs ?? null,
        progress: progressOf(line.joinedPosition, view.position),
        text: lineTexts(t, view.position, view.estimatedWaitSeconds),
      };
    });

    scope.post<SaleParams>('/s/:sale/join', { schema, config: LINE }, async (request, reply) => {
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
