/**
 * Dashboard passwords, hashed with scrypt (node:crypto): a memory-hard function, so a leaked
 * table costs an attacker dearly per guess. Stored as scrypt$N$r$p$salt$key.
 */
import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';

// N = 2^15 with r = 8 takes 32 MiB and tens of milliseconds per hash: OWASP's recommended floor.
const COST = { N: 32_768, r: 8, p: 1 } as const;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
// Room for the memory N and r need (128 * N * r bytes) with some to spare.
const MAXMEM_BYTES = 64 * 1024 * 1024;
// Long enough to resist guessing, short enough that hashing it is not a denial of service.
export const PASSWORD_LENGTH_MIN = 12;
export const PASSWORD_LENGTH_MAX = 200;

function derive(password: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password.normalize('NFKC'), salt, KEY_BYTES, { ...options, maxmem: MAXMEM_BYTES }, (error, key) =>
      error ? reject(error) : resolve(key),
    ),
  );
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, COST);
  return ['scrypt', COST.N, COST.r, COST.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

/** True when the password matches the stored hash; false for a wrong password or a malformed hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, key] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !key || password.length > PASSWORD_LENGTH_MAX) return false;
  const expected = Buffer.from(key, 'base64url');
  const actual = await derive(password, Buffer.from(salt, 'base64url'), { N: Number(n), r: Number(r), p: Number(p) });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** A password for a user created without one: 24 random characters, shown once. */
export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}
