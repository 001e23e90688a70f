/**
 * The provider calls this node's requests are making or completing right now, by attempt.
 *
 * A provider reports every operation by webhook as well as in its answer, and often sends the
 * webhook while the request that made the call is still waiting for that answer or completing
 * it. Such a webhook used to complete the payment itself: it raced the request for the
 * intent's row lock (a confirm completing a batch of payments waited behind it, or it behind
 * the batch), and whichever came first did the completion's work on the general path, one
 * transaction of about ten statements where the confirm's batch spends a share of three. In a
 * drill on one node, the webhooks ran more statements than all the checkout's batches.
 *
 * Now a webhook for an attempt in flight here waits until the request's completion has ended
 * (committed or failed), and then usually has only its event to record; on another node it
 * waits by reading the attempt again (provider-webhooks.ts awaitRequest). The wait is bounded:
 * past it the webhook completes the attempt as before, which is always correct (the completion
 * command is idempotent under the intent's lock), only dearer.
 */
export class AttemptsInFlight {
  /** Each in-flight attempt's end, which never rejects. Bounded by the node's requests in flight. */
  private readonly calls = new Map<string, Promise<void>>();

  /** Runs `work` (an attempt's call and its completion) with the attempt marked in flight until it ends, however it ends. */
  async run<T>(merchantId: string, attemptId: string, work: () => Promise<T>): Promise<T> {
    const name = attemptName(merchantId, attemptId);
    const running = work();
    const ended = running.then(
      () => {},
      () => {},
    );
    this.calls.set(name, ended);
    try {
      return await running;
    } finally {
      // A later call of the same attempt (a retry with the key) may have taken the entry over.
      if (this.calls.get(name) === ended) this.calls.delete(name);
    }
  }

  has(merchantId: string, attemptId: string): boolean {
    return this.calls.has(attemptName(merchantId, attemptId));
  }

  /**
   * Resolves once this node's call of the attempt has ended, or after `maxWaitMs`, whichever
   * comes first: at once when none is in flight. Never rejects.
   */
  async ended(merchantId: string, attemptId: string, maxWaitMs: number): Promise<void> {
    const ended = this.calls.get(attemptName(merchantId, attemptId));
    if (!ended) return;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, maxWaitMs);
    });
    try {
      await Promise.race([ended, bound]);
    } finally {
      clearTimeout(timer);
    }
  }
}

function attemptName(merchantId: string, attemptId: string): string {
  return `${merchantId}\u0000${attemptId}`;
}
