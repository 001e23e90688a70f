import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ID_PATTERN, newId } from './ids.js';

test('ids have their prefix and the documented shape', () => {
  for (const prefix of ['pi', 're', 'evt', 'pa']) {
    assert.match(newId(prefix), new RegExp(ID_PATTERN(prefix)));
  }
});

test('ids made one after another sort in the order they were made, within one millisecond too', () => {
  // Lists are newest first by walking ids, so order by id must be order of creation. Thousands
  // of ids in a tight loop share milliseconds many times over.
  const made = Array.from({ length: 5_000 }, () => newId('pi'));
  const sorted = [...made].sort();
  assert.equal(new Set(made).size, made.length, 'no duplicates');
  assert.deepEqual(sorted, made);
});

test('ids compare by time first', () => {
  const at = Date.parse('2026-01-01T00:00:00Z');
  const earlier = newId('pi', at);
  const later = newId('pi', at + 1);
  assert.ok(earlier < later);
  assert.ok(newId('pi', at - 86_400_000) < earlier);
});
