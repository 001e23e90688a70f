/**
 * The HTTP edge of payments: schemas, the secret-key requirement, and the mapping of use-case
 * replies to responses. Amount limits that depend on the currency are checked here, after the
 * schema, so the error names the parameter.
 */
import { Type } from '@sinclair/typebox';
import { CURRENCY_EXPONENTS, isCurrency, maxAmount, SUPPORTED_CURRENCIES } from '../money/currency.js';
import { principalOf, requestContext } from '../platform/http/context.js';
import { ApiError, foundOr404 } from '../platform/http/errors.js';
import { errorReply, ok, type Reply, sendReply } from '../platform/http/reply.js';
import {
  errorResponses,
  IdempotencyHeaders,
  IdParams,
  ListOf,
  ListQuery,
  Metadata,
  PaymentMethod,
  StoredMetadata,
} from '../platform/http/schemas.js';
import type { HttpServer } from '../platform/http/server.js';
import { ID_PATTERN } from '../platform/ids.js';
import { CANCELLATION_REASONS, REFUND_REASONS, STATUSES } from './domain.js';
import type { Completion } from './outcomes.js';
import * as refunds from './refunds.js';
import type { PaymentDeps } from './service.js';
import * as payments from './service.js';

const Amount = Type.Integer({
  minimum: 1,
  description: 'A positive integer in the minor unit of the currency (cents for USD, yen for JPY).',
});

const PaymentIntent = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('payment_intent'),
    amount: Type.Integer(),
    amount_capturable: Type.Integer(),
    amount_received: Type.Integer(),
    amount_refunded: Type.Integer(),
    currency: Type.String(),
    status: Type.Union(STATUSES.map((status) => Type.Literal(status))),
    capture_method: Type.Union([Type.Literal('automatic'), Type.Literal('manual')]),
    payment_method: Type.Union([Type.String(), Type.Null()]),
    description: Type.Union([Type.String(), Type.Null()]),
    metadata: StoredMetadata,
    last_payment_error: Type.Union([Type.Record(Type.String(), Type.String()), Type.Null()]),
    cancellation_reason: Type.Union([Type.String(), Type.Null()]),
    canceled_at: Type.Union([Type.Integer(), Type.Null()]),
    created: Type.Integer(),
    livemode: Type.Boolean(),
  },
  { $id: 'PaymentIntent' },
);

const Refund = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('refund'),
    amount: Type.Integer(),
    currency: Type.String(),
    payment_intent: Type.String(),
    status: Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed')]),
    reason: Type.Union([Type.String(), Type.Null()]),
    failure_reason: Type.Union([Type.String(), Type.Null()]),
    metadata: StoredMetadata,
    created: Type.Integer(),
  },
  { $id: 'Refund' },
);

const CreateIntentBody = Type.Object(
  {
    amount: Amount,
    currency: Type.String({
      description: `Three-letter ISO 4217 code, lower case. Supported: ${SUPPORTED_CURRENCIES.join(', ')}.`,
      minLength: 3,
      maxLength: 3,
    }),
    capture_method: Type.Optional(
      Type.Union([Type.Literal('automatic'), Type.Literal('manual')], {
        description: 'automatic charges on confirmation; manual only authorizes, and you capture later.',
      }),
    ),
    payment_method: Type.Optional(PaymentMethod),
    confirm: Type.Optional(Type.Boolean({ description: 'Confirm at once, charging payment_method.' })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    metadata: Type.Optional(Metadata),
  },
  { additionalProperties: false },
);

const intentId = IdParams(ID_PATTERN('pi'));
const refundId = IdParams(ID_PATTERN('re'));
const intentResponses = { 200: PaymentIntent, 402: errorResponses[400], ...errorResponses };

// A provider that is down usually recovers within seconds; ask clients to wait at least this.
const RETRY_AFTER_SECONDS_MIN = 1;

function unavailableReply(retryAfterSeconds: number): Reply {
  const seconds = String(Math.max(RETRY_AFTER_SECONDS_MIN, retryAfterSeconds));
  return errorReply(
    new ApiError('provider_unavailable', 'The payment provider is unavailable; nothing was charged. Retry later.', undefined, {
      'retry-after': seconds,
    }),
  );
}

/** The HTTP answer to what completing a provider call came to (the request path stores it with its key). */
export function completionReply(completion: Completion): Reply {
  switch (completion.kind) {
    case 'intent':
      return ok(completion.intent);
    case 'refund':
      return ok(completion.refund);
    case 'card_declined': {
      const error = new ApiError('card_declined', completion.message);
      return {
        status: error.status,
        body: { error: { ...error.toBody().error, decline_code: completion.code, payment_intent: completion.intent } },
      };
    }
    case 'provider_refused':
      return errorReply(new ApiError('provider_declined', `The provider refused the ${completion.operation}: ${completion.message}`));
    case 'provider_unavailable':
      return unavailableReply(completion.retryAfterSeconds);
  }
}

export function registerPaymentRoutes(app: HttpServer, routeDeps: Omit<PaymentDeps, 'present'>): void {
  const deps: PaymentDeps = { ...routeDeps, present: completionReply };

  app.post(
    '/v1/payment_intents',
    {
      schema: {
        tags: ['payment_intents'],
        summary: 'Create a PaymentIntent',
        headers: IdempotencyHeaders,
        body: CreateIntentBody,
        response: intentResponses,
      },
    },
    async (request, reply) => {
      const body = request.body;
      const currency = body.currency.toLowerCase();
      if (!isCurrency(currency)) {
        throw new ApiError(
          'parameter_invalid',
          `Unsupported currency "${body.currency}". Supported: ${SUPPORTED_CURRENCIES.join(', ')}.`,
          'currency',
        );
      }
      if (body.amount > maxAmount(currency)) {
        throw new ApiError(
          'amount_too_large',
          `amount must be at most ${maxAmount(currency)} ${currency} minor units (exponent ${CURRENCY_EXPONENTS[currency]}).`,
          'amount',
        );
      }
      if (body.confirm && !body.payment_method) {
        throw new ApiError('parameter_missing', 'payment_method is required when confirm is true.', 'payment_method');
      }
      return sendReply(reply, await payments.createPaymentIntent(deps, requestContext(request), { ...body, currency }));
    },
  );

  app.get(
    '/v1/payment_intents',
    {
      schema: {
        tags: ['payment_intents'],
        summary: 'List PaymentIntents, newest first',
        querystring: ListQuery,
        response: { 200: ListOf(PaymentIntent), ...errorResponses },
      },
    },
    async (request) =>
      payments.listPaymentIntents(deps.pool, principalOf(request).merchantId, request.query.limit, request.query.starting_after),
  );

  app.get(
    '/v1/payment_intents/:id',
    { schema: { tags: ['payment_intents'], summary: 'Retrieve a PaymentIntent', params: intentId, response: intentResponses } },
    async (request) => {
      return foundOr404(
        await payments.retrievePaymentIntent(deps.pool, principalOf(request).merchantId, request.params.id),
        'payment_intent',
        request.params.id,
      );
    },
  );

  app.post(
    '/v1/payment_intents/:id/confirm',
    {
      schema: {
        tags: ['payment_intents'],
        summary: 'Confirm a PaymentIntent: charge (or authorize) its payment method',
        headers: IdempotencyHeaders,
        params: intentId,
        body: Type.Optional(Type.Object({ payment_method: Type.Optional(PaymentMethod) }, { additionalProperties: false })),
        response: intentResponses,
      },
    },
    async (request, reply) =>
      sendReply(reply, await payments.confirmPaymentIntent(deps, requestContext(request), request.params.id, request.body ?? {})),
  );

  app.post(
    '/v1/payment_intents/:id/capture',
    {
      schema: {
        tags: ['payment_intents'],
        summary: 'Capture an authorized PaymentIntent; capturing less releases the remainder',
        headers: IdempotencyHeaders,
        params: intentId,
        body: Type.Optional(Type.Object({ amount_to_capture: Type.Optional(Amount) }, { additionalProperties: false })),
        response: intentResponses,
      },
    },
    async (request, reply) =>
      sendReply(reply, await payments.capturePaymentIntent(deps, requestContext(request), request.params.id, request.body ?? {})),
  );

  app.post(
    '/v1/payment_intents/:id/cancel',
    {
      schema: {
        tags: ['payment_intents'],
        summary: 'Cancel a PaymentIntent that has not succeeded; releases an authorization',
        headers: IdempotencyHeaders,
        params: intentId,
        body: Type.Optional(
          Type.Object(
            { cancellation_reason: Type.Optional(Type.Union(CANCELLATION_REASONS.map((reason) => Type.Literal(reason)))) },
            { additionalProperties: false },
          ),
        ),
        response: intentResponses,
      },
    },
    async (request, reply) =>
      sendReply(reply, await payments.cancelPaymentIntent(deps, requestContext(request), request.params.id, request.body ?? {})),
  );

  app.post(
    '/v1/refunds',
    {
      schema: {
        tags: ['refunds'],
        summary: 'Refund a succeeded payment, in full or in part',
        headers: IdempotencyHeaders,
        body: Type.Object(
          {
            payment_intent: Type.String({ pattern: ID_PATTERN('pi') }),
            amount: Type.Optional(Amount),
            reason: Type.Optional(Type.Union(REFUND_REASONS.map((reason) => Type.Literal(reason)))),
            metadata: Type.Optional(Metadata),
          },
          { additionalProperties: false },
        ),
        response: { 200: Refund, ...errorResponses },
      },
    },
    async (request, reply) => sendReply(reply, await refunds.createRefund(deps, requestContext(request), request.body)),
  );

  app.get(
    '/v1/refunds',
    {
      schema: {
        tags: ['refunds'],
        summary: 'List refunds, newest first',
        querystring: Type.Composite([ListQuery, Type.Object({ payment_intent: Type.Optional(Type.String({ maxLength: 64 })) })], {
          additionalProperties: false,
        }),
        response: { 200: ListOf(Refund), ...errorResponses },
      },
    },
    async (request) =>
      refunds.listRefunds(deps.pool, {
        merchantId: principalOf(request).merchantId,
        limit: request.query.limit,
        startingAfter: request.query.starting_after,
        paymentIntentId: request.query.payment_intent,
      }),
  );

  app.get(
    '/v1/refunds/:id',
    { schema: { tags: ['refunds'], summary: 'Retrieve a refund', params: refundId, response: { 200: Refund, ...errorResponses } } },
    async (request) => {
      return foundOr404(
        await refunds.retrieveRefund(deps.pool, principalOf(request).merchantId, request.params.id),
        'refund',
        request.params.id,
      );
    },
  );
}
