import { randomBytes } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Encodes bytes as base62 of a fixed length; ASCII order of the output follows numeric order. */
export function base62(bytes: Uint8Array, length: number): string {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
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

/**
 * A readable, time-ordered id such as `pi_0kXz5WQe3fH2a9LmPq7rTz1c`: the prefix names the kind
 * of object; ids compare (byte-wise) in creation order, which lets lists page by id.
 */
export function newId(prefix: string, nowMs = Date.now()): string {
  const time = Buffer.alloc(6);
  time.writeUIntBE(nowMs, 0, 6);
  return `${prefix}_${base62(time, TIME_CHARS)}${base62(randomBytes(11), RANDOM_CHARS)}`;
}

export const ID_PATTERN = (prefix: string) => `^${prefix}_[0-9A-Za-z]{${TIME_CHARS + RANDOM_CHARS}}$`;
