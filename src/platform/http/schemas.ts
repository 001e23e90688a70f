/** Schemas shared by every capability's routes. */
import { type TSchema, Type } from '@sinclair/typebox';
import { LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX } from './pagination.js';

export const ErrorResponse = Type.Object(
  {
    error: Type.Object(
      {
        type: Type.String(),
        code: Type.String(),
        message: Type.String(),
        param: Type.Optional(Type.String()),
      },
      { additionalProperties: true },
    ),
  },
  { $id: 'ErrorResponse', description: 'Every error has this shape; `code` is stable and `param` names the parameter to fix.' },
);

export const errorResponses = {
  400: ErrorResponse,
  401: ErrorResponse,
  404: ErrorResponse,
  409: ErrorResponse,
  422: ErrorResponse,
  503: ErrorResponse,
};

export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({ description: 'Makes a retry of this request safe: it replays the first response. 1–255 characters.' }),
  ),
});

export const ListQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: LIST_LIMIT_MAX, default: LIST_LIMIT_DEFAULT }),
    starting_after: Type.Optional(Type.String({ maxLength: 64, description: 'The last id of the previous page.' })),
  },
  { additionalProperties: false },
);

export function ListOf<T extends TSchema>(item: T) {
  return Type.Object({
    object: Type.Literal('list'),
    url: Type.String(),
    has_more: Type.Boolean(),
    data: Type.Array(item),
  });
}

export const IdParams = (pattern: string) =>
  Type.Object({ id: Type.String({ pattern, description: 'The object id.' }) }, { additionalProperties: false });

// Metadata limits follow Stripe's, which integrators already know. Every key is checked
// (propertyNames) and every value (additionalProperties): a key pattern such as '^(.*)$' does
// not match a key holding a line break, which then skipped validation entirely and was
// dropped from responses while kept in the database and in events.
export const Metadata = Type.Unsafe<Record<string, string>>({
  type: 'object',
  additionalProperties: { type: 'string', maxLength: 500 },
  maxProperties: 50,
  propertyNames: { minLength: 1, maxLength: 40, pattern: '^[^\\u0000-\\u001f\\u007f]*$' },
  description: 'Up to 50 keys of 1 to 40 characters without control characters (no line breaks), values up to 500 characters.',
});

/** Metadata as stored, in a response: every key is written out, whatever it holds. */
export const StoredMetadata = Type.Unsafe<Record<string, string>>({ type: 'object', additionalProperties: { type: 'string' } });

/** A payment method's id, as a confirm takes it: payments' own, and an order's that confirms (sales). */
export const PaymentMethod = Type.String({
  minLength: 1,
  maxLength: 100,
  description:
    'A payment method id. Test methods: pm_card_visa, pm_card_declined, pm_card_insufficient_funds, pm_card_timeout, pm_card_capture_declined, pm_card_cancel_declined, pm_card_refund_timeout.',
});
