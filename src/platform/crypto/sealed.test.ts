import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createSealer, newSecretsKey, parseSecretsKeys, rememberingOpened, type Sealer } from './sealed.js';

const [oldKey, newKey] = [newSecretsKey(), newSecretsKey()];

describe('sealed secrets', () => {
  test('a sealed secret opens to itself and holds nothing of it in clear; each seal differs', () => {
    const sealer = createSealer(parseSecretsKeys(oldKey));
    const secret = 'whsec_c2VjcmV0IHNpZ25pbmcga2V5';
    const [a, b] = [sealer.seal(secret), sealer.seal(secret)];
    assert.match(a, /^sealed:v1:[0-9a-f]{8}:/);
    assert.notEqual(a, b);
    assert.ok(!a.includes(secret) && !a.includes('c2VjcmV0'));
    assert.equal(sealer.open(a), secret);
    assert.equal(sealer.open(b), secret);
    assert.equal(sealer.isCurrent(a), true);
  });

  test('rotation: the new key seals, the old one still opens, and isCurrent tells which need resealing', () => {
    const before = createSealer(parseSecretsKeys(oldKey)).seal('whsec_old');
    const rotated = createSealer(parseSecretsKeys(`${newKey},${oldKey}`));
    assert.equal(rotated.open(before), 'whsec_old');
    assert.equal(rotated.isCurrent(before), false);
    assert.equal(rotated.isCurrent(rotated.seal('whsec_new')), true);
    // Once the old key is dropped, what it sealed cannot be opened: reseal first.
    assert.throws(() => createSealer(parseSecretsKeys(newKey)).open(before), /not in FLOODGATE_SECRETS_KEYS/);
  });

  test('a changed sealed value is refused, not opened to something else', () => {
    const sealer = createSealer(parseSecretsKeys(oldKey));
    const sealed = sealer.seal('whsec_x');
    const parts = sealed.split(':');
    const body = Buffer.from(parts[5] as string, 'base64url');
    body[0] = (body[0] as number) ^ 1;
    parts[5] = body.toString('base64url');
    assert.throws(() => sealer.open(parts.join(':')));
  });

  test('a value written before sealing existed is read as it is', () => {
    assert.equal(createSealer(parseSecretsKeys(oldKey)).open('whsec_legacy'), 'whsec_legacy');
  });

  test('rememberingOpened opens each value once while it holds it, a new value anew, and stays bounded', () => {
    const inner = createSealer(parseSecretsKeys(oldKey));
    let opens = 0;
    const counting: Sealer = {
      ...inner,
      open(stored) {
        opens += 1;
        return inner.open(stored);
      },
    };
    const sealer = rememberingOpened(counting, 2);
    const [a, b, c] = ['whsec_a', 'whsec_b', 'whsec_c'].map((plain) => inner.seal(plain)) as [string, string, string];
    assert.deepEqual([sealer.open(a), sealer.open(a), sealer.open(b), sealer.open(a)], ['whsec_a', 'whsec_a', 'whsec_b', 'whsec_a']);
    assert.equal(opens, 2);
    // Full: the third value empties what it held, and what it forgot is opened again.
    assert.equal(sealer.open(c), 'whsec_c');
    assert.equal(sealer.open(a), 'whsec_a');
    assert.equal(opens, 4);
    // A value that does not open is not remembered as anything.
    assert.throws(() => sealer.open(`${c.slice(0, -2)}xx`));
    assert.equal(sealer.isCurrent(sealer.seal('whsec_d')), true);
  });

  test('keys must be 32 bytes of base64', () => {
    for (const raw of ['', 'short', `${oldKey},`, Buffer.alloc(16).toString('base64'), `${oldKey},x`]) {
      assert.throws(() => parseSecretsKeys(raw), /key|keys/, raw);
    }
  });
});
