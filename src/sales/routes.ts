/**
 * The HTTP edge of sales: sales and their items, holds, orders.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { QUEUE_LIMITS } from '../admission/service.js';
import { isCurrency, maxAmount, SUPPORTED_CURRENCIES } from '../money/currency.js';
import { cachePolicy, sendCached } from '../platform/cache/http.js';
import { principalOf, requestContext } from '../platform/http/context.js';
import { ApiError, foundOr404 } from '../platform/http/errors.js';
import { type Reply, sendReply } from '../platform/http/reply.js';
import { errorResponses, IdempotencyHeaders, IdParams, ListOf, ListQuery } from '../platform/http/schemas.js';
import type { HttpServer } from '../platform/http/server.js';
import { ID_PATTERN } from '../platform/ids.js';
import {
  ADMIT_PER_SECOND_DEFAULT,
  GRACE_SECONDS_DEFAULT,
  HOLD_SECONDS_DEFAULT,
  ITEMS_PER_SALE_MAX,
  LINES_PER_HOLD_MAX,
  MAX_SHOPPERS_DEFAULT,
  PER_BUYER_LIMIT_DEFAULT,
  STOCK_MAX,
} from './domain.js';
import * as sales from './service.js';
import type { HostedSettings as HostedSettingsRow } from './sql.js';

const Item = Type.Object({
  id: Type.String(),
  object: Type.Literal('item'),
  name: Type.String(),
  price: Type.Integer(),
  stock: Type.Object({ total: Type.Integer(), available: Type.Integer(), held: Type.Integer(), sold: Type.Integer() }),
});

const Sale = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('sale'),
    name: Type.String(),
    currency: Type.String(),
    opens_at: Type.String(),
    closes_at: Type.Union([Type.String(), Type.Null()]),
    status: Type.Union([Type.Literal('scheduled'), Type.Literal('open'), Type.Literal('closed')]),
    per_buyer_limit: Type.Integer(),
    hold_seconds: Type.Integer(),
    waiting_room: Type.Object({ admit_per_second: Type.Number(), max_shoppers: Type.Integer(), grace_seconds: Type.Integer() }),
    items: Type.Array(Item),
    created: Type.Integer(),
    hosted_page: Type.Boolean({ description: 'Whether the hosted sale page at hosted_url is on.' }),
    hosted_url: Type.Union([Type.String(), Type.Null()], { description: 'The hosted sale page to send buyers to; null while off.' }),
    branding: Type.Object({
      name: Type.Union([Type.String(), Type.Null()]),
      logo_url: Type.Union([Type.String(), Type.Null()]),
      color: Type.Union([Type.String(), Type.Null()]),
    }),
    success_url: Type.Union([Type.String(), Type.Null()]),
    cancel_url: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'Sale' },
);

const Hold = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('hold'),
    sale: Type.String(),
    buyer_reference: Type.Optional(Type.String({ description: "Only to a secret key: it is the buyer's credential in line." })),
    status: Type.String(),
    amount: Type.Integer(),
    currency: Type.String(),
    items: Type.Array(Type.Object({ item: Type.String(), quantity: Type.Integer() })),
    expires_at: Type.String(),
    created: Type.Integer(),
  },
  { $id: 'Hold' },
);

const Order = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('order'),
    sale: Type.String(),
    hold: Type.String(),
    payment_intent: Type.String(),
    amount: Type.Integer(),
    currency: Type.String(),
    status: Type.String(),
    paid_at: Type.Union([Type.Integer(), Type.Null()]),
    created: Type.Integer(),
    payment_intent_object: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { $id: 'Order' },
);

const ADMIT_PER_SECOND_MIN = 0.001;
const Name = Type.String({ minLength: 1, maxLength: 200 });
const Timestamp = Type.String({ format: 'date-time', description: 'ISO 8601 with a time zone, e.g. 2026-12-01T10:00:00Z.' });
const PerBuyerLimit = Type.Integer({
  minimum: 1,
  maximum: 100,
  description: `Units one buyer may hold or buy; default ${PER_BUYER_LIMIT_DEFAULT}.`,
});
const AdmitPerSecond = Type.Number({
  // One buyer every 1000 seconds is slower than any sale runs; below it, the interval between
  // admissions stops being a number the waiting room can schedule (1e-300 gave a 500).
  minimum: ADMIT_PER_SECOND_MIN,
  maximum: QUEUE_LIMITS.admitPerSecondMax,
  description: `Buyers the waiting room admits per second; default ${ADMIT_PER_SECOND_DEFAULT}.`,
});
const MaxShoppers = Type.Integer({
  minimum: 0,
  maximum: QUEUE_LIMITS.maxShoppersMax,
  description: `Admitted buyers shopping at once (0 pauses admission); default ${MAX_SHOPPERS_DEFAULT}.`,
});
const GraceSeconds = Type.Integer({
  minimum: QUEUE_LIMITS.graceSecondsMin,
  maximum: QUEUE_LIMITS.graceSecondsMax,
  description: `A waiting buyer who stops polling this long loses their place; default ${GRACE_SECONDS_DEFAULT}.`,
});
const HoldSeconds = Type.Integer({
  minimum: 30,
  maximum: 3600,
  description: `How long a hold keeps its stock; default ${HOLD_SECONDS_DEFAULT}.`,
});

const WebUrl = (description: string) =>
  Type.Union([Type.String({ minLength: 1, maxLength: 2000, pattern: '^https?://[^\\s]+$', description }), Type.Null()]);

/** The hosted page's settings; null clears one. */
const HostedSettings = {
  hosted_page: Type.Optional(Type.Boolean({ description: 'Turns the hosted sale page (/s/:sale) on or off; off by default.' })),
  branding: Type.Optional(
    Type.Object(
      {
        name: Type.Optional(Type.Union([Name, Type.Null()], { description: 'Shown as the seller on the hosted page.' })),
        logo_url: Type.Optional(
          WebUrl('An https (or http) image the hosted page shows; its origin is the only other one the page loads from.'),
        ),
        color: Type.Optional(
          Type.Union([Type.String({ pattern: '^#[0-9A-Fa-f]{6}$', description: 'Accent colour, #rrggbb.' }), Type.Null()]),
        ),
      },
      { additionalProperties: false },
    ),
  ),
  success_url: Type.Optional(WebUrl('Where the receipt sends the buyer on; the order id is appended as ?order=.')),
  cancel_url: Type.Optional(WebUrl('Where a buyer who leaves the hosted page goes.')),
};

type HostedBody = { [K in keyof typeof HostedSettings]?: import('@sinclair/typebox').Static<(typeof HostedSettings)[K]> };

/** The hosted settings a request gives, as the sales service takes them. */
function hostedChanges(body: HostedBody): Partial<HostedSettingsRow> {
  const changes: Partial<HostedSettingsRow> = {};
  if (body.hosted_page !== undefined) changes.hosted_page = body.hosted_page;
  if (body.branding?.name !== undefined) changes.brand_name = body.branding.name;
  if (body.branding?.logo_url !== undefined) changes.brand_logo_url = body.branding.logo_url;
  if (body.branding?.color !== undefined) changes.brand_color = body.branding.color?.toLowerCase() ?? null;
  if (body.success_url !== undefined) changes.success_url = body.success_url;
  if (body.cancel_url !== undefined) changes.cancel_url = body.cancel_url;
  return changes;
}

/** The settings a sale is created with and may change later, all optional with defaults. */
const SaleSettings = {
  ...HostedSettings,
  closes_at: Type.Optional(Type.Union([Timestamp, Type.Null()])),
  per_buyer_limit: Type.Optional(PerBuyerLimit),
  hold_seconds: Type.Optional(HoldSeconds),
  admit_per_second: Type.Optional(AdmitPerSecond),
  max_shoppers: Type.Optional(MaxShoppers),
  grace_seconds: Type.Optional(GraceSeconds),
};

const CreateSaleBody = Type.Object(
  {
    name: Name,
    currency: Type.String({ minLength: 3, maxLength: 3 }),
    opens_at: Timestamp,
    ...SaleSettings,
    items: Type.Array(
      Type.Object(
        { name: Name, price: Type.Integer({ minimum: 1 }), stock: Type.Integer({ minimum: 0, maximum: STOCK_MAX }) },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: ITEMS_PER_SALE_MAX },
    ),
  },
  { additionalProperties: false },
);

const saleId = IdParams(ID_PATTERN('sale'));
const holdId = IdParams(ID_PATTERN('hold'));
const orderId = IdParams(ID_PATTERN('ord'));

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
}

/** Where buyers reach the hosted page of a sale, from the service's public base URL. */
export const hostedPageUrl = (publicUrl: string, saleId: string) => `${publicUrl.replace(/\/+$/, '')}/s/${encodeURIComponent(saleId)}`;

type ApiSale = ReturnType<typeof sales.toApiSale>;

export function registerSalesRoutes(app: HttpServer, deps: sales.SalesDeps, cache: SaleCache, publicUrl: string): void {
  // The sale's hosted URL depends on this deployment's public address, so it is added here, at
  // the edge, to stored and cached answers alike.
  const present = (sale: ApiSale) => ({ ...sale, hosted_url: sale.hosted_page ? hostedPageUrl(publicUrl, sale.id) : null });
  // The public read's bytes, made once per cached copy of a sale, not once per read: a copy is
  // frozen and shared by every read on this node until it expires, and serializing it again
  // (and encoding the text again) cost a cached read more than its cache lookup. The cached
  // copy is shared with the waiting room; its hosted URL is added here. The URL follows from
  // the sale and this deployment, so the cached ETag still names the answer.
  const publicReads = new WeakMap<ApiSale, { json: Buffer; etag: string }>();
  const publicRead = (sale: ApiSale, etag: string) => {
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
  const sendSale = (request: FastifyRequest, reply: FastifyReply, saleId: string, cached: sales.CachedSale): void => {
    if (cached.value === null) throw new ApiError('resource_missing', `No such sale: '${saleId}'`, 'id');
    const policy = principalOf(request).keyKind === 'publishable' ? publicPolicy : privatePolicy;
    sendCached(request, reply, publicRead(cached.value, cached.etag), policy);
  };
  const presentReply = (result: Reply): Reply => (result.status === 200 ? { ...result, body: present(result.body as ApiSale) } : result);

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
    '/v1/sales/:id',
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
        summary: 'Turn a hold into an order with a PaymentIntent to confirm',
        headers: IdempotencyHeaders,
        body: Type.Object({ hold: Type.String({ pattern: ID_PATTERN('hold') }) }, { additionalProperties: false }),
        response: { 200: Order, ...errorResponses },
      },
    },
    async (request, reply) => sendReply(reply, await sales.createOrder(deps, requestContext(request), request.body)),
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
