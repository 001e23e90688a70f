/**
 * The HTTP edge of webhooks: endpoints, their secrets, deliveries and redelivery. Endpoint
 * URLs are checked here, before anything is stored, so the error names the `url` parameter.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { EVENT_TYPES } from '../events/service.js';
import { principalOf, requestContext } from '../platform/http/context.js';
import { ApiError } from '../platform/http/errors.js';
import { sendReply } from '../platform/http/reply.js';
import { errorResponses, IdempotencyHeaders, IdParams, ListOf, ListQuery } from '../platform/http/schemas.js';
import type { HttpServer } from '../platform/http/server.js';
import { ID_PATTERN } from '../platform/ids.js';
import { ALL_EVENTS, DELIVERY_STATUSES, ROTATION_OVERLAP_SECONDS_DEFAULT, ROTATION_OVERLAP_SECONDS_MAX, URL_LENGTH_MAX } from './domain.js';
import * as webhooks from './service.js';
import { checkEndpointUrl } from './transport.js';

const Timestamp = Type.Union([Type.Integer(), Type.Null()]);

const Endpoint = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('webhook_endpoint'),
    url: Type.String(),
    enabled_events: Type.Array(Type.String()),
    description: Type.Union([Type.String(), Type.Null()]),
    status: Type.Union([Type.Literal('enabled'), Type.Literal('disabled')]),
    disabled_reason: Type.Union([Type.String(), Type.Null()]),
    previous_secret_expires_at: Timestamp,
    created: Type.Integer(),
    secret: Type.Optional(Type.String({ description: 'The signing secret: only in the responses to create and rotate_secret.' })),
  },
  { $id: 'WebhookEndpoint' },
);

const Delivery = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('webhook_delivery'),
    endpoint: Type.String(),
    event: Type.String(),
    status: Type.Union(DELIVERY_STATUSES.map((status) => Type.Literal(status))),
    round: Type.Integer({ description: '1, plus one for every redelivery.' }),
    attempts: Type.Integer({ description: 'Attempts made in this round.' }),
    next_attempt_at: Timestamp,
    last_attempt: Type.Union([
      Type.Object({
        attempted_at: Type.Integer(),
        status_code: Type.Union([Type.Integer(), Type.Null()]),
        error: Type.Union([Type.String(), Type.Null()]),
        duration_ms: Type.Integer(),
      }),
      Type.Null(),
    ]),
    created: Type.Integer(),
  },
  { $id: 'WebhookDelivery' },
);

const DeliveryWithAttempts = Type.Composite([
  Delivery,
  Type.Object({
    attempt_log: Type.Array(
      Type.Object({
        round: Type.Integer(),
        attempt: Type.Integer(),
        attempted_at: Type.Integer(),
        status_code: Type.Union([Type.Integer(), Type.Null()]),
        error: Type.Union([Type.String(), Type.Null()]),
        duration_ms: Type.Integer(),
      }),
    ),
  }),
]);

// An enum (not a union of literals) so that a wrong value is reported with the allowed ones.
const EventTypeOrAll = Type.Unsafe<string>({ type: 'string', enum: [ALL_EVENTS, ...EVENT_TYPES] });

const CreateEndpointBody = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: URL_LENGTH_MAX, description: 'Where to POST events: an https:// (or http://) URL.' }),
    enabled_events: Type.Array(EventTypeOrAll, {
      minItems: 1,
      maxItems: EVENT_TYPES.length + 1,
      uniqueItems: true,
      description: `Event types to send, or ["${ALL_EVENTS}"] for all.`,
    }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);

const RotateBody = Type.Object(
  {
    expires_in_seconds: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: ROTATION_OVERLAP_SECONDS_MAX,
        description: `How long the old secret keeps signing (default ${ROTATION_OVERLAP_SECONDS_DEFAULT}; 0 stops it at once).`,
      }),
    ),
  },
  { additionalProperties: false },
);

const endpointId = IdParams(ID_PATTERN('we'));

/** A POST that takes only optional parameters may come without a body (curl -X POST); validate it as {}. */
async function bodyOrEmpty(request: FastifyRequest): Promise<void> {
  if (request.body === undefined || request.body === null) request.body = {};
}
const endpointResponses = { 200: Endpoint, ...errorResponses };

export function registerWebhookRoutes(app: HttpServer, deps: webhooks.WebhookDeps & { allowPrivate: boolean }): void {
  app.post(
    '/v1/webhook_endpoints',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Create a webhook endpoint; the response carries its signing secret, shown this once',
        headers: IdempotencyHeaders,
        body: CreateEndpointBody,
        response: endpointResponses,
      },
    },
    async (request, reply) => {
      const checked = await checkEndpointUrl(request.body.url, { allowPrivate: deps.allowPrivate });
      if (checked.kind === 'invalid') throw new ApiError('parameter_invalid', checked.message, 'url');
      if (checked.kind === 'not_allowed') throw new ApiError('url_not_allowed', checked.message, 'url');
      return sendReply(reply, await webhooks.createEndpoint(deps, requestContext(request), request.body));
    },
  );

  app.get(
    '/v1/webhook_endpoints',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'List webhook endpoints, newest first',
        querystring: ListQuery,
        response: { 200: ListOf(Endpoint), ...errorResponses },
      },
    },
    async (request) =>
      webhooks.listEndpoints(deps.pool, principalOf(request).merchantId, request.query.limit, request.query.starting_after),
  );

  app.get(
    '/v1/webhook_endpoints/:id',
    { schema: { tags: ['webhooks'], summary: 'Retrieve a webhook endpoint', params: endpointId, response: endpointResponses } },
    async (request) => webhooks.retrieveEndpoint(deps.pool, principalOf(request).merchantId, request.params.id),
  );

  app.delete(
    '/v1/webhook_endpoints/:id',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Delete a webhook endpoint; its pending deliveries stop',
        params: endpointId,
        response: {
          200: Type.Object({ id: Type.String(), object: Type.Literal('webhook_endpoint'), deleted: Type.Literal(true) }),
          ...errorResponses,
        },
      },
    },
    async (request) => webhooks.deleteEndpoint(deps.pool, principalOf(request).merchantId, request.params.id),
  );

  app.post(
    '/v1/webhook_endpoints/:id/rotate_secret',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Replace the signing secret; the old one keeps signing for expires_in_seconds',
        headers: IdempotencyHeaders,
        params: endpointId,
        body: RotateBody,
        response: endpointResponses,
      },
      preValidation: bodyOrEmpty,
    },
    async (request, reply) => {
      const overlapSeconds = request.body.expires_in_seconds ?? ROTATION_OVERLAP_SECONDS_DEFAULT;
      return sendReply(reply, await webhooks.rotateSecret(deps, requestContext(request), request.params.id, overlapSeconds));
    },
  );

  app.get(
    '/v1/webhook_deliveries',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'List webhook deliveries, newest event first; status=dead lists those that ran out of attempts',
        querystring: Type.Composite(
          [
            ListQuery,
            Type.Object({
              status: Type.Optional(Type.Unsafe<string>({ type: 'string', enum: [...DELIVERY_STATUSES] })),
              endpoint: Type.Optional(Type.String({ maxLength: 64 })),
              event: Type.Optional(Type.String({ maxLength: 64 })),
            }),
          ],
          { additionalProperties: false },
        ),
        response: { 200: ListOf(Delivery), ...errorResponses },
      },
    },
    async (request) =>
      webhooks.listDeliveries(deps.pool, {
        merchantId: principalOf(request).merchantId,
        limit: request.query.limit,
        startingAfter: request.query.starting_after,
        status: request.query.status,
        endpointId: request.query.endpoint,
        eventId: request.query.event,
      }),
  );

  app.get(
    '/v1/webhook_deliveries/:id',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Retrieve a webhook delivery with its latest attempts',
        params: IdParams(ID_PATTERN('wd')),
        response: { 200: DeliveryWithAttempts, ...errorResponses },
      },
    },
    async (request) => webhooks.retrieveDelivery(deps.pool, principalOf(request).merchantId, request.params.id),
  );

  app.post(
    '/v1/events/:id/redeliver',
    {
      schema: {
        tags: ['webhooks'],
        summary: "Send an event again to the account's enabled endpoints subscribed to it",
        headers: IdempotencyHeaders,
        params: IdParams(ID_PATTERN('evt')),
        body: Type.Object({}, { additionalProperties: false }),
        response: { 200: ListOf(Delivery), ...errorResponses },
      },
      preValidation: bodyOrEmpty,
    },
    async (request, reply) => sendReply(reply, await webhooks.redeliverEvent(deps, requestContext(request), request.params.id)),
  );
}
