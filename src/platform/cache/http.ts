/**
 * Sending a cached public read: a strong ETag, `If-None-Match` answered with 304, and
 * `Cache-Control: public` so a CDN or browser may keep it as long as our own staleness bound.
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { LaneAnswer } from '../http/fast-lane.js';

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
  reply.headers(validators(cached.etag, policy));
  if (ifNoneMatchMatches(request.headers['if-none-match'], cached.etag)) return reply.code(304).send();
  return reply.type(JSON_TYPE).send(cached.json);
}

/**
 * The same answer as sendCached, for a fast lane (platform/http/fast-lane.ts) to write. Both of
 * a cached copy's answers (200 and 304) are made once per policy and then shared by every read
 * of that copy: a lane's answer is never changed after it is made.
 */
export function cachedAnswer(
  request: IncomingMessage,
  route: string,
  cached: { json: Buffer; etag: string },
  policy: CachePolicy,
): LaneAnswer {
  let byPolicy = laneAnswers.get(cached);
  if (!byPolicy) {
    byPolicy = new Map();
    laneAnswers.set(cached, byPolicy);
  }
  let answers = byPolicy.get(policy);
  if (!answers || answers.ok.route !== route) {
    const headers = validators(cached.etag, policy);
    answers = {
      ok: {
        route,
        status: 200,
        headers: { ...headers, 'content-type': JSON_TYPE, 'content-length': String(cached.json.length) },
        body: cached.json.toString(),
      },
      notModified: { route, status: 304, headers },
    };
    byPolicy.set(policy, answers);
  }
  return ifNoneMatchMatches(request.headers['if-none-match'], cached.etag) ? answers.notModified : answers.ok;
}

const laneAnswers = new WeakMap<object, Map<CachePolicy, { ok: LaneAnswer; notModified: LaneAnswer }>>();

const JSON_TYPE = 'application/json; charset=utf-8';

function validators(etag: string, policy: CachePolicy): Record<string, string> {
  const headers: Record<string, string> = { etag, 'cache-control': policy.cacheControl };
  if (policy.vary !== undefined) headers.vary = policy.vary;
  return headers;
}
