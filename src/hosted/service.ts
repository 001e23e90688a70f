/**
 * The hosted sale page's use cases: a buyer's session moves through line → admitted → hold →
 * order → paid, and each step calls the waiting room, sales and payments through their public
 * service functions, with idempotency keys derived from the session. So a double click, a
 * reload or a second tab repeats a step's answer instead of repeating the step: one hold per
 * admission, one order per hold, one charge per payment attempt.
 */
import { LRUCache } from 'lru-cache';
import type { QueueView, SaleForQueue, WaitingRoom } from '../admission/service.js';
import type { PaymentDeps } from '../payments/service.js';
import * as payments from '../payments/service.js';
import { sha256 } from '../platform/crypto/sha256.js';
import type { RequestContext } from '../platform/http/context.js';
import type { Reply } from '../platform/http/reply.js';
import { fingerprint } from '../platform/idempotency/keys.js';
import type { SalesDeps } from '../sales/service.js';
import * as sales from '../sales/service.js';
import { type BuyerSession, newSession, type SessionStore, type StoredSession } from './sessions.js';

export interface HostedDeps {
  sales: SalesDeps;
  payments: PaymentDeps;
  room: WaitingRoom;
  /** The sale as the waiting room sees it (the sales capability's cached lookup). */
  lookup: (merchantId: string, saleId: string) => Promise<SaleForQueue | undefined>;
  sessions: SessionStore;
  sessionTtlMs: number;
  /** How stale a hosted sale read may be: the API's own bound for public sale reads. */
  staleMs: number;
}

export type HostedSale = NonNullable<Awaited<ReturnType<typeof sales.retrieveHostedSale>>>;

// Sales a node keeps for hosted pages at once; far more than run in one surge.
const HOSTED_SALES_CACHED_MAX = 1_000;
// A session's writes race only with the same buyer's other requests: a few tries settle it.
const SESSION_WRITE_TRIES_MAX = 5;

/** Reads hosted sales by id, at most once per `staleMs` per node and sale (concurrent reads share one). */
export function createHostedSaleReader(pool: SalesDeps['pool'], staleMs: number) {
  const cache = new LRUCache<string, Promise<HostedSale | null>>({ max: HOSTED_SALES_CACHED_MAX, ttl: Math.max(1, staleMs) });
  return (saleId: string): Promise<HostedSale | null> => {
    let entry = cache.get(saleId);
    if (!entry) {
      entry = sales.retrieveHostedSale(pool, saleId).then((found) => found ?? null);
      entry.catch(() => cache.delete(saleId));
      cache.set(saleId, entry);
    }
    return entry;
  };
}

/** An idempotency key for one step of one session: the same step repeated gets the same key. */
export function sessionKey(session: BuyerSession, step: string, ...parts: (string | number)[]): string {
  const digest = sha256([session.id, step, ...parts].join('\n'), 'base64url');
  return `hosted_${step}_${digest.slice(0, 40)}`;
}

/**
 * The context of a step the hosted flow takes for the merchant. It runs on our server with the
 * merchant's authority, as the merchant's own backend would with its secret key; its keys are
 * derived from an unguessable session id, so no one else can name them.
 */
function context(merchantId: string, key: string, path: string, body: unknown): RequestContext {
  return { merchantId, keyKind: 'secret', idempotencyKey: key, method: 'POST', path, fingerprint: fingerprint('POST', path, body) };
}

/**
 * Applies `change` to the session and stores it under the version check, re-reading and
 * re-applying when another request of the same buyer wrote first. `change` returns undefined
 * to leave the session as it is. Returns the session as stored.
 */
export async function updateSession(
  deps: Pick<HostedDeps, 'sessions' | 'sessionTtlMs'>,
  stored: StoredSession,
  change: (session: BuyerSession) => BuyerSession | undefined,
): Promise<BuyerSession> {
  let current: StoredSession | undefined = stored;
  for (let attempt = 0; attempt < SESSION_WRITE_TRIES_MAX && current; attempt++) {
    const next = change(structuredClone(current.session));
    if (!next) return current.session;
    if (await deps.sessions.replace(next, current.version, deps.sessionTtlMs)) return next;
    current = await deps.sessions.get(stored.session.id);
  }
  return (current ?? stored).session;
}

export async function startSession(deps: Pick<HostedDeps, 'sessions' | 'sessionTtlMs'>, saleId: string): Promise<StoredSession> {
  const session = newSession(saleId);
  await deps.sessions.create(session, deps.sessionTtlMs);
  return { version: 1, session };
}

/** Joins the line for this session's buyer (a rejoin gets a new buyer reference and ticket). */
export async function joinLine(deps: HostedDeps, hosted: HostedSale, stored: StoredSession): Promise<BuyerSession> {
  const queueSale = await deps.lookup(hosted.merchantId, hosted.sale.id);
  if (!queueSale) return stored.session;
  const live = stored.session;
  if (live.ticketId && !live.holdId && !live.orderId) return live;
  // Starting over (after a hold expired, or the place lapsed): the old place is given back.
  if (live.ticketId) await deps.room.releaseAdmission(hosted.sale.id, live.ticketId).catch(() => false);
  const fresh = live.ticketId ? newSession(hosted.sale.id) : live;
  const view = await deps.room.join(queueSale, fresh.buyerReference);
  return updateSession(deps, stored, (session) => ({
    ...session,
    buyerReference: fresh.buyerReference,
    ticketId: view.ticket ?? undefined,
    admissionToken: view.admissionToken,
    holdId: undefined,
    orderId: undefined,
    payAttempt: 1,
    joinedPosition: view.position ?? undefined,
  }));
}

export type LineState =
  | { kind: 'none' }
  | { kind: 'lost' }
  | { kind: 'view'; view: QueueView; session: BuyerSession; joinedPosition: number | undefined };

/** Polls the session's ticket; an admission's token is kept in the session, never shown. */
export async function pollLine(deps: HostedDeps, hosted: HostedSale, stored: StoredSession): Promise<LineState> {
  const session = stored.session;
  if (!session.ticketId) return { kind: 'none' };
  const queueSale = await deps.lookup(hosted.merchantId, hosted.sale.id);
  if (!queueSale) return { kind: 'none' };
  const view = await deps.room.poll(queueSale, session.ticketId);
  if (!view) return { kind: 'lost' };
  const needsToken = view.admissionToken !== undefined && session.admissionToken !== view.admissionToken;
  const needsPosition = session.joinedPosition === undefined && view.position !== null && view.position > 0;
  if (!needsToken && !needsPosition) return { kind: 'view', view, session, joinedPosition: session.joinedPosition };
  const next = await updateSession(deps, stored, (current) => ({
    ...current,
    admissionToken: view.admissionToken ?? current.admissionToken,
    joinedPosition: current.joinedPosition ?? view.position ?? undefined,
  }));
  return { kind: 'view', view, session: next, joinedPosition: next.joinedPosition };
}

export type HoldResult = { kind: 'held'; session: BuyerSession } | { kind: 'refused'; code: string; message: string };

/** Spends the session's admission on a hold of `lines`; the same admission never holds twice. */
export async function placeHold(
  deps: HostedDeps,
  hosted: HostedSale,
  stored: StoredSession,
  lines: { item: string; quantity: number }[],
): Promise<HoldResult> {
  const session = stored.session;
  if (session.holdId) return { kind: 'held', session };
  if (!session.admissionToken || !session.ticketId) return { kind: 'refused', code: 'admission_invalid', message: 'not admitted' };
  const body = { sale: hosted.sale.id, buyer_reference: session.buyerReference, admission_token: session.admissionToken, items: lines };
  const key = sessionKey(session, 'hold', session.ticketId);
  const reply = await sales.createHold(deps.sales, context(hosted.merchantId, key, '/v1/holds', body), body);
  if (reply.status !== 200) {
    const { code, message } = errorOf(reply);
    // A spent or expired admission cannot be used again: the buyer must join again.
    if (code === 'admission_invalid') {
      await updateSession(deps, stored, (current) => ({ ...current, admissionToken: undefined }));
    }
    return { kind: 'refused', code, message };
  }
  const holdId = (reply.body as { id: string }).id;
  const next = await updateSession(deps, stored, (current) => ({ ...current, holdId, admissionToken: undefined }));
  return { kind: 'held', session: next };
}

export type PayResult =
  | { kind: 'paid' }
  | { kind: 'processing' }
  | { kind: 'declined'; reason: string }
  | { kind: 'unavailable' }
  | { kind: 'hold_ended' }
  | { kind: 'busy' };

/**
 * Turns the hold into an order (once) and confirms its PaymentIntent with the token. The
 * confirm's key names the payment attempt: a second click of the same attempt replays the
 * first's answer and never charges again; only a refusal moves the session to a new attempt.
 */
export async function pay(deps: HostedDeps, hosted: HostedSale, stored: StoredSession, paymentMethod: string): Promise<PayResult> {
  let session = stored.session;
  if (!session.holdId) return { kind: 'hold_ended' };
  const orderBody = { hold: session.holdId };
  const orderReply = await sales.createOrder(
    deps.sales,
    context(hosted.merchantId, sessionKey(session, 'order', session.holdId), '/v1/orders', orderBody),
    orderBody,
  );
  if (orderReply.status !== 200) {
    const { code } = errorOf(orderReply);
    return code === 'hold_not_active' ? { kind: 'hold_ended' } : { kind: 'busy' };
  }
  const order = orderReply.body as { id: string; payment_intent: string; status: string };
  if (session.orderId !== order.id) {
    session = await updateSession(deps, stored, (current) =>
      current.orderId === order.id ? undefined : { ...current, orderId: order.id },
    );
  }
  if (order.status === 'paid') return { kind: 'paid' };
  const attempt = session.payAttempt;
  const path = `/v1/payment_intents/${order.payment_intent}/confirm`;
  // The fingerprint leaves out the token: a double click tokenizes twice, and the second click
  // must replay the first one's answer, not be refused as a different request.
  const ctx = context(hosted.merchantId, sessionKey(session, 'pay', order.id, attempt), path, { attempt });
  const reply = await payments.confirmPaymentIntent(deps.payments, ctx, order.payment_intent, { payment_method: paymentMethod });
  const result = payResult(reply);
  if (result.kind === 'declined' || result.kind === 'unavailable') {
    const latest = (await deps.sessions.get(session.id)) ?? stored;
    await updateSession(deps, latest, (current) => (current.payAttempt === attempt ? { ...current, payAttempt: attempt + 1 } : undefined));
  }
  return result;
}

function payResult(reply: Reply): PayResult {
  if (reply.status === 200) {
    const status = (reply.body as { status: string }).status;
    if (status === 'succeeded' || status === 'requires_capture') return { kind: 'paid' };
    if (status === 'processing') return { kind: 'processing' };
    return { kind: 'busy' };
  }
  const { code, declineCode } = errorOf(reply);
  if (code === 'card_declined') return { kind: 'declined', reason: declineCode ?? code };
  if (code === 'provider_unavailable') return { kind: 'unavailable' };
  if (code === 'payment_intent_unexpected_state' || code === 'idempotency_key_in_use') return { kind: 'processing' };
  return { kind: 'busy' };
}

function errorOf(reply: Reply): { code: string; message: string; declineCode?: string } {
  const error = (reply.body as { error?: { code?: string; message?: string; decline_code?: string } }).error ?? {};
  return { code: error.code ?? 'unknown', message: error.message ?? '', declineCode: error.decline_code };
}

/** The buyer gives their hold back (or leaves the line): stock and place go to the next buyer. */
export async function leave(deps: HostedDeps, hosted: HostedSale, stored: StoredSession): Promise<void> {
  const session = stored.session;
  if (session.holdId && !session.orderId) {
    await sales.releaseHold(deps.sales, hosted.merchantId, session.holdId);
  } else if (session.ticketId && !session.holdId) {
    await deps.room.releaseAdmission(hosted.sale.id, session.ticketId).catch(() => false);
  }
  if (!session.orderId) await deps.sessions.delete(session.id);
}
