/**
 * The pure rules of idempotency keys: which keys are valid, the key a request without one
 * runs under, and the fingerprint that tells the same request from another.
 */
import { randomUUID } from 'node:crypto';
import { sha256 } from '../crypto/sha256.js';

// The longest key the draft's implementers commonly accept, and our column's check.
export const IDEMPOTENCY_KEY_LENGTH_MAX = 255;
const KEY_PATTERN = /^[\x21-\x7e]+$/;

export function isValidKey(key: string): boolean {
  return key.length > 0 && key.length <= IDEMPOTENCY_KEY_LENGTH_MAX && KEY_PATTERN.test(key);
}

/** Requests sent without a key still run the same state machine, under a key of their own. */
export function generatedKey(): string {
  return `auto_${randomUUID()}`;
}

export function fingerprint(method: string, path: string, body: unknown): Buffer {
  return sha256(`${method} ${path}\n${canonicalJson(body ?? null)}`);
}

/** JSON with object keys sorted, so the same body always has the same fingerprint. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
