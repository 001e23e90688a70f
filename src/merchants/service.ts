import { LRUCache } from 'lru-cache';
import type { Pool } from '../platform/db/pool.js';
import { withTransaction } from '../platform/db/pool.js';
import type { Principal } from '../platform/http/context.js';
import { newId } from '../platform/ids.js';
import { generateKey, hashKeyBase64, type KeyKind, parseKey } from './domain.js';
import * as sql from './sql.js';

export interface CreatedMerchant {
  merchant: { id: string; name: string; created: number };
  secret_key: string;
  publishable_key: string;
}

export async function createMerchant(pool: Pool, name: string): Promise<CreatedMerchant> {
  return withTransaction(pool, async (client) => {
    const merchant = await sql.insertMerchant(client, newId('mch'), name);
    const secret = generateKey('secret');
    const publishable = generateKey('publishable');
    await sql.insertApiKey(client, { merchantId: merchant.merchant_id, keyId: newId('key'), kind: 'secret', ...secret });
    await sql.insertApiKey(client, {
      merchantId: merchant.merchant_id,
      keyId: newId('key'),
      kind: 'publishable',
      ...publishable,
    });
    return {
      merchant: { id: merchant.merchant_id, name: merchant.name, created: toUnix(merchant.created_at) },
      secret_key: secret.key,
      publishable_key: publishable.key,
    };
  });
}

export type CreateKeyResult = { kind: 'created'; key: string; keyId: string; displayPrefix: string } | { kind: 'merchant_missing' };

export async function createKey(pool: Pool, merchantId: string, keyKind: KeyKind): Promise<CreateKeyResult> {
  if (!(await sql.selectMerchant(pool, merchantId))) return { kind: 'merchant_missing' };
  const generated = generateKey(keyKind);
  const row = await sql.insertApiKey(pool, { merchantId, keyId: newId('key'), kind: keyKind, ...generated });
  return { kind: 'created', key: generated.key, keyId: row.key_id, displayPrefix: row.display_prefix };
}

export function revokeKey(pool: Pool, keyId: string): Promise<sql.ApiKeyRow | undefined> {
  return sql.revokeApiKey(pool, keyId);
}

export const listKeys = sql.selectApiKeys;
export const findMerchantNamed = sql.selectFirstMerchantNamed;

export type Authentication = { kind: 'authenticated'; principal: Principal } | { kind: 'missing' } | { kind: 'invalid' };

// Enough entries for every active key of a large deployment; older ones fall out.
const KEY_CACHE_ENTRIES_MAX = 10_000;

/**
 * Resolves `Authorization: Bearer <key>` to a merchant. Found keys are cached per node for
 * ttlMs, which bounds how long a revoked key keeps working; unknown keys are not cached, so a
 * key created a moment ago works at once. `cachedKeys()` lists what the cache holds (tests).
 * The answer comes at once, not as a promise, when no database lookup is needed (a cached key,
 * a missing or malformed one): the hot path then costs no turn of the event loop.
 */
export function createAuthenticator(pool: Pool, ttlMs: number) {
  const cache = new LRUCache<string, Authentication>({ max: KEY_CACHE_ENTRIES_MAX, ttl: Math.max(ttlMs, 1) });
  return Object.assign(authenticate, { cachedKeys: () => [...cache.keys()], peek });
  function authenticate(authorization: string | undefined): Authentication | Promise<Authentication> {
    if (!authorization) return MISSING;
    const presented = bearerKey(authorization);
    if (presented === undefined) return INVALID;
    // Cached by the key's SHA-256, never by the key itself: a heap snapshot or core dump of a
    // node must not hold merchants' secret keys. Hashing a key costs about 0.3 µs; the
    // checksum is checked only on a miss. Only keys that parsed and exist are ever stored, for
    // at most ttlMs.
    const cacheKey = ttlMs > 0 ? hashKeyBase64(presented) : undefined;
    const cached = cacheKey === undefined ? undefined : cache.get(cacheKey);
    if (cached) return cached;
    const parsed = parseKey(presented);
    if (!parsed.ok) return INVALID;
    return lookUp(parsed.hash, cacheKey);
  }
  /**
   * The principal of a key this node has authenticated lately, with how much longer this node
   * trusts it (ms); undefined for anything else, with no lookup.
   */
  function peek(authorization: string | undefined): { principal: Principal; trustedForMs: number } | undefined {
    const presented = authorization && ttlMs > 0 ? bearerKey(authorization) : undefined;
    if (presented === undefined) return undefined;
    const cacheKey = hashKeyBase64(presented);
    const cached = cache.get(cacheKey);
    return cached?.kind === 'authenticated' ? { principal: cached.principal, trustedForMs: cache.getRemainingTTL(cacheKey) } : undefined;
  }
  async function lookUp(hash: Buffer, cacheKey: string | undefined): Promise<Authentication> {
    const row = await sql.selectActiveKeyByHash(pool, hash);
    if (!row) return INVALID;
    // Frozen: every request authenticated by the key shares it until it leaves the cache.
    const found: Authentication = Object.freeze({
      kind: 'authenticated',
      principal: Object.freeze({ merchantId: row.merchant_id, keyId: row.key_id, keyKind: row.kind }),
    });
    if (cacheKey !== undefined) cache.set(cacheKey, found);
    return found;
  }
}

function bearerKey(authorization: string): string | undefined {
  return /^Bearer ([^\s]+)$/i.exec(authorization.trim())?.[1];
}

const MISSING: Authentication = Object.freeze({ kind: 'missing' });
const INVALID: Authentication = Object.freeze({ kind: 'invalid' });

export function toUnix(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

export async function merchantExists(pool: Pool, merchantId: string): Promise<boolean> {
  return (await sql.selectMerchant(pool, merchantId)) !== undefined;
}
