/**
 * The request path's provider call: send the open attempt (outside any transaction), then
 * complete it and store the response with the idempotency key in one transaction. Resuming
 * here after a crash sends again under the same key, which the provider deduplicates.
 */
import assert from 'node:assert/strict';
import { type Pool, withTransaction } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import type { Reply } from '../platform/http/reply.js';
import type { HeldKey, StartPoint } from '../platform/idempotency/service.js';
import * as idempotency from '../platform/idempotency/service.js';
import type { PaymentProvider } from '../providers/service.js';
import type { AttemptsInFlight } from './attempts-in-flight.js';
import { type AttemptOutcome, completeAttempt, sendAttempt } from './completion.js';
import { type ConfirmBatcher, isBatchableCapture } from './confirm-batches.js';
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
  /**
   * Marks each attempt in flight from its call to its completion, so that the provider's
   * webhook for it waits for this path rather than racing it.
   */
  inFlight?: AttemptsInFlight;
}

/** Runs an attempt's call and completion marked in flight, when the node keeps track. */
function markedInFlight<T>(deps: CallDeps, merchantId: string, attemptId: string, work: () => Promise<T>): Promise<T> {
  return deps.inFlight ? deps.inFlight.run(merchantId, attemptId, work) : work();
}

export async function callAndComplete<P extends string>(
  deps: CallDeps,
  held: HeldKey<P>,
  attempt: sql.AttemptRow,
  retryPoint: StartPoint | P,
): Promise<Reply> {
  const intent = await selectIntent(deps.pool, held.merchantId, attempt.payment_intent_id);
  assert.ok(intent, 'an attempt belongs to an intent');
  return markedInFlight(deps, held.merchantId, attempt.id, async () =>
    completeSent(deps, held, attempt, await sendAttempt(deps.provider, intent, attempt), retryPoint),
  );
}

/**
 * The provider call of a confirm whose first phase a batch wrote (confirm-batches.ts): a
 * captured authorization completes in a batch too; any other outcome, or a batch that leaves it
 * out, completes here as a lone request's does.
 */
export async function sendAndCompleteInBatch<P extends string>(
  deps: CallDeps,
  batcher: ConfirmBatcher,
  held: HeldKey<P>,
  ctx: RequestContext,
  started: { intent: sql.PaymentIntentRow; attempt: sql.AttemptRow },
  retryPoint: StartPoint | P,
): Promise<Reply> {
  return markedInFlight(deps, held.merchantId, started.attempt.id, async () => {
    const outcome = await sendAttempt(deps.provider, started.intent, started.attempt);
    if (outcome.kind === 'succeeded' && 'status' in outcome.value && isBatchableCapture(started.attempt, outcome.value)) {
      const completed = await batcher.complete({ ctx, intent: started.intent, attempt: started.attempt, charge: outcome.value });
      if (completed.kind === 'completed') return completed.reply;
    }
    return completeSent(deps, held, started.attempt, outcome, retryPoint);
  });
}

/** Completes a sent attempt and stores the answer with the key (or gives the key up, if the call certainly failed). */
async function completeSent<P extends string>(
  deps: CallDeps,
  held: HeldKey<P>,
  attempt: sql.AttemptRow,
  outcome: AttemptOutcome,
  retryPoint: StartPoint | P,
): Promise<Reply> {
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
