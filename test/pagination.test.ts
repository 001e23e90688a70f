/**
 * Cursor pagination over the lists: walking with limit and starting_after yields every object
 * once, newest first, with has_more true exactly until the last page, even while new objects
 * arrive during the walk.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createMerchant } from '../src/merchants/service.js';
import { newId } from '../src/platform/ids.js';
import { key, setupTestContext } from './helpers.js';

const t = await setupTestContext();
const COUNT = 25;

const created = await createMerchant(t.pool, 'Pagination merchant');
const headers = { authorization: `Bearer ${created.secret_key}` };

async function createIntent(amount: number): Promise<string> {
  const response = await t.app.inject({
    method: 'POST',
    url: '/v1/payment_intents',
    headers: { ...headers, 'idempotency-key': key() },
    payload: { amount, currency: 'usd' },
  });
  assert.equal(response.statusCode, 200);
  return response.json().id;
}

// One after another, so creation order is well defined.
const ids: string[] = [];
for (let i = 0; i < COUNT; i++) ids.push(await createIntent(100 + i));
const newestFirst = [...ids].reverse();

interface Page {
  object: string;
  url: string;
  has_more: boolean;
  data: Array<{ id: string; created: number; amount?: number }>;
}

async function list(path: string, query: string): Promise<Page> {
  const response = await t.app.inject({ method: 'GET', url: `${path}?${query}`, headers });
  assert.equal(response.statusCode, 200, response.body);
  return response.json();
}

/** Walks a list page by page; `between` runs after each page, before the next is read. */
async function walk(path: string, limit: number, between: () => Promise<void> = async () => {}) {
  const pages: Page[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await list(path, `limit=${limit}${cursor ? `&starting_after=${cursor}` : ''}`);
    pages.push(page);
    assert.ok(pages.length <= COUNT + 1, 'the walk ends');
    if (!page.has_more) return pages;
    cursor = page.data.at(-1)?.id;
    assert.ok(cursor, 'a page that says more follow is not empty');
    await between();
  }
}

describe('payment intent pagination', () => {
  test(`${COUNT} intents in pages of 10: every one once, newest first, has_more until the last page`, async () => {
    const pages = await walk('/v1/payment_intents', 10);
    assert.deepEqual(
      pages.map((page) => page.data.length),
      [10, 10, 5],
    );
    assert.deepEqual(
      pages.map((page) => page.has_more),
      [true, true, false],
    );
    for (const page of pages) {
      assert.equal(page.object, 'list');
      assert.equal(page.url, '/v1/payment_intents');
    }
    const walked = pages.flatMap((page) => page.data);
    assert.equal(new Set(walked.map((intent) => intent.id)).size, walked.length, 'no duplicates');
    assert.deepEqual(
      walked.map((intent) => intent.id),
      newestFirst,
      'no gaps, newest first',
    );
    for (let i = 1; i < walked.length; i++) {
      assert.ok((walked[i - 1]?.created ?? 0) >= (walked[i]?.created ?? 0), 'created never increases down the list');
    }
  });

  test('has_more is exact at the boundary', async () => {
    for (const [limit, count, more] of [
      [COUNT, COUNT, false],
      [COUNT - 1, COUNT - 1, true],
      [100, COUNT, false],
      [1, 1, true],
    ] as const) {
      const page = await list('/v1/payment_intents', `limit=${limit}`);
      assert.equal(page.data.length, count, `limit=${limit}`);
      assert.equal(page.has_more, more, `limit=${limit}`);
    }
  });

  test('a page starting after the oldest is empty; after the newest holds the rest', async () => {
    const afterOldest = await list('/v1/payment_intents', `limit=10&starting_after=${ids[0]}`);
    assert.deepEqual(afterOldest.data, []);
    assert.equal(afterOldest.has_more, false);
    const afterNewest = await list('/v1/payment_intents', `limit=100&starting_after=${newestFirst[0]}`);
    assert.deepEqual(
      afterNewest.data.map((intent) => intent.id),
      newestFirst.slice(1),
    );
    // A cursor need not exist: an id from before all of them starts past the end.
    const beforeAll = await list('/v1/payment_intents', `starting_after=${newId('pi', Date.parse('2020-01-01'))}`);
    assert.deepEqual(beforeAll.data, []);
  });

  test('intents created during the walk neither repeat nor hide the ones being walked', async () => {
    const added: string[] = [];
    const pages = await walk('/v1/payment_intents', 10, async () => {
      added.push(await createIntent(999));
    });
    const walked = pages.flatMap((page) => page.data.map((intent) => intent.id));
    // They are newer than every cursor, so the walk goes on over exactly the intents it began with.
    assert.equal(added.length, 2);
    assert.deepEqual(walked, newestFirst);
    // A fresh walk sees them all, newest first.
    const fresh = (await walk('/v1/payment_intents', 10)).flatMap((page) => page.data.map((intent) => intent.id));
    assert.deepEqual(fresh, [...[...added].reverse(), ...newestFirst]);
  });
});

describe('event pagination', () => {
  test('events page the same way: every event once, newest first', async () => {
    const everything = await list('/v1/events', 'limit=100');
    assert.equal(everything.has_more, false);
    const pages = await walk('/v1/events', 7);
    const walked = pages.flatMap((page) => page.data.map((event) => event.id));
    assert.deepEqual(
      walked,
      everything.data.map((event) => event.id),
    );
    assert.equal(new Set(walked).size, walked.length);
    assert.deepEqual(
      pages.map((page) => page.has_more),
      pages.map((_, i) => i < pages.length - 1),
    );
    const sorted = [...walked].sort().reverse();
    assert.deepEqual(walked, sorted, 'ids descend');
  });
});
