/**
 * A read-through cache for hot public data (sale pages and their availability) in two
 * levels: an LRU in each process, then Redis shared by every node. A change is announced
 * with invalidate(key): it deletes the Redis copy, then publishes the key so every node
 * drops its own copy.
 *
 * Staleness is bounded by time, not by messages: every copy, at either level, expires
 * staleMs after its value was read from the source. Pub/sub is fire-and-forget — a node that
 * is reconnecting, or a message published while its subscriber is down, misses the drop —
 * and a load that read the source just before a change may store its result just after the
 * invalidation. Either way the stale copy dies with its TTL, so no reader sees a value older
 * than staleMs. Invalidation only makes the usual case much fresher than the bound.
 *
 * In single-node mode the same interface runs on the LRU alone.
 */
import assert from 'node:assert/strict';
import type { FastifyBaseLogger } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { Registry } from 'prom-client';
import { sha256 } from '../crypto/sha256.js';
import { registeredCounter, Tally } from '../observability/registered.js';
import type { RedisConnections } from '../redis/client.js';

type Log = Pick<FastifyBaseLogger, 'warn'>;

/** Which level answered: this node's memory, Redis, or neither (the loader ran). */
export type CacheLevel = 'l1' | 'l2' | 'miss';

export interface Cached<T> {
  /** Parsed from `json` and deep-frozen: every caller on the node shares this object. */
  readonly value: T;
  /** The serialized value, ready to send as a response body. */
  readonly json: string;
  /** A strong ETag (quoted): a hash of `json`, the same on every node for the same value. */
  readonly etag: string;
  readonly level: CacheLevel;
}

export interface Cache<T> {
  readonly name: string;
  /** The bound on staleness, for Cache-Control. */
  readonly staleMs: number;
  /**
   * The cached value for key, or the loader's. The loader must return a JSON value (objects,
   * arrays, strings, numbers, booleans, null); what the caller gets back is that value after
   * a JSON round trip, the same from every level. Concurrent gets of a key this node does not
   * hold share one load. A loader that throws fails every get waiting on it, and nothing is
   * cached. A first-level hit comes back as it is, not as a promise, so that a read served
   * from this node's memory costs no turn of the event loop; await the result either way.
   */
  get(key: string, loader: () => Promise<T>): Cached<T> | Promise<Cached<T>>;
  /**
   * This node's copy of key, counted as a first-level hit, with how much longer it stays fresh;
   * undefined when there is none (nothing is loaded or counted). A caller that keeps the copy a
   * moment (the sale page's fast lane) keeps it no longer than that, and not once `version`
   * has moved.
   */
  peek(key: string): { cached: Cached<T>; freshForMs: number } | undefined;
  /** Counts a read answered from a copy that peek gave out, as the first-level hit it is. */
  countHit(): void;
  /**
   * Moves whenever this node's copies change (a new copy, or one dropped by an invalidation),
   * so a copy held outside the cache can tell that it may be out of date.
   */
  readonly version: number;
  /**
   * Drops key on every node; call it after the change has committed. Never rejects: if Redis
   * is unreachable the copies expire within staleMs anyway, and the failure is logged.
   */
  invalidate(key: string): Promise<void>;
  close(): Promise<void>;
}

export interface CacheOptions {
  /** Names the cache in Redis keys, channels and metrics; one per kind of value ("sales"). */
  name: string;
  staleMs: number;
  registry: Registry;
  log: Log;
  /** Absent: single-node mode, the LRU alone. */
  redis?: RedisConnections;
  entriesMax?: number;
  /** A monotonic clock in ms; tests pass one they step, to check the staleness bound exactly. */
  now?: () => number;
}

// A node's hot set in a surge is a handful of sales and their items; 10,000 entries leaves
// room for many merchants' catalogues while keeping the LRU's memory small.
const CACHE_ENTRIES_MAX = 10_000;
// With sale pages of a few KiB, 64 MiB of JSON is far beyond the hot set; it caps memory if
// someone caches something large.
const CACHE_JSON_CHARS_MAX = 64 * 1024 * 1024;
// Keys become Redis keys and pub/sub messages; ids and short composites are far shorter.
const CACHE_KEY_CHARS_MAX = 512;
// An unreachable Redis fails every get; one warning per interval says so without flooding.
const CACHE_ERROR_LOG_INTERVAL_MS = 10_000;

const NAME = /^[a-z][a-z0-9_]{0,62}$/;

export function createCache<T>(options: CacheOptions): Promise<Cache<T>> {
  return options.redis ? createRedisCache<T>({ ...options, redis: options.redis }) : Promise.resolve(createMemoryCache<T>(options));
}

/** The single-node cache: the first level alone. */
export function createMemoryCache<T>(options: Omit<CacheOptions, 'redis'>): Cache<T> {
  return new TwoLevelCache<T>(options, undefined);
}

/** The cluster cache; resolves once this node is subscribed to invalidations. */
export async function createRedisCache<T>(options: CacheOptions & { redis: RedisConnections }): Promise<Cache<T>> {
  const cache = new TwoLevelCache<T>(options, new RedisLevel(options.redis, options.name));
  await cache.listen(options.redis);
  return cache;
}

interface Entry {
  value: unknown;
  json: string;
  etag: string;
  /** What a first-level hit returns: made once with the entry, not once per hit. */
  l1: Cached<unknown>;
}

/** A load in progress; marked stale when its key is invalidated, so its result is not kept. */
interface Flight {
  stale: boolean;
  promise?: Promise<Cached<unknown>>;
}

interface SecondLevel {
  read(key: string): Promise<{ json: string; ttlMs: number } | undefined>;
  write(key: string, json: string, ttlMs: number): Promise<void>;
  /** Deletes the shared copy, then tells every node to drop its own. */
  remove(key: string): Promise<void>;
}

class TwoLevelCache<T> implements Cache<T> {
  readonly name: string;
  readonly staleMs: number;
  private readonly l1: LRUCache<string, Entry>;
  private readonly flights = new Map<string, Flight>();
  private readonly requests;
  private readonly warn: (error: unknown, message: string) => void;
  private readonly now: () => number;
  private unsubscribe: (() => Promise<void>) | undefined;
  private changes = 0;
  // First-level lookups happen on every read: tallied, and added to the counter when scraped.
  private readonly l1Hits: Tally<'cache' | 'level' | 'outcome'>;
  private readonly l1Misses: Tally<'cache' | 'level' | 'outcome'>;

  constructor(
    options: Omit<CacheOptions, 'redis'>,
    private readonly l2: SecondLevel | undefined,
  ) {
    assert.match(options.name, NAME, 'a cache name is lower-case letters, digits and _');
    assert.ok(Number.isInteger(options.staleMs) && options.staleMs >= 1, 'staleMs is a whole number of milliseconds, at least 1');
    this.name = options.name;
    this.staleMs = options.staleMs;
    this.now = options.now ?? (() => performance.now());
    this.l1 = new LRUCache<string, Entry>({
      max: options.entriesMax ?? CACHE_ENTRIES_MAX,
      maxSize: CACHE_JSON_CHARS_MAX,
      sizeCalculation: (entry) => Math.max(entry.json.length, 1),
      ttl: options.staleMs,
      // With an injected clock, read it on every check (the default caches it for 1 ms).
      ...(options.now ? { perf: { now: options.now }, ttlResolution: 0 } : {}),
    });
    this.requests = registeredCounter(options.registry, {
      name: 'floodgate_cache_requests_total',
      help: 'Cache lookups by cache, level (l1: this node, l2: Redis) and outcome (hit, miss, error)',
      labelNames: ['cache', 'level', 'outcome'] as const,
    });
    this.warn = throttledWarn(options.log, { cache: options.name });
    this.l1Hits = new Tally(this.requests, { cache: options.name, level: 'l1', outcome: 'hit' });
    this.l1Misses = new Tally(this.requests, { cache: options.name, level: 'l1', outcome: 'miss' });
  }

  async listen(redis: RedisConnections): Promise<void> {
    this.unsubscribe = await redis.subscribe(invalidationChannel(this.name), (key) => this.drop(key));
  }

  get(key: string, loader: () => Promise<T>): Cached<T> | Promise<Cached<T>> {
    // Checked without building the message on every get: a hit costs little more than this.
    if (key.length === 0 || key.length > CACHE_KEY_CHARS_MAX) {
      return Promise.reject(new assert.AssertionError({ message: `a cache key is 1 to ${CACHE_KEY_CHARS_MAX} characters` }));
    }
    return this.firstLevel(key) ?? this.load(key, loader);
  }

  peek(key: string): { cached: Cached<T>; freshForMs: number } | undefined {
    const cached = this.firstLevel(key);
    return cached && { cached, freshForMs: this.l1.getRemainingTTL(key) };
  }

  /** This node's copy of key, counted as a first-level hit, or undefined. */
  private firstLevel(key: string): Cached<T> | undefined {
    const hit = this.l1.get(key);
    if (!hit) return undefined;
    this.l1Hits.inc();
    return hit.l1 as Cached<T>;
  }

  countHit(): void {
    this.l1Hits.inc();
  }

  get version(): number {
    return this.changes;
  }

  private load(key: string, loader: () => Promise<T>): Promise<Cached<T>> {
    this.l1Misses.inc();
    const joined = this.flights.get(key)?.promise;
    if (joined) return joined as Promise<Cached<T>>;
    const flight: Flight = { stale: false };
    const promise = this.fill(key, loader, flight).finally(() => {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    });
    flight.promise = promise;
    this.flights.set(key, flight);
    return promise;
  }

  async invalidate(key: string): Promise<void> {
    // This node forgets at once, so a read after our own write never sees the old value.
    this.drop(key);
    if (!this.l2) return;
    try {
      await this.l2.remove(key);
    } catch (error) {
      this.warn(error, 'cache invalidation not delivered; other nodes keep their copies until staleMs passes');
    }
  }

  async close(): Promise<void> {
    await this.unsubscribe?.();
    this.l1.clear();
    this.l1Hits.close();
    this.l1Misses.close();
  }

  private drop(key: string): void {
    this.changes++;
    this.l1.delete(key);
    const flight = this.flights.get(key);
    if (flight) {
      // A load already running may have read the source before the change: let its callers
      // have it, but keep it nowhere, and let the next get load afresh.
      flight.stale = true;
      this.flights.delete(key);
    }
  }

  private keep(key: string, entry: Entry, ttlMs: number): void {
    this.changes++;
    this.l1.set(key, entry, { ttl: ttlMs });
  }

  private async fill(key: string, loader: () => Promise<T>, flight: Flight): Promise<Cached<T>> {
    const startedAt = this.now();
    if (this.l2) {
      try {
        const found = await this.l2.read(key);
        this.requests.inc({ cache: this.name, level: 'l2', outcome: found ? 'hit' : 'miss' });
        if (found) {
          const entry = toEntry(found.json);
          // The shared copy's remaining life, so the bound holds from the original load.
          if (!flight.stale) this.keep(key, entry, Math.min(found.ttlMs, this.staleMs));
          return { value: entry.value as T, json: entry.json, etag: entry.etag, level: 'l2' };
        }
      } catch (error) {
        this.requests.inc({ cache: this.name, level: 'l2', outcome: 'error' });
        this.warn(error, 'cache second level unavailable; loading from the source');
      }
    }
    const value = await loader();
    const json = JSON.stringify(value);
    assert.ok(typeof json === 'string', `cache ${this.name}: the loader returned something JSON cannot represent`);
    const entry = toEntry(json);
    // Counted from before the load, so the copy dies staleMs after the source could last
    // have been read, however long the load took.
    const ttlMs = Math.floor(this.staleMs - (this.now() - startedAt));
    if (ttlMs >= 1 && !flight.stale) {
      this.keep(key, entry, ttlMs);
      if (this.l2) {
        try {
          await this.l2.write(key, json, ttlMs);
        } catch (error) {
          this.warn(error, 'cache second level unavailable; value kept on this node only');
        }
      }
    }
    return { value: entry.value as T, json: entry.json, etag: entry.etag, level: 'miss' };
  }
}

class RedisLevel implements SecondLevel {
  constructor(
    private readonly redis: RedisConnections,
    private readonly name: string,
  ) {}

  async read(key: string) {
    const results = await this.redis.client.multi().get(this.key(key)).pttl(this.key(key)).exec();
    const [[getError, json] = [], [ttlError, ttlMs] = []] = results ?? [];
    if (getError) throw getError;
    if (ttlError) throw ttlError;
    if (typeof json !== 'string' || typeof ttlMs !== 'number' || ttlMs < 1) return undefined;
    return { json, ttlMs };
  }

  async write(key: string, json: string, ttlMs: number) {
    await this.redis.client.set(this.key(key), json, 'PX', ttlMs);
  }

  async remove(key: string) {
    // Delete first: a node that drops its copy on the message must not reload the old one.
    await this.redis.client.del(this.key(key));
    await this.redis.publish(invalidationChannel(this.name), key);
  }

  private key(key: string): string {
    return `cache:${this.name}:${key}`;
  }
}

export function invalidationChannel(name: string): string {
  return `cache:${name}:invalidate`;
}

function toEntry(json: string): Entry {
  const etag = `"${sha256(json, 'base64url')}"`;
  const value = deepFreeze(JSON.parse(json));
  return { value, json, etag, l1: Object.freeze({ value, json, etag, level: 'l1' as const }) };
}

function deepFreeze<V>(value: V): V {
  if (value !== null && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

function throttledWarn(log: Log, context: Record<string, unknown>) {
  let lastAt = Number.NEGATIVE_INFINITY;
  return (error: unknown, message: string) => {
    const now = performance.now();
    if (now - lastAt < CACHE_ERROR_LOG_INTERVAL_MS) return;
    lastAt = now;
    log.warn({ ...context, err: error }, message);
  };
}
