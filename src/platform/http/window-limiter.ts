/**
 * Fixed-window limiters whose points every node spends from one budget in Redis, without a
 * Redis round trip per request.
 *
 * A limit of `points` per window is one counter in Redis per subject (an address, an API key)
 * and window; the window starts with the subject's first request, as the counter's expiry. A
 * node does not count each request there: it leases a share of the window's points at once
 * (INCRBY by the share, in one script) and spends them in its own memory, synchronously, until
 * they run out, then leases again. The counter in Redis counts every leased point, so all
 * nodes together never allow more than `points` in a window; what a node leased and did not
 * use is lost for that window, so they may allow up to one share per node fewer. A share is a
 * twentieth of the limit (at least one point): a limit of a few points per window stays exact
 * request by request, and a busy API key (10,000 a second by default) costs one round trip per
 * 500 requests instead of one per request, which was a tenth of an API node's CPU in a drill
 * on the local cluster.
 *
 * Decisions a node can make from its memory (points leased and left, or the window's budget
 * known to be spent) are synchronous (`decideNow`), so a fast lane can apply the limit too.
 *
 * When Redis cannot answer, the node counts in its own memory (the insurance limiter): each
 * node then holds every subject to the full limit alone. Single-node mode counts in memory only.
 */
import type { Cluster, Redis } from 'ioredis';
import type { RedisConnections } from '../redis/client.js';

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the window ends and the full limit is available again. */
  resetSeconds: number;
}

// A lease is this share of the limit.
const LEASE_DIVISOR = 20;
// Windows of subjects not seen since are forgotten when this many subjects are kept.
const SUBJECTS_SWEEP_AT = 10_000;

/** A subject's window as this node sees it. */
interface Window {
  endsAt: number;
  /** Points leased to this node and not spent yet. */
  leased: number;
  /** Points the shared counter had given out (to every node) after this node's last lease. */
  taken: number;
  /** The lease on its way, which requests arriving meanwhile wait for rather than lease again. */
  leasing?: Promise<void>;
  /** Counted in this node's memory alone: single-node mode, or Redis did not answer. */
  local: boolean;
  /** Why Redis did not answer, when it did not: each decision then counts as a fallback. */
  failure?: unknown;
}

// Takes `want` points of the subject's window; the window starts (the counter expires) with its first points.
const LEASE_SCRIPT = `
local taken = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {taken, ttl}`;

type LeaseClient = (Redis | Cluster) & {
  floodgateRateLease(key: string, want: number, windowMs: number): Promise<[number, number]>;
};

export interface WindowLimiterOptions {
  /** Names the counters in Redis: `ratelimit:<name>:<subject>`. */
  name: string;
  points: number;
  windowSeconds: number;
  /** Absent: single-node mode, counted in this process. */
  redis?: RedisConnections;
  /** Called for each decision made in memory because Redis could not answer. */
  fellBack(error: unknown): void;
}

export class WindowLimiter {
  private readonly windows = new Map<string, Window>();
  private readonly windowMs: number;
  private readonly share: number;
  private readonly client?: LeaseClient;
  private sweptAt = 0;

  constructor(private readonly options: WindowLimiterOptions) {
    this.windowMs = options.windowSeconds * 1000;
    this.share = Math.max(1, Math.ceil(options.points / LEASE_DIVISOR));
    if (options.redis) {
      const client = options.redis.client;
      if (!('floodgateRateLease' in client)) client.defineCommand('floodgateRateLease', { numberOfKeys: 1, lua: LEASE_SCRIPT });
      this.client = client as LeaseClient;
    }
  }

  /** Takes one point for subject, synchronously when this node can decide alone. */
  consume(subject: string): RateDecision | Promise<RateDecision> {
    return this.decideNow(subject, true) ?? this.consumeLeasing(subject);
  }

  /**
   * The decision this node can make from its memory, taking the point when `take` and allowed;
   * undefined when it needs a lease first (and then nothing was taken).
   */
  decideNow(subject: string, take: boolean): RateDecision | undefined {
    const now = Date.now();
    let window = this.windows.get(subject);
    if (window && window.endsAt <= now) {
      this.windows.delete(subject);
      window = undefined;
    }
    if (!window) {
      if (this.client) return undefined;
      window = this.open(subject, now, true);
    }
    if (window.local) {
      // Counted here alone: the whole limit is this node's.
      if (take && window.failure !== undefined) this.options.fellBack(window.failure);
      if (window.taken >= this.options.points) return this.decision(false, window, now);
      if (take) window.taken += 1;
      return this.decision(true, window, now);
    }
    if (window.leased > 0) {
      if (take) window.leased -= 1;
      return this.decision(true, window, now);
    }
    if (window.taken >= this.options.points) return this.decision(false, window, now);
    return undefined;
  }

  private async consumeLeasing(subject: string): Promise<RateDecision> {
    for (;;) {
      const decided = this.decideNow(subject, true);
      if (decided) return decided;
      const window = this.windows.get(subject);
      if (window?.leasing) await window.leasing;
      else await this.lease(subject, window);
    }
  }

  /** Leases a share of the subject's window from Redis, or falls back to counting here. */
  private lease(subject: string, current: Window | undefined): Promise<void> {
    const client = this.client as LeaseClient;
    const now = Date.now();
    const window = current ?? this.open(subject, now, false);
    const leasing = (async () => {
      // Disconnected: straight to this process's count, without a doomed round trip.
      if (client.status !== 'ready') throw new Error(`Redis is ${client.status}`);
      const [taken, ttlMs] = await client.floodgateRateLease(`ratelimit:${this.options.name}:${subject}`, this.share, this.windowMs);
      const before = Number(taken) - this.share;
      window.leased += Math.max(0, Math.min(this.share, this.options.points - before));
      window.taken = Number(taken);
      window.endsAt = Date.now() + Number(ttlMs);
    })()
      .catch((error: unknown) => {
        // The insurance limiter: this subject's window is counted here until it ends.
        window.failure = error ?? new Error('the lease failed');
        window.local = true;
        window.taken = 0;
        window.leased = 0;
      })
      .finally(() => {
        window.leasing = undefined;
      });
    window.leasing = leasing;
    return leasing;
  }

  private open(subject: string, now: number, local: boolean): Window {
    // Ended windows go when next seen; past this many, the unseen ones go too, once a window.
    if (this.windows.size >= SUBJECTS_SWEEP_AT && now - this.sweptAt >= this.windowMs) {
      this.sweptAt = now;
      for (const [key, window] of this.windows) if (window.endsAt <= now && !window.leasing) this.windows.delete(key);
    }
    const window: Window = { endsAt: now + this.windowMs, leased: 0, taken: 0, local };
    this.windows.set(subject, window);
    return window;
  }

  private decision(allowed: boolean, window: Window, now: number): RateDecision {
    // What is left to everyone: this node's unspent lease and what the counter has not given out.
    const remaining = window.local ? this.options.points - window.taken : window.leased + this.options.points - window.taken;
    return {
      allowed,
      limit: this.options.points,
      remaining: Math.max(0, Math.min(this.options.points, remaining)),
      resetSeconds: Math.max(1, Math.ceil((window.endsAt - now) / 1000)),
    };
  }
}
