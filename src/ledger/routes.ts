import { Type } from '@sinclair/typebox';
import type { Pool } from '../platform/db/pool.js';
import { principalOf } from '../platform/http/context.js';
import { errorResponses } from '../platform/http/schemas.js';
import type { HttpServer } from '../platform/http/server.js';
import * as ledger from './service.js';

const Balance = Type.Object(
  {
    object: Type.Literal('balance'),
    available: Type.Array(Type.Object({ currency: Type.String(), amount: Type.Integer() })),
  },
  { $id: 'Balance' },
);

export function registerLedgerRoutes(app: HttpServer, pool: Pool): void {
  app.get(
    '/v1/balance',
    {
      schema: {
        tags: ['balance'],
        summary: "The merchant's balance per currency: captured minus refunded, from the ledger",
        response: { 200: Balance, ...errorResponses },
      },
    },
    async (request) => ledger.balance(pool, principalOf(request).merchantId),
  );
}
