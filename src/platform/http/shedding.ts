/**
 * Load shedding: when this node is saturated, a new request is refused at once with 503
 * `overloaded` and Retry-After, before it costs anything (no body read, no authentication, no
 * database). Turning some buyers away quickly keeps the node fast for the requests it has
 * taken, and tells a balancer or client to try elsewhere or later.
 *
 * Two signals: the event loop's delay over the last sampling window (the node's CPU is
 * behind) and the requests in flight (work is queueing on something slower: the database,
 * the provider). Health checks and metrics scrapes are never shed: a balancer that sees
 * /readyz fail under load would take a node out just when it is needed most.
 *
 * Two priorities. A surge is mostly the line: thousands joining and polling for the few
 * checking out. Routes that declare `config: { shedding: 'line' }` are shed at the configured
 * limits; everything else (an admitted buyer's hold, order and payment, a merchant's server)
 * only at CHECKOUT_HEADROOM times them. Shedding the line first is what keeps checkout fast
 * in a surge: a shed poll costs a fraction of a served one, and its buyer keeps their place.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import { registeredCounter, registeredGauge } from '../observability/registered.js';
import { routeConfig } from './context.js';
import { ApiError } from './errors.js';
import { type CallbackHook, callbackHook } from './hooks.js';

// Half a second: shedding starts and stops within one, and each window holds about fifty
// samples, so one long callback does not decide alone.
const SHED_SAMPLE_INTERVAL_MS = 500;
// The event-loop monitor's sampling timer; 10 ms is Node's default resolution.
const DELAY_RESOLUTION_MS = 10;
// Retry-After is drawn from 1 to 3 seconds, so shed clients do not all return in the same
// instant and shed each other again.
const SHED_RETRY_AFTER_SECONDS_MIN = 1;
const SHED_RETRY_AFTER_SECONDS_MAX = 3;

const EXEMPT_PATHS = new Set(['/livez', '/readyz', '/metrics']);
// Checkout is refused only when the delay or the requests in flight reach this multiple of the
// limits the line is refused at.
export const CHECKOUT_HEADROOM = 2;

/** Where the delay comes from; tests pass their own instead of a real monitor. */
export interface DelaySource {
  /** The mean event-loop delay in ms since the previous call, which starts a new window. */
  takeMs(): number;
  close(): void;
}

export function eventLoopDelaySource(): DelaySource {
  const histogram = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS });
  histogram.enable();
  return {
    takeMs() {
      // Each sample includes the timer's own interval; what is left is the delay. The mean,
      // not the max: one garbage collection pause should not turn buyers away for a window.
      const meanMs = histogram.count > 0 ? histogram.mean / 1e6 - DELAY_RESOLUTION_MS : 0;
      histogram.reset();
      return Math.max(0, meanMs);
    },
    close() {
      histogram.disable();
    },
  };
}

export interface ShedderOptions {
  eventLoopDelayMaxMs: number;
  inFlightMax: number;
  registry: Registry;
  /** Default: a monitor of this process's event loop. */
  delaySource?: DelaySource;
  sampleIntervalMs?: number;
}

export interface Shedder {
  /** The onRequest hook, which refuses; register it before every other. */
  onRequest: CallbackHook;
  /**
   * The preValidation hook, which counts a request in flight once its body has been read. A
   * client that sends headers and then its body slowly, or never, holds a connection (until
   * the request timeout closes it) but not one of the in-flight places: five silent clients
   * must not make a node refuse everyone else.
   */
  onBodyRead: CallbackHook;
  /** Whether a request of this priority would be refused now: for a fast lane, which must leave it to onRequest. */
  wouldShed(priority: 'line' | 'checkout'): boolean;
  /** Takes one delay sample and decides whether delay alone sheds until the next. */
  runOnce(): void;
  /** Samples every sampleIntervalMs until stop(). */
  start(): void;
  stop(): void;
  readonly inFlight: number;
  readonly eventLoopDelayMs: number;
}

export function createShedder(options: ShedderOptions): Shedder {
  const source = options.delaySource ?? eventLoopDelaySource();
  const intervalMs = options.sampleIntervalMs ?? SHED_SAMPLE_INTERVAL_MS;
  let inFlight = 0;
  let delayMs = 0;
  let timer: NodeJS.Timeout | undefined;

  const shed = registeredCounter(options.registry, {
    name: 'floodgate_http_shed_total',
    help: 'Requests refused with 503 overloaded, by reason (event_loop_delay, in_flight) and priority (line, checkout)',
    labelNames: ['reason', 'priority'] as const,
  });
  registeredGauge(options.registry, {
    name: 'floodgate_http_in_flight_requests',
    help: 'Requests being served now, health checks and metrics scrapes not counted',
    collect() {
      this.set(inFlight);
    },
  });
  registeredGauge(options.registry, {
    name: 'floodgate_event_loop_delay_seconds',
    help: 'Mean event-loop delay over the last load-shedding window',
    collect() {
      this.set(delayMs / 1000);
    },
  });

  // One listener for every response, not a closure per request.
  const leave = () => {
    inFlight -= 1;
  };

  const runOnce = () => {
    delayMs = source.takeMs();
  };

  /** Why a request of this priority would be refused now, if it would: the one rule for both uses. */
  const shedReason = (priority: 'line' | 'checkout'): 'event_loop_delay' | 'in_flight' | undefined => {
    const headroom = priority === 'line' ? 1 : CHECKOUT_HEADROOM;
    if (delayMs > options.eventLoopDelayMaxMs * headroom) return 'event_loop_delay';
    if (inFlight >= options.inFlightMax * headroom) return 'in_flight';
    return undefined;
  };

  const refuse = (reason: 'event_loop_delay' | 'in_flight', priority: 'line' | 'checkout'): never => {
    shed.inc({ reason, priority });
    const spread = SHED_RETRY_AFTER_SECONDS_MAX - SHED_RETRY_AFTER_SECONDS_MIN + 1;
    const retryAfter = SHED_RETRY_AFTER_SECONDS_MIN + Math.floor(Math.random() * spread);
    throw new ApiError('overloaded', 'This server is at capacity; retry after the number of seconds in Retry-After.', undefined, {
      'retry-after': String(retryAfter),
    });
  };

  return {
    onRequest: callbackHook((request) => {
      const route = routeConfig(request);
      if (EXEMPT_PATHS.has(route.url ?? '')) return undefined;
      const priority = route.shedding === 'line' ? 'line' : 'checkout';
      const reason = shedReason(priority);
      if (reason) refuse(reason, priority);
      return undefined;
    }),
    onBodyRead: callbackHook((request, reply) => {
      if (EXEMPT_PATHS.has(routeConfig(request).url ?? '')) return undefined;
      inFlight += 1;
      // 'close' fires once for every response, finished or aborted by the client: `on`, not
      // `once`, spares a wrapper per request.
      reply.raw.on('close', leave);
      return undefined;
    }),
    wouldShed: (priority) => shedReason(priority) !== undefined,
    runOnce,
    start() {
      if (timer) return;
      // Start from a clean window: loading modules and migrating at start-up block the loop,
      // and a node must not shed its first requests for work it has already finished.
      source.takeMs();
      timer = setInterval(runOnce, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
      source.close();
    },
    get inFlight() {
      return inFlight;
    },
    get eventLoopDelayMs() {
      return delayMs;
    },
  };
}
