import { randomBytes } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Encodes bytes as base62 of a fixed length; ASCII order of the output follows numeric order. */
export function base62(bytes: Uint8Array, length: number): string {
  return base62Of(toBigInt(bytes), length);
}

function toBigInt(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

function base62Of(value: bigint, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) {
    out = BASE62[Number(value % 62n)] + out;
    value /= 62n;
  }
  return out;
}

// 8 base62 characters hold 47.6 bits: milliseconds until the year 6429.
const TIME_CHARS = 8;
// 14 base62 characters of randomness: ~83 bits, so ids made in one millisecond do not collide.
const RANDOM_CHARS = 14;
const RANDOM_SPACE = 62n ** BigInt(RANDOM_CHARS);
// A step of up to 32 random bits keeps consecutive ids unguessable from one another, and 2^83
// leaves room for billions of steps before the space could run out within one millisecond.
const STEP_BYTES = 4;

// The last id's time and random part, so the next id made in the same millisecond sorts after it.
let last = { ms: -1, random: 0n };

function randomPart(nowMs: number): bigint {
  if (nowMs === last.ms) {
    const next = last.random + 1n + toBigInt(randomBytes(STEP_BYTES));
    if (next < RANDOM_SPACE) return next;
  }
  return toBigInt(randomBytes(11)) % RANDOM_SPACE;
}

/**
 * A readable, time-ordered id such as `pi_0kXz5WQe3fH2a9LmPq7rTz1c`: the prefix names the kind
 * of object; ids compare (byte-wise) in creation order, which lets lists page by id. Within one
 * millisecond a process's ids count up from a random start instead of each drawing a new random
 * part, which would order them by chance; ids of different processes in the same millisecond
 * still order arbitrarily among themselves.
 */
export function newId(prefix: string, nowMs = Date.now()): string {
  const random = randomPart(nowMs);
  last = { ms: nowMs, random };
  const time = Buffer.alloc(6);
  time.writeUIntBE(nowMs, 0, 6);
  return `${prefix}_${base62(time, TIME_CHARS)}${base62Of(random, RANDOM_CHARS)}`;
}

export const ID_PATTERN = (prefix: string) => `^${prefix}_[0-9A-Za-z]{${TIME_CHARS + RANDOM_CHARS}}$`;
