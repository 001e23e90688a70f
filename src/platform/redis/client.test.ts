import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { openTestRedis, redisSkip, TEST_REDIS_URL, testKeyPrefix } from '../../../test/redis.js';
import { openRedis } from './client.js';

const silent = { warn() {}, info() {} };
// Messages arrive within milliseconds; this only bounds a failing test.
const MESSAGE_DEADLINE_MS = 5_000;

function nextMessage(messages: string[]): Promise<string> {
  const deadline = Date.now() + MESSAGE_DEADLINE_MS;
  return new Promise((resolve, reject) => {
    const poll = () => {
      if (messages.length > 0) return resolve(messages.shift() as string);
      if (Date.now() > deadline) return reject(new Error('no message before the deadline'));
      setTimeout(poll, 5);
    };
    poll();
  });
}

describe('Redis connections', { skip: redisSkip }, () => {
  test('keys and channels live under the prefix', async () => {
    const prefix = testKeyPrefix();
    const redis = await openTestRedis(prefix);
    await redis.client.set('greeting', 'hello');
    const plain = new Redis(TEST_REDIS_URL);
    try {
      assert.equal(await plain.get(`${prefix}greeting`), 'hello');
    } finally {
      plain.disconnect();
    }

    const sameKeys = await openTestRedis(prefix);
    const otherKeys = await openTestRedis();
    const received: string[] = [];
    const strayed: string[] = [];
    await sameKeys.subscribe('news', (message) => received.push(message));
    await otherKeys.subscribe('news', (message) => strayed.push(message));
    await redis.publish('news', 'sale opens');
    assert.equal(await nextMessage(received), 'sale opens');
    await redis.ping();
    assert.deepEqual(strayed, []);
  });

  test('an unsubscribed listener hears nothing more; the others still do', async () => {
    const prefix = testKeyPrefix();
    const publisher = await openTestRedis(prefix);
    const subscriber = await openTestRedis(prefix);
    const first: string[] = [];
    const second: string[] = [];
    const stopFirst = await subscriber.subscribe('news', (message) => first.push(message));
    await subscriber.subscribe('news', (message) => second.push(message));
    await stopFirst();
    await publisher.publish('news', 'one');
    assert.equal(await nextMessage(second), 'one');
    assert.deepEqual(first, []);
  });

  test('while disconnected, commands are refused at once instead of queueing', async () => {
    const redis = await openTestRedis();
    redis.client.disconnect();
    await assert.rejects(redis.client.get('anything'));
    await assert.rejects(redis.ping());
  });
});

describe('Redis at start-up', () => {
  test('a Redis that does not answer stops start-up with a message that hides the password', async () => {
    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    const opening = openRedis({ url: 'redis://:hunter2-secret@127.0.0.1:1', keyPrefix: 'floodgate_test:', log: silent });
    await assert.rejects(opening, (error: Error) => {
      assert.match(error.message, /^Redis at redis:\/\/:\*\*\*\*\*@127\.0\.0\.1:1 did not answer/);
      assert.ok(!error.message.includes('hunter2'));
      return true;
    });
  });
});
