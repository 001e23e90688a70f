import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { base62, ID_PATTERN, newId } from './ids.js';

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

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** The plain definition: the last `length` base62 digits of the bytes read as one big number. */
function reference(bytes: Uint8Array, length: number): string {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  let out = '';
  for (let i = 0; i < length; i++) {
    out = ALPHABET[Number(value % 62n)] + out;
    value /= 62n;
  }
  return out;
}

describe('ids', () => {
  test('base62 gives the digits of the big-endian number, for any bytes and length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 32 }), fc.integer({ min: 0, max: 48 }), (bytes, length) => {
        assert.equal(base62(bytes, length), reference(bytes, length));
      }),
      { numRuns: 2_000 },
    );
  });

  test('base62 leaves its input untouched', () => {
    const bytes = Uint8Array.from([1, 2, 3, 250]);
    base62(bytes, 8);
    assert.deepEqual(bytes, Uint8Array.from([1, 2, 3, 250]));
  });

  test('newId has its prefix and shape, orders by time and does not repeat', () => {
    const pattern = new RegExp(ID_PATTERN('pi'));
    const ids = Array.from({ length: 5_000 }, (_, index) => newId('pi', 1_700_000_000_000 + Math.floor(index / 100)));
    for (const id of ids) assert.match(id, pattern);
    assert.equal(new Set(ids).size, ids.length);
    const times = ids.map((id) => id.slice(3, 11));
    assert.deepEqual([...times].sort(), times);
  });
});
