/**
 * The session store's contract, run against each store: Redis (many nodes), PostgreSQL
 * (single-node mode) and memory.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createTestDatabase } from '../../test/helpers.js';
import { openTestRedis, redisSkip } from '../../test/redis.js';
import { RedisSessionStore } from './redis-sessions.js';
import { MemorySessionStore, newSession, SESSION_ID_PATTERN, type SessionStore } from './sessions.js';
import { PostgresSessionStore } from './sql.js';

const TTL_MS = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function contract(name: string, open: () => Promise<SessionStore>, options: { skip?: string | false } = {}) {
  describe(`session store: ${name}`, { skip: options.skip }, () => {
    test('a new session reads back at version 1, and an unknown id reads as nothing', async () => {
      const store = await open();
      const session = newSession('sale_1');
      assert.match(session.id, SESSION_ID_PATTERN);
      await store.create(session, TTL_MS);
      assert.deepEqual(await store.get(session.id), { version: 1, session });
      assert.equal(await store.get(newSession('sale_1').id), undefined);
    });

    test('replace succeeds at the current version only, so one of two racing writers wins', async () => {
      const store = await open();
      const session = newSession('sale_1');
      await store.create(session, TTL_MS);
      const [a, b] = await Promise.all([
        store.replace({ ...session, ticketId: 'qt_a' }, 1, TTL_MS),
        store.replace({ ...session, ticketId: 'qt_b' }, 1, TTL_MS),
      ]);
      assert.equal(Number(a) + Number(b), 1, 'exactly one writer wins');
      const stored = await store.get(session.id);
      assert.equal(stored?.version, 2);
      assert.equal(stored?.session.ticketId, a ? 'qt_a' : 'qt_b');
      assert.equal(await store.replace({ ...session, holdId: 'hold_x' }, 1, TTL_MS), false, 'a stale version is refused');
      assert.equal(await store.replace({ ...session, holdId: 'hold_x' }, 2, TTL_MS), true);
      assert.equal((await store.get(session.id))?.session.holdId, 'hold_x');
    });

    test('a session expires after its time to live, and cannot be replaced then', async () => {
      const store = await open();
      const session = newSession('sale_1');
      await store.create(session, 50);
      assert.ok(await store.get(session.id));
      await sleep(120);
      assert.equal(await store.get(session.id), undefined);
      assert.equal(await store.replace(session, 1, TTL_MS), false);
    });

    test('delete removes the session', async () => {
      const store = await open();
      const session = newSession('sale_1');
      await store.create(session, TTL_MS);
      await store.delete(session.id);
      assert.equal(await store.get(session.id), undefined);
    });
  });
}

const db = await createTestDatabase();
contract('PostgreSQL', async () => new PostgresSessionStore(db.pool));
contract('memory', async () => new MemorySessionStore());
contract('Redis', async () => new RedisSessionStore((await openTestRedis()).client), { skip: redisSkip });

test('two Redis connections on one prefix (two API nodes) see each other’s sessions', { skip: redisSkip }, async () => {
  const first = await openTestRedis();
  const second = await openTestRedis(first.keyPrefix);
  const a = new RedisSessionStore(first.client);
  const b = new RedisSessionStore(second.client);
  const session = newSession('sale_1');
  await a.create(session, TTL_MS);
  assert.equal(await b.replace({ ...session, ticketId: 'qt_1' }, 1, TTL_MS), true);
  assert.equal((await a.get(session.id))?.session.ticketId, 'qt_1');
});
