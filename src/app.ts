/**
 * Builds the HTTP app from its dependencies. No listen here: processes call listen, tests use
 * app.inject().
 */
import { createHmac, randomBytes } from 'node:crypto';
import path from 'node:path';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { registerQueueRoutes } from './admission/routes.js';
import { createWaitingRoom, type WaitingRoom } from './admission/service.js';
import type { Config } from './config.js';
import { registerDashboard } from './dashboard/routes.js';
import { registerEventRoutes } from './events/routes.js';
import { RedisSessionStore } from './hosted/redis-sessions.js';
import { registerHostedRoutes } from './hosted/routes.js';
import { createHostedSaleReader } from './hosted/service.js';
import type { SessionStore } from './hosted/sessions.js';
import { PostgresSessionStore } from './hosted/sql.js';
import { registerLedgerRoutes } from './ledger/routes.js';
import { type Authentication, createAuthenticator } from './merchants/service.js';
import { AttemptsInFlight } from './payments/attempts-in-flight.js';
import { IntentCreationBatcher } from './payments/create-batches.js';
import { registerProviderWebhookRoutes, requestWaitMs } from './payments/provider-webhooks.js';
import { createRefund, listRefunds } from './payments/refunds.js';
import { completionReply, registerPaymentRoutes } from './payments/routes.js';
import { ConfirmBatcher } from './payments/service.js';
import { createCache } from './platform/cache/cache.js';
import { sealerFor } from './platform/crypto/sealed.js';
import type { Pool } from './platform/db/pool.js';
import { createReadRouter, type ReadRouter } from './platform/db/replicas.js';
import { clientAddress, trustFunction } from './platform/http/client-address.js';
import { type MatchedRoute, routeConfig } from './platform/http/context.js';
import { ApiError } from './platform/http/errors.js';
import type { FastLane } from './platform/http/fast-lane.js';
import { callbackHook } from './platform/http/hooks.js';
import { createRateLimit } from './platform/http/rate-limit.js';
import { checkReadiness, type ReadinessCheck } from './platform/http/readiness.js';
import { createHttpServer, type HttpServer } from './platform/http/server.js';
import { createShedder, type Shedder } from './platform/http/shedding.js';
import { loadStaticAssets, type StaticAsset } from './platform/http/static-assets.js';
import { createMetrics, type Metrics } from './platform/observability/metrics.js';
import type { RedisConnections } from './platform/redis/client.js';
import type { PaymentProvider } from './providers/provider.js';
import { registerReportRoutes } from './reporting/routes.js';
import { HoldBatcher } from './sales/hold-batches.js';
import { convertPaidHold, convertPaidHolds } from './sales/holds.js';
import { OrderCreationBatcher } from './sales/order-batches.js';
import { registerSalesRoutes } from './sales/routes.js';
import { createSaleLookup, type SaleCache, toApiHold, toApiOrder } from './sales/service.js';
import { VERSION } from './version.js';
import { registerWebhookRoutes } from './webhooks/routes.js';

export interface AppDeps {
  config: Config;
  pool: Pool;
  provider: PaymentProvider;
  logger?: FastifyBaseLogger | false;
  metrics?: Metrics;
  /** Absent: single-node mode, shared state (cache, rate limits) in this process's memory. */
  redis?: RedisConnections;
  /** Checked by /readyz besides the database (and Redis, when given). */
  readinessChecks?: ReadinessCheck[];
  /** Tests pass one with their own delay source and step it; otherwise made from config. */
  shedder?: Shedder;
  /**
   * The waiting room; a process that also runs the worker passes the one it gives the worker
   * (in single-node mode the line lives in memory, and the worker frees slots in it).
   */
  waitingRoom?: WaitingRoom;
  /** Where reports read; absent: made from config.replicaUrls (and closed with the app). */
  reads?: ReadRouter;
  /** The provider as buyers' browsers reach it (the in-process simulator's URL under `start`). */
  providerPublicUrl?: string;
  /** Where hosted-page sessions live; default: Redis when given, else PostgreSQL. */
  sessions?: SessionStore;
}

const WEB_DIR = path.resolve(import.meta.dirname, '..', 'web');
const HOSTED_ASSET_FILES = ['hosted.js', 'hosted.css', 'icon.svg'];

/** What a buyer is told when their admission token does not admit them. */
const ADMISSION_REFUSALS = {
  invalid: 'the admission token is not one we issued',
  expired: 'the admission token has expired; join the queue again',
  replayed: 'the admission token was already used',
  wrong_buyer: 'the admission token belongs to another buyer_reference',
  wrong_sale: 'the admission token is for another sale',
} as const;

// Provider webhooks authenticate by signature and have a rate limit of their own.
const PROVIDER_PATH_PREFIX = '/v1/providers/';

// A readiness probe must answer well within a balancer's check interval (HAProxy: 2 s).
const READINESS_TIMEOUT_MS = 1_000;

export async function buildApp(deps: AppDeps): Promise<HttpServer> {
  const metrics = deps.metrics ?? createMetrics({ defaultMetrics: false });
  // Reads answered from this node's memory before Fastify (platform/http/fast-lane.ts): only
  // while the node would not shed them, which a lane cannot do (the gate is set below); a lane
  // counts rate limits itself (rate-limit.ts laneAdmit).
  const fastLanes: FastLane[] = [];
  let fastLanesOpen = () => false;
  const app = await createHttpServer({
    fastLanes: { lanes: fastLanes, open: () => fastLanesOpen() },
    logger: deps.logger ?? false,
    bodyLimitBytes: deps.config.bodyLimitBytes,
    headersTimeoutMs: deps.config.httpHeadersTimeoutMs,
    requestTimeoutMs: deps.config.httpRequestTimeoutMs,
    metrics,
    version: VERSION,
    trustProxy: deps.config.trustProxy,
  });
  const authenticate = createAuthenticator(deps.pool, deps.config.apiKeyCacheTtlMs);

  // Shedding first: a refused request must cost nothing, not even an API key lookup.
  const shedder =
    deps.shedder ??
    createShedder({
      eventLoopDelayMaxMs: deps.config.shedEventLoopDelayMs,
      inFlightMax: deps.config.shedInFlightMax,
      registry: metrics.registry,
    });
  if (!deps.shedder) {
    // Sampling starts when the app is ready to serve, not while the process is still starting.
    app.addHook('onReady', async () => shedder.start());
    app.addHook('onClose', async () => shedder.stop());
  }
  app.addHook('onRequest', shedder.onRequest);
  app.addHook('preValidation', shedder.onBodyRead);
  const rateLimit = createRateLimit({
    keyPoints: deps.config.rateLimitKeyPerSecond * deps.config.rateLimitWindowSeconds,
    ipPoints: deps.config.rateLimitIpPerSecond * deps.config.rateLimitWindowSeconds,
    windowSeconds: deps.config.rateLimitWindowSeconds,
    providerWebhooks: {
      pathPrefix: PROVIDER_PATH_PREFIX,
      points: deps.config.rateLimitProviderWebhookPerSecond * deps.config.rateLimitWindowSeconds,
    },
    log: app.log,
    registry: metrics.registry,
    redis: deps.redis,
    clientAddress: clientAddress(trustFunction(deps.config.trustProxy)),
  });
  app.addHook('onRequest', rateLimit.byIp);
  fastLanesOpen = () => !shedder.wouldShed('line');

  // A request with a cached key is admitted without a promise (see platform/http/hooks.ts).
  const admit = (request: FastifyRequest, reply: FastifyReply, route: MatchedRoute, result: Authentication) => {
    if (result.kind !== 'authenticated') return refuseAuthentication(request, reply, result.kind);
    // A route opens itself to publishable keys explicitly (config.auth); every other route
    // needs a secret key.
    if (result.principal.keyKind !== 'secret' && route.auth !== 'publishable') {
      throw new ApiError('secret_key_required', 'This endpoint needs a secret key (sk_test_...), not a publishable one.');
    }
    request.principal = result.principal;
    request.log = request.log.child({ merchant_id: result.principal.merchantId });
    return undefined;
  };
  const refuseAuthentication = async (request: FastifyRequest, reply: FastifyReply, kind: 'missing' | 'invalid') => {
    await rateLimit.authenticationFailed(request, reply);
    if (kind === 'missing') throw new ApiError('api_key_missing', 'No API key provided. Send Authorization: Bearer sk_test_...');
    throw new ApiError('api_key_invalid', 'The API key is invalid, unknown or revoked.');
  };
  app.addHook(
    'onRequest',
    callbackHook((request, reply) => {
      // Decide by the route the router matched, not the raw URL: the router decodes the path, so
      // '/%761/payment_intents' reaches the '/v1/payment_intents' route without starting with '/v1/'.
      // Provider webhooks authenticate by signature, in their own route.
      const route = routeConfig(request);
      const path = route.url ?? request.url;
      if (!path.startsWith('/v1/') || path.startsWith(PROVIDER_PATH_PREFIX)) return undefined;
      const result = authenticate(request.headers.authorization);
      return result instanceof Promise ? result.then((found) => admit(request, reply, route, found)) : admit(request, reply, route, result);
    }),
  );
  app.addHook('onRequest', rateLimit.byKey);

  const redis = deps.redis;
  const readinessChecks: ReadinessCheck[] = [
    { name: 'database', check: () => deps.pool.query('select 1') },
    ...(deps.readinessChecks ?? []),
  ];
  // Redis is shared by every node: were it a readiness check, its outage would take every node
  // out of the balancer at once, though payments do not need it. It is reported, not required.
  const degradationChecks: ReadinessCheck[] = redis ? [{ name: 'redis', check: () => redis.ping() }] : [];

  app.get('/livez', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
    const [readiness, degradation] = await Promise.all([
      checkReadiness(readinessChecks, READINESS_TIMEOUT_MS),
      checkReadiness(degradationChecks, READINESS_TIMEOUT_MS),
    ]);
    if (!readiness.ready) return reply.code(503).send({ status: 'unavailable', reason: readiness.reason });
    if (!degradation.ready) return { status: 'ready', degraded: degradation.reason };
    return { status: 'ready' };
  });
  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );

  const confirmBatcher =
    deps.config.confirmBatchMax > 1
      ? new ConfirmBatcher({
          pool: deps.pool,
          ttlHours: deps.config.idempotencyKeyTtlHours,
          windowMs: deps.config.confirmBatchWindowMs,
          batchMax: deps.config.confirmBatchMax,
          // One batch of a phase at a time: the next gathers every confirm that arrives while it
          // runs. Two could commit at once (they lock different intents), but in a surge the
          // cores are what runs out, and half-size batches cost each checkout more CPU (about
          // 15% more in all, bench/README.md, the thirteenth session).
          maxRunning: 1,
          present: completionReply,
          // convertPaidHold for a batch of payments, in the batch's completion transaction.
          onPaymentsSucceeded: convertPaidHolds,
          onBatch: (phase, size) => metrics.confirmBatchSize.observe({ phase }, size),
        })
      : undefined;
  const inFlight = new AttemptsInFlight();
  const paymentDeps = {
    pool: deps.pool,
    provider: deps.provider,
    inFlight,
    // Payments completed by this node (the confirm call, provider webhooks) mark their orders
    // paid in the completion command's transaction.
    onPaymentSucceeded: convertPaidHold,
    idempotency: { ttlHours: deps.config.idempotencyKeyTtlHours, lockTimeoutMs: deps.config.idempotencyLockTimeoutMs },
    intentBatcher:
      deps.config.intentBatchMax > 1
        ? new IntentCreationBatcher({
            pool: deps.pool,
            ttlHours: deps.config.idempotencyKeyTtlHours,
            windowMs: deps.config.intentBatchWindowMs,
            batchMax: deps.config.intentBatchMax,
            // Creations do not contend for rows: two batches may commit at once, so one
            // batch's WAL flush never idles the node's other waiting creations.
            maxRunning: 2,
            onBatch: (size: number) => metrics.intentBatchSize.observe(size),
          })
        : undefined,
    confirmBatcher,
  };
  registerPaymentRoutes(app, paymentDeps);
  // Payments as other capabilities call them in-process (refunds, orders that confirm, the
  // hosted page), with answers as the API sends them.
  const answeringPayments = { ...paymentDeps, present: completionReply };
  registerEventRoutes(app, deps.pool);
  registerLedgerRoutes(app, deps.pool);
  registerProviderWebhookRoutes(app, {
    pool: deps.pool,
    secret: deps.config.providerWebhookSecret,
    onPaymentSucceeded: paymentDeps.onPaymentSucceeded,
    inFlight,
    requestWaitMs: requestWaitMs(deps.config.providerTimeoutMs),
  });
  registerWebhookRoutes(app, {
    pool: deps.pool,
    idempotency: paymentDeps.idempotency,
    allowPrivate: deps.config.webhookAllowPrivate,
    sealer: sealerFor(deps.config.secretsKeys),
  });

  // Reports read from a replica within the configured lag, else from the primary. Every other
  // read stays on the primary: it may follow the caller's own write.
  let reads = deps.reads;
  if (!reads) {
    const ownReads = createReadRouter({
      primary: deps.pool,
      replicaUrls: deps.config.replicaUrls,
      maxLagMs: deps.config.replicaMaxLagMs,
      poolMax: deps.config.dbPoolMax,
      statementTimeoutMs: deps.config.dbStatementTimeoutMs,
      registry: metrics.registry,
    });
    app.addHook('onClose', async () => ownReads.close());
    reads = ownReads;
  }
  registerReportRoutes(app, reads);

  // The operator dashboard: sessions in Redis when there is one, else in PostgreSQL.
  await registerDashboard(app, {
    pool: deps.pool,
    refunds: {
      create: (ctx, params) => createRefund(answeringPayments, ctx, params),
      list: (merchantId, paymentIntentId, limit) => listRefunds(deps.pool, { merchantId, paymentIntentId, limit }),
    },
    webhooks: { pool: deps.pool, idempotency: paymentDeps.idempotency, sealer: sealerFor(deps.config.secretsKeys) },
    metrics,
    redis: deps.redis,
    sessionTtlSeconds: deps.config.dashboardSessionTtlSeconds,
  });

  // The surge path: the waiting room admits buyers, who then hold stock and order.
  const room = deps.waitingRoom ?? appWaitingRoom(deps.config, deps.redis, metrics);
  const saleCache: SaleCache = await createCache({
    name: 'sales',
    staleMs: deps.config.cacheStaleMs,
    registry: metrics.registry,
    log: app.log,
    redis: deps.redis,
  });
  app.addHook('onClose', async () => saleCache.close());
  const salesDeps = {
    pool: deps.pool,
    idempotency: paymentDeps.idempotency,
    payments: answeringPayments,
    checkAdmission: (token: string, saleId: string, buyerReference: string) => {
      const result = room.checkAdmission(token, saleId, buyerReference);
      return result.kind === 'ok'
        ? ({ ok: true, ticketId: result.ticketId, expiresAtMs: result.expiresAtMs } as const)
        : ({ ok: false, reason: ADMISSION_REFUSALS[result.kind] } as const);
    },
    confirmAdmission: (saleId: string, ticketId: string, expiresAtMs: number) => room.confirmAdmission(saleId, ticketId, expiresAtMs),
    releaseAdmission: (saleId: string, ticketId: string) => room.releaseAdmission(saleId, ticketId),
    holdBatcher:
      deps.config.holdBatchMax > 1
        ? new HoldBatcher({
            pool: deps.pool,
            idempotency: paymentDeps.idempotency,
            windowMs: deps.config.holdBatchWindowMs,
            batchMax: deps.config.holdBatchMax,
            synchronousCommit: deps.config.holdSynchronousCommit,
            view: toApiHold,
            onBatch: (size: number) => metrics.holdBatchSize.observe(size),
          })
        : undefined,
    orderBatcher:
      deps.config.orderBatchMax > 1
        ? new OrderCreationBatcher({
            pool: deps.pool,
            ttlHours: deps.config.idempotencyKeyTtlHours,
            windowMs: 0,
            batchMax: deps.config.orderBatchMax,
            // One batch at a time, as the confirms' (above): orders of different holds do not
            // contend, but a checkout's steps are CPU-bound in a surge, and larger batches cost less.
            maxRunning: 1,
            view: toApiOrder,
            onBatch: (size: number) => metrics.orderBatchSize.observe(size),
          })
        : undefined,
  };
  const publicUrl =
    deps.config.publicUrl ?? `http://${deps.config.host === '0.0.0.0' ? '127.0.0.1' : deps.config.host}:${deps.config.port}`;
  // The waiting room reads sales through the same cache as the sale page, so PATCH reaches both.
  const lookup = createSaleLookup(deps.pool, saleCache);
  registerQueueRoutes(app, { room, lookup });
  registerSalesRoutes(
    app,
    salesDeps,
    { cache: saleCache, staleMs: deps.config.cacheStaleMs, reuseMs: deps.config.saleReadReuseMs },
    publicUrl,
    {
      lanes: fastLanes,
      principal: authenticate.peek,
      rateLimit: rateLimit.laneAdmit,
    },
  );

  // The hosted sale page (/s/:sale): sessions in Redis when there is one, else PostgreSQL.
  const assets = await loadStaticAssets(path.join(WEB_DIR, 'hosted'), HOSTED_ASSET_FILES, '/assets/hosted');
  registerHostedRoutes(app, {
    sales: salesDeps,
    payments: answeringPayments,
    room,
    lookup,
    sessions: deps.sessions ?? (deps.redis ? new RedisSessionStore(deps.redis.client) : new PostgresSessionStore(deps.pool)),
    sessionTtlMs: deps.config.hostedSessionTtlSeconds * 1000,
    staleMs: deps.config.cacheStaleMs,
    readSale: createHostedSaleReader(deps.pool, deps.config.cacheStaleMs),
    // Without a secret of its own, the cookie key is derived from the admission secret, which
    // every node already shares: one secret to configure, two independent keys.
    cookieSecret:
      deps.config.sessionSecret ??
      createHmac('sha256', deps.config.admissionSecret ?? randomBytes(32).toString('base64url'))
        .update('floodgate hosted session cookie')
        .digest('base64url'),
    providerPublicUrl: deps.providerPublicUrl ?? deps.config.providerPublicUrl ?? deps.config.providerUrl ?? 'http://127.0.0.1:4010',
    assets: {
      css: assets.get('hosted.css') as StaticAsset,
      js: assets.get('hosted.js') as StaticAsset,
      icon: assets.get('icon.svg') as StaticAsset,
    },
  });
  return app;
}

/**
 * The waiting room of an API process. `floodgate api` refuses to start without a shared
 * admission secret; a room built without one (a single process, a test) signs with its own.
 */
export function appWaitingRoom(config: Config, redis: RedisConnections | undefined, metrics?: Metrics): WaitingRoom {
  const admissionConfig = { ...config, admissionSecret: config.admissionSecret ?? randomBytes(32).toString('base64url') };
  return createWaitingRoom({ config: admissionConfig, redis: redis?.client, keyPrefix: WAITING_ROOM_KEY_PREFIX, metrics });
}

/** Under the deployment's Redis prefix: the waiting room's keys. */
export const WAITING_ROOM_KEY_PREFIX = 'queue:';
