import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Redis } from 'ioredis';
import { at, newKeyPrefix, REDIS_SKIP, redis, roomOn, TEST_ADMISSION_SECRET, testSale } from '../../test/fixtures/admission.js';
import { loadConfig } from '../config.js';
import { createMetrics } from '../platform/observability/metrics.js';
import { QUEUE_STATE_IDLE_TTL_MS } from './domain.js';
import { MemoryQueueStore } from './memory-store.js';
import { createWaitingRoom } from './service.js';

const config = loadConfig({ FLOODGATE_ADMISSION_SECRET: TEST_ADMISSION_SECRET });

describe('createWaitingRoom', () => {
  test('refuses to run without a secret', () => {
    assert.throws(() => createWaitingRoom({ config: loadConfig({}) }), /FLOODGATE_ADMISSION_SECRET/);
  });

  test('with a Redis client, every key it writes expires', { skip: REDIS_SKIP }, async () => {
    const client = redis as Redis;
    const prefix = newKeyPrefix();
    const room = createWaitingRoom({ config, redis: client, keyPrefix: prefix });
    const sale = testSale({ maxShoppers: 1 });
    const [a, b] = [await room.join(sale, 'a', at(0)), await room.join(sale, 'b', at(0))];
    await room.poll(sale, b.ticket as string, at(1));
    assert.equal((await room.consumeAdmission(a.admissionToken as string, sale.id, 'a', at(1))).kind, 'ok');
    const keys = await client.keys(`${prefix}*`);
    assert.ok(keys.length >= 7, keys.join(', '));
    for (const key of keys) {
      const ttlMs = await client.pttl(key);
      assert.ok(ttlMs > 0 && ttlMs <= QUEUE_STATE_IDLE_TTL_MS, `${key} expires (${ttlMs} ms)`);
    }
    assert.ok(
      keys.every((key) => key.includes(`{${sale.id}}`)),
      'one hash tag: one cluster slot per sale',
    );
  });
});

describe('metrics', () => {
  test('line length, admissions and time waited, per sale', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const room = roomOn(new MemoryQueueStore(), { metrics });
    const sale = testSale({ maxShoppers: 0, admitPerSecond: 2, graceSeconds: 3_600 });
    for (const buyer of ['a', 'b', 'c']) await room.join(sale, buyer, at(0));
    sale.maxShoppers = 10;
    await room.step(sale, at(45));
    const text = await metrics.registry.metrics();
    assert.match(text, new RegExp(`floodgate_waiting_room_length\\{sale="${sale.id}"\\} 1`));
    assert.match(text, new RegExp(`floodgate_waiting_room_admissions_total\\{sale="${sale.id}"\\} 2`));
    assert.match(text, new RegExp(`floodgate_waiting_room_wait_seconds_bucket\\{le="30",sale="${sale.id}"\\} 0`));
    assert.match(text, new RegExp(`floodgate_waiting_room_wait_seconds_bucket\\{le="60",sale="${sale.id}"\\} 2`));
  });
});

describe('confirming an admission after its hold committed', () => {
  /** A store whose claims fail while `down` is set, as Redis does during a failover. */
  class FailingClaims extends MemoryQueueStore {
    down = true;
    attempts = 0;
    override async claim(input: Parameters<MemoryQueueStore['claim']>[0]) {
      this.attempts += 1;
      if (this.down) throw new Error('CLUSTERDOWN The cluster is down');
      return super.claim(input);
    }
  }

  test('a confirm that meets an unreachable store is retried, so the line does not count the held units twice', async () => {
    const store = new FailingClaims();
    const room = roomOn(store);
    // Two units: the first buyer's admission speaks for one of them until it becomes a hold.
    const sale = testSale({ stock: 2, maxShoppers: 10 });
    const first = await room.join(sale, 'first', at(1));
    assert.equal(first.status, 'admitted');
    const check = room.checkAdmission(first.admissionToken as string, sale.id, 'first', at(2));
    assert.equal(check.kind, 'ok');
    assert.ok(check.kind === 'ok');
    // The hold took both units; confirming it fails: the ticket still counts as admitted.
    sale.stock = 0;
    assert.equal(await room.confirmAdmission(sale.id, check.ticketId, check.expiresAtMs, at(2)), 'deferred');
    sale.stock = 1; // one unit came back (another hold expired)
    const waiting = await room.join(sale, 'second', at(3));
    assert.equal(waiting.status, 'sold_out', 'the unconfirmed admission still speaks for the unit');
    // The store comes back: the retry moves the ticket to shopping, and the unit is free again.
    store.down = false;
    const deadline = Date.now() + 10_000;
    let second = await room.poll(sale, waiting.ticket as string, at(4));
    while (second?.status !== 'admitted' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      second = await room.poll(sale, waiting.ticket as string, at(4));
    }
    assert.equal(second?.status, 'admitted');
    assert.ok(store.attempts >= 2, `claims tried ${store.attempts} times`);
    // Once it landed, nothing retries any more.
    const attempts = store.attempts;
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(store.attempts, attempts);
  });
});
