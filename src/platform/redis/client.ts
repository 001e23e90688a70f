/**
 * Redis connections for the state API nodes share: the cache's second level and its
 * invalidations, rate-limit counters, the waiting room. One command connection and one
 * subscriber connection per process, both under the configured key prefix, so several
 * deployments (or test runs) can share one Redis.
 *
 * REDIS_URL may name a Redis Cluster (`redis+cluster://host:port,host:port`): the same two
 * connections are then ioredis cluster clients. Every multi-key script and MULTI here keeps its
 * keys in one hash slot (the waiting room's keys share the tag `{saleId}`; the cache and rate
 * limits touch one key at a time), and pub/sub messages reach every node of a cluster.
 *
 * Without REDIS_URL there is no Redis at all: every user of shared state has a memory
 * implementation with the same interface (single-node mode).
 */
import type { FastifyBaseLogger } from 'fastify';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { maskUrl, parseRedisTarget, type RedisTarget } from '../../config.js';

export type { Cluster, Redis } from 'ioredis';

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
  readonly client: Redis | Cluster;
  readonly keyPrefix: string;
  /** 'cluster' when REDIS_URL names a Redis Cluster. */
  readonly mode: 'single' | 'cluster';
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
  const target = parseRedisTarget(options.url);
  const client = connection(target, options, {
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
  const subscriber = connection(target, options, {
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
    mode: target.kind,
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
        // Best effort: a subscriber that lost its node resubscribes nothing once disconnected.
        if (subscriber.status === 'ready') await subscriber.unsubscribe(name).catch(() => {});
      };
    },
    async ping() {
      // A cluster client answers PING from any node; it is ready only with every slot mapped.
      if (client.status !== 'ready') throw new Error(`Redis connection is ${client.status}`);
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

type PerConnection = Pick<RedisOptions, 'enableOfflineQueue' | 'maxRetriesPerRequest' | 'commandTimeout'>;

// A cluster client refreshes its slot map after a MOVED or a failover; a master that died is
// replaced within seconds (cluster-node-timeout plus the election), and retrying a command for
// a dead master's slots longer than the command timeout would only hold the request.
const CLUSTER_SLOTS_REFRESH_TIMEOUT_MS = 1_000;
const CLUSTER_RETRY_DELAY_MS = 100;

/** One connection to a single server, or a cluster client over the seed nodes. */
function connection(target: RedisTarget, options: RedisConnectOptions, own: PerConnection): Redis | Cluster {
  if (target.kind === 'single') return new Redis(target.url, { ...baseOptions(options), ...own });
  const { keyPrefix, lazyConnect, retryStrategy, ...perNode } = baseOptions(options);
  const clusterOptions: ClusterOptions = {
    keyPrefix,
    lazyConnect,
    enableOfflineQueue: own.enableOfflineQueue,
    clusterRetryStrategy: retryStrategy,
    retryDelayOnFailover: CLUSTER_RETRY_DELAY_MS,
    retryDelayOnClusterDown: CLUSTER_RETRY_DELAY_MS,
    retryDelayOnTryAgain: CLUSTER_RETRY_DELAY_MS,
    slotsRefreshTimeout: CLUSTER_SLOTS_REFRESH_TIMEOUT_MS,
    redisOptions: {
      ...perNode,
      maxRetriesPerRequest: own.maxRetriesPerRequest,
      commandTimeout: own.commandTimeout,
      username: target.username,
      password: target.password,
      ...(target.tls ? { tls: {} } : {}),
    },
  };
  return new Cluster(target.nodes, clusterOptions);
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
function watchErrors(redis: Redis | Cluster, role: string, log: Log): void {
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

// QUIT waits for the replies of commands in flight; a cluster with a dead master may never
// send them. Closing must not hang on it.
const REDIS_QUIT_TIMEOUT_MS = 1_000;

/** QUIT lets commands in flight finish (within the command timeout); otherwise just drop it. */
async function quit(redis: Redis | Cluster): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    if (redis.status !== 'ready') return redis.disconnect();
    await Promise.race([
      redis.quit(),
      new Promise((resolve) => {
        timer = setTimeout(resolve, REDIS_QUIT_TIMEOUT_MS);
      }),
    ]);
  } catch {
    // Dropped below.
  } finally {
    clearTimeout(timer);
    redis.disconnect();
  }
}

// What ioredis rejects a command with while Redis, or the master of a Redis Cluster slot, is
// unreachable: offline queue off, command timeout, connection lost with the command in flight,
// and a cluster whose slot is not served or whose map cannot be refreshed.
const REDIS_UNAVAILABLE_MESSAGES = [
  "Stream isn't writeable and enableOfflineQueue options is false",
  'Command timed out',
  'Connection is closed.',
  'Reached the max retries per request limit',
  'CLUSTERDOWN',
  "Cluster isn't ready",
  'Too many Cluster redirections',
  'Failed to refresh slots cache',
  'None of startup nodes is available',
  'TRYAGAIN',
];

/** Whether a Redis command failed because Redis is not reachable, not because of the command. */
export function isRedisUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === 'MaxRetriesPerRequestError' || error.name === 'ClusterAllFailedError') return true;
  const code = (error as { code?: unknown }).code;
  if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE') return true;
  return REDIS_UNAVAILABLE_MESSAGES.some((message) => error.message.startsWith(message));
}
