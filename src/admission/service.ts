/**
 * The waiting room's use cases: join, poll, step, release, and consuming an admission token.
 * One WaitingRoom over one of two stores (Redis for many nodes, memory for one), so everything
 * above the stored state — closing, views, tokens, metrics — is the same code in both modes.
 *
 * Admission happens inside join and poll (and step), so a sale needs no background loop: the
 * buyers' own polls drive it, and a buyer waiting in line polls until admitted, so there is no
 * quiet moment in which someone waits with nobody stepping the line.
 */
import assert from 'node:assert/strict';
import type { Cluster, Redis } from 'ioredis';
import type { Config } from '../config.js';
import { newId } from '../platform/ids.js';
import type { Metrics } from '../platform/observability/metrics.js';
import {
  assertSaleForQueue,
  CLOCK_SKEW_MARGIN_MS,
  closedView,
  describeTicket,
  isClosed,
  pollBoundSeconds,
  QUEUE_LIMITS,
  type QueueView,
  type SaleForQueue,
  type StepOutcome,
  stateTtlMs,
  type TicketState,
} from './domain.js';
import { MemoryQueueStore } from './memory-store.js';
import { DEFAULT_KEY_PREFIX, RedisQueueStore } from './redis-store.js';
import type { ClaimResult, QueueStore, StepInput } from './store.js';
import {
  type AdmissionKeys,
  buyerDigest,
  type ConsumeResult,
  checkClaims,
  deriveAdmissionKeys,
  readAdmissionToken,
  shuffleSeed,
  signAdmissionToken,
} from './token.js';

export type { QueueStatus, QueueView, SaleForQueue } from './domain.js';
/** The waiting room's limits, for the schemas of the sales that configure it. */
export { FRONT_POLL_MS_MIN, QUEUE_LIMITS } from './domain.js';
export type { ConsumeResult } from './token.js';

/** What checking a token (without spending it) finds. */
export type CheckResult =
  | { kind: 'ok'; ticketId: string; expiresAtMs: number }
  | { kind: 'invalid' | 'expired' | 'wrong_buyer' | 'wrong_sale' };

export const TICKET_PREFIX = 'qt';

// A confirm that met an unreachable store is retried from this delay, doubling up to the cap:
// a Redis Cluster failover takes a few seconds, and the line miscounts until the retry lands.
const CONFIRM_RETRY_FIRST_MS = 100;
const CONFIRM_RETRY_MAX_MS = 1_000;

export interface WaitingRoomOptions {
  /** At least 32 characters, the same on every node. */
  secret: string;
  tokenTtlSeconds: number;
  shoppingMaxSeconds: number;
  /** The most a waiting buyer is told to wait between polls (FLOODGATE_QUEUE_POLL_MAX_SECONDS). */
  pollMaxSeconds: number;
  metrics?: Metrics;
}

// Sales whose seeds a node keeps: far more than sell at once.
const SALE_SEEDS_MAX = 10_000;

export class WaitingRoom {
  private readonly keys: AdmissionKeys;
  /**
   * The deployment's bound on Retry-After, and no longer than a token lives: a buyer far back
   * whose place improved faster than estimated (places ahead given up) can be admitted between
   * polls, and must come back before the admission lapses.
   */
  private readonly pollMaxSeconds: number;
  /**
   * Each sale's fairness seed, an HMAC that every join and poll needs and that never changes:
   * made once per sale (it was about 4 % of the line's CPU in a profile). Bounded; past the bound it starts over.
   */
  private readonly seeds = new Map<string, string>();

  constructor(
    private readonly store: QueueStore,
    private readonly options: WaitingRoomOptions,
  ) {
    // Configuration checks the environment; this catches a caller that skipped it.
    assert.ok(options.secret.length >= 32, 'the admission secret has at least 32 characters');
    this.keys = deriveAdmissionKeys(options.secret);
    assert.ok(Number.isInteger(options.pollMaxSeconds) && options.pollMaxSeconds >= 1, 'pollMaxSeconds is a whole number ≥ 1');
    this.pollMaxSeconds = Math.max(1, Math.min(options.pollMaxSeconds, Math.floor(options.tokenTtlSeconds)));
  }

  /** Joins the line, or (same buyer again) answers as a poll of the ticket they already have. */
  async join(sale: SaleForQueue, buyerRef: string, now = new Date()): Promise<QueueView> {
    assertSaleForQueue(sale);
    assert.ok(buyerRef.length >= 1 && buyerRef.length <= QUEUE_LIMITS.buyerReferenceLengthMax, 'buyer reference length');
    const nowMs = now.getTime();
    if (isClosed(sale, nowMs)) return closedView(null);
    const input = await this.stepInput(sale, nowMs);
    const digest = buyerDigest(this.keys, buyerRef);
    const answer = await this.store.join({ ...input, ticketId: newId(TICKET_PREFIX, nowMs), buyerDigest: digest });
    this.observe(sale, answer.outcome, nowMs);
    const view = this.view(sale, answer.ticketId, answer.state, answer.outcome, nowMs);
    assert.ok(view, 'a ticket just joined is known');
    return view;
  }

  /** The ticket's status now; undefined when the ticket is unknown (never issued, released or reclaimed). */
  async poll(sale: SaleForQueue, ticketId: string, now = new Date()): Promise<QueueView | undefined> {
    assertSaleForQueue(sale);
    const nowMs = now.getTime();
    if (isClosed(sale, nowMs)) return closedView(ticketId);
    const answer = await this.store.poll({ ...(await this.stepInput(sale, nowMs)), ticketId });
    this.observe(sale, answer.outcome, nowMs);
    return this.view(sale, ticketId, answer.state, answer.outcome, nowMs);
  }

  /** Opens, reclaims and admits without a buyer's request: the loop's step, and the tests'. */
  async step(sale: SaleForQueue, now = new Date()): Promise<StepOutcome> {
    assertSaleForQueue(sale);
    const nowMs = now.getTime();
    if (isClosed(sale, nowMs)) return { opened: true, waiting: 0, pending: 0, shopping: 0, soldOut: false, admitted: [] };
    const outcome = await this.store.step(await this.stepInput(sale, nowMs));
    this.observe(sale, outcome, nowMs);
    return outcome;
  }

  /**
   * Frees the buyer's place or shopper slot: call it when their hold is paid, released or
   * expired, or when they leave the line. False when the ticket was not there (already released).
   */
  releaseAdmission(saleId: string, ticketId: string): Promise<boolean> {
    return this.store.release(saleId, ticketId);
  }

  /**
   * Checks a token without spending it: our signature, this sale, this buyer, not expired. No
   * shared state is read or written, so a refused hold (or another merchant's request) costs
   * the buyer nothing. Single use is the hold's: the database accepts one hold per ticket.
   */
  checkAdmission(token: string, saleId: string, buyerRef: string, now = new Date()): CheckResult {
    const claims = readAdmissionToken(this.keys, token);
    if (!claims) return { kind: 'invalid' };
    const checked = checkClaims(claims, saleId, buyerDigest(this.keys, buyerRef), now.getTime());
    return checked === 'ok' ? { kind: 'ok', ticketId: claims.ticketId, expiresAtMs: claims.expiresAtMs } : { kind: checked };
  }

  /**
   * After the hold that used an admission committed: the ticket moves from admitted to
   * shopping, where its slot stays until the hold ends (releaseAdmission) or the shopping limit.
   * `replayed` and `lapsed` are harmless here: the hold is the authority.
   *
   * Never throws. When the store cannot be reached (a Redis failover), the move is retried in
   * the background until the token expires: until it lands the ticket still counts as an
   * admitted buyer without a hold, so the units the hold took would be counted twice and the
   * line would tell those waiting `sold_out` (and admit nobody) while stock is left. After the
   * token's expiry the admission lapses by itself and retrying is moot. Answers `deferred` then.
   */
  async confirmAdmission(saleId: string, ticketId: string, tokenExpiresAtMs: number, now = new Date()): Promise<ClaimResult | 'deferred'> {
    const claim = (nowMs: number) =>
      this.store.claim({
        saleId,
        ticketId,
        nowMs,
        usedTtlMs: Math.max(1, tokenExpiresAtMs - nowMs) + CLOCK_SKEW_MARGIN_MS,
        shoppingMaxMs: this.options.shoppingMaxSeconds * 1000,
      });
    try {
      return await claim(now.getTime());
    } catch {
      // The caller's clock, moved on by the time spent retrying.
      const startedAt = performance.now();
      const clock = () => now.getTime() + (performance.now() - startedAt);
      let delayMs = CONFIRM_RETRY_FIRST_MS;
      const retry = () => {
        if (clock() >= tokenExpiresAtMs) return;
        claim(clock()).catch(() => {
          delayMs = Math.min(delayMs * 2, CONFIRM_RETRY_MAX_MS);
          setTimeout(retry, delayMs).unref();
        });
      };
      setTimeout(retry, delayMs).unref();
      return 'deferred';
    }
  }

  /**
   * Accepts an admission token once, for the sale and buyer it was issued to. `ok` names the
   * ticket, to pass to releaseAdmission later. `expired` also covers an admission that was
   * released or lapsed before its token was used.
   */
  async consumeAdmission(token: string, saleId: string, buyerRef: string, now = new Date()): Promise<ConsumeResult> {
    const claims = readAdmissionToken(this.keys, token);
    if (!claims) return { kind: 'invalid' };
    const nowMs = now.getTime();
    const checked = checkClaims(claims, saleId, buyerDigest(this.keys, buyerRef), nowMs);
    if (checked !== 'ok') return { kind: checked };
    const claimed = await this.store.claim({
      saleId,
      ticketId: claims.ticketId,
      nowMs,
      usedTtlMs: claims.expiresAtMs - nowMs + CLOCK_SKEW_MARGIN_MS,
      shoppingMaxMs: this.options.shoppingMaxSeconds * 1000,
    });
    if (claimed === 'ok') return { kind: 'ok', ticketId: claims.ticketId };
    return { kind: claimed === 'replayed' ? 'replayed' : 'expired' };
  }

  private async stepInput(sale: SaleForQueue, nowMs: number): Promise<StepInput> {
    const availableUnits = await sale.remainingStock();
    assert.ok(Number.isSafeInteger(availableUnits) && availableUnits >= 0, `remainingStock() is a whole number ≥ 0, got ${availableUnits}`);
    const opensAtMs = sale.opensAt.getTime();
    return {
      saleId: sale.id,
      nowMs,
      opensAtMs,
      admitPerSecond: sale.admitPerSecond,
      maxShoppers: sale.maxShoppers,
      graceMs: sale.graceSeconds * 1000,
      pollMaxSeconds: pollBoundSeconds(this.pollMaxSeconds, sale.graceSeconds),
      availableUnits,
      tokenTtlMs: this.options.tokenTtlSeconds * 1000,
      stateTtlMs: stateTtlMs(nowMs, opensAtMs),
      shuffleSeed: this.seedOf(sale.id),
    };
  }

  private seedOf(saleId: string): string {
    let seed = this.seeds.get(saleId);
    if (seed === undefined) {
      if (this.seeds.size >= SALE_SEEDS_MAX) this.seeds.clear();
      seed = shuffleSeed(this.keys, saleId);
      this.seeds.set(saleId, seed);
    }
    return seed;
  }

  private view(sale: SaleForQueue, ticketId: string, state: TicketState, outcome: StepOutcome, nowMs: number): QueueView | undefined {
    const view = describeTicket(sale, ticketId, state, outcome, nowMs, this.pollMaxSeconds);
    if (view?.status !== 'admitted' || state.kind !== 'admitted') return view;
    const claims = { saleId: sale.id, ticketId, buyerDigest: state.buyerDigest, expiresAtMs: state.tokenExpiresAtMs };
    // Set on the view describeTicket just made, not spread into a copy (see describeTicket).
    view.admissionToken = signAdmissionToken(this.keys, claims);
    return view;
  }

  private observe(sale: SaleForQueue, outcome: StepOutcome, nowMs: number): void {
    const metrics = this.options.metrics;
    if (!metrics) return;
    metrics.waitingRoomSeen.set(sale.id, { waiting: outcome.waiting, pending: outcome.pending, shopping: outcome.shopping });
    if (outcome.admitted.length === 0) return;
    const labels = { sale: sale.id };
    metrics.waitingRoomAdmissions.inc(labels, outcome.admitted.length);
    const opensAtMs = sale.opensAt.getTime();
    for (const { joinedAtMs } of outcome.admitted) {
      metrics.waitingRoomWaitSeconds.observe(labels, Math.max(0, nowMs - Math.max(joinedAtMs, opensAtMs)) / 1000);
    }
  }
}

export interface CreateWaitingRoomOptions {
  config: Pick<Config, 'admissionSecret' | 'admissionTokenTtlSeconds' | 'admissionShoppingMaxSeconds' | 'queuePollMaxSeconds'>;
  /** Absent: single-node mode, state in this process's memory. */
  redis?: Redis | Cluster;
  /** Prefix of every Redis key; tests use their own. */
  keyPrefix?: string;
  metrics?: Metrics;
}

/** The waiting room as a process builds it: on Redis when there is one, in memory otherwise. */
export function createWaitingRoom(options: CreateWaitingRoomOptions): WaitingRoom {
  const { config } = options;
  assert.ok(config.admissionSecret, 'FLOODGATE_ADMISSION_SECRET is set (floodgate start makes one up for its single process)');
  const store = options.redis ? new RedisQueueStore(options.redis, options.keyPrefix ?? DEFAULT_KEY_PREFIX) : new MemoryQueueStore();
  return new WaitingRoom(store, {
    secret: config.admissionSecret,
    tokenTtlSeconds: config.admissionTokenTtlSeconds,
    shoppingMaxSeconds: config.admissionShoppingMaxSeconds,
    pollMaxSeconds: config.queuePollMaxSeconds,
    metrics: options.metrics,
  });
}
