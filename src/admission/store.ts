/**
 * What a waiting-room store does: the state of each sale's line, changed atomically per call.
 * Two implementations with the same behaviour, held to it by one shared test table: Redis
 * (Lua scripts, for any number of API nodes) and memory (single-node mode).
 *
 * Every call except release and claim runs the same step first, in this order: open the line
 * if its time has come, reclaim lapsed places and slots, then (for join) place the buyer's
 * ticket, admit from the head of the line, and (for join and poll) set the ticket's deadline
 * from the place it is left at (domain.ts placeDeadlineMs). Reclaiming before touching means a
 * buyer who comes back after their deadline has lost their place, whichever node they reach.
 */
import type { StepOutcome, TicketState } from './domain.js';

export interface StepInput {
  saleId: string;
  nowMs: number;
  opensAtMs: number;
  admitPerSecond: number;
  maxShoppers: number;
  graceMs: number;
  /** The bound on a waiting ticket's Retry-After (domain.ts pollBoundSeconds); with graceMs it sets deadlines. */
  pollMaxSeconds: number;
  /** The sale's remainingStock() at this moment. */
  availableUnits: number;
  tokenTtlMs: number;
  /** How long the sale's state is kept after this write. */
  stateTtlMs: number;
  shuffleSeed: string;
}

export interface TicketAnswer {
  state: TicketState;
  outcome: StepOutcome;
}

export interface ClaimInput {
  saleId: string;
  ticketId: string;
  nowMs: number;
  /** How long the single-use mark is kept: the token's remaining life plus a margin. */
  usedTtlMs: number;
  shoppingMaxMs: number;
}

/** `lapsed`: the admission ended (expired or released) before the token was used. */
export type ClaimResult = 'ok' | 'replayed' | 'lapsed';

export interface QueueStore {
  /** Places the buyer (by digest) in line, or finds the ticket they already have. */
  join(input: StepInput & { ticketId: string; buyerDigest: string }): Promise<TicketAnswer & { ticketId: string }>;
  poll(input: StepInput & { ticketId: string }): Promise<TicketAnswer>;
  step(input: StepInput): Promise<StepOutcome>;
  /** Removes the ticket wherever it is (waiting, admitted or shopping); false if it was not there. */
  release(saleId: string, ticketId: string): Promise<boolean>;
  /** Marks the ticket's token used, once, and moves the admission from pending to shopping. */
  claim(input: ClaimInput): Promise<ClaimResult>;
}
