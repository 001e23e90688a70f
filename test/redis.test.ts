/**
 * The Redis test wiring itself: a missing Redis is a skip with a reason on a developer's machine
 * and a failure with CI=true, so CI can never pass with its Redis tests quietly skipped.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { redisSkipReason } from './redis.js';

describe('test Redis', () => {
  test('a reachable Redis runs the tests', () => {
    assert.equal(redisSkipReason(true, { CI: 'true' }), false);
    assert.equal(redisSkipReason(true, {}), false);
  });

  test('an unreachable Redis is a skip with its address outside CI, and a failure with CI=true', () => {
    assert.match(String(redisSkipReason(false, {})), /^skipped: Redis not reachable at .+FLOODGATE_TEST_REDIS_URL/);
    assert.throws(() => redisSkipReason(false, { CI: 'true' }), /with CI=true Redis tests must run/);
  });
});
