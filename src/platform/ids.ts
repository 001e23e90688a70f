import { randomFillSync } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

// The bytes are read as limbs of 5 (40 bits): a remainder times 2^40 plus a limb stays below
// 62 × 2^40 < 2^53, exact in a double, and each digit takes a third as many divisions as byte by
// byte.
const LIMB_BYTES = 5;
const LIMB = 2 ** (8 * LIMB_BYTES);

/**
 * Encodes bytes as base62 of a fixed length; ASCII order of the output follows numeric order.
 * The bytes are a big-endian number; the output is its last `length` base62 digits. This runs
 * on every request (ids, API key checksums), so it divides the number by 62 in place, in 40-bit
 * limbs, instead of going through a BigInt, which allocates on every step.
 */
export function base62(bytes: Uint8Array, length: number): string {
  const count = Math.ceil(bytes.length / LIMB_BYTES);
  // Big-endian limbs, the first holding what is left over from whole limbs.
  const limbs = new Array<number>(count);
  let next = 0;
  for (let i = 0; i < count; i++) {
    const size = i === 0 ? bytes.length - (count - 1) * LIMB_BYTES : LIMB_BYTES;
    let value = 0;
    for (let j = 0; j < size; j++) value = value * 256 + (bytes[next++] as number);
    limbs[i] = value;
  }
  let out = '';
  for (let digit = 0; digit < length; digit++) {
    let remainder = 0;
    for (let i = 0; i < count; i++) {
      const value = remainder * LIMB + (limbs[i] as number);
      const quotient = Math.floor(value / 62);
      limbs[i] = quotient;
      remainder = value - quotient * 62;
    }
    out = BASE62[remainder] + out;
  }
  return out;
}

// 8 base62 characters hold 47.6 bits: milliseconds until the year 6429.
const TIME_CHARS = 8;
// 14 base62 characters hold 83 bits of the random part; it is kept below 2^80 (see below).
const RANDOM_CHARS = 14;
const RANDOM_BYTES = 11;
// Within one millisecond each id steps up by 1 + a random 32-bit number: consecutive ids stay
// unguessable from one another, and from a start below 2^79 the part stays below 2^80 (so
// below 62^14 and never wraps) for 2^47 steps.
const STEP_BYTES = 4;

// Random bytes are drawn from the CSPRNG a page at a time and handed out in slices: one call
// into OpenSSL per ~370 ids instead of one per id (the same pooling randomUUID does).
const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let poolOffset = POOL_BYTES;

function randomSlice(size: number): Buffer {
  if (poolOffset + size > POOL_BYTES) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  poolOffset += size;
  return pool.subarray(poolOffset - size, poolOffset);
}

/**
 * `size` random bytes from the same pool, as base64url: for unguessable tokens that are not
 * ids, such as request ids. One call into OpenSSL per page instead of one per token: on the
 * 2-core machine a randomBytes(9) of its own cost ~19 µs, as much as a whole bare HTTP answer.
 */
export function randomBase64url(size: number): string {
  return randomSlice(size).toString('base64url');
}

// The last id's millisecond and random part, so the next id in the same millisecond sorts after it.
let lastMs = -1;
const lastRandom = Buffer.alloc(RANDOM_BYTES);

function nextRandomPart(nowMs: number): Buffer {
  if (nowMs === lastMs) {
    const step = randomSlice(STEP_BYTES);
    let carry = 1 + step.readUInt32BE(0);
    for (let i = RANDOM_BYTES - 1; i >= 0 && carry > 0; i--) {
      const sum = (lastRandom[i] as number) + (carry % 256);
      lastRandom[i] = sum % 256;
      carry = Math.floor(carry / 256) + Math.floor(sum / 256);
    }
    if ((lastRandom[0] as number) === 0 && (lastRandom[1] as number) < 0x80) return lastRandom;
  }
  randomSlice(RANDOM_BYTES).copy(lastRandom);
  lastRandom[0] = 0;
  lastRandom[1] = (lastRandom[1] as number) & 0x7f;
  lastMs = nowMs;
  return lastRandom;
}

/**
 * A readable, time-ordered id such as `pi_0kXz5WQe3fH2a9LmPq7rTz1c`: the prefix names the kind
 * of object; ids compare (byte-wise) in creation order, which lets lists page by id. Within one
 * millisecond a process's ids count up from a random start instead of each drawing a new random
 * part, which would order them by chance; ids of different processes in the same millisecond
 * still order arbitrarily among themselves.
 */
export function newId(prefix: string, nowMs = Date.now()): string {
  const random = nextRandomPart(nowMs);
  return `${prefix}_${timePart(nowMs)}${base62(random, RANDOM_CHARS)}`;
}

// A surge makes many ids in each millisecond: their time part is encoded once.
let timePartMs = -1;
let timePartText = '';
const timeBytes = Buffer.alloc(6);

function timePart(nowMs: number): string {
  if (nowMs !== timePartMs) {
    timeBytes.writeUIntBE(nowMs, 0, 6);
    timePartText = base62(timeBytes, TIME_CHARS);
    timePartMs = nowMs;
  }
  return timePartText;
}

export const ID_PATTERN = (prefix: string) => `^${prefix}_[0-9A-Za-z]{${TIME_CHARS + RANDOM_CHARS}}$`;
