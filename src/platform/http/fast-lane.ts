/**
 * Fast lanes: requests a node can answer at once from its own memory skip Fastify's request
 * pipeline.
 *
 * In a surge the crowd reads one thing far more than anything else: the sale page, answered
 * from this node's cache. Through Fastify that read cost the API about twice what a bare
 * Fastify route sending the same bytes costs (routing, six hooks, parameter validation, the
 * reply's machinery), and the crowd's reads take the cores the checkout needs. A lane sees
 * the raw request before Fastify does and either answers it whole, synchronously, or declines
 * and leaves it to Fastify, which then does everything it always did. Lanes decline anything
 * unusual, so the full pipeline stays the one place that handles errors, refusals and every
 * kind of request; a lane only ever serves the plain success (or 304) the pipeline would
 * have sent for that request, with the same status, body and headers.
 *
 * The edge decides when no lane may run at all (see `open`): while the node is closing, when
 * tracing or debug logging wants every request seen, or when the node would shed the request.
 * Rate limits are the lane's own to apply: it counts what it answers as the pipeline would
 * (rate-limit.ts laneAdmit) and declines whatever it cannot decide at once.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';

/** A lane's answer: written as it is, with the request id the pipeline would have sent. */
export interface LaneAnswer {
  /** The route as the pipeline names it in metrics (`/v1/sales/:id`). */
  route: string;
  status: number;
  /** Content-Length included when there is a body. */
  headers: Record<string, string>;
  /**
   * Text rather than bytes: Node then sends the head and the body as one string in one write,
   * where bytes go as two chunks of a writev (measured: the answer cost the kernel more).
   */
  body?: string;
}

/** Answers the request, or returns undefined to leave it to the full pipeline. Never waits. */
export type FastLane = (request: IncomingMessage) => LaneAnswer | undefined;

export interface LaneEdge {
  /** The lanes, tried in order; the app adds them as it registers its routes. */
  lanes: FastLane[];
  /** Whether lanes may run now (none while closing, tracing, debug logging...). */
  open(): boolean;
  requestId(request: IncomingMessage): string;
  /** Called once an answer is written: its duration in seconds. */
  answered(request: IncomingMessage, answer: LaneAnswer, seconds: number): void;
  log: FastifyBaseLogger | false;
}

/** What Fastify would have set on the server it makes itself (fastify/lib/server.js). */
interface ServerSettings {
  http?: http.ServerOptions;
  keepAliveTimeout?: number;
  requestTimeout?: number;
  connectionTimeout?: number;
  maxRequestsPerSocket?: number;
}

/**
 * Fastify's `serverFactory`: the HTTP/1.1 server Fastify would make, with the lanes in front
 * of its handler.
 */
export function laneServerFactory(edge: LaneEdge) {
  return (handler: http.RequestListener, settings: ServerSettings): http.Server => {
    const server = http.createServer(settings.http ?? {}, (request, response) => {
      if (edge.lanes.length === 0 || !edge.open() || !serveFromLane(edge, request, response)) handler(request, response);
    });
    if (settings.keepAliveTimeout !== undefined) server.keepAliveTimeout = settings.keepAliveTimeout;
    if (settings.requestTimeout !== undefined) server.requestTimeout = settings.requestTimeout;
    server.setTimeout(settings.connectionTimeout ?? 0);
    if (settings.maxRequestsPerSocket !== undefined && settings.maxRequestsPerSocket > 0) {
      server.maxRequestsPerSocket = settings.maxRequestsPerSocket;
    }
    return server;
  };
}

function serveFromLane(edge: LaneEdge, request: IncomingMessage, response: ServerResponse): boolean {
  const startedAt = performance.now();
  let answer: LaneAnswer | undefined;
  try {
    for (const lane of edge.lanes) {
      answer = lane(request);
      if (answer) break;
    }
  } catch (error) {
    // A lane's bug must cost the request nothing: nothing is written yet, so the pipeline
    // answers it as it would have anyway.
    if (edge.log) edge.log.error({ err: error, url: request.url }, 'fast lane failed: request left to the full pipeline');
    return false;
  }
  if (!answer) return false;
  response.writeHead(answer.status, { 'x-request-id': edge.requestId(request), ...answer.headers });
  response.end(answer.body);
  edge.answered(request, answer, (performance.now() - startedAt) / 1000);
  return true;
}
