/**
 * Idempotency keys after the IETF httpapi Idempotency-Key draft, stored as a state machine in
 * the pattern of Brandur Leach's "Implementing Stripe-like Idempotency Keys in Postgres".
 *
 * A request's work is split into atomic phases. Each phase runs in one database transaction
 * and ends by moving the key to a named recovery point, or by storing the final response. A
 * process that dies between phases leaves the key at its last recovery point; once the lock
 * times out, a retry with the same key resumes from there instead of starting over.
 *
 * This is the one seam every capability uses the same way:
 *   - `idempotent(deps, ctx, steps)` runs a multi-phase request: `steps` switches on the key's
 *     recovery point (a typed union per use case) and runs `atomicPhase`s and a `finalPhase`;
 *   - `singlePhase(deps, ctx, fn)` runs a request whose work is one transaction;
 *   - `refusalReply` is the one answer to a key in use (409) or reused (422).
 */
import { type Client, type Pool, type Queryable, withTransaction } from '../db/pool.js';
import type { RequestContext } from '../http/context.js';
import { ApiError } from '../http/errors.js';
import { errorReply, type Reply } from '../http/reply.js';
import * as sql from './sql.js';

export { canonicalJson, fingerprint, generatedKey, IDEMPOTENCY_KEY_LENGTH_MAX, isValidKey } from './keys.js';

/** Where every request starts; a use case names its own later points in `P`. */
export type StartPoint = 'started';

/** What an atomic phase ends with: the key moves on to a recovery point, or the request is answered. */
export type PhaseResult<P extends string = string> =
  | { kind: 'noop' }
  | { kind: 'recoveryPoint'; name: P; resourceId?: string }
  | { kind: 'response'; status: number; body: unknown; headers?: Record<string, string> };

/** A key this request holds, with the point to resume from. */
export interface HeldKey<P extends string = string> extends sql.KeyRef {
  recoveryPoint: StartPoint | P;
  resourceId: string | null;
}

export type Refusal = { kind: 'in_use' } | { kind: 'mismatch' };

export type BeginResult = { kind: 'run'; held: HeldKey<string> } | { kind: 'replay'; status: number; body: unknown } | Refusal;

export interface IdempotencyOptions {
  ttlHours: number;
  lockTimeoutMs: number;
}

/** What the seam needs from a capability's deps: every capability's deps have both. */
export interface IdempotencyDeps {
  pool: Pool;
  idempotency: IdempotencyOptions;
}

export async function begin(pool: Pool, ctx: RequestContext, options: IdempotencyOptions): Promise<BeginResult> {
  const inserted = await sql.insertLockedKey(pool, {
    ...keyOf(ctx),
    method: ctx.method,
    path: ctx.path,
    fingerprint: ctx.fingerprint,
    ttlHours: options.ttlHours,
  });
  if (inserted) return { kind: 'run', held: toHeld(inserted) };
  return resolveExisting(pool, ctx, options);
}

/** Decides what a request meets when its key already exists. */
export async function resolveExisting(pool: Pool, ctx: RequestContext, options: IdempotencyOptions): Promise<BeginResult> {
  return withTransaction(pool, async (client) => {
    const ref = keyOf(ctx);
    const row = await sql.selectKeyForUpdate(client, ref);
    // The key expired and was deleted between our insert and this read: treat as in use so the
    // client retries and gets a fresh key record.
    if (!row) return { kind: 'in_use' };
    if (!row.request_fingerprint.equals(ctx.fingerprint)) return { kind: 'mismatch' };
    if (row.response_status !== null) return { kind: 'replay', status: row.response_status, body: row.response_body };
    const locked = await sql.lockKeyIfFree(client, ref, options.lockTimeoutMs);
    if (!locked) return { kind: 'in_use' };
    return { kind: 'run', held: toHeld(row) };
  });
}

/**
 * Runs one atomic phase: fn's writes and the key's move to its next recovery point (or its
 * final response) commit together or not at all.
 */
export async function atomicPhase<P extends string>(
  pool: Pool,
  held: HeldKey<P>,
  fn: (client: Client) => Promise<PhaseResult<P>>,
): Promise<PhaseResult<P>> {
  return withTransaction(pool, async (client) => {
    const result = await fn(client);
    await recordPhase(client, held, result);
    return result;
  });
}

/** Runs the phase that answers the request: fn's writes and its reply, stored with the key, commit together. */
export async function finalPhase<P extends string>(pool: Pool, held: HeldKey<P>, fn: (client: Client) => Promise<Reply>): Promise<Reply> {
  return withTransaction(pool, async (client) => {
    const reply = await fn(client);
    await recordPhase(client, held, respond(reply));
    return reply;
  });
}

/** The one adapter from a use case's reply to the phase result that stores it. */
export function respond(reply: Reply): PhaseResult<never> & { kind: 'response' } {
  return { kind: 'response', status: reply.status, body: reply.body, headers: reply.headers };
}

/**
 * A request refused authorization (401, 403: say, an admission token that does not admit) is
 * not its sender's to keep: such an answer is never stored, and the key is deleted instead, so
 * a caller cannot squat a key name by sending requests it is not allowed to make.
 */
export function isAuthorizationRefusal(status: number): boolean {
  return status === 401 || status === 403;
}

export async function recordPhase<P extends string>(client: Client, held: HeldKey<P>, result: PhaseResult<P>): Promise<void> {
  if (result.kind === 'recoveryPoint') {
    await sql.setRecoveryPoint(client, held, result.name, result.resourceId ?? null);
    held.recoveryPoint = result.name;
    if (result.resourceId) held.resourceId = result.resourceId;
  } else if (result.kind === 'response') {
    if (isAuthorizationRefusal(result.status)) await sql.deleteUnfinishedKey(client, held);
    else await sql.finishKey(client, held, result.status, result.body);
  }
}

/**
 * Gives the key up without a response, so a retry can run again from `recoveryPoint`. Call it
 * in the transaction that undoes the phase's effects, so both happen or neither.
 */
export async function release<P extends string>(db: Queryable, held: HeldKey<P>, recoveryPoint: StartPoint | P): Promise<void> {
  await sql.unlockKey(db, held, recoveryPoint);
  held.recoveryPoint = recoveryPoint;
}

function toHeld(row: sql.IdempotencyKeyRow): HeldKey<string> {
  return {
    merchantId: row.merchant_id,
    keyKind: row.key_kind,
    key: row.idempotency_key,
    recoveryPoint: row.recovery_point,
    resourceId: row.resource_id,
  };
}

/** Keys are scoped by the kind of API key: a publishable key never meets the merchant's server's keys. */
function keyOf(ctx: RequestContext): sql.KeyRef {
  return { merchantId: ctx.merchantId, keyKind: ctx.keyKind, key: ctx.idempotencyKey };
}

/**
 * The one answer to a key that cannot run now. A key in use gets 409 with Retry-After: the
 * first request usually finishes within a second, and its response is replayed then. A key
 * reused with another request gets 422: retrying cannot help.
 */
export function refusalReply(refusal: Refusal): Reply {
  return refusal.kind === 'in_use'
    ? errorReply(
        new ApiError('idempotency_key_in_use', 'A request with this Idempotency-Key is still being processed; retry later.', undefined, {
          'retry-after': '1',
        }),
      )
    : errorReply(
        new ApiError('idempotency_key_reused', 'This Idempotency-Key was used with a different request; use a new key for a new request.'),
      );
}

/**
 * Runs a request under its idempotency key: replays a stored response, refuses a key in use
 * or reused with another request, and otherwise runs `steps` from the key's recovery point.
 * If `steps` throws (the database went away, a bug), the key is released at its last
 * recovery point so a retry can resume at once instead of waiting out the lock.
 *
 * `P` names the use case's recovery points after `started`; the stored point is trusted to be
 * one of them, since only this use case's phases (under this method and path) write it.
 */
export async function idempotent<P extends string>(
  deps: IdempotencyDeps,
  ctx: RequestContext,
  steps: (held: HeldKey<P>) => Promise<Reply>,
): Promise<Reply> {
  return continueWith(deps.pool, await begin(deps.pool, ctx, deps.idempotency), steps);
}

/** As `idempotent`, for a request that has learnt its key already exists. */
export async function idempotentExisting<P extends string>(
  deps: IdempotencyDeps,
  ctx: RequestContext,
  steps: (held: HeldKey<P>) => Promise<Reply>,
): Promise<Reply> {
  return continueWith(deps.pool, await resolveExisting(deps.pool, ctx, deps.idempotency), steps);
}

/** Runs `fn` as the one atomic phase of an idempotent request: its reply is stored with the key. */
export function singlePhase(deps: IdempotencyDeps, ctx: RequestContext, fn: (client: Client) => Promise<Reply>): Promise<Reply> {
  return idempotent<never>(deps, ctx, (held) => finalPhase(deps.pool, held, fn));
}

async function continueWith<P extends string>(pool: Pool, begun: BeginResult, steps: (held: HeldKey<P>) => Promise<Reply>): Promise<Reply> {
  switch (begun.kind) {
    case 'replay':
      return { status: begun.status, body: begun.body, replayed: true };
    case 'in_use':
    case 'mismatch':
      return refusalReply(begun);
    case 'run':
      return continueHeld(pool, begun.held as HeldKey<P>, steps);
  }
}

/**
 * Runs `steps` for a key this request already holds (begun here, or inserted locked by a batch
 * of first phases, as coalesced confirmation does). If `steps` throws, the key is released at
 * its last recovery point, as `idempotent` does.
 */
export async function continueHeld<P extends string>(
  pool: Pool,
  held: HeldKey<P>,
  steps: (held: HeldKey<P>) => Promise<Reply>,
): Promise<Reply> {
  try {
    return await steps(held);
  } catch (error) {
    await sql.unlockKey(pool, held, held.recoveryPoint).catch(() => {});
    throw error;
  }
}
