/**
 * /readyz: every dependency a request needs must answer, each within a bound, or the node
 * reports itself unavailable and the balancer sends traffic elsewhere.
 */

export interface ReadinessCheck {
  /** Prefixes the reason when the check fails: "redis: ...". */
  name: string;
  check(): Promise<unknown>;
}

export type Readiness = { ready: true } | { ready: false; reason: string };

/** Runs the checks together; the first failure (in the order given) is the reason. */
export async function checkReadiness(checks: ReadinessCheck[], timeoutMs: number): Promise<Readiness> {
  const results = await Promise.allSettled(checks.map((check) => withTimeout(check, timeoutMs)));
  for (const [index, result] of results.entries()) {
    if (result.status === 'rejected') {
      const message = result.reason instanceof Error ? result.reason.message : String(result.reason);
      return { ready: false, reason: `${checks[index]?.name}: ${message}` };
    }
  }
  return { ready: true };
}

function withTimeout(check: ReadinessCheck, timeoutMs: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
  });
  return Promise.race([check.check(), timeout]).finally(() => clearTimeout(timer));
}
