/**
 * Secrets we must be able to read back (webhook signing secrets sign every delivery, so they
 * cannot be hashed) are sealed at rest: AES-256-GCM with a key from the environment
 * (FLOODGATE_SECRETS_KEYS), so a copy of the database or of a backup does not hold them in
 * clear. Several keys may be configured: the first seals, all open, so keys can be rotated
 * (see the README's "Secrets at rest").
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { sha256 } from './sha256.js';

const PREFIX = 'sealed:v1:';
const KEY_BYTES = 32;
// GCM's standard nonce length; random per seal, and a key seals few values, far from the
// 2^32 messages after which random 96-bit nonces start to risk repeating.
const IV_BYTES = 12;
// Binds a sealed value to what it is, so one cannot be moved to another use.
const ASSOCIATED_DATA = Buffer.from('floodgate sealed secret v1');

export interface Sealer {
  seal(plain: string): string;
  /** The plain text; a value written before sealing existed (not `sealed:`) is returned as it is. */
  open(stored: string): string;
  /** Whether `stored` is sealed with the current (first) key: `floodgate secrets reseal` redoes the rest. */
  isCurrent(stored: string): boolean;
}

/** Parses FLOODGATE_SECRETS_KEYS: comma-separated keys of 32 bytes, each in base64. Throws a message saying what is wrong. */
export function parseSecretsKeys(raw: string): Buffer[] {
  const keys = raw.split(',').map((part) => part.trim());
  if (keys.length === 0 || keys.some((key) => key === '')) throw new Error('list one or more keys, separated by commas');
  return keys.map((key, index) => {
    const bytes = /^[A-Za-z0-9+/_-]+={0,2}$/.test(key) ? Buffer.from(key, 'base64') : Buffer.alloc(0);
    if (bytes.length !== KEY_BYTES) {
      throw new Error(`key ${index + 1} must be ${KEY_BYTES} random bytes in base64 (openssl rand -base64 32)`);
    }
    return bytes;
  });
}

export function newSecretsKey(): string {
  return randomBytes(KEY_BYTES).toString('base64');
}

export function createSealer(keys: readonly Buffer[]): Sealer {
  if (keys.length === 0 || keys.some((key) => key.length !== KEY_BYTES)) throw new Error('createSealer needs 32-byte keys');
  const byId = new Map(keys.map((key) => [keyId(key), key]));
  const current = keys[0] as Buffer;
  const currentId = keyId(current);
  return {
    seal(plain) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', current, iv).setAAD(ASSOCIATED_DATA);
      const sealed = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
      return `${PREFIX}${currentId}:${[iv, cipher.getAuthTag(), sealed].map((part) => part.toString('base64url')).join(':')}`;
    },
    open(stored) {
      if (!stored.startsWith(PREFIX)) return stored;
      const [id = '', iv = '', tag = '', sealed = ''] = stored.slice(PREFIX.length).split(':');
      const key = byId.get(id);
      if (!key) throw new Error(`a secret is sealed with key ${id}, which is not in FLOODGATE_SECRETS_KEYS`);
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url')).setAAD(ASSOCIATED_DATA);
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(sealed, 'base64url')), decipher.final()]).toString('utf8');
    },
    isCurrent(stored) {
      return stored.startsWith(`${PREFIX}${currentId}:`);
    },
  };
}

/**
 * The sealer with `open` remembered: for a process that opens the same few values again and
 * again (a worker signs every delivery of an endpoint with its secret), one AES-GCM decryption
 * per value instead of one per use. It holds at most `entriesMax` opened values, forgetting them
 * all when full; they are in this process's memory while it signs with them anyway, as is the
 * key that opens them. A changed value (a rotation, a reseal) is a new entry.
 */
export function rememberingOpened(sealer: Sealer, entriesMax: number): Sealer {
  const opened = new Map<string, string>();
  return {
    seal: (plain) => sealer.seal(plain),
    isCurrent: (stored) => sealer.isCurrent(stored),
    open(stored) {
      let plain = opened.get(stored);
      if (plain === undefined) {
        plain = sealer.open(stored);
        if (opened.size >= entriesMax) opened.clear();
        opened.set(stored, plain);
      }
      return plain;
    },
  };
}

/** A short public name for a key, stored with what it sealed: a SHA-256 prefix, not the key. */
function keyId(key: Buffer): string {
  return sha256(key, 'hex').slice(0, 8);
}

/**
 * The key `floodgate start` and the tests seal with when FLOODGATE_SECRETS_KEYS is unset. It is
 * published here, so it protects nothing: development only. `floodgate api` and `floodgate
 * worker` refuse to start without FLOODGATE_SECRETS_KEYS.
 */
export const DEV_SECRETS_KEY = sha256('floodgate development secrets key: not secret', 'base64');

/** The sealer for FLOODGATE_SECRETS_KEYS, or for the development key when it is unset. */
export function sealerFor(secretsKeys: string | undefined): Sealer {
  return createSealer(parseSecretsKeys(secretsKeys ?? DEV_SECRETS_KEY));
}
