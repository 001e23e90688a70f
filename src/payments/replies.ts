/**
 * The answers payments' use cases give over HTTP, made from domain results. The request path
 * stores its answer with the idempotency key in the completion's own transaction, so the
 * mapping lives here, beside routes.ts, rather than in the completion command: the reconciler
 * and the provider webhook complete attempts too and answer no one.
 */
import { ApiError } from '../platform/http/errors.js';
import { errorReply, ok, type Reply } from '../platform/http/reply.js';
import type { Completion } from './outcomes.js';

// A provider that is down usually recovers within seconds; ask clients to wait at least this.
const RETRY_AFTER_SECONDS_MIN = 1;

export function unavailableReply(retryAfterSeconds: number): Reply {
  const seconds = String(Math.max(RETRY_AFTER_SECONDS_MIN, retryAfterSeconds));
  return errorReply(
    new ApiError('provider_unavailable', 'The payment provider is unavailable; nothing was charged. Retry later.', undefined, {
      'retry-after': seconds,
    }),
  );
}

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
