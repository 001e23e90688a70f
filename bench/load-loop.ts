/**
 * The loop both HTTP load generators run (loadgen.ts for payment creations, surge-loadgen.ts
 * for the surge path), so that a closed loop or an open one means the same thing, with the
 * same bounds and the same latency clock, whatever the requests are.
 *
 *   closed: every connection starts its next unit of work as soon as the last one ended, until
 *           durationMs has passed, requestsMax units were started or the work ran out; measures
 *           the most the server can do at that concurrency.
 *   open:   units are scheduled as a Poisson process at `rate` per second, like pgbench -R, and
 *           handed to the first idle connection (queued while all are busy). Latency is taken
 *           from the scheduled time, not the send time, so a stalled server is charged for the
 *           units it delayed (no coordinated omission).
 *
 * A unit of work is what the caller's `start` sends: one request, or a chain of requests on the
 * same connection (a checkout); its latency runs from its start (or scheduled time) to `done`.
 */
import { performance } from 'node:perf_hooks';
import { type LatencySummary, summarize } from './stats.js';

/** What the loop needs of a keep-alive connection; sending is the caller's. */
export interface LoopConnection {
  readonly busy: boolean;
  readonly closed: boolean;
  /** Gives up on the request in flight without reporting it (the loop counts it). */
  abandon(): void;
  destroy(): void;
}

export interface LoopJob {
  mode: 'closed' | 'open';
  durationMs: number;
  /** Units per second; open mode only. */
  rate?: number;
  /** Bounds the run whatever the server does: no more than this many units are started. */
  requestsMax: number;
  /** After durationMs, how long to wait for answers before giving up on them. */
  drainTimeoutMs: number;
  /** Open mode: stop early, as overloaded, when this many scheduled units wait for a connection. */
  queueMax?: number;
}

export interface LoopResult {
  sent: number;
  ok: number;
  errors: Record<string, number>;
  /** From the first send to the last answer, in ms. */
  elapsedMs: number;
  throughput: number;
  latency: LatencySummary;
  overloaded: boolean;
  /** True when `start` had no more work to give (e.g. the admission tokens ran out). */
  ranOut: boolean;
  cpuMs: number;
}

/** Reports how a unit ended: 'ok' or an error's name, with a short detail for the first of each. */
export type Done = (outcome: string, detail?: string) => void;

/**
 * Starts one unit of work on an idle connection and calls `done` once when it has ended.
 * Returns false, without sending, when there is no more work.
 */
export type Start<C extends LoopConnection> = (connection: C, done: Done) => boolean;

// A closed loop whose connections all sit idle (its work ran out at once, or every socket
// closed) has no answer left to wake it: it looks every this many ms whether it is over.
const IDLE_CHECK_MS = 100;

/** Exponential gaps between arrivals: a Poisson process, as pgbench -R schedules. */
function nextGapMs(rate: number): number {
  return (-Math.log(1 - Math.random()) * 1000) / rate;
}

export function runLoop<C extends LoopConnection>(job: LoopJob, connections: C[], start: Start<C>): Promise<LoopResult> {
  const latenciesUs: number[] = [];
  const errors: Record<string, number> = {};
  const cpuBefore = process.cpuUsage();
  let sent = 0;
  let ok = 0;
  let lastAnswerAt = 0;
  let overloaded = false;
  let ranOut = false;
  const startedAt = performance.now();
  const deadline = startedAt + job.durationMs;

  return new Promise<LoopResult>((resolve) => {
    const queue: number[] = [];
    let queueHead = 0;
    let scheduling = job.mode === 'open';
    let finished = false;
    let nextAt = startedAt;

    const settle =
      (startAt: number): Done =>
      (outcome, detail) => {
        const now = performance.now();
        lastAnswerAt = now;
        if (outcome === 'ok') {
          ok += 1;
          latenciesUs.push((now - startAt) * 1000);
        } else {
          errors[outcome] = (errors[outcome] ?? 0) + 1;
          // The first failure of each kind says why; kept short.
          if (errors[outcome] === 1 && detail) errors[`${outcome}: ${detail.slice(0, 160)}`] = 1;
        }
        if (job.mode === 'closed') sendClosed(pick());
        else dispatch();
        maybeFinish();
      };

    const pick = (): C | undefined => connections.find((connection) => !connection.busy && !connection.closed);

    /** Starts a unit at `startAt` on `connection`; false (and the loop stops starting) when the work ran out. */
    const begin = (connection: C, startAt: number): boolean => {
      if (!start(connection, settle(startAt))) {
        ranOut = true;
        return false;
      }
      sent += 1;
      return true;
    };

    const sendClosed = (connection: C | undefined) => {
      if (!connection || ranOut || performance.now() >= deadline || sent >= job.requestsMax) return;
      begin(connection, performance.now());
    };

    const dispatch = () => {
      while (queueHead < queue.length && !ranOut) {
        const connection = pick();
        if (!connection) return;
        if (!begin(connection, queue[queueHead] as number)) {
          scheduling = false;
          queue.length = queueHead;
          return;
        }
        queueHead += 1;
      }
    };

    const schedule = () => {
      const now = performance.now();
      while (scheduling && nextAt <= now) {
        if (nextAt >= deadline || sent + queue.length - queueHead >= job.requestsMax) scheduling = false;
        else {
          queue.push(nextAt);
          nextAt += nextGapMs(job.rate as number);
        }
      }
      if (queue.length - queueHead > (job.queueMax ?? Number.POSITIVE_INFINITY)) {
        overloaded = true;
        scheduling = false;
        queue.length = queueHead;
      }
      dispatch();
      if (scheduling) setTimeout(schedule, Math.max(0, nextAt - performance.now()));
      else maybeFinish();
    };

    const maybeFinish = () => {
      if (finished) return;
      const stillSending =
        job.mode === 'open'
          ? scheduling || queueHead < queue.length
          : performance.now() < deadline && sent < job.requestsMax && !ranOut && connections.some((c) => !c.closed);
      if (stillSending || connections.some((connection) => connection.busy)) return;
      finish();
    };

    // The hard bound: whatever the server does, the run ends drainTimeoutMs after its duration.
    const giveUp = setTimeout(() => {
      for (const connection of connections) {
        if (!connection.busy) continue;
        errors.timeout = (errors.timeout ?? 0) + 1;
        connection.abandon();
      }
      const unsent = queue.length - queueHead;
      if (unsent > 0) errors.not_sent = (errors.not_sent ?? 0) + unsent;
      finish();
    }, job.durationMs + job.drainTimeoutMs);
    const idleCheck = setInterval(maybeFinish, IDLE_CHECK_MS);

    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(giveUp);
      clearInterval(idleCheck);
      for (const connection of connections) connection.destroy();
      const elapsedMs = Math.max((lastAnswerAt || performance.now()) - startedAt, 1);
      const cpu = process.cpuUsage(cpuBefore);
      resolve({
        sent,
        ok,
        errors,
        elapsedMs: Math.round(elapsedMs),
        throughput: Math.round((ok / elapsedMs) * 1000),
        latency: summarize(latenciesUs),
        overloaded,
        ranOut,
        cpuMs: Math.round((cpu.user + cpu.system) / 1000),
      });
    };

    if (job.mode === 'closed') for (const connection of connections) sendClosed(connection);
    else schedule();
    maybeFinish();
  });
}
