/**
 * The one configuration module: read from the environment once at start, validated with
 * messages that say what to fix, typed and frozen. Secrets are masked whenever the config
 * is printed. Call sites receive the parts they need explicitly; nothing else reads
 * process.env.
 */
import path from 'node:path';
import { maskUrl, redisUrl, replicaUrls } from './config-urls.js';
import { type Env, envReaders, secretsKeys, type TrustProxy, trustProxy } from './config-values.js';

export { maskUrl, parseRedisTarget, type RedisTarget } from './config-urls.js';
export type { TrustProxy } from './config-values.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** Absent means: start the embedded PostgreSQL under dataDir. */
  readonly databaseUrl: string | undefined;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly logLevel: LogLevel;
  readonly dbPoolMax: number;
  readonly dbStatementTimeoutMs: number;
  readonly bodyLimitBytes: number;
  readonly httpHeadersTimeoutMs: number;
  readonly httpRequestTimeoutMs: number;
  readonly apiKeyCacheTtlMs: number;
  /** Absent means single-node mode: shared state (cache, rate limits, waiting room) in process memory. */
  readonly redisUrl: string | undefined;
  readonly redisKeyPrefix: string;
  readonly cacheStaleMs: number;
  /** How long the sale page's fast lane serves one lookup of a key and a sale again; 0 looks up every read. */
  readonly saleReadReuseMs: number;
  /** 0 turns the limit off. */
  readonly rateLimitKeyPerSecond: number;
  /** 0 turns the limit off. */
  readonly rateLimitIpPerSecond: number;
  /** Per provider address, on the provider-webhook route; 0 turns it off. */
  readonly rateLimitProviderWebhookPerSecond: number;
  readonly rateLimitWindowSeconds: number;
  /** false, a number of proxy hops, or a comma-separated list of proxy addresses and CIDRs. */
  readonly trustProxy: TrustProxy;
  readonly shedEventLoopDelayMs: number;
  readonly shedInFlightMax: number;
  readonly idempotencyKeyTtlHours: number;
  readonly idempotencyLockTimeoutMs: number;
  /** Absent means: run the provider simulator in-process and point at it. */
  readonly providerUrl: string | undefined;
  readonly providerTimeoutMs: number;
  readonly providerBreakerThreshold: number;
  readonly providerBreakerWindow: number;
  readonly providerBreakerHalfOpenMs: number;
  readonly simulatorPort: number;
  /** Port of a standalone worker's metrics listener (0: any free port). */
  readonly workerMetricsPort: number;
  readonly simulatorLatencyMs: number;
  readonly simulatorErrorRate: number;
  readonly embeddedPostgresPort: number;
  /** As root: where the embedded PostgreSQL's binaries and data go when the postgres user cannot reach them. */
  readonly embeddedPostgresRelocateDir: string;
  /** Shared with the provider; signs its webhooks to us. Unset: `start` makes one up. */
  readonly providerWebhookSecret: string | undefined;
  /** Where a standalone simulator sends its webhooks. */
  readonly simulatorWebhookUrl: string | undefined;
  readonly workerConcurrency: number;
  readonly jobLockTimeoutMs: number;
  readonly jobPollIntervalMs: number;
  readonly reconcileBaseDelayMs: number;
  readonly reconcileMaxDelayMs: number;
  readonly reconcileMaxAttempts: number;
  readonly webhookTimeoutMs: number;
  readonly webhookRetryBaseMs: number;
  readonly webhookRetryMaxMs: number;
  /** After SIGTERM, how long /readyz fails before the server stops taking requests. */
  readonly shutdownDrainDelayMs: number;
  /** After SIGTERM, the most the in-flight requests and running jobs are waited for. */
  readonly shutdownTimeoutMs: number;
  readonly webhookMaxAttempts: number;
  readonly webhookAttemptRetentionDays: number;
  /** Lets webhook endpoints point at loopback and private addresses: local development and tests only. */
  readonly webhookAllowPrivate: boolean;
  /** Signs waiting-room admission tokens; every API node needs the same. Unset: `start` makes one up. */
  readonly admissionSecret: string | undefined;
  /** Keys that seal secrets at rest (webhook signing secrets), comma-separated, the first sealing. Unset: `start` uses a dev-only one. */
  readonly secretsKeys: string | undefined;
  readonly admissionTokenTtlSeconds: number;
  readonly admissionShoppingMaxSeconds: number;
  /** The most a buyer in a waiting room's line is told to wait between polls (it keeps its place that long plus the sale's grace). */
  readonly queuePollMaxSeconds: number;
  /** How long a node collects hold requests for one sale before allocating them together; 0: no wait. */
  readonly holdBatchWindowMs: number;
  /** The most hold requests allocated in one transaction. 1 turns batching off. */
  readonly holdBatchMax: number;
  /** false: a batch of holds commits without waiting for its WAL flush (the README's durability contract). */
  readonly holdSynchronousCommit: boolean;
  /** How long a node gathers unconfirmed PaymentIntent creations before writing them together; 0: the next turn of the event loop. */
  readonly intentBatchWindowMs: number;
  /** The most creations written in one statement. 1 turns coalescing off. */
  readonly intentBatchMax: number;
  /** The most orders written in one statement (gathered like creations, no window). 1 turns coalescing off. */
  readonly orderBatchMax: number;
  /** How long a node gathers confirms before starting (or completing) them together; 0: the next turn of the event loop. */
  readonly confirmBatchWindowMs: number;
  /** The most confirms started, or completed, in one batch. 1 turns coalescing off. */
  readonly confirmBatchMax: number;
  /** Streaming replicas that serve reports; empty: reports read from the primary. */
  readonly replicaUrls: readonly string[];
  /** A replica further behind than this is skipped, and the report reads from the primary. */
  readonly replicaMaxLagMs: number;
  /** An OTLP/HTTP collector; absent: no tracing. */
  readonly otelEndpoint: string | undefined;
  readonly otelServiceName: string;
  /** How long a dashboard sign-in lasts. */
  readonly dashboardSessionTtlSeconds: number;
  /** The address buyers reach this service at: the base of each sale's hosted_url. Unset: http://host:port. */
  readonly publicUrl: string | undefined;
  /** The provider as a buyer's browser reaches it (card tokenization). Unset: FLOODGATE_PROVIDER_URL or the in-process simulator. */
  readonly providerPublicUrl: string | undefined;
  /** Signs hosted-page session cookies; the same on every API node. Unset: derived from the admission secret. */
  readonly sessionSecret: string | undefined;
  readonly hostedSessionTtlSeconds: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

// Printable, no spaces or glob characters: the prefix also names pub/sub channels and SCAN patterns.
const REDIS_KEY_PREFIX = /^[A-Za-z0-9_.:{}-]{1,64}$/;

/** Parses and validates the environment; throws ConfigError listing every problem at once. */
export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const problems: string[] = [];
  const { int, fraction, bool, url, secret } = envReaders(env, problems);

  const redisKeyPrefix = env.FLOODGATE_REDIS_KEY_PREFIX || 'floodgate:';
  if (!REDIS_KEY_PREFIX.test(redisKeyPrefix)) {
    problems.push(`FLOODGATE_REDIS_KEY_PREFIX must be 1 to 64 letters, digits or _ . : { } -; got ${JSON.stringify(redisKeyPrefix)}`);
  }

  const logLevel = (env.FLOODGATE_LOG_LEVEL || 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    problems.push(`FLOODGATE_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}; got "${logLevel}"`);
  }

  const config: Config = {
    databaseUrl: url('DATABASE_URL', ['postgres:', 'postgresql:']),
    host: env.FLOODGATE_HOST || '127.0.0.1',
    port: int('FLOODGATE_PORT', 4000, 0, 65535),
    dataDir: path.resolve(env.FLOODGATE_DATA_DIR || '.floodgate'),
    logLevel,
    // PostgreSQL's default max_connections is 100; 20 per node leaves room for several nodes.
    dbPoolMax: int('FLOODGATE_DB_POOL_MAX', 20, 1, 500),
    // A payment request never needs more than a few seconds of SQL; a stuck query must not
    // hold a pooled connection forever.
    dbStatementTimeoutMs: int('FLOODGATE_DB_STATEMENT_TIMEOUT_MS', 10_000, 100, 600_000),
    // Payment bodies are small; 64 KiB leaves room for metadata and refuses abuse early.
    bodyLimitBytes: int('FLOODGATE_BODY_LIMIT_BYTES', 65_536, 1024, 10_485_760),
    // Headers are a few hundred bytes: ten seconds is generous even on a poor mobile link, and
    // short enough that a client sending them a byte at a time gains little.
    httpHeadersTimeoutMs: int('FLOODGATE_HTTP_HEADERS_TIMEOUT_MS', 10_000, 100, 300_000),
    // The whole request, body included: 64 KiB in 30 s is 2 KiB/s, slower than any real client.
    httpRequestTimeoutMs: int('FLOODGATE_HTTP_REQUEST_TIMEOUT_MS', 30_000, 100, 600_000),
    // How long a node may keep trusting a key it looked up: the bound on revocation delay.
    apiKeyCacheTtlMs: int('FLOODGATE_API_KEY_CACHE_TTL_MS', 5_000, 0, 300_000),
    redisUrl: redisUrl(env, problems),
    redisKeyPrefix,
    // The issue's bound on how stale public availability may be; also the lifetime of every
    // cached copy, so it bounds staleness even when an invalidation message is lost.
    cacheStaleMs: int('FLOODGATE_CACHE_STALE_MS', 1_000, 1, 300_000),
    // Never past a copy's freshness, the key cache's trust or an invalidation
    // (sales/sale-page-lane.ts): a longer one only makes a node look up less often.
    saleReadReuseMs: int('FLOODGATE_SALE_READ_REUSE_MS', 5, 0, 1_000),
    // Above what one node serves, so on one node capacity and shedding bind first; in a
    // cluster it stops one key (a buggy integration) from taking all nodes' capacity. A
    // publishable key carries every buyer of a sale, hence far more than one client needs.
    rateLimitKeyPerSecond: int('FLOODGATE_RATE_LIMIT_KEY_PER_SECOND', 10_000, 0, 1_000_000),
    // A buyer's page makes a few requests a second; 100 leaves room for dozens of buyers
    // behind one NAT (an office, a campus, a mobile carrier).
    rateLimitIpPerSecond: int('FLOODGATE_RATE_LIMIT_IP_PER_SECOND', 100, 0, 1_000_000),
    // A provider sends one webhook per payment event: at a surge's peak, hundreds a second from
    // a few addresses. Its own limit keeps a flood of forged webhooks (each costs an HMAC) in check.
    rateLimitProviderWebhookPerSecond: int('FLOODGATE_RATE_LIMIT_PROVIDER_WEBHOOK_PER_SECOND', 1_000, 0, 1_000_000),
    // One second: a client over its rate learns it at once and waits at most a second.
    rateLimitWindowSeconds: int('FLOODGATE_RATE_LIMIT_WINDOW_SECONDS', 1, 1, 3_600),
    trustProxy: trustProxy(env.FLOODGATE_TRUST_PROXY, problems),
    // Sustained mean delay of 100 ms means every callback waits a tenth of a second before it
    // runs: the node is saturated and a balancer should send new work elsewhere.
    shedEventLoopDelayMs: int('FLOODGATE_SHED_EVENT_LOOP_DELAY_MS', 100, 1, 60_000),
    // About half a second of queued work at the rate one node serves; a request arriving
    // behind more would wait longer than a retry on another node.
    shedInFlightMax: int('FLOODGATE_SHED_IN_FLIGHT_MAX', 1_000, 1, 1_000_000),
    // The idempotency draft asks for at least 24 hours.
    idempotencyKeyTtlHours: int('FLOODGATE_IDEMPOTENCY_KEY_TTL_HOURS', 24, 24, 24 * 30),
    // Longer than any request can run (provider timeout plus SQL), so a live request is never
    // taken over; after it, a retry resumes the work of a request whose process died.
    idempotencyLockTimeoutMs: int('FLOODGATE_IDEMPOTENCY_LOCK_TIMEOUT_MS', 60_000, 0, 3_600_000),
    providerUrl: url('FLOODGATE_PROVIDER_URL', ['http:', 'https:']),
    providerTimeoutMs: int('FLOODGATE_PROVIDER_TIMEOUT_MS', 10_000, 50, 120_000),
    providerBreakerThreshold: int('FLOODGATE_PROVIDER_BREAKER_THRESHOLD', 5, 1, 1000),
    providerBreakerWindow: int('FLOODGATE_PROVIDER_BREAKER_WINDOW', 20, 1, 1000),
    providerBreakerHalfOpenMs: int('FLOODGATE_PROVIDER_BREAKER_HALF_OPEN_MS', 10_000, 100, 600_000),
    simulatorPort: int('FLOODGATE_SIMULATOR_PORT', 4010, 0, 65535),
    // A worker serves no API, so Prometheus scrapes it on a port of its own (next to the API's 4000).
    workerMetricsPort: int('FLOODGATE_WORKER_METRICS_PORT', 4002, 0, 65535),
    simulatorLatencyMs: int('FLOODGATE_SIMULATOR_LATENCY_MS', 0, 0, 60_000),
    simulatorErrorRate: fraction('FLOODGATE_SIMULATOR_ERROR_RATE', 0),
    embeddedPostgresPort: int('FLOODGATE_EMBEDDED_PG_PORT', 5488, 1024, 65535),
    // Used only by root when the checkout sits where the postgres user cannot enter (root's home).
    embeddedPostgresRelocateDir: path.resolve(env.FLOODGATE_EMBEDDED_PG_RELOCATE_DIR || '/var/lib/floodgate'),
    providerWebhookSecret: secret('FLOODGATE_PROVIDER_WEBHOOK_SECRET'),
    simulatorWebhookUrl: url('FLOODGATE_SIMULATOR_WEBHOOK_URL', ['http:', 'https:']),
    // Webhook deliveries wait on the network, so a worker runs many at once: as many as it keeps
    // sockets per receiver host (16, src/webhooks/transport.ts), so no delivery to a busy host
    // waits for a socket with its timeout running, and fewer than the pool's connections (20),
    // so no job waits for one. The more run at once, the more share each round trip to
    // PostgreSQL (see bench/README.md, The worker).
    workerConcurrency: int('FLOODGATE_WORKER_CONCURRENCY', 16, 1, 1000),
    // A job locked longer than this belongs to a dead worker and is run again. It must exceed
    // the longest job (a 10 s webhook delivery) plus the time a job may wait in a worker's
    // local queue (30 s, or a quarter of this timeout when that is less).
    jobLockTimeoutMs: int('FLOODGATE_JOB_LOCK_TIMEOUT_MS', 120_000, 1_000, 14_400_000),
    // Polling only finds jobs scheduled for later; new jobs arrive by LISTEN/NOTIFY at once.
    jobPollIntervalMs: int('FLOODGATE_JOB_POLL_INTERVAL_MS', 1_000, 10, 60_000),
    // Reconciliation asks again after 2 s, 4 s, 8 s ... up to 5 min, for 20 rounds: an
    // unknown outcome is settled, or reported to an operator, within about 70 minutes.
    reconcileBaseDelayMs: int('FLOODGATE_RECONCILE_BASE_DELAY_MS', 2_000, 1, 3_600_000),
    reconcileMaxDelayMs: int('FLOODGATE_RECONCILE_MAX_DELAY_MS', 300_000, 1, 86_400_000),
    reconcileMaxAttempts: int('FLOODGATE_RECONCILE_MAX_ATTEMPTS', 20, 1, 1000),
    // The issue's 10 s: long enough for a receiver that does its work before answering,
    // short enough that a hung receiver holds a worker slot only briefly.
    webhookTimeoutMs: int('FLOODGATE_WEBHOOK_TIMEOUT_MS', 10_000, 50, 60_000),
    // Retries wait a random time up to base * 2^(n-1), capped at max; with 19 attempts the caps
    // sum to about three days (see src/webhooks/domain.ts and the README).
    webhookRetryBaseMs: int('FLOODGATE_WEBHOOK_RETRY_BASE_MS', 30_000, 1, 3_600_000),
    webhookRetryMaxMs: int('FLOODGATE_WEBHOOK_RETRY_MAX_MS', 8 * 3_600_000, 1, 24 * 3_600_000),
    webhookMaxAttempts: int('FLOODGATE_WEBHOOK_MAX_ATTEMPTS', 19, 1, 50),
    // A month of attempts answers "what happened to that delivery" long after its last retry
    // (three days at most); the delivery itself, with its last outcome, is kept.
    webhookAttemptRetentionDays: int('FLOODGATE_WEBHOOK_ATTEMPT_RETENTION_DAYS', 30, 1, 3_650),
    webhookAllowPrivate: bool('FLOODGATE_WEBHOOK_ALLOW_PRIVATE', false),
    admissionSecret: secret('FLOODGATE_ADMISSION_SECRET'),
    secretsKeys: secretsKeys(env.FLOODGATE_SECRETS_KEYS, problems),
    // Longer than a balancer takes to notice a failing /readyz (HAProxy as shipped: a check
    // every 1 s, down after 2 failures, each answered within 1 s), so no new request arrives
    // once the server stops accepting.
    shutdownDrainDelayMs: int('FLOODGATE_SHUTDOWN_DRAIN_DELAY_MS', 3_000, 0, 120_000),
    // Longer than any request can run (provider timeout plus SQL), and within Kubernetes'
    // default 30 s grace period together with the drain delay.
    shutdownTimeoutMs: int('FLOODGATE_SHUTDOWN_TIMEOUT_MS', 25_000, 1_000, 600_000),
    // Five minutes from admission to a hold: enough to pick items, short enough that a buyer
    // who walked away gives their slot back soon.
    admissionTokenTtlSeconds: int('FLOODGATE_ADMISSION_TOKEN_TTL_SECONDS', 300, 10, 3_600),
    // A buyer holding stock keeps their shopper slot until released, or this long at most:
    // longer than a hold plus its payment, so only a buyer who left without a release loses it.
    admissionShoppingMaxSeconds: int('FLOODGATE_ADMISSION_SHOPPING_MAX_SECONDS', 1_800, 60, 86_400),
    // A minute: a buyer far back in a long line polls a few times on the way to the front, not
    // every few seconds (6,000 in line poll ~100 times a second, not the ~600 of a poll every
    // 10 s), and still sees their place move, or a line that moves faster than estimated because
    // places ahead were given up. Each sale also bounds it by twice its grace period. Up to an
    // hour, the longest grace period.
    queuePollMaxSeconds: int('FLOODGATE_QUEUE_POLL_MAX_SECONDS', 60, 1, 3_600),
    // A few milliseconds: at a surge's rate that gathers tens of requests, and a buyer never
    // notices it. More than 50 would be a visible wait for one buyer alone.
    holdBatchWindowMs: int('FLOODGATE_HOLD_BATCH_WINDOW_MS', 2, 0, 50),
    // One statement per step for the whole batch: a few hundred rows stay well under a
    // millisecond each, and one refusal never costs the others.
    holdBatchMax: int('FLOODGATE_HOLD_BATCH_MAX', 200, 1, 1_000),
    // Holds are reservations: a crash may forget the last fraction of a second of them, never
    // an order or a payment (whose synchronous commit flushes the hold before it).
    holdSynchronousCommit: bool('FLOODGATE_HOLD_SYNCHRONOUS_COMMIT', false),
    // No wait by default: a creation alone goes on the next turn of the event loop, and under
    // load the creations that arrive while a batch commits form the next one, so one buyer
    // never pays a window and a surge still shares commits.
    intentBatchWindowMs: int('FLOODGATE_INTENT_BATCH_WINDOW_MS', 0, 0, 50),
    // Rows per statement: enough to absorb a node's whole pool of waiting requests.
    intentBatchMax: int('FLOODGATE_INTENT_BATCH_MAX', 100, 1, 1_000),
    orderBatchMax: int('FLOODGATE_ORDER_BATCH_MAX', 100, 1, 1_000),
    // As creations: no wait by default, the confirms that arrive while a batch commits form the next.
    confirmBatchWindowMs: int('FLOODGATE_CONFIRM_BATCH_WINDOW_MS', 0, 0, 50),
    // Rows per batch: enough to absorb a node's whole pool of waiting requests.
    confirmBatchMax: int('FLOODGATE_CONFIRM_BATCH_MAX', 100, 1, 1_000),
    replicaUrls: replicaUrls(env.FLOODGATE_REPLICA_URLS, problems),
    // Five seconds: a report a few seconds old answers every question a merchant asks after a
    // sale, and a replica that far behind is in trouble the primary should not wait on.
    replicaMaxLagMs: int('FLOODGATE_REPLICA_MAX_LAG_MS', 5_000, 0, 3_600_000),
    // The OpenTelemetry variables' standard names, so operators' existing settings apply.
    otelEndpoint: url('OTEL_EXPORTER_OTLP_ENDPOINT', ['http:', 'https:']),
    otelServiceName: env.OTEL_SERVICE_NAME || 'floodgate',
    // A working day: an operator signs in once per shift, and a stolen cookie dies by the evening.
    dashboardSessionTtlSeconds: int('FLOODGATE_DASHBOARD_SESSION_TTL_SECONDS', 12 * 3_600, 60, 7 * 86_400),
    publicUrl: url('FLOODGATE_PUBLIC_URL', ['http:', 'https:']),
    providerPublicUrl: url('FLOODGATE_PROVIDER_PUBLIC_URL', ['http:', 'https:']),
    sessionSecret: secret('FLOODGATE_SESSION_SECRET'),
    // Two hours: a long wait in line plus a hold and its payment; an idle buyer's session ends.
    hostedSessionTtlSeconds: int('FLOODGATE_HOSTED_SESSION_TTL_SECONDS', 7_200, 300, 86_400),
    ...overrides,
  };
  if (config.webhookRetryBaseMs > config.webhookRetryMaxMs) {
    problems.push('FLOODGATE_WEBHOOK_RETRY_BASE_MS must not exceed FLOODGATE_WEBHOOK_RETRY_MAX_MS');
  }
  if (config.httpHeadersTimeoutMs > config.httpRequestTimeoutMs) {
    // Node refuses it too: the headers are part of the request.
    problems.push('FLOODGATE_HTTP_HEADERS_TIMEOUT_MS must not exceed FLOODGATE_HTTP_REQUEST_TIMEOUT_MS');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

export function describeConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    databaseUrl: maskUrl(config.databaseUrl) ?? '(embedded)',
    providerUrl: maskUrl(config.providerUrl) ?? '(in-process simulator)',
    redisUrl: maskUrl(config.redisUrl) ?? '(single-node mode: shared state in process memory)',
    replicaUrls: config.replicaUrls.map((url) => maskUrl(url)),
    providerWebhookSecret: config.providerWebhookSecret ? '*****' : undefined,
    admissionSecret: config.admissionSecret ? '*****' : undefined,
    secretsKeys: config.secretsKeys ? '*****' : undefined,
    sessionSecret: config.sessionSecret ? '*****' : undefined,
  };
}
