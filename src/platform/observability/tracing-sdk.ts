/**
 * The OpenTelemetry Node SDK, loaded only when OTEL_EXPORTER_OTLP_ENDPOINT is set: it exports
 * the spans Floodgate makes at its own seams (tracing.ts) over OTLP/HTTP.
 */
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { NodeSDK } from '@opentelemetry/sdk-node';

export interface Tracing {
  shutdown(): Promise<void>;
}

/** Starts the SDK exporting to `endpoint`; call before serving. */
export function startTracing(options: { endpoint: string; serviceName: string }): Tracing {
  const sdk = new NodeSDK({
    serviceName: options.serviceName,
    traceExporter: new OTLPTraceExporter({ url: `${options.endpoint.replace(/\/+$/, '')}/v1/traces` }),
    // Spans are made at Floodgate's own seams, so no monkey-patching instrumentations.
    instrumentations: [],
  });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}
