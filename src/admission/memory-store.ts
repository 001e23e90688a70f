/**
 * The waiting room in process memory, for single-node mode. It does what redis-store.ts's Lua
 * does, step for step, using the same pure rules; the shared test table holds them to the same
 * answers. Admitted and shopping tickets share one lifetime each, so their maps keep insertion
 * order and the entries due first are at the front: with a clock that does not run backwards,
 * walking from the front finds exactly what a sorted set's range would. Waiting tickets each
 * have their own deadline, so they are kept in a heap (Deadlines, below).
 */
import {
  admissionCount,
  type Credit,
  creditCap,
  isSoldOut,
  placeDeadlineMs,
  preOpenScore,
  RECLAIM_BATCH_MAX,
  refillCredit,
  type StepOutcome,
  type TicketState,
} from './domain.js';
import type { ClaimInput, ClaimResult, QueueStore, StepInput, TicketAnswer } from './store.js';

// Each call looks at this many other sales' states for expiry, which bounds the work per call
// and still frees an abandoned sale's memory soon after its time-to-live.
const EXPIRY_SWEEP_MAX = 8;

interface SaleState {
  arrivals: number;
  opened: boolean;
  credit: Credit;
  /** Before opening: ticket → draw score. Sorted into the line at opening. */
  preOpen: Map<string, number>;
  line: Line;
  /** Waiting tickets → when their place is given up. */
  deadlines: Deadlines;
  /** Admitted, token unused → token expiry, soonest first. */
  pending: Map<string, number>;
  /** Token used → slot expiry, soonest first. */
  shopping: Map<string, number>;
  tickets: Map<string, { joinedAtMs: number; buyerDigest: string }>;
  /** Buyer digest → their ticket, for idempotent joins. */
  refs: Map<string, string>;
  expiresAtMs: number;
}

export class MemoryQueueStore implements QueueStore {
  private readonly sales = new Map<string, SaleState>();
  /** `saleId ticketId` → when the single-use mark lapses. */
  private readonly used = new Map<string, number>();

  async join(input: StepInput & { ticketId: string; buyerDigest: string }): Promise<TicketAnswer & { ticketId: string }> {
    const sale = this.prepare(input);
    let ticketId = sale.refs.get(input.buyerDigest);
    if (ticketId === undefined) {
      ticketId = input.ticketId;
      sale.arrivals += 1;
      if (sale.opened) sale.line.push(ticketId);
      else sale.preOpen.set(ticketId, preOpenScore(input.shuffleSeed, sale.arrivals));
      sale.tickets.set(ticketId, { joinedAtMs: input.nowMs, buyerDigest: input.buyerDigest });
      sale.refs.set(input.buyerDigest, ticketId);
    }
    const outcome = admit(sale, input);
    const state = view(sale, ticketId);
    touch(sale, ticketId, state, input);
    return { ticketId, state, outcome };
  }

  async poll(input: StepInput & { ticketId: string }): Promise<TicketAnswer> {
    const sale = this.prepare(input);
    const outcome = admit(sale, input);
    const state = view(sale, input.ticketId);
    touch(sale, input.ticketId, state, input);
    return { state, outcome };
  }

  async step(input: StepInput): Promise<StepOutcome> {
    return admit(this.prepare(input), input);
  }

  async release(saleId: string, ticketId: string): Promise<boolean> {
    const sale = this.sales.get(saleId);
    if (!sale) return false;
    const removed = sale.line.remove(ticketId) || sale.preOpen.delete(ticketId);
    const admitted = sale.pending.delete(ticketId) || sale.shopping.delete(ticketId);
    sale.deadlines.delete(ticketId);
    forget(sale, ticketId);
    return removed || admitted;
  }

  async claim(input: ClaimInput): Promise<ClaimResult> {
    this.sweepUsed(input.nowMs);
    const mark = `${input.saleId} ${input.ticketId}`;
    const lapsesAt = this.used.get(mark);
    if (lapsesAt !== undefined && lapsesAt > input.nowMs) return 'replayed';
    this.used.delete(mark);
    this.used.set(mark, input.nowMs + input.usedTtlMs);
    const sale = this.live(input.saleId, input.nowMs);
    if (!sale?.pending.delete(input.ticketId)) return 'lapsed';
    sale.shopping.set(input.ticketId, input.nowMs + input.shoppingMaxMs);
    return 'ok';
  }

  /** The sale's state, opened if due, with lapsed places reclaimed; kept for another stateTtlMs. */
  private prepare(input: StepInput): SaleState {
    this.sweepSales(input.nowMs);
    let sale = this.live(input.saleId, input.nowMs);
    if (!sale) sale = newSaleState();
    // Re-inserting keeps the map ordered by last use, so the sweep finds idle sales first.
    this.sales.delete(input.saleId);
    this.sales.set(input.saleId, sale);
    sale.expiresAtMs = input.nowMs + input.stateTtlMs;
    openIfDue(sale, input);
    reclaim(sale, input);
    return sale;
  }

  private live(saleId: string, nowMs: number): SaleState | undefined {
    const sale = this.sales.get(saleId);
    return sale && sale.expiresAtMs > nowMs ? sale : undefined;
  }

  private sweepSales(nowMs: number): void {
    let looked = 0;
    for (const [id, sale] of this.sales) {
      if (looked++ >= EXPIRY_SWEEP_MAX || sale.expiresAtMs > nowMs) break;
      this.sales.delete(id);
    }
  }

  private sweepUsed(nowMs: number): void {
    let looked = 0;
    for (const [mark, lapsesAt] of this.used) {
      if (looked++ >= RECLAIM_BATCH_MAX || lapsesAt > nowMs) break;
      this.used.delete(mark);
    }
  }
}

function newSaleState(): SaleState {
  return {
    arrivals: 0,
    opened: false,
    credit: { credit: 0, creditAtMs: 0 },
    preOpen: new Map(),
    line: new Line(),
    deadlines: new Deadlines(),
    pending: new Map(),
    shopping: new Map(),
    tickets: new Map(),
    refs: new Map(),
    expiresAtMs: 0,
  };
}

function openIfDue(sale: SaleState, input: StepInput): void {
  if (sale.opened || input.nowMs < input.opensAtMs) return;
  sale.opened = true;
  sale.credit = { credit: creditCap(input.admitPerSecond), creditAtMs: input.nowMs };
  // Ties (a 2^-52 chance) break by ticket id, as a Redis sorted set orders equal scores.
  const drawn = [...sale.preOpen].sort(([a, scoreA], [b, scoreB]) => scoreA - scoreB || (a < b ? -1 : a > b ? 1 : 0));
  for (const [ticketId] of drawn) sale.line.push(ticketId);
  sale.preOpen.clear();
}

function reclaim(sale: SaleState, input: StepInput): void {
  for (const ticketId of sale.deadlines.takeDue(input.nowMs, RECLAIM_BATCH_MAX)) {
    if (!sale.line.remove(ticketId)) sale.preOpen.delete(ticketId);
    forget(sale, ticketId);
  }
  for (const slots of [sale.pending, sale.shopping]) {
    let count = 0;
    for (const [ticketId, expiresAtMs] of slots) {
      if (count++ >= RECLAIM_BATCH_MAX || expiresAtMs > input.nowMs) break;
      slots.delete(ticketId);
      forget(sale, ticketId);
    }
  }
}

/** Sets a waiting ticket's deadline from the place this join or poll leaves it at. */
function touch(sale: SaleState, ticketId: string, state: TicketState, input: StepInput): void {
  if (state.kind === 'waiting') sale.deadlines.set(ticketId, placeDeadlineMs(input, state.position));
}

function admit(sale: SaleState, input: StepInput): StepOutcome {
  const admitted: StepOutcome['admitted'] = [];
  if (sale.opened) {
    sale.credit = refillCredit(sale.credit, input.nowMs, input.admitPerSecond);
    const n = admissionCount({
      credit: sale.credit.credit,
      maxShoppers: input.maxShoppers,
      shoppers: sale.pending.size + sale.shopping.size,
      availableUnits: input.availableUnits,
      pendingAdmissions: sale.pending.size,
      waiting: sale.line.size,
    });
    for (const ticketId of sale.line.first(n)) {
      sale.line.remove(ticketId);
      sale.deadlines.delete(ticketId);
      sale.pending.set(ticketId, input.nowMs + input.tokenTtlMs);
      admitted.push({ ticketId, joinedAtMs: sale.tickets.get(ticketId)?.joinedAtMs ?? input.nowMs });
    }
    if (n > 0) sale.credit = { credit: sale.credit.credit - n, creditAtMs: sale.credit.creditAtMs };
  }
  return {
    opened: sale.opened,
    waiting: sale.line.size + sale.preOpen.size,
    pending: sale.pending.size,
    shopping: sale.shopping.size,
    soldOut: isSoldOut(input.availableUnits, sale.pending.size),
    admitted,
  };
}

function view(sale: SaleState, ticketId: string): TicketState {
  if (sale.preOpen.has(ticketId)) return { kind: 'waiting', position: null };
  const rank = sale.line.rank(ticketId);
  if (rank !== undefined) return { kind: 'waiting', position: rank };
  const expiresAtMs = sale.pending.get(ticketId);
  const ticket = sale.tickets.get(ticketId);
  if (expiresAtMs !== undefined && ticket) return { kind: 'admitted', buyerDigest: ticket.buyerDigest, tokenExpiresAtMs: expiresAtMs };
  if (sale.shopping.has(ticketId)) return { kind: 'shopping' };
  return { kind: 'unknown' };
}

function forget(sale: SaleState, ticketId: string): void {
  const ticket = sale.tickets.get(ticketId);
  if (!ticket) return;
  if (sale.refs.get(ticket.buyerDigest) === ticketId) sale.refs.delete(ticket.buyerDigest);
  sale.tickets.delete(ticketId);
}

// The Fenwick tree starts this large and doubles; dead entries are compacted once they
// outnumber the live ones and pass this count, so a long sale's line does not grow forever.
const LINE_INITIAL_CAPACITY = 1_024;

/**
 * Waiting tickets in admission order, with a ticket's place found in O(log n): a Fenwick tree
 * counts the live entries before it. Removal leaves a dead slot until compaction.
 */
class Line {
  private order: string[] = [];
  private index = new Map<string, number>();
  private tree = new Int32Array(LINE_INITIAL_CAPACITY + 1);
  private head = 0;

  get size(): number {
    return this.index.size;
  }

  has(ticketId: string): boolean {
    return this.index.has(ticketId);
  }

  push(ticketId: string): void {
    if (this.order.length >= this.tree.length - 1) this.rebuild(Math.max(LINE_INITIAL_CAPACITY, 2 * (this.index.size + 1)));
    this.index.set(ticketId, this.order.length);
    this.order.push(ticketId);
    this.add(this.order.length - 1, 1);
  }

  remove(ticketId: string): boolean {
    const at = this.index.get(ticketId);
    if (at === undefined) return false;
    this.index.delete(ticketId);
    this.add(at, -1);
    const dead = this.order.length - this.index.size;
    if (dead > LINE_INITIAL_CAPACITY && dead > this.index.size) this.rebuild(this.tree.length - 1);
    return true;
  }

  /** 1-based place among the live tickets. */
  rank(ticketId: string): number | undefined {
    const at = this.index.get(ticketId);
    if (at === undefined) return undefined;
    let sum = 0;
    for (let i = at + 1; i > 0; i -= i & -i) sum += this.tree[i] as number;
    return sum;
  }

  first(count: number): string[] {
    const out: string[] = [];
    for (let i = this.head; i < this.order.length && out.length < count; i++) {
      const ticketId = this.order[i] as string;
      if (this.index.get(ticketId) === i) out.push(ticketId);
      else if (out.length === 0) this.head = i + 1;
    }
    return out;
  }

  private add(at: number, delta: number): void {
    for (let i = at + 1; i < this.tree.length; i += i & -i) this.tree[i] = (this.tree[i] as number) + delta;
  }

  private rebuild(capacity: number): void {
    const live = this.order.filter((ticketId, i) => this.index.get(ticketId) === i);
    this.order = live;
    this.index = new Map(live.map((ticketId, i) => [ticketId, i]));
    this.tree = new Int32Array(capacity + 1);
    this.head = 0;
    for (let i = 0; i < live.length; i++) this.add(i, 1);
  }
}

// Superseded heap entries are dropped in one pass once they outnumber the live ones and pass
// this count: a buyer polling far more often than told cannot grow the heap without bound.
const DEADLINES_COMPACT_MIN = 1_024;

/**
 * Waiting tickets by deadline: a binary min-heap of (deadline, ticket) with lazy deletion, and
 * the current deadline of each ticket. Setting a deadline pushes a new entry and leaves the old
 * one to be skipped when it surfaces, so a poll costs O(log n) and finding the lapsed places
 * costs O(1) when there are none. Ties break by ticket id, as a Redis sorted set orders them.
 */
class Deadlines {
  private readonly current = new Map<string, number>();
  private heap: Array<{ atMs: number; ticketId: string }> = [];

  set(ticketId: string, atMs: number): void {
    this.current.set(ticketId, atMs);
    this.push({ atMs, ticketId });
    if (this.heap.length > DEADLINES_COMPACT_MIN && this.heap.length > 2 * this.current.size) this.compact();
  }

  delete(ticketId: string): void {
    this.current.delete(ticketId);
  }

  /** Removes and returns up to `max` tickets whose deadline is at or before `nowMs`, soonest first. */
  takeDue(nowMs: number, max: number): string[] {
    const due: string[] = [];
    while (due.length < max) {
      const top = this.heap[0];
      if (!top || top.atMs > nowMs) break;
      this.pop();
      if (this.current.get(top.ticketId) !== top.atMs) continue;
      this.current.delete(top.ticketId);
      due.push(top.ticketId);
    }
    return due;
  }

  private compact(): void {
    const live = [...this.current].map(([ticketId, atMs]) => ({ atMs, ticketId }));
    this.heap = [];
    for (const entry of live.sort(before)) this.heap.push(entry);
  }

  private push(entry: { atMs: number; ticketId: string }): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (before(heap[parent] as typeof entry, entry) <= 0) break;
      heap[i] = heap[parent] as typeof entry;
      i = parent;
    }
    heap[i] = entry;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && before(heap[right] as typeof last, heap[left] as typeof last) < 0 ? right : left;
      if (before(last, heap[child] as typeof last) <= 0) break;
      heap[i] = heap[child] as typeof last;
      i = child;
    }
    heap[i] = last;
  }
}

function before(a: { atMs: number; ticketId: string }, b: { atMs: number; ticketId: string }): number {
  return a.atMs - b.atMs || (a.ticketId < b.ticketId ? -1 : a.ticketId > b.ticketId ? 1 : 0);
}
