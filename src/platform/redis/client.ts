/**
 * Redis connections for the state API nodes share: the cache's second level and its
 * invalidations, rate-limit counters, the waiting room. One command connection and one
 * subscriber connection per process, both under the configured key prefix, so several
 * deployments (or test runs) can share one Redis.
 *
 * Without REDIS_URL there is no Redis at all: every user of shared state has a memory
 * implementation with the same interface (single-node mode).
 */
import type { FastifyBaseLogger } from 'fastify';
import { Redis, type RedisOptions } from 'ioredis';
import { maskUrl } from '../../config.js';

export type { Redis } from 'ioredis';

type Log = Pick<FastifyBaseLogger, 'warn' | 'info'>;

// A Redis on the same network answers in well under a millisecond; a command that has not
// answered in half a second will not help the request waiting on it, and every user of Redis
// here has a fallback (load from the source, count in memory) that is better than waiting.
const REDIS_COMMAND_TIMEOUT_MS = 500;
// Long enough for a TLS handshake across a data centre, short enough that a process whose
// Redis is gone fails at start instead of hanging.
const REDIS_CONNECT_TIMEOUT_MS = 2_000;
// Reconnect forever, backing off to at most one attempt a second: Redis coming back must be
// noticed quickly, and a dead one must not be hammered by every node at once.
const REDIS_RECONNECT_DELAY_MAX_MS = 1_000;
// Connection errors repeat on every reconnect attempt; one warning per interval is enough.
const REDIS_ERROR_LOG_INTERVAL_MS = 10_000;

export interface RedisConnections {
  /** Commands. ioredis prefixes every key (including Lua script KEYS) with keyPrefix. */
  readonly client: Redis;
  readonly keyPrefix: string;
  /** Publishes on `keyPrefix + channel`: channel names are not keys, so ioredis leaves them alone. */
  publish(channel: string, message: string): Promise<void>;
  /**
   * Calls listener with every message on `keyPrefix + channel`, through the one subscriber
   * connection. Resolves once Redis has confirmed the subscription; the returned function
   * removes the listener (and unsubscribes when it was the channel's last).
   */
  subscribe(channel: string, listener: (message: string) => void): Promise<() => Promise<void>>;
  /** Rejects when Redis does not answer within the command timeout; for /readyz. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface RedisConnectOptions {
  url: string;
  keyPrefix: string;
  log: Log;
  /** For tests that need a shorter (or longer) bound. */
  commandTimeoutMs?: number;
}

/** Connects both connections; rejects when Redis does not answer within the connect timeout. */
export async function openRedis(options: RedisConnectOptions): Promise<RedisConnections> {
  const client = new Redis(options.url, {
    ...baseOptions(options),
    // With the offline queue on, a command issued while disconnected waits for the reconnect,
    // however long that takes, and requests pile up behind it. Off, it is rejected at once
    // and the caller uses its fallback.
    enableOfflineQueue: false,
    // A command already sent when the connection drops is retried once on the new connection,
    // then rejected: one retry covers a blip, more would hold the request.
    maxRetriesPerRequest: 1,
    commandTimeout: options.commandTimeoutMs ?? REDIS_COMMAND_TIMEOUT_MS,
  });
  // The subscriber is never on a request's path, so it may wait: SUBSCRIBE issued during an
  // outage is queued and sent on reconnect, and ioredis resubscribes every channel after one.
  const subscriber = new Redis(options.url, {
    ...baseOptions(options),
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
  });
  watchErrors(client, 'commands', options.log);
  watchErrors(subscriber, 'subscriber', options.log);
  try {
    await Promise.all([client.connect(), subscriber.connect()]);
  } catch (error) {
    client.disconnect();
    subscriber.disconnect();
    throw new Error(`Redis at ${maskUrl(options.url)} did not answer: ${(error as Error).message}`);
  }

  const listeners = new Map<string, Set<(message: string) => void>>();
  subscriber.on('message', (channel: string, message: string) => {
    for (const listener of listeners.get(channel) ?? []) listener(message);
  });

  return {
    client,
    keyPrefix: options.keyPrefix,
    async publish(channel, message) {
      await client.publish(options.keyPrefix + channel, message);
    },
    async subscribe(channel, listener) {
      const name = options.keyPrefix + channel;
      let set = listeners.get(name);
      if (!set) {
        set = new Set();
        listeners.set(name, set);
      }
      set.add(listener);
      if (set.size === 1) await subscriber.subscribe(name);
      return async () => {
        const current = listeners.get(name);
        if (!current?.delete(listener) || current.size > 0) return;
        listeners.delete(name);
        if (subscriber.status === 'ready') await subscriber.unsubscribe(name);
      };
    },
    async ping() {
      await client.ping();
    },
    async close() {
      listeners.clear();
      // The subscriber has nothing in flight worth waiting for.
      subscriber.disconnect();
      await quit(client);
    },
  };
}

function baseOptions(options: RedisConnectOptions): RedisOptions {
  return {
    keyPrefix: options.keyPrefix,
    lazyConnect: true,
    connectTimeout: REDIS_CONNECT_TIMEOUT_MS,
    // Jitter spreads the reconnects of many nodes after a Redis restart.
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 5), REDIS_RECONNECT_DELAY_MAX_MS) * (0.5 + Math.random() / 2),
    connectionName: 'floodgate',
  };
}

/** ioredis emits 'error' on every failed reconnect; without a listener Node prints each one. */
function watchErrors(redis: Redis, role: string, log: Log): void {
  let lastLoggedAt = 0;
  redis.on('error', (error: Error) => {
    const now = Date.now();
    if (now - lastLoggedAt < REDIS_ERROR_LOG_INTERVAL_MS) return;
    lastLoggedAt = now;
    log.warn({ err: error, role }, 'Redis connection error; retrying');
  });
  redis.on('ready', () => {
    if (lastLoggedAt > 0) log.info({ role }, 'Redis connection restored');
    lastLoggedAt = 0;
  });
}

/** QUIT lets commands in flight finish (within the command timeout); otherwise just drop it. */
async function quit(redis: Redis): Promise<void> {
  try {
    if (redis.status === 'ready') await redis.quit();
    else redis.disconnect();
  } catch {
    redis.disconnect();
  }
}

// What ioredis rejects a command with while Redis is unreachable (offline queue off, command
// timeout, connection lost with the command in flight).
const REDIS_UNAVAILABLE_MESSAGES = [
  "Stream isn't writeable and enableOfflineQueue options is false",
  'Command timed out',
  'Connection is closed.',
  'Reached the max retries per request limit',
];

/** Whether a Redis command failed because Redis is not reachable, not because of the command. */
export function isRedisUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === 'MaxRetriesPerRequestError') return true;
  const code = (error as { code?: unknown }).code;
  if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE') return true;
  return REDIS_UNAVAILABLE_MESSAGES.some((message) => error.message.startsWith(message));
}
