import assert from 'node:assert/strict';
import { test } from 'node:test';
import { carriedForward, percentiles, perSecond } from './stats.js';

test('a queue reading taken every few seconds is carried forward to the seconds between', () => {
  // Scraped at seconds 0 and 5; the scrape at 10 failed; readings end at second 11.
  const readings = [3, null, null, null, null, 7, null, null, null, null, null, null];
  assert.deepEqual(carriedForward(readings, 14), [3, 3, 3, 3, 3, 7, 7, 7, 7, 7, 7, 7, null, null]);
  assert.deepEqual(carriedForward([null, 2], 3), [null, 2, null]);
});

test('drill timelines count events per second and take nearest-rank percentiles', () => {
  assert.deepEqual(perSecond([0, 999, 1000, 2500, -1, 3000], 3), [2, 1, 1]);
  assert.deepEqual(percentiles([5, 1, 4, 2, 3]), { count: 5, p50: 3, p95: 5, p99: 5, max: 5 });
});
