import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { openTestRedis, redisSkip, testKeyPrefix } from '../../../test/redis.js';
import { type RateDecision, WindowLimiter } from './window-limiter.js';

const noFallback = (error: unknown) => assert.fail(`unexpected fallback: ${String(error)}`);

/** Consumes once; says whether the decision needed Redis (a promise) or was made in memory. */
async function consume(limiter: WindowLimiter, subject: string): Promise<{ decision: RateDecision; waited: boolean }> {
  const result = limiter.consume(subject);
  if (result instanceof Promise) return { decision: await result, waited: true };
  return { decision: result, waited: false };
}

describe('window limiter in memory (single-node mode)', () => {
  test('decides every request at once, exactly', () => {
    const limiter = new WindowLimiter({ name: 'memory', points: 5, windowSeconds: 60, fellBack: noFallback });
    const decisions = Array.from({ length: 7 }, () => limiter.consume('subject'));
    assert.ok(
      decisions.every((decision) => !(decision instanceof Promise)),
      'no decision waits',
    );
    assert.deepEqual(
      decisions.map((decision) => (decision as RateDecision).allowed),
      [true, true, true, true, true, false, false],
    );
    assert.equal(limiter.decideNow('subject', false)?.allowed, false);
    assert.equal(limiter.decideNow('another', false)?.remaining, 5, 'peeking takes nothing');
  });

  test('a new window starts once the last one ended', async () => {
    const limiter = new WindowLimiter({ name: 'memory', points: 1, windowSeconds: 1, fellBack: noFallback });
    assert.equal((limiter.consume('subject') as RateDecision).allowed, true);
    assert.equal((limiter.consume('subject') as RateDecision).allowed, false);
    await new Promise((resolve) => setTimeout(resolve, 1_050));
    assert.equal((limiter.consume('subject') as RateDecision).allowed, true);
  });
});

describe('window limiter shared through Redis', { skip: redisSkip }, () => {
  test('nodes lease shares of one budget: never more than the limit together, most decisions without a round trip', async () => {
    const prefix = testKeyPrefix();
    // Two nodes on one Redis; a limit of 100 leases 5 points at a time.
    const nodes = [
      new WindowLimiter({ name: 'lease', points: 100, windowSeconds: 60, redis: await openTestRedis(prefix), fellBack: noFallback }),
      new WindowLimiter({ name: 'lease', points: 100, windowSeconds: 60, redis: await openTestRedis(prefix), fellBack: noFallback }),
    ];
    let allowed = 0;
    let waited = 0;
    for (let i = 0; i < 150; i++) {
      const result = await consume(nodes[i % 2] as WindowLimiter, 'busy_key');
      if (result.decision.allowed) allowed++;
      if (result.waited) waited++;
    }
    // What a node leased and did not spend is lost to the other: at most one share each.
    assert.ok(allowed <= 100, `allowed ${allowed} of a limit of 100`);
    assert.ok(allowed >= 100 - 2 * 5, `allowed ${allowed}: at most a share per node unused`);
    // 100 points in shares of 5 is 20 leases, and each node learns once that none are left.
    assert.ok(waited <= 22, `${waited} decisions waited for Redis`);
    // Once the budget is spent, refusals are made at once, on both nodes.
    for (const node of nodes) assert.equal(node.decideNow('busy_key', true)?.allowed, false);
  });

  test('many requests arriving while a lease is on its way share it', async () => {
    const limiter = new WindowLimiter({ name: 'burst', points: 40, windowSeconds: 60, redis: await openTestRedis(), fellBack: noFallback });
    // A share of 2: twenty concurrent requests need ten leases, one after another, not twenty at once.
    const decisions = await Promise.all(Array.from({ length: 50 }, () => limiter.consume('buyer')));
    assert.equal(decisions.filter((decision) => decision.allowed).length, 40);
    assert.deepEqual(decisions.map((decision) => decision.remaining).slice(0, 3), [39, 38, 37]);
  });

  test('a small limit stays exact request by request across nodes', async () => {
    const prefix = testKeyPrefix();
    const a = new WindowLimiter({ name: 'exact', points: 3, windowSeconds: 60, redis: await openTestRedis(prefix), fellBack: noFallback });
    const b = new WindowLimiter({ name: 'exact', points: 3, windowSeconds: 60, redis: await openTestRedis(prefix), fellBack: noFallback });
    const decisions = [];
    for (const node of [a, b, a, b, a]) decisions.push((await consume(node, '198.51.100.9')).decision);
    assert.deepEqual(
      decisions.map((decision) => [decision.allowed, decision.remaining]),
      [
        [true, 2],
        [true, 1],
        [true, 0],
        [false, 0],
        [false, 0],
      ],
    );
  });
});
