/**
 * The waiting room's pure rules: how a line opens, orders, admits and runs out, what a buyer is
 * told, and the admission token's format. No I/O here; the two stores (Redis, memory) and the
 * service call these, and the Redis store's Lua mirrors the arithmetic line for line.
 *
 * A ticket's life:
 *
 *   join ──▶ waiting ──(head of the line, a credit, a free shopper slot, a unit left)──▶ admitted
 *   admitted ──(token consumed by a hold)──▶ shopping ──(releaseAdmission | shopping limit)──▶ gone
 *   admitted ──(token expires unused | releaseAdmission)──▶ gone
 *   waiting ──(no poll by its deadline | releaseAdmission)──▶ gone (the place is reclaimed)
 *
 * A waiting ticket's deadline is set by each join and poll: the Retry-After it was told plus the
 * sale's grace period (placeDeadlineMs). A buyer far back is told to come back in about half
 * their estimated wait and keeps their place that long, so a long line costs few polls; a buyer
 * near the front is told a second or two. Either way a poll that is lost or late by less than
 * the grace period never costs a place.
 *
 * `sold_out` and `closed` are what a waiting buyer is told about the sale, not ticket states:
 * a sold-out buyer keeps their place while they poll, and is admitted if expired holds return
 * stock; after `closesAt` everyone is told `closed`.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

/** The sale as the waiting room needs it; the sales capability builds one per request. */
export interface SaleForQueue {
  id: string;
  opensAt: Date;
  closesAt: Date | null;
  /** Buyers admitted per second at most; fractions allowed (0.5 = one every two seconds). */
  admitPerSecond: number;
  /** Admitted buyers shopping at once at most; 0 pauses admission. */
  maxShoppers: number;
  /** A waiting buyer who has not polled this long after the Retry-After they were told loses their place. */
  graceSeconds: number;
  /**
   * Units a new hold could take right now: stock minus held minus sold. Called on every join,
   * poll and step, so serve it from a cache. "Available ≤ admitted buyers not yet holding" is
   * the same test as "unsold stock is covered by active holds plus those buyers".
   */
  remainingStock(): number | Promise<number>;
}

export const QUEUE_STATUSES = ['waiting', 'admitted', 'sold_out', 'closed'] as const;
export type QueueStatus = (typeof QUEUE_STATUSES)[number];

/** What a buyer is told after a join or a poll. */
export interface QueueView {
  /** Null only when the sale had closed before the buyer joined. */
  ticket: string | null;
  status: QueueStatus;
  /** 1 is next; 0 once admitted; null before opening (the draw has not happened) and when sold out or closed. */
  position: number | null;
  estimatedWaitSeconds: number | null;
  /** Present while admitted and not yet used. */
  admissionToken?: string;
  /** When to poll again; absent when polling is pointless (admitted, closed). */
  retryAfterSeconds?: number;
  /** The same to the millisecond: shorter at the front of the line (frontPollMs). */
  retryAfterMs?: number;
}

export const QUEUE_LIMITS = {
  // Ten thousand admissions a second is beyond what one sale's checkout can serve.
  admitPerSecondMax: 10_000,
  // A million buyers shopping at once is far past any one sale; it bounds the counters.
  maxShoppersMax: 1_000_000,
  // The pre-open crowd's first polls spread over a third of it (gracePollSeconds), at least a second.
  graceSecondsMin: 3,
  // An hour past their Retry-After without a poll: the buyer has gone.
  graceSecondsMax: 3_600,
  // Room for an email address or a UUID-based session id, and no more.
  buyerReferenceLengthMax: 200,
} as const;

// Each step reclaims at most this many places, and admits at most this many buyers, so one
// Lua script never blocks Redis for long; the rest are handled by the next poll a moment later.
export const RECLAIM_BATCH_MAX = 1_000;
export const ADMIT_BATCH_MAX = 1_000;

// Pre-open arrivals rank by a 52-bit keyed hash; post-open arrivals rank after all of them, by
// arrival. 2^52 plus a sequence stays an exact double (a Redis sorted-set score) to 2^53.
export const POST_OPEN_SCORE_BASE = 2 ** 52;

// A sale's queue state is kept a day past its last activity (or past its opening, if later).
// By then every waiting place has been reclaimed and every shopper slot has lapsed.
export const QUEUE_STATE_IDLE_TTL_MS = 24 * 3_600_000;

// A single-use mark outlives its token by a minute, so nodes whose clocks run behind Redis's
// still find it while they consider the token unexpired.
export const CLOCK_SKEW_MARGIN_MS = 60_000;

// Before opening, buyers poll at least this often: a merchant may move the opening earlier.
export const PRE_OPEN_POLL_MAX_SECONDS = 300;

const SALE_ID = /^[0-9A-Za-z_-]{1,100}$/;

/** A sale that breaks these is a programmer error in the caller, not a buyer's mistake. */
export function assertSaleForQueue(sale: SaleForQueue): void {
  // The id goes into Redis key names inside a {hash tag}; braces or spaces would break that.
  assert.match(sale.id, SALE_ID, 'sale id for the waiting room');
  assert.ok(Number.isFinite(sale.opensAt.getTime()), 'opensAt is a valid date');
  assert.ok(sale.closesAt === null || Number.isFinite(sale.closesAt.getTime()), 'closesAt is null or a valid date');
  assert.ok(sale.admitPerSecond > 0 && sale.admitPerSecond <= QUEUE_LIMITS.admitPerSecondMax, 'admitPerSecond in range');
  assert.ok(Number.isInteger(sale.maxShoppers) && sale.maxShoppers >= 0 && sale.maxShoppers <= QUEUE_LIMITS.maxShoppersMax);
  assert.ok(
    Number.isInteger(sale.graceSeconds) &&
      sale.graceSeconds >= QUEUE_LIMITS.graceSecondsMin &&
      sale.graceSeconds <= QUEUE_LIMITS.graceSecondsMax,
    'graceSeconds in range',
  );
}

export function isClosed(sale: SaleForQueue, nowMs: number): boolean {
  return sale.closesAt !== null && nowMs >= sale.closesAt.getTime();
}

// ---- The line ----

/**
 * The fairness draw. Every pre-open arrival ranks by a keyed hash of the sale's shuffle seed and
 * its arrival number. Sorting by independent uniform keys picks each ordering of the arrivals
 * with equal probability, as a Fisher–Yates shuffle would, but needs no step at opening: the
 * draw is fixed as each buyer joins, so no node has to shuffle a large line in one blocking
 * script, and no post-open arrival can slip in before a shuffle finishes. The seed is derived
 * from our secret and the sale id, so every node agrees and no buyer can predict the draw.
 * (SHA-1 because Redis's Lua has it; here it only needs to be unpredictable without the seed.)
 */
export function preOpenScore(shuffleSeed: string, arrival: number): number {
  const hex = createHash('sha1').update(`${shuffleSeed}:${arrival}`).digest('hex');
  return Number.parseInt(hex.slice(0, 13), 16);
}

/** What a waiting ticket's deadline depends on; the stores' StepInput carries all of it. */
export interface DeadlineRule {
  nowMs: number;
  opensAtMs: number;
  admitPerSecond: number;
  graceMs: number;
  /** The sale's bound on Retry-After (pollBoundSeconds). */
  pollMaxSeconds: number;
}

/**
 * Until when a waiting ticket keeps its place after a join or poll that left it at `position`
 * (null before opening): the Retry-After it was told, plus the grace period. Before opening
 * the grace starts at opening, as the pre-open Retry-After points there. The place is given up
 * once the clock reaches the deadline. The Redis store's Lua computes the same (see
 * waitingPollSeconds); the shared store tests hold both to this function.
 */
export function placeDeadlineMs(rule: DeadlineRule, position: number | null): number {
  if (position === null) return Math.max(rule.nowMs, rule.opensAtMs) + rule.graceMs;
  return rule.nowMs + waitingPollSeconds(position, rule.admitPerSecond, rule.pollMaxSeconds) * 1000 + rule.graceMs;
}

// ---- Admission: a token bucket that holds at most one second's worth ----

export interface Credit {
  credit: number;
  creditAtMs: number;
}

/** One second's worth of admissions (at least one), full at opening and after a quiet spell. */
export function creditCap(admitPerSecond: number): number {
  return Math.max(1, admitPerSecond);
}

/** The Lua in redis-store.ts computes exactly this, in the same order of operations. */
export function refillCredit(current: Credit, nowMs: number, admitPerSecond: number): Credit {
  if (nowMs <= current.creditAtMs) return current;
  const credit = Math.min(creditCap(admitPerSecond), current.credit + ((nowMs - current.creditAtMs) * admitPerSecond) / 1000);
  return { credit, creditAtMs: nowMs };
}

/**
 * How many to admit now: no more than the credit allows, than there are free shopper slots,
 * than there are people waiting, and never more buyers than units left for them (each admitted
 * buyer not yet holding is counted as taking at least one unit).
 */
export function admissionCount(input: {
  credit: number;
  maxShoppers: number;
  shoppers: number;
  availableUnits: number;
  pendingAdmissions: number;
  waiting: number;
}): number {
  const n = Math.min(
    Math.floor(input.credit),
    input.maxShoppers - input.shoppers,
    input.availableUnits - input.pendingAdmissions,
    input.waiting,
    ADMIT_BATCH_MAX,
  );
  return Math.max(0, n);
}

/**
 * Sold out for everyone still waiting: the units left are all spoken for by admitted buyers
 * who have not yet placed their hold.
 */
export function isSoldOut(availableUnits: number, pendingAdmissions: number): boolean {
  return availableUnits <= pendingAdmissions;
}

/** Where a store's step leaves the line, and who it admitted. */
export interface StepOutcome {
  opened: boolean;
  waiting: number;
  /** Admitted, token not yet used. */
  pending: number;
  /** Token used (holding), slot kept until release or the shopping limit. */
  shopping: number;
  soldOut: boolean;
  admitted: Array<{ ticketId: string; joinedAtMs: number }>;
}

export type TicketState =
  | { kind: 'waiting'; position: number | null }
  | { kind: 'admitted'; buyerDigest: string; tokenExpiresAtMs: number }
  | { kind: 'shopping' }
  | { kind: 'unknown' };

/** What the buyer holding `state` is told, before the token is signed in. */
export function describeTicket(
  sale: SaleForQueue,
  ticketId: string,
  state: TicketState,
  outcome: StepOutcome,
  nowMs: number,
  pollMaxSeconds: number,
): QueueView | undefined {
  let view: QueueView;
  if (isClosed(sale, nowMs)) view = { ticket: ticketId, status: 'closed', position: null, estimatedWaitSeconds: null };
  else if (state.kind === 'unknown') return undefined;
  else if (state.kind === 'admitted' || state.kind === 'shopping') {
    view = { ticket: ticketId, status: 'admitted', position: 0, estimatedWaitSeconds: 0 };
  } else if (outcome.soldOut) view = { ticket: ticketId, status: 'sold_out', position: null, estimatedWaitSeconds: null };
  else if (state.position === null) {
    view = { ticket: ticketId, status: 'waiting', position: null, estimatedWaitSeconds: secondsUntil(sale.opensAt.getTime(), nowMs) };
  } else {
    view = {
      ticket: ticketId,
      status: 'waiting',
      position: state.position,
      estimatedWaitSeconds: estimateWaitSeconds(state.position, sale.admitPerSecond),
    };
  }
  const linePosition = state.kind === 'waiting' ? state.position : null;
  const retryAfter = retryAfterSeconds(view, sale, nowMs, pollMaxSeconds, linePosition);
  if (retryAfter === undefined) return view;
  // Only while a shopper slot is free: with the slots full (or admission paused) admission waits
  // for a slot, not for the rate, and polling the front faster would only add polls.
  const slotFree = outcome.pending + outcome.shopping < sale.maxShoppers;
  const front =
    view.status === 'waiting' && view.position !== null && slotFree ? frontPollMs(view.position, sale.admitPerSecond) : undefined;
  // Added to the view made above, not spread into a copy: this line sees views of several
  // shapes, and Node 20's V8 gives a spread copy that then gains a property a new hidden class
  // on every call at such a site (two per poll here, ten times the time of these stores, and
  // garbage that only a full collection frees: bench/README.md, the twenty-sixth session).
  view.retryAfterSeconds = retryAfter;
  view.retryAfterMs = front ?? retryAfter * 1000;
  return view;
}

// The soonest a buyer at the front is told to poll: a poll is a request, and a tenth of a second
// is already finer than a page's timers keep.
export const FRONT_POLL_MS_MIN = 100;

/**
 * At the front of the line (admission due within a second, a shopper slot free), when this buyer's admission is due:
 * position ÷ rate, to the millisecond. Whole seconds (Retry-After's unit) told the front's buyers
 * all to come back at the same moments, so a second's admissions were seen, and their holds,
 * orders and payments started, within the same few milliseconds (a drill measured a second's
 * eleven holds starting within 100 ms, every second): the checkout's load came in bursts the
 * rate was meant to smooth. Told to the millisecond, each buyer polls when their own turn comes,
 * and their poll's step admits them then. Undefined further back, where the halving rule
 * (waitingPollSeconds) applies; the place's deadline keeps that rule, which is never shorter.
 */
export function frontPollMs(position: number, admitPerSecond: number): number | undefined {
  const dueMs = (position / admitPerSecond) * 1000;
  if (dueMs >= 1000) return undefined;
  return Math.max(FRONT_POLL_MS_MIN, Math.ceil(dueMs));
}

export function closedView(ticket: string | null): QueueView {
  return { ticket, status: 'closed', position: null, estimatedWaitSeconds: null };
}

/**
 * Seconds until `position` is admitted at the sale's rate. A lower bound: when the shopper cap
 * binds, admissions wait for slots to free as well.
 */
export function estimateWaitSeconds(position: number, admitPerSecond: number): number {
  return Math.ceil(position / admitPerSecond);
}

function secondsUntil(atMs: number, nowMs: number): number {
  return Math.max(0, Math.ceil((atMs - nowMs) / 1000));
}

/**
 * A third of the grace period: the window over which the pre-open crowd's first polls after
 * opening are spread, and the poll interval of a sold-out buyer whose place is not yet drawn.
 * Three polls per grace period, so one lost poll never costs a place.
 */
export function gracePollSeconds(graceSeconds: number): number {
  return Math.max(1, Math.floor(graceSeconds / 3));
}

/**
 * The most a waiting buyer of this sale is told to wait before polling again: the deployment's
 * bound, and at most twice the grace period, so a client that polls up to half its interval
 * late (a page's jitter, a throttled background tab) still keeps its place.
 */
export function pollBoundSeconds(pollMaxSeconds: number, graceSeconds: number): number {
  return Math.max(1, Math.min(pollMaxSeconds, 2 * graceSeconds));
}

/**
 * Seconds until a ticket at `position` polls again: about half its estimated wait, at least 1 s,
 * at most the bound. Halving means a buyer is told a shorter interval each time on the way to
 * the front and a second or two near it, so admission is seen promptly while a long line's
 * back polls rarely. The Redis store's Lua computes exactly this, in the same order of operations.
 */
export function waitingPollSeconds(position: number, admitPerSecond: number, pollMaxSeconds: number): number {
  return Math.min(pollMaxSeconds, Math.max(1, Math.ceil(estimateWaitSeconds(position, admitPerSecond) / 2)));
}

/**
 * When to poll again. Waiting, and sold out while keeping a place: waitingPollSeconds at the
 * ticket's place (`linePosition`, known even when a sold-out view hides it), so the front of a
 * sold-out line sees returned stock at once. Before opening: at opening, spread over the first
 * seconds by ticket so the whole pre-open crowd does not arrive in the same millisecond (their
 * draw is fixed, so arriving first gains nothing).
 */
export function retryAfterSeconds(
  view: QueueView,
  sale: SaleForQueue,
  nowMs: number,
  pollMaxSeconds: number,
  linePosition: number | null,
): number | undefined {
  const pollMax = pollBoundSeconds(pollMaxSeconds, sale.graceSeconds);
  switch (view.status) {
    case 'admitted':
    case 'closed':
      return undefined;
    case 'sold_out':
      if (linePosition === null) return gracePollSeconds(sale.graceSeconds);
      return waitingPollSeconds(linePosition, sale.admitPerSecond, pollMax);
    case 'waiting': {
      if (view.position === null) {
        const untilOpen = secondsUntil(sale.opensAt.getTime(), nowMs);
        if (untilOpen >= PRE_OPEN_POLL_MAX_SECONDS) return PRE_OPEN_POLL_MAX_SECONDS;
        return Math.max(1, untilOpen + (spreadOf(view.ticket ?? '') % gracePollSeconds(sale.graceSeconds)));
      }
      return waitingPollSeconds(view.position, sale.admitPerSecond, pollMax);
    }
  }
}

function spreadOf(text: string): number {
  let hash = 0;
  for (let i = 0; i < text.length; i++) hash = (hash * 31 + text.charCodeAt(i)) >>> 0;
  return hash;
}

/** Redis keys of a sale live this long after each write; see QUEUE_STATE_IDLE_TTL_MS. */
export function stateTtlMs(nowMs: number, opensAtMs: number): number {
  return Math.max(0, opensAtMs - nowMs) + QUEUE_STATE_IDLE_TTL_MS;
}
