/**
 * Sales, items, holds and orders: the use cases behind the routes. Every POST runs in one
 * atomic phase under its idempotency key, so a retry replays the first answer.
 */

import type { SaleForQueue } from '../admission/service.js';
import type { Cache, Cached } from '../platform/cache/cache.js';
import type { Client, Pool } from '../platform/db/pool.js';
import { withTransaction } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import { ApiError } from '../platform/http/errors.js';
import { page } from '../platform/http/pagination.js';
import { errorReply, ok, type Reply } from '../platform/http/reply.js';
import { singlePhase } from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import {
  ADMIT_PER_SECOND_DEFAULT,
  GRACE_SECONDS_DEFAULT,
  HOLD_SECONDS_DEFAULT,
  type HoldLine,
  MAX_SHOPPERS_DEFAULT,
  PER_BUYER_LIMIT_DEFAULT,
  salePhase,
} from './domain.js';
import type { HoldBatcher } from './hold-batches.js';
import { endHold, takeHold } from './holds.js';
import type { OrderDeps } from './orders.js';
import * as sql from './sql.js';

/** Orders live in orders.ts; other capabilities reach them here. */
export { createOrder, listOrders, retrieveOrder, toApiOrder } from './orders.js';

export interface SalesDeps extends OrderDeps {
  /**
   * Checks an admission token without spending it (signature, sale, buyer, expiry). A token is
   * spent by the hold that commits with its ticket: the database keeps one hold per ticket.
   */
  checkAdmission: (token: string, saleId: string, buyerReference: string) => AdmissionCheck;
  /** After a hold committed: its ticket moves to the waiting room's shoppers. */
  confirmAdmission: (saleId: string, ticketId: string, tokenExpiresAtMs: number) => Promise<unknown>;
  /** Frees the shopper slot of a hold's admission when the hold ends early. */
  releaseAdmission: (saleId: string, ticketId: string) => Promise<unknown>;
  /** Allocates concurrent holds of a sale together; absent: every hold is its own transaction. */
  holdBatcher?: HoldBatcher;
}

export type AdmissionCheck = { ok: true; ticketId: string; expiresAtMs: number } | { ok: false; reason: string };

export interface CreateSaleParams {
  name: string;
  currency: string;
  opens_at: Date;
  closes_at?: Date | null;
  per_buyer_limit?: number;
  hold_seconds?: number;
  admit_per_second?: number;
  max_shoppers?: number;
  grace_seconds?: number;
  items: { name: string; price: number; stock: number }[];
  hosted?: Partial<sql.HostedSettings>;
}

export function toApiSale(sale: sql.SaleRow, items: sql.ItemRow[], now = new Date()) {
  return {
    id: sale.id,
    object: 'sale' as const,
    name: sale.name,
    currency: sale.currency,
    opens_at: sale.opens_at.toISOString(),
    closes_at: sale.closes_at ? sale.closes_at.toISOString() : null,
    status: salePhase(sale, now),
    per_buyer_limit: sale.per_buyer_limit,
    hold_seconds: sale.hold_seconds,
    waiting_room: { admit_per_second: sale.admit_per_second, max_shoppers: sale.max_shoppers, grace_seconds: sale.grace_seconds },
    items: items.filter((item) => item.sale_id === sale.id).map(toApiItem),
    created: Math.floor(sale.created_at.getTime() / 1000),
    hosted_page: sale.hosted_page,
    branding: { name: sale.brand_name, logo_url: sale.brand_logo_url, color: sale.brand_color },
    success_url: sale.success_url,
    cancel_url: sale.cancel_url,
  };
}

function toApiItem(item: sql.ItemRow) {
  return {
    id: item.id,
    object: 'item' as const,
    name: item.name,
    price: item.price,
    stock: { total: item.stock_total, available: item.stock_available, held: item.stock_held, sold: item.stock_sold },
  };
}

export function toApiHold(hold: sql.HoldRow, lines: HoldLine[]) {
  return {
    id: hold.id,
    object: 'hold' as const,
    sale: hold.sale_id,
    buyer_reference: hold.buyer_reference,
    status: hold.status,
    amount: hold.amount,
    currency: hold.currency,
    items: lines.map((line) => ({ item: line.item_id, quantity: line.quantity })),
    expires_at: hold.expires_at.toISOString(),
    created: Math.floor(hold.created_at.getTime() / 1000),
  };
}

export function createSale(deps: SalesDeps, ctx: RequestContext, params: CreateSaleParams): Promise<Reply> {
  return singlePhase(deps, ctx, async (client) => {
    const inserted = await sql.insertSale(client, {
      merchant_id: ctx.merchantId,
      id: newId('sale'),
      name: params.name,
      currency: params.currency,
      opens_at: params.opens_at,
      closes_at: params.closes_at ?? null,
      per_buyer_limit: params.per_buyer_limit ?? PER_BUYER_LIMIT_DEFAULT,
      hold_seconds: params.hold_seconds ?? HOLD_SECONDS_DEFAULT,
      admit_per_second: params.admit_per_second ?? ADMIT_PER_SECOND_DEFAULT,
      max_shoppers: params.max_shoppers ?? MAX_SHOPPERS_DEFAULT,
      grace_seconds: params.grace_seconds ?? GRACE_SECONDS_DEFAULT,
    });
    const sale = params.hosted
      ? ((await sql.updateHostedSettings(client, ctx.merchantId, inserted.id, params.hosted)) as sql.SaleRow)
      : inserted;
    const items: sql.ItemRow[] = [];
    for (const item of params.items) {
      items.push(
        await sql.insertItem(client, {
          merchant_id: ctx.merchantId,
          id: newId('item'),
          sale_id: sale.id,
          name: item.name,
          price: item.price,
          stock_total: item.stock,
        }),
      );
    }
    return ok(toApiSale(sale, items));
  });
}

export function updateSale(
  deps: SalesDeps,
  ctx: RequestContext,
  id: string,
  changes: sql.SaleChanges,
  hosted: Partial<sql.HostedSettings> = {},
): Promise<Reply> {
  return singlePhase(deps, ctx, async (client) => {
    const current = await sql.selectSale(client, ctx.merchantId, id);
    if (!current) return errorReply(new ApiError('resource_missing', `No such sale: '${id}'`, 'id'));
    const closesAt = 'closes_at' in changes ? changes.closes_at : current.closes_at;
    const opensAt = changes.opens_at ?? current.opens_at;
    if (closesAt && closesAt <= opensAt)
      return errorReply(new ApiError('parameter_invalid', 'closes_at must be after opens_at.', 'closes_at'));
    const updated = await sql.updateSale(client, ctx.merchantId, id, changes);
    const sale = updated && (await sql.updateHostedSettings(client, ctx.merchantId, id, hosted));
    if (!sale) return errorReply(new ApiError('resource_missing', `No such sale: '${id}'`, 'id'));
    return ok(toApiSale(sale, await sql.selectItems(client, ctx.merchantId, [id])));
  });
}

export async function retrieveSale(pool: Pool, merchantId: string, id: string) {
  const sale = await sql.selectSale(pool, merchantId, id);
  if (!sale) return undefined;
  return toApiSale(sale, await sql.selectItems(pool, merchantId, [id]));
}

/**
 * A sale whose hosted page is on, by id alone, with its merchant: what the public page at
 * /s/:sale reads. Undefined for an unknown sale or one whose page is off.
 */
export async function retrieveHostedSale(pool: Pool, id: string) {
  const sale = await sql.selectHostedSale(pool, id);
  if (!sale) return undefined;
  return { merchantId: sale.merchant_id, sale: toApiSale(sale, await sql.selectItems(pool, sale.merchant_id, [id])) };
}

export async function listSales(pool: Pool, merchantId: string, limit: number, startingAfter?: string) {
  const sales = await sql.selectSales(pool, merchantId, limit + 1, startingAfter);
  const items = sales.length
    ? await sql.selectItems(
        pool,
        merchantId,
        sales.map((sale) => sale.id),
      )
    : [];
  return page(
    sales.map((sale) => toApiSale(sale, items)),
    limit,
    '/v1/sales',
  );
}

export async function createHold(
  deps: SalesDeps,
  ctx: RequestContext,
  params: { sale: string; buyer_reference: string; admission_token: string; items: { item: string; quantity: number }[] },
): Promise<Reply> {
  // Checked, not spent: nothing outside this request's transaction changes before it commits,
  // so a refusal (or a crash) leaves the token usable and the buyer's slot theirs.
  const admission = deps.checkAdmission(params.admission_token, params.sale, params.buyer_reference);
  let committed: { ticketId: string; expiresAtMs: number } | undefined;
  const batched = deps.holdBatcher
    ? await deps.holdBatcher.submit({
        merchantId: ctx.merchantId,
        keyKind: ctx.keyKind,
        idempotencyKey: ctx.idempotencyKey,
        method: ctx.method,
        path: ctx.path,
        fingerprint: ctx.fingerprint,
        saleId: params.sale,
        buyerReference: params.buyer_reference,
        lines: params.items.map((line) => ({ item_id: line.item, quantity: line.quantity })),
        admission,
      })
    : undefined;
  let reply: Reply;
  if (batched?.kind === 'reply') {
    reply = batched.reply;
    if (reply.status === 200 && admission.ok) committed = admission;
  } else {
    reply = await singlePhase(deps, ctx, async (client) => {
      const held = await holdReply(client, ctx.merchantId, params, admission);
      if (held.status === 200 && admission.ok) committed = admission;
      return held;
    });
  }
  // The hold committed with its ticket: the admission becomes a shopper slot. The buyer's
  // answer does not wait for the line's store: the hold is the authority, and the move is the
  // line's bookkeeping (until it lands the unit counts as an admitted buyer's, as it did while
  // the hold committed). A release or an expiry that reaches the store first leaves the move
  // nothing to do (the ticket has lapsed). Retried in the background while the store is
  // unreachable; should this process end first, the ticket's admission lapses when its token
  // expires, and the hold stands.
  if (committed) void deps.confirmAdmission(params.sale, committed.ticketId, committed.expiresAtMs).catch(() => {});
  return reply;
}

async function holdReply(
  client: Client,
  merchantId: string,
  params: { sale: string; buyer_reference: string; items: { item: string; quantity: number }[] },
  admission: AdmissionCheck,
): Promise<Reply> {
  const result = await takeHold(client, {
    merchantId,
    saleId: params.sale,
    buyerReference: params.buyer_reference,
    lines: params.items.map((line) => ({ item_id: line.item, quantity: line.quantity })),
    now: new Date(),
    admission,
  });
  if (result.kind === 'refused') return errorReply(result.error);
  return ok(toApiHold(result.hold, result.lines));
}

export async function retrieveHold(pool: Pool, merchantId: string, id: string) {
  const hold = await sql.selectHold(pool, merchantId, id);
  return hold ? toApiHold(hold, await sql.selectHoldLines(pool, merchantId, id)) : undefined;
}

export async function releaseHold(deps: SalesDeps, merchantId: string, id: string): Promise<Reply> {
  const reply = await withTransaction(deps.pool, async (client) => {
    const result = await endHold(client, merchantId, id, 'released');
    if (result === 'missing') return errorReply(new ApiError('resource_missing', `No such hold: '${id}'`, 'id'));
    if (result === 'not_active') return errorReply(new ApiError('hold_not_active', 'This hold has already ended.'));
    if (result === 'payment_in_progress') {
      return errorReply(new ApiError('hold_payment_in_progress', "The hold's payment is in progress; it cannot be released now."));
    }
    const hold = (await sql.selectHold(client, merchantId, id)) as sql.HoldRow;
    return { ...ok(toApiHold(hold, await sql.selectHoldLines(client, merchantId, id))), ticket: hold.admission_ticket, sale: hold.sale_id };
  });
  // The buyer is done shopping: give their slot to the next in line. Best effort; the slot also
  // frees itself after the shopping limit.
  if ('ticket' in reply && reply.ticket) await deps.releaseAdmission(reply.sale, reply.ticket).catch(() => {});
  return { status: reply.status, body: reply.body, headers: reply.headers };
}

/** The one cache of sales: the public sale page and the waiting room read it, and a change invalidates it on every node. */
/** A sale as the API answers it. */
export type ApiSale = ReturnType<typeof toApiSale>;
export type SaleCache = Cache<ApiSale | null>;
export type CachedSale = Cached<ApiSale | null>;

export const saleCacheKey = (merchantId: string, saleId: string) => `${merchantId}:${saleId}`;

/** The sale as this node holds it now, with how much longer it stays fresh, or undefined (nothing is loaded). */
export function peekSale(cache: SaleCache, merchantId: string, saleId: string) {
  return cache.peek(saleCacheKey(merchantId, saleId));
}

/** The sale with its availability, stale by at most the cache's bound (FLOODGATE_CACHE_STALE_MS). */
export function cachedSale(cache: SaleCache, pool: Pool, merchantId: string, saleId: string) {
  return cache.get(saleCacheKey(merchantId, saleId), () => retrieveSale(pool, merchantId, saleId).then((sale) => sale ?? null));
}

/**
 * The sale as the waiting room sees it. Every join and poll asks, so it comes from the sale
 * cache: the line acts on settings and availability at most as old as the public sale page
 * shows, and a change to the sale (PATCH) reaches the line as soon as it reaches the page.
 */
export function createSaleLookup(pool: Pool, cache: SaleCache) {
  return async (merchantId: string, saleId: string): Promise<SaleForQueue | undefined> => {
    const sale = (await cachedSale(cache, pool, merchantId, saleId)).value;
    if (!sale) return undefined;
    const available = sale.items.reduce((sum, item) => sum + item.stock.available, 0);
    return {
      id: sale.id,
      opensAt: new Date(sale.opens_at),
      closesAt: sale.closes_at === null ? null : new Date(sale.closes_at),
      admitPerSecond: sale.waiting_room.admit_per_second,
      maxShoppers: sale.waiting_room.max_shoppers,
      graceSeconds: sale.waiting_room.grace_seconds,
      remainingStock: async () => available,
    };
  };
}
