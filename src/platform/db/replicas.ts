/**
 * Reads that may be a little stale (reports) go to a streaming replica that is close enough
 * behind the primary; everything else, and every read that must see the caller's own writes,
 * goes to the primary pool as before.
 *
 * How far behind a replica is, per read: the primary's current WAL position is read first
 * (one cheap round trip, no table touched), then the replica's replay position. A replica that
 * has replayed up to that position holds every commit acknowledged before the read began: its
 * lag is the time since then. One that has not is at least as fresh as the last commit it
 * replayed (pg_last_xact_replay_timestamp): its lag is the time since that commit, an upper
 * bound (an idle primary makes it look older than it is, which only sends the read to the
 * primary). The replay position is read before the report's snapshot is taken, so the
 * snapshot holds at least what the position promises.
 *
 * A replica that does not answer within the probe timeout is skipped for a while, so a dead
 * one costs one request the timeout, not every request.
 */
import type { Registry } from 'prom-client';
import { registeredCounter } from '../observability/registered.js';
import { type Client, createPool, type Pool } from './pool.js';

/** Why a read went to the primary although replicas are configured (or that none is). */
export type FallbackReason = 'no_replica_configured' | 'replica_lagging' | 'replica_unreachable' | 'replica_not_in_recovery';

export interface ReadTarget {
  source: 'primary' | 'replica';
  /** host:port of the replica that served, for operators. */
  replica: string | null;
  /** How far behind the primary the data may be, in milliseconds (0 on the primary). */
  lagMs: number;
  /** The data holds every commit acknowledged before this moment. */
  asOf: Date;
  fallbackReason: FallbackReason | null;
}

/** One read-only, repeatable-read transaction on the chosen server; call end() when done. */
export interface ReadSession {
  readonly target: ReadTarget;
  readonly db: Client;
  end(): Promise<void>;
}

export interface ReadRouter {
  readonly replicaCount: number;
  open(): Promise<ReadSession>;
  /** open(), fn, end(), for reads that fit in memory. */
  read<T>(fn: (db: Client, target: ReadTarget) => Promise<T>): Promise<{ value: T; target: ReadTarget }>;
  close(): Promise<void>;
}

export interface ReadRouterOptions {
  primary: Pool;
  replicaUrls: readonly string[];
  maxLagMs: number;
  poolMax: number;
  statementTimeoutMs: number;
  registry?: Registry;
  /** Tests shorten it. */
  probeTimeoutMs?: number;
}

// A replica on the same network answers the probe in a millisecond; one that has not answered
// in half a second is stopped or swamped, and the primary serves better than a wait.
const REPLICA_PROBE_TIMEOUT_MS = 500;
// A replica that failed its probe is not asked again for this long: a dead replica must not
// cost every report the probe timeout. Short enough that a restarted one is back in seconds.
const REPLICA_RETRY_AFTER_MS = 5_000;

const PRIMARY_POSITION = 'select pg_current_wal_lsn()::text as lsn';

// Run outside the report's transaction, before its snapshot: see the module comment.
const REPLICA_PROBE = `select pg_is_in_recovery() as in_recovery,
  coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false) as caught_up,
  pg_last_xact_replay_timestamp() as replayed_at,
  (extract(epoch from clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::float8 as replay_age_ms`;

export interface ReplicaProbe {
  in_recovery: boolean;
  caught_up: boolean;
  replayed_at: Date | null;
  replay_age_ms: number | null;
}

/**
 * The replica's lag from its probe, or a reason not to use it. `primaryReadAtMs` is when the
 * primary's position was read; `nowMs` is now.
 */
export function judgeReplica(
  probe: ReplicaProbe,
  primaryReadAtMs: number,
  nowMs: number,
  maxLagMs: number,
): { ok: true; lagMs: number; asOf: Date } | { ok: false; reason: FallbackReason } {
  if (!probe.in_recovery) return { ok: false, reason: 'replica_not_in_recovery' };
  if (probe.caught_up) return { ok: true, lagMs: Math.max(0, nowMs - primaryReadAtMs), asOf: new Date(primaryReadAtMs) };
  // Behind, and nothing replayed since it started: how far behind is unknown.
  if (probe.replayed_at === null || probe.replay_age_ms === null) return { ok: false, reason: 'replica_lagging' };
  const lagMs = Math.max(0, Math.round(probe.replay_age_ms));
  if (lagMs > maxLagMs) return { ok: false, reason: 'replica_lagging' };
  return { ok: true, lagMs, asOf: probe.replayed_at };
}

interface Replica {
  name: string;
  pool: Pool;
  downUntilMs: number;
}

export function createReadRouter(options: ReadRouterOptions): ReadRouter {
  const probeTimeoutMs = options.probeTimeoutMs ?? REPLICA_PROBE_TIMEOUT_MS;
  const replicas: Replica[] = options.replicaUrls.map((url) => ({
    name: hostOf(url),
    pool: createPool({
      connectionString: url,
      max: options.poolMax,
      statementTimeoutMs: options.statementTimeoutMs,
      connectionTimeoutMs: probeTimeoutMs,
      applicationName: 'floodgate-reports',
    }),
    downUntilMs: 0,
  }));
  const reads = options.registry
    ? registeredCounter(options.registry, {
        name: 'floodgate_report_reads_total',
        help: 'Report reads by the server that served them (primary, replica) and why the primary served (fallback_reason)',
        labelNames: ['source', 'fallback_reason'] as const,
      })
    : undefined;
  // Reports spread over the replicas by taking turns at which one is asked first.
  let turn = 0;

  const onPrimary = async (fallbackReason: FallbackReason): Promise<ReadSession> => {
    const target: ReadTarget = { source: 'primary', replica: null, lagMs: 0, asOf: new Date(), fallbackReason };
    return begin(await options.primary.connect(), target);
  };

  const open = async (): Promise<ReadSession> => {
    const session = await choose();
    reads?.inc({ source: session.target.source, fallback_reason: session.target.fallbackReason ?? 'none' });
    return session;
  };

  const choose = async (): Promise<ReadSession> => {
    if (replicas.length === 0) return onPrimary('no_replica_configured');
    const { rows } = await options.primary.query<{ lsn: string }>(PRIMARY_POSITION);
    const primaryReadAtMs = Date.now();
    const position = rows[0]?.lsn as string;
    let reason: FallbackReason = 'replica_unreachable';
    const first = turn++ % replicas.length;
    for (let i = 0; i < replicas.length; i++) {
      const replica = replicas[(first + i) % replicas.length] as Replica;
      if (Date.now() < replica.downUntilMs) continue;
      let probed: { client: Client; probe: ReplicaProbe };
      try {
        probed = await probeReplica(replica.pool, position, probeTimeoutMs);
      } catch {
        replica.downUntilMs = Date.now() + REPLICA_RETRY_AFTER_MS;
        continue;
      }
      const judged = judgeReplica(probed.probe, primaryReadAtMs, Date.now(), options.maxLagMs);
      if (!judged.ok) {
        probed.client.release();
        reason = judged.reason;
        continue;
      }
      const target: ReadTarget = { source: 'replica', replica: replica.name, lagMs: judged.lagMs, asOf: judged.asOf, fallbackReason: null };
      return begin(probed.client, target);
    }
    return onPrimary(reason);
  };

  return {
    replicaCount: replicas.length,
    open,
    async read(fn) {
      const session = await open();
      try {
        return { value: await fn(session.db, session.target), target: session.target };
      } catch (error) {
        if (session.target.source === 'primary') throw error;
        // The replica failed under the report (it died, or cancelled the query for a conflict
        // with recovery): nothing has been sent yet, so the primary answers instead.
        const replica = replicas.find((candidate) => candidate.name === session.target.replica);
        if (replica) replica.downUntilMs = Date.now() + REPLICA_RETRY_AFTER_MS;
        await session.end();
        const fallback = await onPrimary('replica_unreachable');
        reads?.inc({ source: 'primary', fallback_reason: 'replica_unreachable' });
        try {
          return { value: await fn(fallback.db, fallback.target), target: fallback.target };
        } finally {
          await fallback.end();
        }
      } finally {
        await session.end();
      }
    },
    async close() {
      await Promise.all(replicas.map((replica) => replica.pool.end()));
    },
  };
}

/** Starts the read-only snapshot every query of one report sees. */
async function begin(client: Client, target: ReadTarget): Promise<ReadSession> {
  try {
    await client.query('begin isolation level repeatable read read only');
  } catch (error) {
    client.release(error as Error);
    throw error;
  }
  let ended = false;
  return {
    target,
    db: client,
    async end() {
      if (ended) return;
      ended = true;
      try {
        await client.query('commit');
        client.release();
      } catch (error) {
        client.release(error as Error);
      }
    },
  };
}

/**
 * Connects and probes within timeoutMs. A server that is stopped (not dead) accepts the TCP
 * connection and never answers; on timeout the connection is destroyed, not returned to the pool.
 */
async function probeReplica(pool: Pool, primaryPosition: string, timeoutMs: number): Promise<{ client: Client; probe: ReplicaProbe }> {
  let client: Client | undefined;
  let released = false;
  let timedOut = false;
  const discard = (error: Error) => {
    if (!client || released) return;
    released = true;
    client.release(error);
  };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new Error(`replica did not answer within ${timeoutMs} ms`);
      timedOut = true;
      discard(error);
      reject(error);
    }, timeoutMs);
  });
  const attempt = (async () => {
    const connected = await pool.connect();
    client = connected;
    if (timedOut) {
      discard(new Error('probe timed out'));
      throw new Error('probe timed out');
    }
    try {
      const { rows } = await connected.query<ReplicaProbe>(REPLICA_PROBE, [primaryPosition]);
      return { client: connected, probe: rows[0] as ReplicaProbe };
    } catch (error) {
      discard(error as Error);
      throw error;
    }
  })();
  attempt.catch(() => {});
  try {
    return await Promise.race([attempt, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function hostOf(url: string): string {
  try {
    const parsed = new URL(url);
    return parsed.port ? `${parsed.hostname}:${parsed.port}` : parsed.hostname;
  } catch {
    return 'replica';
  }
}
