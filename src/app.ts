/**
 * Builds the HTTP app from its dependencies. No listen here: processes call listen, tests use
 * app.inject().
 */
import type { FastifyBaseLogger } from 'fastify';
import type { Config } from './config.js';
import { registerEventRoutes } from './events/routes.js';
import { registerLedgerRoutes } from './ledger/routes.js';
import { createAuthenticator } from './merchants/service.js';
import { onPaymentSucceeded } from './payments/hooks.js';
import { registerProviderWebhookRoutes } from './payments/provider-webhooks.js';
import { registerPaymentRoutes } from './payments/routes.js';
import type { Pool } from './platform/db/pool.js';
import { ApiError } from './platform/http/errors.js';
import { createHttpServer, type HttpServer } from './platform/http/server.js';
import { createMetrics, type Metrics } from './platform/observability/metrics.js';
import type { PaymentProvider } from './providers/provider.js';
import { convertPaidHold } from './sales/holds.js';
import { VERSION } from './version.js';
import { registerWebhookRoutes } from './webhooks/routes.js';

export interface AppDeps {
  config: Config;
  pool: Pool;
  provider: PaymentProvider;
  logger?: FastifyBaseLogger | false;
  metrics?: Metrics;
}

// A readiness probe must answer well within a balancer's check interval (HAProxy: 2 s).
const READINESS_TIMEOUT_MS = 1_000;

export async function buildApp(deps: AppDeps): Promise<HttpServer> {
  const metrics = deps.metrics ?? createMetrics({ defaultMetrics: false });
  const app = await createHttpServer({
    logger: deps.logger ?? false,
    bodyLimitBytes: deps.config.bodyLimitBytes,
    metrics,
    version: VERSION,
  });
  const authenticate = createAuthenticator(deps.pool, deps.config.apiKeyCacheTtlMs);
  // Payments completed by this node (the confirm call, provider webhooks) mark their orders paid
  // in the completion command's transaction.
  onPaymentSucceeded(convertPaidHold);

  app.addHook('onRequest', async (request) => {
    // Decide by the route the router matched, not the raw URL: the router decodes the path, so
    // '/%761/payment_intents' reaches the '/v1/payment_intents' route without starting with '/v1/'.
    // Provider webhooks authenticate by signature, in their own route.
    const path = request.routeOptions.url ?? request.url;
    if (!path.startsWith('/v1/') || path.startsWith('/v1/providers/')) return;
    const result = await authenticate(request.headers.authorization);
    if (result.kind === 'missing') {
      throw new ApiError('api_key_missing', 'No API key provided. Send Authorization: Bearer sk_test_...');
    }
    if (result.kind === 'invalid') throw new ApiError('api_key_invalid', 'The API key is invalid, unknown or revoked.');
    // A route opens itself to publishable keys explicitly (config.auth); every other route
    // needs a secret key.
    if (result.principal.keyKind !== 'secret' && request.routeOptions.config.auth !== 'publishable') {
      throw new ApiError('secret_key_required', 'This endpoint needs a secret key (sk_test_...), not a publishable one.');
    }
    request.principal = result.principal;
  });

  app.get('/livez', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
    try {
      await Promise.race([
        deps.pool.query('select 1'),
        new Promise((_, reject) => setTimeout(() => reject(new Error('database check timed out')), READINESS_TIMEOUT_MS).unref()),
      ]);
      return { status: 'ready' };
    } catch (error) {
      return reply.code(503).send({ status: 'unavailable', reason: (error as Error).message });
    }
  });
  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );

  const paymentDeps = {
    pool: deps.pool,
    provider: deps.provider,
    idempotency: { ttlHours: deps.config.idempotencyKeyTtlHours, lockTimeoutMs: deps.config.idempotencyLockTimeoutMs },
  };
  registerPaymentRoutes(app, paymentDeps);
  registerEventRoutes(app, deps.pool);
  registerLedgerRoutes(app, deps.pool);
  registerProviderWebhookRoutes(app, { pool: deps.pool, secret: deps.config.providerWebhookSecret });
  registerWebhookRoutes(app, { pool: deps.pool, idempotency: paymentDeps.idempotency, allowPrivate: deps.config.webhookAllowPrivate });
  return app;
}
