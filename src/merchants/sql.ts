import type { Queryable } from '../platform/db/pool.js';
import type { KeyKind } from './domain.js';

export interface MerchantRow {
  merchant_id: string;
  name: string;
  created_at: Date;
}

export interface ApiKeyRow {
  merchant_id: string;
  key_id: string;
  kind: KeyKind;
  display_prefix: string;
  created_at: Date;
  revoked_at: Date | null;
}

export async function insertMerchant(db: Queryable, merchantId: string, name: string): Promise<MerchantRow> {
  const { rows } = await db.query<MerchantRow>(
    'insert into merchants (merchant_id, name) values ($1, $2) returning merchant_id, name, created_at',
    [merchantId, name],
  );
  return rows[0] as MerchantRow;
}

export async function selectMerchant(db: Queryable, merchantId: string): Promise<MerchantRow | undefined> {
  const { rows } = await db.query<MerchantRow>('select merchant_id, name, created_at from merchants where merchant_id = $1', [merchantId]);
  return rows[0];
}

export async function selectFirstMerchantNamed(db: Queryable, name: string): Promise<MerchantRow | undefined> {
  const { rows } = await db.query<MerchantRow>(
    'select merchant_id, name, created_at from merchants where name = $1 order by merchant_id limit 1',
    [name],
  );
  return rows[0];
}

export async function insertApiKey(
  db: Queryable,
  key: { merchantId: string; keyId: string; kind: KeyKind; hash: Buffer; displayPrefix: string },
): Promise<ApiKeyRow> {
  const { rows } = await db.query<ApiKeyRow>(
    `insert into api_keys (merchant_id, key_id, kind, key_hash, display_prefix)
     values ($1, $2, $3, $4, $5)
     returning merchant_id, key_id, kind, display_prefix, created_at, revoked_at`,
    [key.merchantId, key.keyId, key.kind, key.hash, key.displayPrefix],
  );
  return rows[0] as ApiKeyRow;
}

/** The merchant a live key belongs to; revoked keys are not found. */
export async function selectActiveKeyByHash(
  db: Queryable,
  hash: Buffer,
): Promise<{ merchant_id: string; key_id: string; kind: KeyKind } | undefined> {
  const { rows } = await db.query({
    name: 'select_active_key_by_hash',
    text: 'select merchant_id, key_id, kind from api_keys where key_hash = $1 and revoked_at is null',
    values: [hash],
  });
  return rows[0];
}

export async function revokeApiKey(db: Queryable, keyId: string): Promise<ApiKeyRow | undefined> {
  const { rows } = await db.query<ApiKeyRow>(
    `update api_keys set revoked_at = coalesce(revoked_at, now()) where key_id = $1
     returning merchant_id, key_id, kind, display_prefix, created_at, revoked_at`,
    [keyId],
  );
  return rows[0];
}

export async function selectApiKeys(db: Queryable, merchantId: string): Promise<ApiKeyRow[]> {
  const { rows } = await db.query<ApiKeyRow>(
    `select merchant_id, key_id, kind, display_prefix, created_at, revoked_at
     from api_keys where merchant_id = $1 order by key_id`,
    [merchantId],
  );
  return rows;
}
