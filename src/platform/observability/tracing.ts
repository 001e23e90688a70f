/**
 * Traces, with the OpenTelemetry Node SDK, when OTEL_EXPORTER_OTLP_ENDPOINT is set: a server
 * span per HTTP request, a client span per SQL statement and per provider call, and a consumer
 * span per job run, continuing the trace of the request that enqueued the job (the context is
 * carried in the job's payload under TRACE_PAYLOAD_KEY). Attribute names follow the HTTP,
 * database and messaging semantic conventions.
 *
 * Without an endpoint nothing is started (see tracing-sdk.ts, loaded only then): the API's
 * tracer is a no-op and costs next to nothing.
 */
import {
  type Attributes,
  type Context,
  context,
  ProxyTracerProvider,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';

export const tracer = trace.getTracer('floodgate');

/**
 * Whether an SDK records this process's spans (tracing-sdk.ts has started one). Without one
 * every span is a no-op and carries no context, so a caller on a hot path may skip describing
 * it. The API's provider is a proxy until an SDK registers the real one behind it.
 */
export function tracingStarted(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer('floodgate') !== undefined;
}

/** Where a job's payload carries the trace context of the transaction that added it. */
export const TRACE_PAYLOAD_KEY = '_trace';

/** The current trace context as W3C headers (traceparent, tracestate); empty when none. */
export function traceCarrier(from: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(from, carrier);
  return carrier;
}

export function contextFrom(carrier: unknown): Context {
  return carrier && typeof carrier === 'object' ? propagation.extract(ROOT_CONTEXT, carrier as Record<string, string>) : ROOT_CONTEXT;
}

/** Runs fn in a new span (a child of the active one, or of `parent`), ending it when fn settles. */
export async function inSpan<T>(
  name: string,
  options: { kind: SpanKind; attributes?: Attributes; parent?: Context },
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = options.parent ?? context.active();
  return tracer.startActiveSpan(name, { kind: options.kind, attributes: options.attributes }, parent, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      span.recordException(error as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
      throw error;
    } finally {
      span.end();
    }
  });
}

export { context, SpanKind, SpanStatusCode, trace };
