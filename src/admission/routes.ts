/**
 * The waiting room's HTTP edge. A buyer's browser calls it with the merchant's publishable key;
 * a secret key works too, for a merchant's server that queues on a buyer's behalf (a secret key
 * may do anything a publishable one may). Joining is idempotent by buyer reference, so these
 * POSTs need no Idempotency-Key.
 *
 * The sale comes from a SaleLookup the sales capability provides; an unknown sale, or another
 * merchant's, is a 404.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import { principalOf } from '../platform/http/context.js';
import { ApiError } from '../platform/http/errors.js';
import { errorResponses } from '../platform/http/schemas.js';
import type { HttpServer } from '../platform/http/server.js';
import { ID_PATTERN } from '../platform/ids.js';
import { isRedisUnavailable } from '../platform/redis/client.js';
import { QUEUE_LIMITS, QUEUE_STATUSES, type QueueView, type SaleForQueue } from './domain.js';
import { TICKET_PREFIX, type WaitingRoom } from './service.js';

/** The sale with this id, if it belongs to this merchant. */
export type SaleLookup = (merchantId: string, saleId: string) => Promise<SaleForQueue | undefined>;

export interface QueueRouteDeps {
  room: WaitingRoom;
  lookup: SaleLookup;
}

const SaleId = Type.String({ pattern: '^[0-9A-Za-z_-]{1,100}$', description: 'The sale id.' });

const QueueTicket = Type.Object(
  {
    object: Type.Literal('queue_ticket'),
    ticket: Type.Union([Type.String(), Type.Null()], { description: 'Poll with it. Null only when the sale had closed.' }),
    sale: Type.String(),
    status: Type.Union(
      QUEUE_STATUSES.map((status) => Type.Literal(status)),
      { description: 'waiting, admitted (use admission_token to place a hold), sold_out, or closed.' },
    ),
    position: Type.Union([Type.Integer(), Type.Null()], {
      description:
        '1 is next; 0 once admitted; null before the sale opens (arrivals until then are drawn in random order), or when sold out or closed.',
    }),
    estimated_wait_seconds: Type.Union([Type.Integer(), Type.Null()], {
      description: 'Seconds until admission at the sale’s rate; a lower bound while shopper slots are full.',
    }),
    retry_after_ms: Type.Optional(
      Type.Integer({
        description:
          'When to poll again, in milliseconds; Retry-After says it in whole seconds. At the front of the line it is the moment this buyer’s admission is due, so poll then rather than at the rounded Retry-After. Absent when there is nothing to poll for (admitted, closed).',
      }),
    ),
    admission_token: Type.Optional(
      Type.String({ description: 'Single use, bound to this sale and buyer_reference, short-lived. Present until used.' }),
    ),
  },
  { $id: 'QueueTicket' },
);

const responses = { 200: QueueTicket, ...errorResponses };

export function registerQueueRoutes(app: HttpServer, deps: QueueRouteDeps): void {
  app.post(
    '/v1/sales/:id/queue',
    {
      config: { auth: 'publishable', shedding: 'line' },
      schema: {
        tags: ['waiting_room'],
        summary: 'Join the sale’s waiting room (publishable key); the same buyer_reference again returns the same ticket',
        params: Type.Object({ id: SaleId }, { additionalProperties: false }),
        body: Type.Object(
          {
            buyer_reference: Type.String({
              minLength: 1,
              maxLength: QUEUE_LIMITS.buyerReferenceLengthMax,
              description: 'Your reference for the buyer (a session or customer id); the admission token is bound to it.',
            }),
          },
          { additionalProperties: false },
        ),
        response: responses,
      },
    },
    async (request, reply) => {
      const sale = await findSale(deps, principalOf(request).merchantId, request.params.id);
      return send(reply, sale.id, await refuseWhenUnreachable(() => deps.room.join(sale, request.body.buyer_reference)));
    },
  );

  app.get(
    '/v1/sales/:id/queue/:ticket',
    {
      config: { auth: 'publishable', shedding: 'line' },
      schema: {
        tags: ['waiting_room'],
        summary: 'Poll a waiting-room ticket (publishable key); poll again after Retry-After seconds',
        params: Type.Object({ id: SaleId, ticket: Type.String({ pattern: ID_PATTERN(TICKET_PREFIX) }) }, { additionalProperties: false }),
        response: responses,
      },
    },
    async (request, reply) => {
      const sale = await findSale(deps, principalOf(request).merchantId, request.params.id);
      const view = await refuseWhenUnreachable(() => deps.room.poll(sale, request.params.ticket));
      if (!view) {
        throw new ApiError(
          'resource_missing',
          `No such ticket: '${request.params.ticket}'. A place is given up ${sale.graceSeconds} s after the Retry-After it was told passes without a poll; join again.`,
          'ticket',
        );
      }
      return send(reply, sale.id, view);
    },
  );
}

// Redis is back within seconds after a restart or a failover; buyers' pages poll again then.
const ROOM_UNAVAILABLE_RETRY_AFTER_SECONDS = 5;

/**
 * The line lives in Redis. When Redis cannot be reached the room refuses: admitting everyone
 * would oversubscribe the checkout, and a line kept in one node's memory would be unfair
 * across nodes. Holds need an admission token, so nobody skips the line meanwhile.
 */
async function refuseWhenUnreachable<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (!isRedisUnavailable(error)) throw error;
    throw new ApiError(
      'waiting_room_unavailable',
      'The waiting room cannot take or move places right now (its shared state is unreachable); retry after Retry-After seconds.',
      undefined,
      { 'retry-after': String(ROOM_UNAVAILABLE_RETRY_AFTER_SECONDS) },
    );
  }
}

async function findSale(deps: QueueRouteDeps, merchantId: string, saleId: string): Promise<SaleForQueue> {
  const sale = await deps.lookup(merchantId, saleId);
  if (!sale) throw new ApiError('resource_missing', `No such sale: '${saleId}'`, 'id');
  return sale;
}

function send(reply: FastifyReply, saleId: string, view: QueueView) {
  // Every answer is this buyer's, and of this moment: no shared cache may keep it.
  reply.header('cache-control', 'no-store');
  if (view.retryAfterSeconds !== undefined) reply.header('retry-after', String(view.retryAfterSeconds));
  return {
    object: 'queue_ticket' as const,
    ticket: view.ticket,
    sale: saleId,
    status: view.status,
    position: view.position,
    estimated_wait_seconds: view.estimatedWaitSeconds,
    ...(view.retryAfterMs === undefined ? {} : { retry_after_ms: view.retryAfterMs }),
    ...(view.admissionToken === undefined ? {} : { admission_token: view.admissionToken }),
  };
}
