/**
 * Idempotency keys after the IETF httpapi Idempotency-Key draft, stored as a state machine in
 * the pattern of Brandur Leach's "Implementing Stripe-like Idempotency Keys in Postgres".
 *
 * A request's work is split into atomic phases. Each phase runs in one database transaction
 * and ends by moving the key to a named recovery point, or by storing the final response. A
 * process that dies between phases leaves the key at its last recovery point; once the lock
 * times out, a retry with the same key resumes from there instead of starting over.
 */
import { createHash, randomUUID } from 'node:crypto';
import { type Client, type Pool, type Queryable, withTransaction } from '../db/pool.js';
import * as sql from './sql.js';

export type PhaseResult =
  | { kind: 'noop' }
  | { kind: 'recoveryPoint'; name: string; resourceId?: string }
  | { kind: 'response'; status: number; body: unknown };

export interface IdempotencyRequest {
  merchantId: string;
  key: string;
  method: string;
  path: string;
  fingerprint: Buffer;
}

/** A key this request holds, with the point to resume from. */
export interface HeldKey {
  merchantId: string;
  key: string;
  recoveryPoint: string;
  resourceId: string | null;
}

export type BeginResult =
  | { kind: 'run'; held: HeldKey }
  | { kind: 'replay'; status: number; body: unknown }
  | { kind: 'in_use' }
  | { kind: 'mismatch' };

export interface IdempotencyOptions {
  ttlHours: number;
  lockTimeoutMs: number;
}

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
  return createHash('sha256')
    .update(`${method} ${path}\n${canonicalJson(body ?? null)}`)
    .digest();
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

export async function begin(pool: Pool, request: IdempotencyRequest, options: IdempotencyOptions): Promise<BeginResult> {
  const inserted = await sql.insertLockedKey(pool, { ...request, ttlHours: options.ttlHours });
  if (inserted) return { kind: 'run', held: toHeld(inserted) };
  return resolveExisting(pool, request, options);
}

/** Decides what a request meets when its key already exists. */
export async function resolveExisting(pool: Pool, request: IdempotencyRequest, options: IdempotencyOptions): Promise<BeginResult> {
  return withTransaction(pool, async (client) => {
    const row = await sql.selectKeyForUpdate(client, request.merchantId, request.key);
    // The key expired and was deleted between our insert and this read: treat as in use so the
    // client retries and gets a fresh key record.
    if (!row) return { kind: 'in_use' };
    if (!row.request_fingerprint.equals(request.fingerprint)) return { kind: 'mismatch' };
    if (row.response_status !== null) return { kind: 'replay', status: row.response_status, body: row.response_body };
    const locked = await sql.lockKeyIfFree(client, request.merchantId, request.key, options.lockTimeoutMs);
    if (!locked) return { kind: 'in_use' };
    return { kind: 'run', held: toHeld(row) };
  });
}

/**
 * Runs one atomic phase: fn's writes and the key's move to its next recovery point (or its
 * final response) commit together or not at all.
 */
export async function atomicPhase(pool: Pool, held: HeldKey, fn: (client: Client) => Promise<PhaseResult>): Promise<PhaseResult> {
  return withTransaction(pool, async (client) => {
    const result = await fn(client);
    await recordPhase(client, held, result);
    return result;
  });
}

export async function recordPhase(client: Client, held: HeldKey, result: PhaseResult): Promise<void> {
  if (result.kind === 'recoveryPoint') {
    await sql.setRecoveryPoint(client, held.merchantId, held.key, result.name, result.resourceId ?? null);
    held.recoveryPoint = result.name;
    if (result.resourceId) held.resourceId = result.resourceId;
  } else if (result.kind === 'response') {
    await sql.finishKey(client, held.merchantId, held.key, result.status, result.body);
    held.recoveryPoint = 'finished';
  }
}

/**
 * Gives the key up without a response, so a retry can run again from `recoveryPoint`. Call it
 * in the transaction that undoes the phase's effects, so both happen or neither.
 */
export async function release(db: Queryable, held: HeldKey, recoveryPoint: string): Promise<void> {
  await sql.unlockKey(db, held.merchantId, held.key, recoveryPoint);
  held.recoveryPoint = recoveryPoint;
}

function toHeld(row: sql.IdempotencyKeyRow): HeldKey {
  return { merchantId: row.merchant_id, key: row.idempotency_key, recoveryPoint: row.recovery_point, resourceId: row.resource_id };
}

/** What a request answers: stored with the key when final, replayed to retries. */
export interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  replayed?: boolean;
}

export type Refusal = { kind: 'in_use' } | { kind: 'mismatch' };

/**
 * Runs a request under its idempotency key: replays a stored response, refuses a key in use
 * or reused with another request, and otherwise runs `steps` from the key's recovery point.
 * If `steps` throws (the database went away, a bug), the key is released at its last
 * recovery point so a retry can resume at once instead of waiting out the lock.
 */
export async function run(
  pool: Pool,
  request: IdempotencyRequest,
  options: IdempotencyOptions,
  steps: (held: HeldKey) => Promise<Reply>,
  refused: (refusal: Refusal) => Reply,
): Promise<Reply> {
  const begun = await begin(pool, request, options);
  return continueWith(pool, begun, steps, refused);
}

export async function continueWith(
  pool: Pool,
  begun: BeginResult,
  steps: (held: HeldKey) => Promise<Reply>,
  refused: (refusal: Refusal) => Reply,
): Promise<Reply> {
  switch (begun.kind) {
    case 'replay':
      return { status: begun.status, body: begun.body, replayed: true };
    case 'in_use':
    case 'mismatch':
      return refused(begun);
    case 'run':
      try {
        return await steps(begun.held);
      } catch (error) {
        await sql.unlockKey(pool, begun.held.merchantId, begun.held.key, begun.held.recoveryPoint).catch(() => {});
        throw error;
      }
  }
}
