import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { base62, ID_PATTERN, newId } from './ids.js';

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
