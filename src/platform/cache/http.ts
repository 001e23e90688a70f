/**
 * Sending a cached public read: a strong ETag, `If-None-Match` answered with 304, and
 * `Cache-Control: public` so a CDN or browser may keep it as long as our own staleness bound.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * max-age for a value that may already be up to staleMs old. Whole seconds, rounded down: a
 * CDN holding it adds at most this much to our own bound. Under a second means 0 — shared
 * caches may still store it but must revalidate, which the ETag makes cheap.
 */
export function maxAgeSeconds(staleMs: number): number {
  return Math.max(0, Math.floor(staleMs / 1000));
}

/**
 * RFC 9110 §13.1.2: `*` matches any current value, otherwise any listed tag matches by weak
 * comparison (W/ ignored on both sides).
 */
export function ifNoneMatchMatches(header: string | string[] | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const value = Array.isArray(header) ? header.join(',') : header;
  if (value.trim() === '*') return true;
  const opaque = (tag: string) => tag.trim().replace(/^W\//, '');
  const ours = opaque(etag);
  return value.split(',').some((tag) => opaque(tag) === ours);
}

/** The caching headers of one kind of cached read, worked out once, not at every answer. */
export interface CachePolicy {
  readonly cacheControl: string;
  readonly vary: string | undefined;
}

export function cachePolicy(options: {
  staleMs: number;
  /** May a shared cache (a CDN) keep it? Default yes; no makes it `private` (the browser only). */
  shared?: boolean;
  /** Request headers the answer depends on, for `Vary`: a shared cache keys its copies by them. */
  vary?: string[];
}): CachePolicy {
  const scope = options.shared === false ? 'private' : 'public';
  return {
    cacheControl: `${scope}, max-age=${maxAgeSeconds(options.staleMs)}`,
    vary: options.vary?.length ? options.vary.join(', ') : undefined,
  };
}

/**
 * Sends `cached.json` as the body (no second serialization), or 304 when the client already
 * holds this version. Works with any `{ json, etag }`, such as a Cache's get result; `json` may
 * be the bytes already encoded, which spares encoding them again on every send.
 */
export function sendCached(
  request: FastifyRequest,
  reply: FastifyReply,
  cached: { json: string | Buffer; etag: string },
  policy: CachePolicy,
): FastifyReply {
  // A 304 carries the same validators and caching rules the 200 would have.
  reply.header('etag', cached.etag).header('cache-control', policy.cacheControl);
  if (policy.vary !== undefined) reply.header('vary', policy.vary);
  if (ifNoneMatchMatches(request.headers['if-none-match'], cached.etag)) return reply.code(304).send();
  return reply.type('application/json; charset=utf-8').send(cached.json);
}
