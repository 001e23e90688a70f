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
