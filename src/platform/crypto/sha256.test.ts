import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { sha256 } from './sha256.js';

test("sha256 is createHash's digest, as bytes and in each text encoding", () => {
  for (const data of ['', 'sk_test_abc', 'POST /v1/holds\n{"quantity":1}', 'café 票 🎟️\u0000']) {
    const expected = createHash('sha256').update(data).digest();
    assert.deepEqual(sha256(data), expected);
    for (const encoding of ['base64', 'base64url', 'hex'] as const) assert.equal(sha256(data, encoding), expected.toString(encoding));
    assert.deepEqual(sha256(Buffer.from(data)), expected);
  }
});
