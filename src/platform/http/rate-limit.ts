/**
 * Rate limits on /v1: per API key for authenticated requests; per client address for those
 * without a valid secret key (a buyer's browser with a publishable key, unauthenticated
 * requests, bad keys); the provider's webhooks per address under a limit of their own.
 * Counters live in Redis so every node enforces one limit (each node leasing shares of it:
 * window-limiter.ts), or in memory in single-node mode.
 * Allowed responses carry RateLimit-Limit, -Remaining and -Reset (IETF httpapi ratelimit
 * headers draft, the three-field form) for the tighter of the two limits; a refusal is 429
 * `rate_limited` with Retry-After as well.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { registeredCounter } from '../observability/registered.js';
import type { RedisConnections } from '../redis/client.js';
import { type Principal, routeConfig } from './context.js';
import { ApiError } from './errors.js';
import { type CallbackHook, callbackHook } from './hooks.js';
import { type RateDecision, WindowLimiter } from './window-limiter.js';

export type { RateDecision } from './window-limiter.js';

type Log = Pick<FastifyBaseLogger, 'warn'>;

// Falling back repeats on every request while Redis is down; one warning per interval.
const FALLBACK_LOG_INTERVAL_MS = 10_000;

export interface Limiter {
  readonly name: string;
  readonly points: number;
  /**
   * Takes one point for key: synchronously when this node can decide from its memory, else
   * once it has leased points from Redis. Never rejects: without Redis it counts in memory.
   */
  consume(key: string): RateDecision | Promise<RateDecision>;
  /** The decision this node can make now without Redis (taking the point when `take`), or undefined. */
  decideNow(key: string, take: boolean): RateDecision | undefined;
}

export interface LimiterOptions {
  /** Names the limit in Redis keys, logs and metrics: "ip", "key", or a capability's own. */
  name: string;
  points: number;
  windowSeconds: number;
  log: Log;
  registry: Registry;
  /** Absent: single-node mode, counted in this process. */
  redis?: RedisConnections;
}

/**
 * A fixed-window limiter of `points` per `windowSeconds`, the window starting at a key's first
 * request, shared by every node through Redis (window-limiter.ts). Exported so capabilities
 * can limit their own things (joins per buyer, say).
 */
export function createLimiter(options: LimiterOptions): Limiter {
  const fallbacks = registeredCounter(options.registry, {
    name: 'floodgate_rate_limit_fallbacks_total',
    help: 'Rate-limit decisions made without the shared store (counted in this process), by limit',
    labelNames: ['limit'] as const,
  });
  let warnedAt = Number.NEGATIVE_INFINITY;
  // Failing open, in one step: when Redis cannot answer, this process counts. Each node still
  // holds every client to the limit, only no longer summed across nodes. A rate limit protects
  // capacity; it must not turn a Redis outage into an outage of the payment API, and overload
  // is still caught by load shedding.
  const limiter = new WindowLimiter({
    name: options.name,
    points: options.points,
    windowSeconds: options.windowSeconds,
    redis: options.redis,
    fellBack(error) {
      fallbacks.inc({ limit: options.name });
      const now = performance.now();
      if (now - warnedAt < FALLBACK_LOG_INTERVAL_MS) return;
      warnedAt = now;
      options.log.warn(
        { limit: options.name, err: error },
        'rate limit store unavailable: counting in this process, so each node allows the full limit until it is back',
      );
    },
  });
  return {
    name: options.name,
    points: options.points,
    consume: (key) => limiter.consume(key),
    decideNow: (key, take) => limiter.decideNow(key, take),
  };
}

/** laneAdmit's answer when no limit applies: nothing to count, no headers to add. */
export const NO_RATE_LIMITS: Readonly<Record<string, string>> = Object.freeze({});

export function rateLimitHeaders(decision: RateDecision): Record<string, string> {
  return {
    'ratelimit-limit': String(decision.limit),
    'ratelimit-remaining': String(decision.remaining),
    'ratelimit-reset': String(decision.resetSeconds),
  };
}

/**
 * The bucket an address is counted in. An IPv6 client usually holds a whole /64 and could
 * rotate through it, so IPv6 counts per /64; IPv4 (also when mapped into IPv6) per address.
 */
export function clientBucket(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1] as string;
  if (isIP(ip) !== 6) return ip;
  const address = ip.toLowerCase().split('%')[0] as string;
  const [head = '', tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  // A dotted IPv4 tail stands for two groups.
  const width = (groups: string[]) => groups.reduce((sum, group) => sum + (group.includes('.') ? 2 : 1), 0);
  const missing = tail === undefined ? 0 : 8 - width(left) - width(right);
  const groups = [...left, ...Array<string>(missing).fill('0'), ...right];
  const prefix = groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, ''));
  return `${prefix.join(':')}::/64`;
}

export interface RateLimitOptions {
  /** Requests per window per API key; 0 is no limit. */
  keyPoints: number;
  /**
   * Requests per window per client address (IPv6: per /64) with a publishable key, a bad key or
   * none; 0 is no limit. Calls with a valid secret key are a merchant's servers, governed by the
   * key limit alone.
   */
  ipPoints: number;
  /** Routes under this path prefix (the provider's webhooks) count against a limit of their own per address. */
  providerWebhooks?: { pathPrefix: string; points: number };
  windowSeconds: number;
  log: Log;
  registry: Registry;
  redis?: RedisConnections;
  /** A raw request's client address, as Fastify's request.ip gives it (client-address.ts): for laneAdmit. */
  clientAddress(request: IncomingMessage): string;
}

export interface RateLimitHooks {
  /**
   * Before authentication: an unknown key costs a database lookup, so floods of them count too.
   * A request presenting a secret key is not counted here; it counts once its key turns out
   * invalid (`authenticationFailed`). A made-up key costs no database lookup (its checksum
   * fails), a well-formed unknown one an indexed lookup, and each then counts for its address.
   */
  byIp: CallbackHook;
  /** When authentication refuses the request, before the refusal is sent. */
  authenticationFailed(request: FastifyRequest, reply: FastifyReply): Promise<void>;
  /** After authentication, on request.principal. */
  byKey: CallbackHook;
  /**
   * For a fast lane answering a /v1 request itself: counts it as the hooks above would, and
   * gives the RateLimit-* headers to send, when every limit it meets can be decided in memory
   * and allows it. Undefined, with nothing counted, when the lane must leave the request to the
   * pipeline (a limit to lease from Redis, or a refusal for the pipeline to send).
   */
  laneAdmit(principal: Principal, request: IncomingMessage): Readonly<Record<string, string>> | undefined;
}

// What a secret key looks like before it is checked; see merchants/domain.ts.
const SECRET_KEY_BEARER = /^\s*Bearer\s+sk_/i;

/** The /v1 limits as onRequest hooks. */
export function createRateLimit(options: RateLimitOptions): RateLimitHooks {
  const make = (name: string, points: number) =>
    points > 0
      ? createLimiter({
          name,
          points,
          windowSeconds: options.windowSeconds,
          log: options.log,
          registry: options.registry,
          redis: options.redis,
        })
      : undefined;
  const ip = make('ip', options.ipPoints);
  const key = make('key', options.keyPoints);
  const webhooks = options.providerWebhooks;
  const providerWebhook = webhooks ? make('provider_webhook', webhooks.points) : undefined;
  // Requests that presented a secret key, whose address is counted only if the key fails.
  const deferred = new WeakSet<FastifyRequest>();
  const refused = registeredCounter(options.registry, {
    name: 'floodgate_rate_limited_total',
    help: 'Requests refused with 429, by limit',
    labelNames: ['limit'] as const,
  });
  // The decision with the fewest requests left so far, for each request: its headers describe
  // the limit the client will meet first (both limits count the same requests).
  const sent = new WeakMap<FastifyRequest, RateDecision>();

  const settle = (limiter: Limiter, result: RateDecision, request: FastifyRequest, reply: FastifyReply): void => {
    if (!result.allowed) {
      refused.inc({ limit: limiter.name });
      throw new ApiError(
        'rate_limited',
        `Too many requests for this ${limiter.name === 'key' ? 'API key' : 'address'}; retry later.`,
        undefined,
        {
          ...rateLimitHeaders(result),
          'retry-after': String(Math.max(1, result.resetSeconds)),
        },
      );
    }
    const previous = sent.get(request);
    if (previous && previous.remaining <= result.remaining) return;
    sent.set(request, result);
    reply.headers(rateLimitHeaders(result));
  };
  // Undefined when decided at once (most requests: this node holds leased points).
  const apply = (limiter: Limiter, subject: string, request: FastifyRequest, reply: FastifyReply): Promise<void> | undefined => {
    const result = limiter.consume(subject);
    if (result instanceof Promise) return result.then((decided) => settle(limiter, decided, request, reply));
    settle(limiter, result, request, reply);
    return undefined;
  };

  // Both hooks return at once, without a promise, when no limit applies (see hooks.ts).
  return {
    byIp: callbackHook((request, reply) => {
      const path = limitedPath(request);
      if (path === undefined) return undefined;
      // The address is worked out only for a limit that counts it.
      if (webhooks && path.startsWith(webhooks.pathPrefix)) {
        return providerWebhook ? apply(providerWebhook, clientBucket(request.ip), request, reply) : undefined;
      }
      if (!ip) return undefined;
      if (SECRET_KEY_BEARER.test(request.headers.authorization ?? '')) {
        deferred.add(request);
        return undefined;
      }
      return apply(ip, clientBucket(request.ip), request, reply);
    }),
    async authenticationFailed(request, reply) {
      if (ip && deferred.has(request)) await apply(ip, clientBucket(request.ip), request, reply);
    },
    laneAdmit(principal, request) {
      // The limits the pipeline would count: the address's for anything but a secret key, the key's.
      const checks: Array<[Limiter, string]> = [];
      if (ip && principal.keyKind !== 'secret') checks.push([ip, clientBucket(options.clientAddress(request))]);
      if (key) checks.push([key, principal.keyId]);
      if (checks.length === 0) return NO_RATE_LIMITS;
      // Nothing is taken unless every limit allows: a declined request is counted once, by the pipeline.
      for (const [limiter, subject] of checks) if (!limiter.decideNow(subject, false)?.allowed) return undefined;
      let tightest: RateDecision | undefined;
      for (const [limiter, subject] of checks) {
        const decision = limiter.decideNow(subject, true) as RateDecision;
        if (!tightest || decision.remaining < tightest.remaining) tightest = decision;
      }
      return rateLimitHeaders(tightest as RateDecision);
    },
    byKey: callbackHook((request, reply) => {
      const principal = request.principal;
      if (!principal || (!ip && !key) || limitedPath(request) === undefined) return undefined;
      // A secret-looking key that is in fact another kind is counted as what it is.
      const byAddress =
        ip && deferred.has(request) && principal.keyKind !== 'secret' ? apply(ip, clientBucket(request.ip), request, reply) : undefined;
      if (!key) return byAddress;
      return byAddress ? byAddress.then(() => apply(key, principal.keyId, request, reply)) : apply(key, principal.keyId, request, reply);
    }),
  };
}

/**
 * Only the API is limited: health checks and metrics scrapes must always answer. The router
 * decodes paths, so '/%761/holds' reaches a /v1 route: the matched route decides, the raw URL
 * only when nothing matched. The path that decided, or undefined when the request is not limited.
 */
function limitedPath(request: FastifyRequest): string | undefined {
  const path = routeConfig(request).url ?? request.url;
  return path.startsWith('/v1/') ? path : undefined;
}
