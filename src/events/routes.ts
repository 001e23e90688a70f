import { Type } from '@sinclair/typebox';
import type { Pool } from '../platform/db/pool.js';
import { principalOf } from '../platform/http/context.js';
import { foundOr404 } from '../platform/http/errors.js';
import { errorResponses, IdParams, ListOf, ListQuery } from '../platform/http/schemas.js';
import type { HttpServer } from '../platform/http/server.js';
import { ID_PATTERN } from '../platform/ids.js';
import * as events from './service.js';

const Event = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('event'),
    type: Type.String(),
    created: Type.Integer(),
    sequence: Type.Integer({ description: 'The position of this event among the events of its object: 1, 2, 3, ...' }),
    data: Type.Object({ object: Type.Object({}, { additionalProperties: true }) }),
  },
  { $id: 'Event' },
);

export function registerEventRoutes(app: HttpServer, pool: Pool): void {
  app.get(
    '/v1/events',
    {
      schema: {
        tags: ['events'],
        summary: 'List events, newest first',
        querystring: Type.Composite(
          [
            ListQuery,
            Type.Object({
              type: Type.Optional(Type.Union(events.EVENT_TYPES.map((type) => Type.Literal(type)))),
              object_id: Type.Optional(Type.String({ maxLength: 64 })),
            }),
          ],
          { additionalProperties: false },
        ),
        response: { 200: ListOf(Event), ...errorResponses },
      },
    },
    async (request) =>
      events.list(pool, {
        merchantId: principalOf(request).merchantId,
        limit: request.query.limit,
        startingAfter: request.query.starting_after,
        type: request.query.type,
        objectId: request.query.object_id,
      }),
  );

  app.get(
    '/v1/events/:id',
    {
      schema: {
        tags: ['events'],
        summary: 'Retrieve an event',
        params: IdParams(ID_PATTERN('evt')),
        response: { 200: Event, ...errorResponses },
      },
    },
    async (request) => {
      return foundOr404(await events.retrieve(pool, principalOf(request).merchantId, request.params.id), 'event', request.params.id);
    },
  );
}
