/**
 * The HTTP edge of sales: sales and their items, holds, orders.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isCurrency, maxAmount, SUPPORTED_CURRENCIES } from '../money/currency.js';
import { cachedAnswer, cachePolicy, sendCached } from '../platform/cache/http.js';
import { type Principal, principalOf, requestContext } from '../platform/http/context.js';
import { ApiError, foundOr404 } from '../platform/http/errors.js';
import { type Reply, sendReply } from '../platform/http/reply.js';
import { errorResponses, IdempotencyHeaders, ListOf, ListQuery, PaymentMethod } from '../platform/http/schemas.js';
import type { HttpServer } from '../platform/http/server.js';
import { ID_PATTERN } from '../platform/ids.js';
import { LINES_PER_HOLD_MAX } from './domain.js';
import * as orders from './orders.js';
import { SALE_PAGE_ROUTE, type SalePageLane, salePageLane } from './sale-page-lane.js';
import { CreateSaleBody, Hold, holdId, hostedChanges, Name, Order, orderId, Sale, SaleSettings, saleId, Timestamp } from './schemas.js';
import * as sales from './service.js';

function parseTimes(opensAt: string | undefined, closesAt: string | null | undefined) {
  const opens = opensAt === undefined ? undefined : instant(opensAt, 'opens_at');
  const closes = closesAt === undefined ? undefined : closesAt === null ? null : instant(closesAt, 'closes_at');
  if (opens && closes && closes <= opens) throw new ApiError('parameter_invalid', 'closes_at must be after opens_at.', 'closes_at');
  return { opens, closes };
}

/**
 * A date-time the schema accepted as RFC 3339 that is also an instant JavaScript and PostgreSQL
 * can hold: RFC 3339 allows a leap second (23:59:60), which neither does.
 */
function instant(text: string, param: string): Date {
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) {
    throw new ApiError(
      'parameter_invalid',
      `Invalid ${param}: not a time we can store (a leap second such as 23:59:60 is not); use 23:59:59 or 00:00:00.`,
      param,
    );
  }
  return date;
}

/**
 * A hold as a publishable key may see it: without the buyer_reference, which binds the buyer's
 * admission token and place in line. A publishable key is public (it sits in the sale page),
 * so anyone who learns a hold id could otherwise read the buyer's credential.
 */
function withoutBuyerReference<T extends { buyer_reference?: string }>(hold: T): Omit<T, 'buyer_reference'> {
  const { buyer_reference: _hidden, ...rest } = hold;
  return rest;
}

/** A hold reply shaped for the key that asked: see withoutBuyerReference. */
function forKey(request: FastifyRequest, reply: Reply): Reply {
  if (principalOf(request).keyKind === 'secret' || reply.status !== 200) return reply;
  return { ...reply, body: withoutBuyerReference(reply.body as { buyer_reference?: string }) };
}

export interface SaleCache {
  cache: sales.SaleCache;
  staleMs: number;
  /** How long the fast lane serves one lookup of a read again; 0 looks up every read (sale-page-lane.ts). */
  reuseMs: number;
}

/** Where buyers reach the hosted page of a sale, from the service's public base URL. */
export const hostedPageUrl = (publicUrl: string, saleId: string) => `${publicUrl.replace(/\/+$/, '')}/s/${encodeURIComponent(saleId)}`;

export function registerSalesRoutes(
  app: HttpServer,
  deps: sales.SalesDeps,
  cache: SaleCache,
  publicUrl: string,
  fastLane?: SalePageLane,
): void {
  // The sale's hosted URL depends on this deployment's public address, so it is added here, at
  // the edge, to stored and cached answers alike.
  const present = (sale: sales.ApiSale) => ({ ...sale, hosted_url: sale.hosted_page ? hostedPageUrl(publicUrl, sale.id) : null });
  // The public read's bytes, made once per cached copy of a sale, not once per read: a copy is
  // frozen and shared by every read on this node until it expires, and serializing it again
  // (and encoding the text again) cost a cached read more than its cache lookup. The cached
  // copy is shared with the waiting room; its hosted URL is added here. The URL follows from
  // the sale and this deployment, so the cached ETag still names the answer.
  const publicReads = new WeakMap<sales.ApiSale, { json: Buffer; etag: string }>();
  const publicRead = (sale: sales.ApiSale, etag: string) => {
    let read = publicReads.get(sale);
    if (!read) {
      read = { json: Buffer.from(JSON.stringify(present(sale))), etag };
      publicReads.set(sale, read);
    }
    return read;
  };
  // The answer depends on the key (another merchant's gets 404, no key gets 401), so a CDN must
  // key its copy by it: every buyer of a sale sends the same publishable key, so the copy is
  // still shared by all of them. A read with a secret key is the merchant's own, for no shared
  // cache to keep.
  const publicPolicy = cachePolicy({ staleMs: cache.staleMs, shared: true, vary: ['Authorization'] });
  const privatePolicy = cachePolicy({ staleMs: cache.staleMs, shared: false, vary: ['Authorization'] });
  const policyFor = (principal: Principal) => (principal.keyKind === 'publishable' ? publicPolicy : privatePolicy);
  const sendSale = (request: FastifyRequest, reply: FastifyReply, saleId: string, cached: sales.CachedSale): void => {
    if (cached.value === null) throw new ApiError('resource_missing', `No such sale: '${saleId}'`, 'id');
    sendCached(request, reply, publicRead(cached.value, cached.etag), policyFor(principalOf(request)));
  };
  if (fastLane) {
    fastLane.lanes.push(
      salePageLane({
        cache: cache.cache,
        reuseMs: cache.reuseMs,
        edge: fastLane,
        answer: (request, principal, sale, etag) => cachedAnswer(request, SALE_PAGE_ROUTE, publicRead(sale, etag), policyFor(principal)),
      }),
    );
  }
  const presentReply = (result: Reply): Reply =>
    result.status === 200 ? { ...result, body: present(result.body as sales.ApiSale) } : result;

  app.post(
    '/v1/sales',
    {
      schema: {
        tags: ['sales'],
        summary: 'Create a sale with its items',
        headers: IdempotencyHeaders,
        body: CreateSaleBody,
        response: { 200: Sale, ...errorResponses },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const currency = body.currency.toLowerCase();
      if (!isCurrency(currency)) {
        throw new ApiError(
          'parameter_invalid',
          `Unsupported currency "${body.currency}". Supported: ${SUPPORTED_CURRENCIES.join(', ')}.`,
          'currency',
        );
      }
      body.items.forEach((item, index) => {
        if (item.price > maxAmount(currency)) {
          throw new ApiError(
            'amount_too_large',
            `price must be at most ${maxAmount(currency)} ${currency} minor units.`,
            `items[${index}][price]`,
          );
        }
      });
      const { opens, closes } = parseTimes(body.opens_at, body.closes_at);
      const params = { ...body, currency, opens_at: opens as Date, closes_at: closes, hosted: hostedChanges(body) };
      return sendReply(reply, presentReply(await sales.createSale(deps, requestContext(request), params)));
    },
  );

  app.get(
    '/v1/sales',
    {
      schema: {
        tags: ['sales'],
        summary: 'List sales, newest first',
        querystring: ListQuery,
        response: { 200: ListOf(Sale), ...errorResponses },
      },
    },
    async (request) => {
      const list = await sales.listSales(deps.pool, principalOf(request).merchantId, request.query.limit, request.query.starting_after);
      return { ...list, data: list.data.map(present) };
    },
  );

  app.get(
    SALE_PAGE_ROUTE,
    {
      // A sale page is public: buyers' browsers read it with the publishable key. The crowd
      // reads it: shed first under load.
      config: { auth: 'publishable', shedding: 'line' },
      schema: {
        tags: ['sales'],
        summary: 'Retrieve a sale with its availability (publishable key); cached, stale by at most FLOODGATE_CACHE_STALE_MS',
        params: saleId,
        response: { 200: Sale, ...errorResponses },
      },
    },
    (request, reply) => {
      const saleId = request.params.id;
      const found = sales.cachedSale(cache.cache, deps.pool, principalOf(request).merchantId, saleId);
      // Answered at once from this node's memory, or once the cache has loaded the sale.
      if (found instanceof Promise) return found.then((cached) => sendSale(request, reply, saleId, cached));
      sendSale(request, reply, saleId, found);
      return undefined;
    },
  );

  app.patch(
    '/v1/sales/:id',
    {
      schema: {
        tags: ['sales'],
        summary: "Change a sale's name, times, per-buyer limit or hold time",
        headers: IdempotencyHeaders,
        params: saleId,
        body: Type.Object(
          {
            name: Type.Optional(Name),
            opens_at: Type.Optional(Timestamp),
            ...SaleSettings,
          },
          { additionalProperties: false },
        ),
        response: { 200: Sale, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { opens, closes } = parseTimes(request.body.opens_at, request.body.closes_at);
      const changes: Parameters<typeof sales.updateSale>[3] = {};
      if (request.body.name !== undefined) changes.name = request.body.name;
      if (opens) changes.opens_at = opens;
      if (closes !== undefined) changes.closes_at = closes;
      if (request.body.per_buyer_limit !== undefined) changes.per_buyer_limit = request.body.per_buyer_limit;
      if (request.body.hold_seconds !== undefined) changes.hold_seconds = request.body.hold_seconds;
      if (request.body.admit_per_second !== undefined) changes.admit_per_second = request.body.admit_per_second;
      if (request.body.max_shoppers !== undefined) changes.max_shoppers = request.body.max_shoppers;
      if (request.body.grace_seconds !== undefined) changes.grace_seconds = request.body.grace_seconds;
      const ctx = requestContext(request);
      const result = presentReply(await sales.updateSale(deps, ctx, request.params.id, changes, hostedChanges(request.body)));
      // Every node drops its copy: the next public read shows the change at once.
      if (result.status === 200) await cache.cache.invalidate(sales.saleCacheKey(ctx.merchantId, request.params.id));
      return sendReply(reply, result);
    },
  );

  app.post(
    '/v1/holds',
    {
      // Buyers place holds from the sale page: the single-use admission token is the gate.
      config: { auth: 'publishable' },
      schema: {
        tags: ['holds'],
        summary: 'Hold stock for an admitted buyer',
        headers: IdempotencyHeaders,
        body: Type.Object(
          {
            sale: Type.String({ pattern: ID_PATTERN('sale') }),
            buyer_reference: Type.String({ minLength: 1, maxLength: 200 }),
            admission_token: Type.String({ minLength: 1, maxLength: 2000 }),
            items: Type.Array(
              Type.Object(
                { item: Type.String({ pattern: ID_PATTERN('item') }), quantity: Type.Integer({ minimum: 1, maximum: 100 }) },
                { additionalProperties: false },
              ),
              { minItems: 1, maxItems: LINES_PER_HOLD_MAX },
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: Hold, ...errorResponses },
      },
    },
    async (request, reply) => sendReply(reply, forKey(request, await sales.createHold(deps, requestContext(request), request.body))),
  );

  app.get(
    '/v1/holds/:id',
    {
      config: { auth: 'publishable' },
      schema: { tags: ['holds'], summary: 'Retrieve a hold', params: holdId, response: { 200: Hold, ...errorResponses } },
    },
    async (request) => {
      const hold = foundOr404(
        await sales.retrieveHold(deps.pool, principalOf(request).merchantId, request.params.id),
        'hold',
        request.params.id,
      );
      return principalOf(request).keyKind === 'secret' ? hold : withoutBuyerReference(hold);
    },
  );

  app.delete(
    '/v1/holds/:id',
    {
      // A buyer who leaves gives the stock back from the sale page; hold ids are unguessable.
      config: { auth: 'publishable' },
      schema: {
        tags: ['holds'],
        summary: 'Release a hold and return its stock',
        params: holdId,
        response: { 200: Hold, ...errorResponses },
      },
    },
    async (request, reply) =>
      sendReply(reply, forKey(request, await sales.releaseHold(deps, principalOf(request).merchantId, request.params.id))),
  );

  app.post(
    '/v1/orders',
    {
      schema: {
        tags: ['orders'],
        summary: 'Turn a hold into an order with a PaymentIntent to confirm, or confirm it at once',
        description:
          "With confirm: true and a payment_method, the order's PaymentIntent is confirmed in the same request, as " +
          'POST /v1/payment_intents/:id/confirm would: the answer is the order with payment_intent_object as the ' +
          "confirm left it (status paid when the payment succeeded), or the confirm's error (a declined card: 402 " +
          'card_declined), after which the buyer confirms the PaymentIntent again to retry.',
        headers: IdempotencyHeaders,
        body: Type.Object(
          {
            hold: Type.String({ pattern: ID_PATTERN('hold') }),
            payment_method: Type.Optional(PaymentMethod),
            confirm: Type.Optional(Type.Boolean({ description: "Confirm the order's PaymentIntent at once, charging payment_method." })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Order, ...errorResponses },
      },
    },
    async (request, reply) => sendReply(reply, await orders.createOrder(deps, requestContext(request), request.body)),
  );

  app.get(
    '/v1/orders',
    {
      schema: {
        tags: ['orders'],
        summary: 'List orders, newest first',
        querystring: Type.Composite([ListQuery, Type.Object({ sale: Type.Optional(Type.String({ pattern: ID_PATTERN('sale') })) })], {
          additionalProperties: false,
        }),
        response: { 200: ListOf(Order), ...errorResponses },
      },
    },
    async (request) =>
      sales.listOrders(deps.pool, {
        merchantId: principalOf(request).merchantId,
        limit: request.query.limit,
        startingAfter: request.query.starting_after,
        saleId: request.query.sale,
      }),
  );

  app.get(
    '/v1/orders/:id',
    { schema: { tags: ['orders'], summary: 'Retrieve an order', params: orderId, response: { 200: Order, ...errorResponses } } },
    async (request) => {
      return foundOr404(
        await sales.retrieveOrder(deps.pool, principalOf(request).merchantId, request.params.id),
        'order',
        request.params.id,
      );
    },
  );
}
