/**
 * The Fastify instance every Floodgate HTTP node uses: strict validation, one error shape,
 * request-duration metrics by route, and OpenAPI generated from the route schemas.
 */

import type { IncomingHttpHeaders } from 'node:http';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { isDatabaseUnavailable } from '../db/errors.js';
import { randomBase64url } from '../ids.js';
import type { Metrics } from '../observability/metrics.js';
import { registeredCounter, Tally } from '../observability/registered.js';
import type { HistogramSeries } from '../observability/series-histogram.js';
import { context, contextFrom, SpanKind, SpanStatusCode, trace, tracer, tracingStarted } from '../observability/tracing.js';
import { isRedisUnavailable } from '../redis/client.js';
import { type TrustProxy, trustFunction } from './client-address.js';
import { answerClientError } from './client-errors.js';
import { type MatchedRoute, routeConfig } from './context.js';
import { ApiError, errorBody } from './errors.js';
import { type FastLane, type LaneEdge, laneServerFactory } from './fast-lane.js';
import { callbackHook } from './hooks.js';
import { lazyChildLoggerFactory, levelEnabled } from './request-logger.js';
import { validatorCompiler } from './validation.js';

// A PostgreSQL failover under Patroni takes 2-11 s (measured: docs/operations.md); asking the
// client back in 2 s spreads the retries over it instead of hammering the gap.
const UNAVAILABLE_RETRY_AFTER_SECONDS = 2;

export interface HttpOptions {
  logger: FastifyBaseLogger | false;
  bodyLimitBytes: number;
  /** Time a client has to send its request headers; then 408 and the connection is closed. Default Node's. */
  headersTimeoutMs?: number;
  /** Time a client has to send its whole request, headers and body; then 408 and closed. Default Node's. */
  requestTimeoutMs?: number;
  metrics: Metrics;
  version: string;
  /** Whose X-Forwarded-For sets request.ip: none, the nearest N hops, or listed addresses. */
  trustProxy?: TrustProxy;
  /**
   * Requests answered before Fastify sees them (fast-lane.ts), tried in order; the app adds to
   * the list as it registers its routes. `open` says when the app's own per-request policies
   * allow them; the server adds its own conditions (not closing, no tracing, no debug lines).
   */
  fastLanes?: { lanes: FastLane[]; open(): boolean };
}

export type HttpServer = FastifyInstance<
  import('node:http').Server,
  import('node:http').IncomingMessage,
  import('node:http').ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

// How often Node looks for connections past their header or request timeout (its default, 30 s,
// would let a timeout of 10 s run to 40); the check is a walk over open connections.
const CONNECTIONS_CHECKING_INTERVAL_MS = 1_000;

export async function createHttpServer(options: HttpOptions): Promise<HttpServer> {
  let closing = false;
  const fastLanes = options.fastLanes;
  const laneEdge: LaneEdge | undefined = fastLanes && {
    lanes: fastLanes.lanes,
    open: () => !closing && !tracingStarted() && !(options.logger && levelEnabled(options.logger, 'debug')) && fastLanes.open(),
    requestId: (request) => requestIdFrom(request.headers),
    answered: (request, answer, seconds) => {
      laneAnswers(answer.route).inc();
      laneSeries(request.method ?? 'GET', answer.status, answer.route).observe(seconds);
    },
    log: options.logger,
  };
  const app = Fastify({
    // The server Fastify would make, with the fast lanes in front when the app has any.
    ...(laneEdge ? { serverFactory: laneServerFactory(laneEdge) } : {}),
    loggerInstance: options.logger || undefined,
    logger: options.logger ? undefined : false,
    bodyLimit: options.bodyLimitBytes,
    // A client that opens a connection and sends its request slowly, or never finishes it,
    // holds a socket and memory: both timeouts bound that. They cover receiving the request
    // only, never the time we take to answer it.
    requestTimeout: options.requestTimeoutMs,
    http: {
      headersTimeout: options.headersTimeoutMs,
      requestTimeout: options.requestTimeoutMs,
      connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS,
    },
    trustProxy: trustFunction(options.trustProxy),
    // A line per request is too much at surge rates; errors are still logged, and request
    // rates and latencies are in /metrics.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    // A request's logger becomes a pino child only if the request writes a line: see request-logger.ts.
    childLoggerFactory: lazyChildLoggerFactory,
    // Ids in our URLs are short; anything longer is not ours.
    routerOptions: { maxParamLength: 200 },
    return503OnClosing: true,
    // Every log line of a request carries its id: the caller's X-Request-Id when it is a sane
    // one (a balancer's), else one of ours; the response says which.
    requestIdHeader: false,
    genReqId: (request) => requestIdFrom(request.headers),
    // The router's own errors (a badly encoded path, an over-long parameter) never reach the
    // error handler; without this they were answered in Fastify's shape, not ours.
    // Requests Node's HTTP parser refuses (a control byte in a header, headers too large, a
    // request that did not arrive in time) never reach Fastify's routing: answered here, in our
    // error shape, instead of Fastify's default body.
    clientErrorHandler: answerClientError,
    frameworkErrors: (error, _request, reply) => {
      const mapped = mapFrameworkError(error) ?? new ApiError('parameter_invalid', 'The request URL is malformed.');
      return (reply as FastifyReply).code(mapped.status).send(mapped.toBody());
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  // Bodies are JSON only. Fastify also parses text/plain by default, which turned a JSON body
  // sent as text into a 400 "must be a JSON object" instead of the 415 that says what to fix.
  app.removeContentTypeParser('text/plain');
  app.setValidatorCompiler(validatorCompiler);
  // An empty body sent with a JSON content type means "no parameters", like no body at all.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (typeof body === 'string' && body.trim() === '') return done(null, undefined);
    return parseJson(request, body as string, done);
  });
  // A POST sent without a body is a request with no parameters, which confirm, capture and
  // cancel accept (theirs are all optional); validated as undefined it failed as "must be a
  // JSON object". A body that is present must still be a JSON object. Only routes with a body
  // schema get the hook: the others (every read) would run it for nothing.
  const emptyBodyIsNoParameters = async (request: FastifyRequest) => {
    if (request.body === undefined) request.body = {};
  };
  app.addHook('onRoute', (route) => {
    if (!route.schema?.body) return;
    const own = route.preValidation === undefined ? [] : Array.isArray(route.preValidation) ? route.preValidation : [route.preValidation];
    route.preValidation = [emptyBodyIsNoParameters, ...own];
  });
  app.decorateRequest('principal', null);
  app.decorateRequest('matchedRoute', null);
  // Closing closes the idle keep-alive connections once; one whose request was still running
  // then (a provider webhook arriving with the SIGTERM) would stay open after its answer, and
  // close would wait on it until the shutdown timeout. Answered with Connection: close instead.
  app.addHook('preClose', async () => {
    closing = true;
  });
  // A callback, not an async function: it runs for every answer and is almost always a no-op.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });

  app.setErrorHandler((error: FastifyError | ApiError, request, reply) => {
    if (error instanceof ApiError) {
      return reply.code(error.status).headers(error.headers).send(error.toBody());
    }
    const mapped = mapFrameworkError(error);
    if (mapped) return reply.code(mapped.status).send(mapped.toBody());
    if (isSaturation(error)) {
      const busy = new ApiError('service_unavailable', 'The service is busy; retry shortly.', undefined, { 'retry-after': '1' });
      return reply.code(busy.status).headers(busy.headers).send(busy.toBody());
    }
    // A failover or an outage: the request did not complete (or its outcome is unknown), and a
    // retry with the same Idempotency-Key is safe. Never a 500: nothing is wrong with the request.
    if (isDatabaseUnavailable(error) || isRedisUnavailable(error)) {
      request.log.warn({ err: error }, 'dependency unavailable: answered 503');
      const down = new ApiError(
        'service_unavailable',
        'A database or Redis this service needs is unreachable right now (a failover takes seconds); retry with the same Idempotency-Key.',
        undefined,
        { 'retry-after': String(UNAVAILABLE_RETRY_AFTER_SECONDS) },
      );
      return reply.code(down.status).headers(down.headers).send(down.toBody());
    }
    request.log.error({ err: error }, 'unhandled error');
    return reply.code(500).send(errorBody('internal_error', 'Something went wrong on our side; it has been logged. Retry later.'));
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send(errorBody('route_not_found', `No route ${request.method} ${request.url.split('?')[0]}; see /docs.`)),
  );

  // First of all hooks: the request's span, made the active context for everything after it
  // (the other hooks, the handler, its SQL and provider calls), continuing a caller's traceparent.
  // Without a tracing SDK every span is a no-op: then only the request id and the route's log
  // binding are left to do, not the span's attributes and context.
  app.addHook('onRequest', (request, reply, done) => {
    const route = routeConfig(request).url;
    request.log = request.log.child({ route: route ?? 'unmatched' });
    reply.header('x-request-id', request.id);
    if (!tracingStarted()) return done();
    const span = tracer.startSpan(
      route ? `${request.method} ${route}` : request.method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': request.method,
          'url.path': request.url.split('?')[0],
          'url.scheme': request.protocol,
          ...(route ? { 'http.route': route } : {}),
          'client.address': request.ip,
        },
      },
      contextFrom(request.headers),
    );
    requestSpans.set(request, span);
    context.with(trace.setSpan(contextFrom(request.headers), span), done);
  });

  // The duration histogram's series of each route, by method and status class: found once,
  // then held, so an answer's observation builds no labels.
  const routeSeries = new WeakMap<MatchedRoute, Map<string, HistogramSeries[]>>();
  const seriesOf = (byMethod: Map<string, HistogramSeries[]>, method: string, status: number, route: string): HistogramSeries => {
    let byClass = byMethod.get(method);
    if (!byClass) {
      byClass = [];
      byMethod.set(method, byClass);
    }
    const index = Math.floor(status / 100);
    let series = byClass[index];
    if (!series) {
      series = options.metrics.httpDuration.series({ method, route, status_class: statusClass(status) });
      byClass[index] = series;
    }
    return series;
  };
  const durationSeries = (method: string, status: number, config: MatchedRoute, route: string): HistogramSeries => {
    let byMethod = routeSeries.get(config);
    if (!byMethod) {
      byMethod = new Map();
      routeSeries.set(config, byMethod);
    }
    return seriesOf(byMethod, method, status, route);
  };

  // The fast lanes' answers, in the same histogram by the route's name, and counted apart.
  const laneRoutes = new Map<string, Map<string, HistogramSeries[]>>();
  const laneSeries = (method: string, status: number, route: string): HistogramSeries => {
    let byMethod = laneRoutes.get(route);
    if (!byMethod) {
      byMethod = new Map();
      laneRoutes.set(route, byMethod);
    }
    return seriesOf(byMethod, method, status, route);
  };
  const laneAnswerCounter = registeredCounter(options.metrics.registry, {
    name: 'floodgate_http_fast_lane_answers_total',
    help: "Requests answered from this node's memory before Fastify's pipeline (platform/http/fast-lane.ts), by route",
    labelNames: ['route'] as const,
  });
  const laneTallies = new Map<string, Tally<'route'>>();
  const laneAnswers = (route: string): Tally<'route'> => {
    let tally = laneTallies.get(route);
    if (!tally) {
      tally = new Tally(laneAnswerCounter, { route });
      laneTallies.set(route, tally);
    }
    return tally;
  };

  app.addHook(
    'onResponse',
    callbackHook((request, reply) => {
      const span = requestSpans.get(request);
      if (span) {
        span.setAttribute('http.response.status_code', reply.statusCode);
        if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      }
      const config = routeConfig(request);
      const route = config.url ?? 'unmatched';
      const elapsedMs = reply.elapsedTime;
      // Off at the default level (a line per request is too much in a surge); on with debug.
      // The line's fields are gathered only when it is written.
      if (levelEnabled(request.log, 'debug')) {
        request.log.debug(
          { method: request.method, status: reply.statusCode, duration_ms: Math.round(elapsedMs * 10) / 10 },
          'request completed',
        );
      }
      durationSeries(request.method, reply.statusCode, config, route).observe(elapsedMs / 1000);
      return undefined;
    }),
  );

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Floodgate API',
        version: options.version,
        description:
          'Payments for sales that arrive as a surge. Authenticate with `Authorization: Bearer sk_test_...`. ' +
          'Every POST accepts an `Idempotency-Key` header; a retry with the same key replays the first response.',
      },
      components: {
        securitySchemes: { secretKey: { type: 'http', scheme: 'bearer', description: 'A secret key, sk_test_...' } },
      },
      security: [{ secretKey: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}

const STATUS_CLASSES = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'];

/** 200 → '2xx': the metric's label, without building the text on every answer. */
function statusClass(status: number): string {
  return STATUS_CLASSES[Math.floor(status / 100)] ?? `${Math.floor(status / 100)}xx`;
}

// Each request's server span, ended when the response has gone.
const requestSpans = new WeakMap<object, import('@opentelemetry/api').Span>();

/** The caller's X-Request-Id when it is a sane one (a balancer's), else one of ours. */
function requestIdFrom(headers: IncomingHttpHeaders): string {
  const given = headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : `req_${randomBase64url(REQUEST_ID_RANDOM_BYTES)}`;
}

// 72 random bits: 12 base64url characters after req_.
const REQUEST_ID_RANDOM_BYTES = 9;

// Letters, digits and - _ . : up to 128 characters (UUIDs, balancer ids); anything else is replaced.
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function mapFrameworkError(error: FastifyError): ApiError | undefined {
  if ('validation' in error && error.validation) {
    // Our validator compiler returns ApiErrors; Fastify wraps them. Unwrap to keep the code.
    const cause = (error as { cause?: unknown }).cause;
    if (cause instanceof ApiError) return cause;
    return new ApiError('parameter_invalid', error.message);
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('body_too_large', 'The request body is too large.');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError('unsupported_media_type', 'Send the request body as application/json.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new ApiError('body_invalid_json', 'The request body is not valid JSON.');
    case 'FST_ERR_BAD_URL':
    case 'FST_ERR_ASYNC_CONSTRAINT':
      return new ApiError('parameter_invalid', 'The request URL is malformed.');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      // As for any malformed id in a path: it names nothing that exists.
      return new ApiError('resource_missing', 'No such object: the id in the URL is not a valid id.', 'id');
  }
  // Fastify marks the body errors it raises with a status. A SyntaxError without one was thrown
  // by our own code (a stored value that does not parse): a bug for a 500, not the caller's body.
  if (error.statusCode === 400) return new ApiError('body_invalid_json', 'The request body is not valid JSON.');
  if (error.statusCode === 413) return new ApiError('body_too_large', 'The request body is too large.');
  if (error.statusCode === 415) return new ApiError('unsupported_media_type', 'Send the request body as application/json.');
  return undefined;
}

/**
 * The database pool had no free connection within its timeout, or the database refused a new
 * one: the service is saturated, not broken. The caller should retry after a pause.
 */
function isSaturation(error: Error): boolean {
  const code = (error as { code?: string }).code;
  return error.message === 'timeout exceeded when trying to connect' || code === '53300' || code === '57P03';
}
