/**
 * What a use case answers over HTTP: a status, a body and perhaps headers. Routes send it with
 * sendReply; the idempotency seam stores the status and body with the key and replays them.
 */
import type { FastifyReply } from 'fastify';
import type { ApiError } from './errors.js';

export interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  replayed?: boolean;
}

export const ok = (body: unknown): Reply => ({ status: 200, body });

export const errorReply = (error: ApiError): Reply => ({ status: error.status, body: error.toBody(), headers: error.headers });

export function sendReply(reply: FastifyReply, result: Reply): FastifyReply {
  if (result.headers) reply.headers(result.headers);
  if (result.replayed) reply.header('idempotent-replayed', 'true');
  return reply.code(result.status).send(result.body);
}
