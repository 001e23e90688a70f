/**
 * API keys: `sk_test_` or `pk_test_`, 32 random base62 characters, then a 6-character base62
 * CRC-32 of the random part. The checksum lets us refuse a mistyped or truncated key without a
 * database look-up, and lets secret scanners recognise a real key. Only a SHA-256 of the key is
 * stored.
 */
import * as crypto from 'node:crypto';
import { crc32 } from 'node:zlib';
import { sha256 } from '../platform/crypto/sha256.js';
import { base62 } from '../platform/ids.js';

export type KeyKind = 'secret' | 'publishable';

const KIND_PREFIX: Record<KeyKind, string> = { secret: 'sk_test_', publishable: 'pk_test_' };
const SECRET_CHARS = 32;
const CHECKSUM_CHARS = 6;
const KEY_PATTERN = /^(sk|pk)_test_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$/;
// Shown in listings so operators can tell keys apart: prefix plus four characters.
const DISPLAY_CHARS = 12;

function checksum(secretPart: string): string {
  const sum = crc32(secretPart);
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(sum);
  return base62(bytes, CHECKSUM_CHARS);
}

export function generateKey(kind: KeyKind): { key: string; hash: Buffer; displayPrefix: string } {
  // 24 random bytes (192 bits) fill 32 base62 characters.
  const secretPart = base62(crypto.randomBytes(24), SECRET_CHARS);
  const key = `${KIND_PREFIX[kind]}${secretPart}${checksum(secretPart)}`;
  return { key, hash: hashKey(key), displayPrefix: key.slice(0, DISPLAY_CHARS) };
}

export type ParsedKey = { ok: true; kind: KeyKind; hash: Buffer } | { ok: false };

/** Checks shape and checksum only; whether the key exists is for the database to say. */
export function parseKey(key: string): ParsedKey {
  const match = KEY_PATTERN.exec(key);
  if (!match || checksum(match[2] as string) !== match[3]) return { ok: false };
  return { ok: true, kind: match[1] === 'sk' ? 'secret' : 'publishable', hash: hashKey(key) };
}

// Every authenticated request hashes its key (sha256: one call, no hash object).
export function hashKey(key: string): Buffer {
  return sha256(key);
}

/** hashKey as base64 text, the form the API-key cache is keyed by. */
export function hashKeyBase64(key: string): string {
  return sha256(key, 'base64');
}
