/**
 * The request path's provider call: send the open attempt (outside any transaction), then
 * complete it and store the response with the idempotency key in one transaction. Resuming
 * here after a crash sends again under the same key, which the provider deduplicates.
 */
import assert from 'node:assert/strict';
import { type Pool, withTransaction } from '../platform/db/pool.js';
import type { Reply } from '../platform/http/reply.js';
import type { HeldKey, StartPoint } from '../platform/idempotency/service.js';
import * as idempotency from '../platform/idempotency/service.js';
import type { PaymentProvider } from '../providers/service.js';
import { completeAttempt, sendAttempt } from './completion.js';
import type { CompletionDeps } from './hooks.js';
import type { Completion } from './outcomes.js';
import type * as sql from './sql.js';
import { selectIntent } from './sql.js';

/** What the request path's provider call needs. */
export interface CallDeps extends CompletionDeps {
  pool: Pool;
  provider: PaymentProvider;
  /**
   * Turns what completing the attempt came to into the request's answer, stored with the key in
   * the completion's own transaction. routes.ts passes it in: only the HTTP edge speaks HTTP.
   */
  present: (completion: Completion) => Reply;
}

export async function callAndComplete<P extends string>(
  deps: CallDeps,
  held: HeldKey<P>,
  attempt: sql.AttemptRow,
  retryPoint: StartPoint | P,
): Promise<Reply> {
  const intent = await selectIntent(deps.pool, held.merchantId, attempt.payment_intent_id);
  assert.ok(intent, 'an attempt belongs to an intent');
  const outcome = await sendAttempt(deps.provider, intent, attempt);
  if (outcome.kind === 'unavailable') {
    // The call certainly did not take effect: settle the attempt as failed and give the key up
    // at `retryPoint`, so a retry with the same key tries again from there.
    return withTransaction(deps.pool, async (client) => {
      await completeAttempt(client, deps, held.merchantId, attempt.id, outcome);
      await idempotency.release(client, held, retryPoint);
      return deps.present({ kind: 'provider_unavailable', retryAfterSeconds: outcome.retryAfterSeconds });
    });
  }
  return idempotency.finalPhase(deps.pool, held, async (client) =>
    deps.present(await completeAttempt(client, deps, held.merchantId, attempt.id, outcome)),
  );
}
