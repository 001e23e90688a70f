/**
 * What the HTTP edge knows about a request once it is authenticated, and the helpers that turn
 * it into the context a use case needs (merchant, idempotency key, fingerprint).
 */
import type { FastifyContextConfig, FastifyRequest } from 'fastify';
import { fingerprint, generatedKey, isValidKey } from '../idempotency/keys.js';
import { ApiError } from './errors.js';

export interface Principal {
  merchantId: string;
  keyId: string;
  keyKind: 'secret' | 'publishable';
}

/**
 * Which API keys a route accepts, set per route as `config: { auth: 'publishable' }`: secret
 * keys only (the default), or publishable keys as well, for calls from a buyer's browser.
 */
export type AuthScope = 'secret' | 'publishable';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    /** The matched route's config, once read: see routeConfig. */
    matchedRoute: MatchedRoute | null;
  }
  interface FastifyContextConfig {
    auth?: AuthScope;
    /**
     * `line`: the crowd's traffic (joining and polling a waiting room, reading a sale page),
     * shed before anything else when the node is saturated, so buyers already admitted (holds,
     * orders, payments) and merchants' servers keep their latency. See platform/http/shedding.ts.
     */
    shedding?: 'line';
  }
}

/** A route's config as Fastify keeps it: ours (auth, shedding) and its url; no url when no route matched. */
export type MatchedRoute = FastifyContextConfig & { url?: string };

/**
 * The config of the route the router matched, read once per request. Fastify's
 * `request.routeOptions` builds a new object of a dozen fields at every read, and the edge's
 * hooks (tracing, shedding, rate limits, authentication, metrics) read the route about ten
 * times per request; the config object itself is the route's own, the same for every request.
 */
export function routeConfig(request: FastifyRequest): MatchedRoute {
  let config = request.matchedRoute;
  if (!config) {
    config = request.routeOptions.config as MatchedRoute;
    request.matchedRoute = config;
  }
  return config;
}

export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new Error('route registered without authentication');
  return request.principal;
}

/** What a use case knows of the request it serves; the idempotency seam takes it as it is. */
export interface RequestContext {
  merchantId: string;
  /** Idempotency keys are scoped by it: see migrations/004_idempotency_scope.sql. */
  keyKind: Principal['keyKind'];
  idempotencyKey: string;
  method: string;
  path: string;
  fingerprint: Buffer;
}

/** Reads the Idempotency-Key header (or makes one up) and fingerprints the request. */
export function requestContext(request: FastifyRequest): RequestContext {
  const header = request.headers['idempotency-key'];
  if (Array.isArray(header)) throw new ApiError('idempotency_key_invalid', 'Send one Idempotency-Key header, not several.');
  if (header !== undefined && !isValidKey(header)) {
    throw new ApiError(
      'idempotency_key_invalid',
      'Idempotency-Key must be 1 to 255 printable ASCII characters without spaces; a UUID is a good choice.',
    );
  }
  const path = request.url.split('?')[0] as string;
  const principal = principalOf(request);
  return {
    merchantId: principal.merchantId,
    keyKind: principal.keyKind,
    idempotencyKey: header ?? generatedKey(),
    method: request.method,
    path,
    fingerprint: fingerprint(request.method, path, request.body),
  };
}
