/**
 * The sale page's fast lane (platform/http/fast-lane.ts): the crowd's `GET /v1/sales/:id` of a
 * sale this node holds, answered before Fastify's pipeline with the bytes and headers the route
 * sends (routes.ts). Anything else (a key or sale not in this node's memory, a missing sale, a
 * query string, a body) goes down the full pipeline.
 *
 * Repeats of a read reuse the lane's last lookup (`reuseMs`, FLOODGATE_SALE_READ_REUSE_MS). A
 * surge's reads are one and the same: the same sale page, asked with the same publishable key,
 * thousands of times a second. Looking the key and the sale up again for each cost the API
 * about ten microseconds a read on the 2-core machine, though the same lookups time at about
 * two in a loop (probably the caches that the requests in between leave cold); reusing the
 * last lookup for the same URL and Authorization header took the read from about 0.7 of the
 * bare server's rate to about 0.9 (bench/README.md, the sixteenth session). A reuse never
 * outlives the sale copy's freshness, nor the key cache's trust in the key (so a revoked key
 * stops within FLOODGATE_API_KEY_CACHE_TTL_MS, as before), nor a change to this node's sale
 * cache (an invalidation is seen at once). Rate limits and If-None-Match are still decided for
 * each read.
 */
import type { IncomingMessage } from 'node:http';
import type { Principal } from '../platform/http/context.js';
import type { FastLane, LaneAnswer } from '../platform/http/fast-lane.js';
import { NO_RATE_LIMITS } from '../platform/http/rate-limit.js';
import { ID_PATTERN } from '../platform/ids.js';
import * as sales from './service.js';

export const SALE_PAGE_ROUTE = '/v1/sales/:id';
const SALE_PAGE_PREFIX = '/v1/sales/';
const SALE_ID = new RegExp(ID_PATTERN('sale'));

/** What the sale page's fast lane needs from the edge: where lanes go, and the keys it knows. */
export interface SalePageLane {
  lanes: FastLane[];
  /** The principal of a key this node holds, with how much longer it trusts it (ms). */
  principal(authorization: string | undefined): { principal: Principal; trustedForMs: number } | undefined;
  /** The RateLimit-* headers of a read the limits allow and counted, or undefined to decline (rate-limit.ts laneAdmit). */
  rateLimit(principal: Principal, request: IncomingMessage): Readonly<Record<string, string>> | undefined;
}

/** What the lane last looked up, for the next read of the same URL with the same key. */
interface ReadLookup {
  url: string;
  authorization: string;
  principal: Principal;
  sale: sales.ApiSale;
  etag: string;
  /** The sale cache's version it was read at. */
  version: number;
  /** Until when (performance.now()) it may serve again. */
  until: number;
}

/**
 * The lane: `answer` gives the route's own answer for a sale copy and the key that read it
 * (the 200, or the 304 for a matching If-None-Match).
 */
export function salePageLane(options: {
  cache: sales.SaleCache;
  /** How long one lookup serves repeats of its read; 0 looks up every read. */
  reuseMs: number;
  edge: SalePageLane;
  answer(request: IncomingMessage, principal: Principal, sale: sales.ApiSale, etag: string): LaneAnswer;
}): FastLane {
  const { cache, reuseMs, edge } = options;
  let lastLookup: ReadLookup | undefined;
  const lookUp = (url: string, authorization: string | undefined, now: number): ReadLookup | undefined => {
    if (authorization === undefined) return undefined;
    const id = url.slice(SALE_PAGE_PREFIX.length);
    if (!SALE_ID.test(id)) return undefined;
    const key = edge.principal(authorization);
    const version = cache.version;
    const fresh = key && sales.peekSale(cache, key.principal.merchantId, id);
    if (!key || !fresh || fresh.cached.value === null) return undefined;
    const { value: sale, etag } = fresh.cached;
    const until = now + Math.min(reuseMs, fresh.freshForMs, key.trustedForMs);
    return { url, authorization, principal: key.principal, sale, etag, version, until };
  };
  return (request) => {
    const url = request.url;
    if (request.method !== 'GET' || !url?.startsWith(SALE_PAGE_PREFIX)) return undefined;
    if (request.headers['content-length'] !== undefined || request.headers['transfer-encoding'] !== undefined) return undefined;
    const authorization = request.headers.authorization;
    const now = performance.now();
    let lookup = lastLookup;
    if (
      !lookup ||
      lookup.url !== url ||
      lookup.authorization !== authorization ||
      now >= lookup.until ||
      lookup.version !== cache.version
    ) {
      lookup = lookUp(url, authorization, now);
      if (!lookup) return undefined;
      lastLookup = lookup;
    } else cache.countHit();
    const { principal, sale, etag } = lookup;
    // Counted last, once the lane knows it can answer: a declined read is counted by the pipeline.
    const limits = edge.rateLimit(principal, request);
    if (!limits) return undefined;
    const answer = options.answer(request, principal, sale, etag);
    return limits === NO_RATE_LIMITS ? answer : { ...answer, headers: { ...limits, ...answer.headers } };
  };
}
