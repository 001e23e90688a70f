/**
 * Group commit: requests that arrive together are written together. A surge sends many
 * requests that each make one small write, and each write alone costs a transaction and a WAL
 * flush; a group of them written in one statement or one transaction pays that once. Callers
 * submit a request under a group name (the requests that can share one transaction) and get
 * their own answer back; `run` does one batch's work and answers each request in order.
 *
 * Scheduling, per group: a request that finds no batch running and no window set goes at once
 * (windowMs 0) or waits up to windowMs for company; while `maxRunning` batches are running,
 * the next gathers; a full batch (`batchMax`) goes as soon as a slot is free, and a window ends
 * on the next turn once as many requests wait as the group's last batch had (the company it
 * waits for has come).
 * So one request alone pays at most the window, and under load batches grow to the rate × the
 * commit time.
 */
import assert from 'node:assert/strict';

export interface GroupCommitOptions<Request, Answer> {
  /** How long the first request of an idle group waits for company; 0 sends it on the next turn of the event loop. */
  windowMs: number;
  /** The most requests in a batch or, with sizeOf, the largest total size of a batch's requests. */
  batchMax: number;
  /**
   * A request's size, for requests that carry several items into one statement (its arrays are
   * what must stay small); every request counts 1 without it. A request larger than batchMax
   * still goes, alone.
   */
  sizeOf?: (request: Request) => number;
  /** Batches of one group that may run at once (1 when batches contend for the same rows). */
  maxRunning: number;
  /** One batch's work: answers in the order of `batch`. A throw rejects every request in it. */
  run: (group: string, batch: Request[]) => Promise<Answer[]>;
  /** Called with each batch's size, for metrics and the bench. */
  onBatch?: (size: number) => void;
}

interface Waiting<Request, Answer> {
  request: Request;
  resolve: (answer: Answer) => void;
  reject: (error: unknown) => void;
}

interface Group<Request, Answer> {
  waiting: Waiting<Request, Answer>[];
  running: number;
  /** Cancels the pending start of the next batch, when one is set. */
  cancelStart: (() => void) | undefined;
  /** Whether that start is on the next turn of the event loop (not at the window's end). */
  startsNextTurn: boolean;
}

/** Groups whose last batch size is remembered while they are idle; the oldest is forgotten first. */
const REMEMBERED_GROUPS_MAX = 1_000;

export class GroupCommit<Request, Answer> {
  private readonly groups = new Map<string, Group<Request, Answer>>();
  /** Each group's last batch size: the company its next batch expects (see schedule). */
  private readonly lastSizes = new Map<string, number>();

  constructor(private readonly options: GroupCommitOptions<Request, Answer>) {
    assert.ok(options.batchMax >= 1 && options.windowMs >= 0 && options.maxRunning >= 1, 'group commit limits');
  }

  submit(group: string, request: Request): Promise<Answer> {
    return new Promise((resolve, reject) => {
      let state = this.groups.get(group);
      if (!state) {
        state = { waiting: [], running: 0, cancelStart: undefined, startsNextTurn: false };
        this.groups.set(group, state);
      }
      state.waiting.push({ request, resolve, reject });
      this.schedule(group, state);
    });
  }

  private schedule(name: string, group: Group<Request, Answer>): void {
    if (group.running >= this.options.maxRunning) return;
    if (group.waiting.length >= this.options.batchMax) {
      this.start(name, group);
      return;
    }
    // A window ends early, on the next turn, once as many requests wait as the group's last
    // batch had: that company has come. Under a steady load (a closed loop of buyers, or
    // arrivals at a rate) the window then costs nothing; a lone request, or the first of a
    // burst, still waits for company. Never fewer than two, or one request would end it.
    const companyCame = group.waiting.length >= Math.max(2, this.lastSizes.get(name) ?? this.options.batchMax);
    if (group.cancelStart && (group.startsNextTurn || !companyCame)) return;
    group.cancelStart?.();
    // setImmediate still gathers the requests parsed in the same turn of the event loop.
    if (this.options.windowMs === 0 || companyCame) {
      const immediate = setImmediate(() => this.start(name, group));
      group.cancelStart = () => clearImmediate(immediate);
      group.startsNextTurn = true;
    } else {
      const timer = setTimeout(() => this.start(name, group), this.options.windowMs);
      group.cancelStart = () => clearTimeout(timer);
      group.startsNextTurn = false;
    }
  }

  private start(name: string, group: Group<Request, Answer>): void {
    group.cancelStart?.();
    group.cancelStart = undefined;
    const batch = group.waiting.splice(0, this.batchLength(group.waiting));
    if (batch.length === 0) {
      if (group.running === 0) this.groups.delete(name);
      return;
    }
    group.running++;
    // Only a window reads it (schedule): a windowless group keeps no size.
    if (this.options.windowMs > 0) this.remember(name, batch.length);
    this.options.onBatch?.(batch.length);
    this.runBatch(name, batch).finally(() => {
      group.running--;
      if (group.waiting.length > 0) this.schedule(name, group);
      else if (group.running === 0) this.groups.delete(name);
    });
  }

  /** How many of the waiting requests, from the first, the next batch takes: at least one. */
  private batchLength(waiting: Waiting<Request, Answer>[]): number {
    const { batchMax, sizeOf } = this.options;
    if (!sizeOf) return batchMax;
    let size = 0;
    let length = 0;
    for (const { request } of waiting) {
      size += sizeOf(request);
      if (length > 0 && size > batchMax) break;
      length += 1;
    }
    return length;
  }

  /** Keeps a group's last batch size, the most recent groups' only. */
  private remember(name: string, size: number): void {
    this.lastSizes.delete(name);
    this.lastSizes.set(name, size);
    if (this.lastSizes.size > REMEMBERED_GROUPS_MAX) this.lastSizes.delete(this.lastSizes.keys().next().value as string);
  }

  private async runBatch(name: string, batch: Waiting<Request, Answer>[]): Promise<void> {
    try {
      const answers = await this.options.run(
        name,
        batch.map((waiting) => waiting.request),
      );
      assert.equal(answers.length, batch.length, 'one answer per request');
      for (const [index, waiting] of batch.entries()) waiting.resolve(answers[index] as Answer);
    } catch (error) {
      for (const waiting of batch) waiting.reject(error);
    }
  }
}

/**
 * A function whose concurrent calls run in batches of `run`, one batch at a time and with no
 * window: calls of one turn of the event loop, or made while a batch runs, go together in the
 * next. (Group commit with one group, for a kind of call that has no natural group, such as
 * the delivery jobs a worker runs at once.) A run that throws fails every call of its batch.
 */
export function coalesce<Input, Output>(options: {
  run: (inputs: Input[]) => Promise<Output[]>;
  batchMax: number;
  sizeOf?: (input: Input) => number;
}): (input: Input) => Promise<Output> {
  const commits = new GroupCommit<Input, Output>({
    windowMs: 0,
    batchMax: options.batchMax,
    maxRunning: 1,
    run: (_group, batch) => options.run(batch),
    ...(options.sizeOf ? { sizeOf: options.sizeOf } : {}),
  });
  return (input) => commits.submit('', input);
}
