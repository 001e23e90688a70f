/**
 * The operator dashboard at /dashboard, served by every API node: sign-in, live operations, a
 * sale's live view, payments (search, detail, refund with confirmation), webhook deliveries
 * (redeliver) and the balance. Forms post application/x-www-form-urlencoded; every POST after
 * sign-in carries the session's CSRF token, and every POST must come from this origin.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import * as events from '../events/service.js';
import * as ledger from '../ledger/service.js';
import * as payments from '../payments/service.js';
import type { Pool } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import type { Reply } from '../platform/http/reply.js';
import type { HttpServer } from '../platform/http/server.js';
import { fingerprint, isValidKey } from '../platform/idempotency/keys.js';
import type { Metrics } from '../platform/observability/metrics.js';
import type { RedisConnections } from '../platform/redis/client.js';
import * as sales from '../sales/service.js';
import * as webhooks from '../webhooks/service.js';
import { html } from './html.js';
import { createLiveSeries, saleLine } from './live.js';
import * as pages from './pages.js';
import { authenticateUser, findUser } from './service.js';
import { createSessionStore, type Session } from './sessions.js';

/** The refund use cases, passed in by the app (they live in payments/refunds.ts). */
export interface RefundUseCases {
  create(ctx: RequestContext, params: { payment_intent: string; amount: number; reason: string }): Promise<Reply>;
  list(
    merchantId: string,
    paymentIntentId: string,
    limit: number,
  ): Promise<{ data: Array<{ id: string; amount: number; status: string; created: number }> }>;
}

export interface DashboardDeps {
  pool: Pool;
  refunds: RefundUseCases;
  webhooks: Parameters<typeof webhooks.redeliverEvent>[0];
  metrics: Metrics;
  redis?: RedisConnections;
  /** How long a session lasts from sign-in. */
  sessionTtlSeconds: number;
}

export const SESSION_COOKIE = 'fg_session';
const ROOT = path.resolve(import.meta.dirname, '../..');
const require = createRequire(import.meta.url);
const ASSETS: Record<string, { file: string; type: string }> = {
  'dashboard.js': { file: path.join(ROOT, 'web/dashboard/dashboard.js'), type: 'text/javascript; charset=utf-8' },
  'dashboard.css': { file: path.join(ROOT, 'web/dashboard/dashboard.css'), type: 'text/css; charset=utf-8' },
  'uPlot.iife.min.js': { file: require.resolve('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.min.css': { file: require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
};
// Pages list this many rows: enough to scan, small enough to render at once.
const ROWS_PER_PAGE = 50;
const FORM_FIELD_CHARS_MAX = 1_000;

type Form = Record<string, string>;

declare module 'fastify' {
  interface FastifyRequest {
    dashboardSession?: Session & { email: string; token: string };
  }
}

function cookies(request: FastifyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const index = part.indexOf('=');
    if (index > 0) out[part.slice(0, index).trim()] = part.slice(index + 1).trim();
  }
  return out;
}

function sessionCookie(request: FastifyRequest, value: string, maxAgeSeconds: number): string {
  // HttpOnly: scripts cannot read it. SameSite=Strict: other sites cannot send it. Secure over HTTPS.
  const secure = request.protocol === 'https' ? '; Secure' : '';
  return `${SESSION_COOKIE}=${value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secure}`;
}

/** A POST must come from a page of this origin (browsers send Origin on every form post). */
function sameOrigin(request: FastifyRequest): boolean {
  const origin = request.headers.origin ?? request.headers.referer;
  if (!origin) return false;
  try {
    return new URL(origin).host === request.headers.host;
  } catch {
    return false;
  }
}

/**
 * What the services need to know of a dashboard action: the operator acts with the merchant's
 * full (secret-key) authority, under an idempotency key of the dashboard's making.
 */
function actionContext(merchantId: string, idempotencyKey: string, actionPath: string, params: unknown): RequestContext {
  return {
    merchantId,
    keyKind: 'secret',
    idempotencyKey,
    method: 'POST',
    path: actionPath,
    fingerprint: fingerprint('POST', actionPath, params),
  };
}

const send = (reply: FastifyReply, body: string, status = 200) =>
  reply
    .code(status)
    .header('content-type', 'text/html; charset=utf-8')
    .header('cache-control', 'no-store')
    .header('x-frame-options', 'DENY')
    .header('content-security-policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
    .send(body);

export async function registerDashboard(app: HttpServer, deps: DashboardDeps): Promise<void> {
  const store = createSessionStore({ pool: deps.pool, redis: deps.redis });
  const live = createLiveSeries(deps.metrics);
  const assets = new Map<string, string>();
  for (const [name, asset] of Object.entries(ASSETS)) assets.set(name, await readFile(asset.file, 'utf8'));

  await app.register(
    async (scope) => {
      scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => {
        const form: Form = {};
        for (const [key, value] of new URLSearchParams(body as string)) form[key] = value.slice(0, FORM_FIELD_CHARS_MAX);
        done(null, form);
      });

      // Who is signed in; pages redirect to the sign-in form without a live session.
      scope.addHook('onRequest', async (request) => {
        const token = cookies(request)[SESSION_COOKIE];
        if (!token) return;
        const session = await store.find(token);
        if (!session) return;
        const user = await findUser(deps.pool, session.merchantId, session.userId);
        if (user) request.dashboardSession = { ...session, email: user.email, token };
      });
      scope.addHook('preHandler', async (request, reply) => {
        const open = request.url.startsWith('/dashboard/login') || request.url.startsWith('/dashboard/assets/');
        if (request.method === 'POST' && !sameOrigin(request)) {
          return send(reply, pages.loginPage('That form came from another site; sign in here.'), 403);
        }
        if (open) return;
        const session = request.dashboardSession;
        if (!session) {
          if (request.url.startsWith('/dashboard/api/'))
            return reply.code(401).send({ error: { code: 'session_required', message: 'Sign in at /dashboard/login.' } });
          return reply.redirect('/dashboard/login', 303);
        }
        if (request.method === 'POST' && (request.body as Form | undefined)?.csrf !== session.csrfToken) {
          return send(
            reply,
            pages.layout(context(request, 'Refused'), html`<p>The form had expired. Go back, reload and try again.</p>`),
            403,
          );
        }
      });

      const context = (request: FastifyRequest, title: string, extra: Partial<pages.PageContext> = {}): pages.PageContext => ({
        title,
        email: request.dashboardSession?.email,
        csrfToken: request.dashboardSession?.csrfToken,
        ...extra,
      });
      const merchant = (request: FastifyRequest) => (request.dashboardSession as Session).merchantId;
      const query = (request: FastifyRequest) => request.query as Record<string, string | undefined>;

      scope.get('/assets/:name', async (request, reply) => {
        const name = (request.params as { name: string }).name;
        const asset = ASSETS[name];
        const text = assets.get(name);
        if (!asset || text === undefined) return reply.code(404).send('no such asset');
        return reply.header('content-type', asset.type).header('cache-control', 'public, max-age=300').send(text);
      });

      scope.get('/login', async (request, reply) => {
        if (request.dashboardSession) return reply.redirect('/dashboard', 303);
        return send(reply, pages.loginPage(query(request).expired ? 'Your session has ended; sign in again.' : undefined));
      });
      scope.post('/login', async (request, reply) => {
        const form = (request.body ?? {}) as Form;
        const user = await authenticateUser(deps.pool, form.email ?? '', form.password ?? '');
        if (!user) return send(reply, pages.loginPage('Wrong email or password.', form.email ?? ''), 401);
        const { token } = await store.create({ merchantId: user.merchant_id, userId: user.id }, deps.sessionTtlSeconds);
        request.log.info({ merchant_id: user.merchant_id, user_id: user.id }, 'dashboard sign-in');
        return reply.header('set-cookie', sessionCookie(request, token, deps.sessionTtlSeconds)).redirect('/dashboard', 303);
      });
      scope.post('/logout', async (request, reply) => {
        await store.destroy((request.dashboardSession as { token: string }).token);
        return reply.header('set-cookie', sessionCookie(request, '', 0)).redirect('/dashboard/login', 303);
      });

      scope.get('/', async (request, reply) => send(reply, pages.livePage(context(request, 'Live'))));
      scope.get('/api/live', async () => ({ points: await live.read() }));

      scope.get('/sales', async (request, reply) => {
        const list = await sales.listSales(deps.pool, merchant(request), ROWS_PER_PAGE);
        return send(reply, pages.salesPage(context(request, 'Sales'), list.data));
      });
      scope.get('/sales/:id', async (request, reply) => {
        const sale = await sales.retrieveSale(deps.pool, merchant(request), (request.params as { id: string }).id);
        if (!sale) return send(reply, pages.layout(context(request, 'No such sale'), html`<p>No such sale.</p>`), 404);
        return send(reply, pages.salePage(context(request, sale.name), sale));
      });
      scope.get('/api/sales/:id', async (request, reply) => {
        const sale = await sales.retrieveSale(deps.pool, merchant(request), (request.params as { id: string }).id);
        if (!sale) return reply.code(404).send({ error: { code: 'resource_missing', message: 'No such sale.' } });
        const stock = { total: 0, available: 0, held: 0, sold: 0 };
        for (const item of sale.items) for (const key of Object.keys(stock) as Array<keyof typeof stock>) stock[key] += item.stock[key];
        const line = await saleLine(deps.metrics, sale.id);
        return { t: Math.round(Date.now() / 1000), ...stock, ...line, admitted: line.admittedPending + line.shopping };
      });

      scope.get('/payments', async (request, reply) => {
        const { q = '', status = '', starting_after: after } = query(request);
        const id = q.trim();
        if (id) {
          const found = await payments.retrievePaymentIntent(deps.pool, merchant(request), id);
          if (found) return reply.redirect(`/dashboard/payments/${encodeURIComponent(found.id)}`, 303);
          return send(reply, pages.paymentsPage(context(request, 'Payments', { error: `No payment ${id}.` }), { q: id, status }, []));
        }
        const list = status
          ? await payments.listPaymentIntentsWithStatus(deps.pool, merchant(request), status, ROWS_PER_PAGE, after)
          : await payments.listPaymentIntents(deps.pool, merchant(request), ROWS_PER_PAGE, after);
        const next = list.has_more ? list.data[list.data.length - 1]?.id : undefined;
        return send(reply, pages.paymentsPage(context(request, 'Payments'), { q: '', status }, list.data, next));
      });
      const loadPayment = async (request: FastifyRequest) =>
        payments.retrievePaymentIntent(deps.pool, merchant(request), (request.params as { id: string }).id);
      scope.get('/payments/:id', async (request, reply) => {
        const intent = await loadPayment(request);
        if (!intent) return send(reply, pages.layout(context(request, 'No such payment'), html`<p>No such payment.</p>`), 404);
        const merchantId = merchant(request);
        const [eventPage, attempts, refundPage] = await Promise.all([
          events.list(deps.pool, { merchantId, limit: ROWS_PER_PAGE, objectId: intent.id }),
          payments.listAttempts(deps.pool, merchantId, intent.id),
          deps.refunds.list(merchantId, intent.id, ROWS_PER_PAGE),
        ]);
        const notice = query(request).refunded ? `Refund ${query(request).refunded} created.` : undefined;
        return send(reply, pages.paymentPage(context(request, intent.id, { notice }), intent, eventPage.data, attempts, refundPage.data));
      });
      scope.get('/payments/:id/refund', async (request, reply) => {
        const intent = await loadPayment(request);
        if (!intent) return reply.redirect('/dashboard/payments', 303);
        // The key is fixed when the form is shown: submitting it twice refunds once.
        return send(
          reply,
          pages.refundPage(context(request, 'Refund'), intent, `dashboard_refund_${randomBytes(12).toString('base64url')}`),
        );
      });
      scope.post('/payments/:id/refund', async (request, reply) => {
        const intent = await loadPayment(request);
        if (!intent) return reply.redirect('/dashboard/payments', 303);
        const form = request.body as Form;
        const amount = Number(form.amount);
        const key = form.idempotency_key ?? '';
        const retry = (error: string) => send(reply, pages.refundPage(context(request, 'Refund', { error }), intent, key), 400);
        if (form.confirm !== 'yes') return retry('Tick the box to confirm the refund.');
        if (!Number.isInteger(amount) || amount < 1) return retry('The amount must be a whole number of minor units, at least 1.');
        if (!isValidKey(key)) return retry('The form was damaged; reload it.');
        const params = { payment_intent: intent.id, amount, reason: 'requested_by_customer' };
        const ctx = actionContext(merchant(request), key, '/v1/refunds', params);
        const result = await deps.refunds.create(ctx, params);
        if (result.status !== 200) {
          const message = (result.body as { error?: { message?: string } }).error?.message ?? `refused (${result.status})`;
          return retry(message);
        }
        const refundId = (result.body as { id: string }).id;
        return reply.redirect(`/dashboard/payments/${encodeURIComponent(intent.id)}?refunded=${encodeURIComponent(refundId)}`, 303);
      });

      scope.get('/webhooks', async (request, reply) => {
        const status = query(request).status ?? '';
        const list = await webhooks.listDeliveries(deps.pool, {
          merchantId: merchant(request),
          limit: ROWS_PER_PAGE,
          status: status || undefined,
        });
        const deliveries = list.data.map((delivery) => ({ ...delivery, created: delivery.last_attempt?.attempted_at ?? 0 }));
        const notice = query(request).redelivered ? `Event ${query(request).redelivered} queued for delivery again.` : undefined;
        return send(reply, pages.webhooksPage(context(request, 'Webhooks', { notice }), status, deliveries));
      });
      scope.post('/webhooks/redeliver', async (request, reply) => {
        const eventId = (request.body as Form).event ?? '';
        const params = { event: eventId };
        const key = `dashboard_redeliver_${randomBytes(12).toString('base64url')}`;
        const ctx = actionContext(merchant(request), key, `/v1/events/${eventId}/redeliver`, params);
        const result = await webhooks.redeliverEvent(deps.webhooks, ctx, eventId);
        if (result.status !== 200) {
          const message = (result.body as { error?: { message?: string } }).error?.message ?? 'refused';
          return send(reply, pages.webhooksPage(context(request, 'Webhooks', { error: message }), '', []), result.status);
        }
        return reply.redirect(`/dashboard/webhooks?redelivered=${encodeURIComponent(eventId)}`, 303);
      });

      scope.get('/balance', async (request, reply) => {
        const balance = await ledger.balance(deps.pool, merchant(request));
        return send(reply, pages.balancePage(context(request, 'Balance'), balance.available));
      });
    },
    { prefix: '/dashboard' },
  );
}
