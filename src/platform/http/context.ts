/**
 * What the HTTP edge knows about a request once it is authenticated, and the helpers that turn
 * it into the context a use case needs (merchant, idempotency key, fingerprint).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { fingerprint, generatedKey, isValidKey, type Reply } from '../idempotency/service.js';
import { ApiError } from './errors.js';

export interface Principal {
  merchantId: string;
  keyId: string;
  keyKind: 'secret' | 'publishable';
}

/**
 * Which API keys a route accepts, set per route as `config: { auth: 'publishable' }`: secret
 * keys only (the default), or publishable keys as well, for calls from a buyer's browser.
 */
export type AuthScope = 'secret' | 'publishable';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    auth?: AuthScope;
  }
}

export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new Error('route registered without authentication');
  return request.principal;
}

export interface RequestContext {
  merchantId: string;
  idempotencyKey: string;
  method: string;
  path: string;
  fingerprint: Buffer;
}

/** Reads the Idempotency-Key header (or makes one up) and fingerprints the request. */
export function requestContext(request: FastifyRequest): RequestContext {
  const header = request.headers['idempotency-key'];
  if (Array.isArray(header)) throw new ApiError('idempotency_key_invalid', 'Send one Idempotency-Key header, not several.');
  if (header !== undefined && !isValidKey(header)) {
    throw new ApiError(
      'idempotency_key_invalid',
      'Idempotency-Key must be 1 to 255 printable ASCII characters without spaces; a UUID is a good choice.',
    );
  }
  const path = request.url.split('?')[0] as string;
  return {
    merchantId: principalOf(request).merchantId,
    idempotencyKey: header ?? generatedKey(),
    method: request.method,
    path,
    fingerprint: fingerprint(request.method, path, request.body),
  };
}

export function sendReply(reply: FastifyReply, result: Reply): FastifyReply {
  if (result.headers) reply.headers(result.headers);
  if (result.replayed) reply.header('idempotent-replayed', 'true');
  return reply.code(result.status).send(result.body);
}
