/**
 * A real streaming replica for tests and benches: a PostgreSQL 15 primary and a hot standby
 * made with initdb and pg_basebackup, on free ports in a temporary directory, run as the
 * `postgres` user (PostgreSQL refuses to run as root). Never the machine's own server.
 *
 *   const pair = await startStreamingPair();      // ~3 s
 *   pair.primaryUrl, pair.replicaUrl              // database `floodgate`, migrated
 *   await pair.pauseReplay() / resumeReplay()     // a lagging replica
 *   pair.freezeReplica() / thawReplica()          // SIGSTOP / SIGCONT: a replica that hangs
 *   await pair.stop()                             // destructive, < 1 s
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { migrate } from '../src/platform/db/migrate.js';
import { createPool } from '../src/platform/db/pool.js';
import { migrateJobs } from '../src/platform/jobs/runner.js';
import { DIRECTLY_WRITTEN_TASKS } from '../src/sales/jobs.js';
import { engineSkip, freePort } from './engines.js';

const PG_BIN = process.env.FLOODGATE_TEST_PG_BIN || '/usr/lib/postgresql/15/bin';
const bin = (name: string) => path.join(PG_BIN, name);

/** For node:test's `skip`: why a streaming pair cannot run here (throws under CI=true). */
export function streamingPairSkip(): string | false {
  const skip = engineSkip('PostgreSQL 15 server', [bin('initdb'), bin('postgres'), bin('pg_basebackup')]);
  if (skip) return skip;
  if (process.getuid?.() !== 0 && userIds().uid !== process.getuid?.()) {
    const message = 'skipped: the streaming pair runs PostgreSQL as the postgres user, which needs root (or to be postgres)';
    if (process.env.CI === 'true') throw new Error(message);
    return message;
  }
  return false;
}

export interface StreamingPair {
  primaryUrl: string;
  replicaUrl: string;
  primaryPort: number;
  replicaPort: number;
  /** The temporary directory the pair lives in (owned by postgres, removed by stop()). */
  dir: string;
  /** Stops applying WAL on the replica (it keeps receiving it): it falls behind. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  /** SIGSTOP to every process of the replica: it accepts connections and never answers. */
  freezeReplica(): void;
  thawReplica(): void;
  /** SIGKILL to every process of the replica: connections are refused from then on. */
  killReplica(): void;
  /** Waits until the replica has replayed everything the primary has written. */
  waitCaughtUp(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

function userIds(): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  };
}

// Settings for a throwaway pair: no fsync (the data dies with the test), a hot standby that
// reports back to the primary, and enough WAL senders for a base backup plus the stream.
const SERVER_SETTINGS = [
  'listen_addresses=127.0.0.1',
  'fsync=off',
  'full_page_writes=off',
  'wal_level=replica',
  'max_wal_senders=5',
  'wal_keep_size=256MB',
  'hot_standby=on',
  'hot_standby_feedback=on',
  'max_connections=100',
  'shared_buffers=32MB',
  'wal_receiver_status_interval=1s',
  'logging_collector=off',
];

export async function startStreamingPair(options: { database?: string } = {}): Promise<StreamingPair> {
  const database = options.database ?? 'floodgate';
  const ids = userIds();
  const dir = mkdtempSync(path.join(tmpdir(), 'floodgate-pg-pair-'));
  chownSync(dir, ids.uid, ids.gid);
  const asPostgres = { uid: ids.uid, gid: ids.gid, env: { ...process.env, LC_ALL: 'C.UTF-8', PGUSER: 'postgres' } };
  const primaryDir = path.join(dir, 'primary');
  const replicaDir = path.join(dir, 'replica');
  const children: ChildProcess[] = [];
  let stopped = false;

  const serve = (dataDir: string, port: number): ChildProcess => {
    const args = ['-D', dataDir, '-p', String(port), '-k', dir, ...SERVER_SETTINGS.flatMap((setting) => ['-c', setting])];
    const child = spawn(bin('postgres'), args, { ...asPostgres, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      log = (log + chunk.toString()).slice(-4_000);
    });
    child.on('exit', (code, signal) => {
      if (!stopped && code !== 0 && signal === null) console.error(`# test postgres on ${port} exited ${code}:\n${log}`);
    });
    children.push(child);
    return child;
  };

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const child of children) {
      if (child.pid === undefined || child.exitCode !== null) continue;
      for (const pid of [child.pid, ...childrenOf(child.pid)]) {
        try {
          process.kill(pid, 'SIGCONT');
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
    }
    await Promise.all(
      children.map((child) => (child.exitCode !== null || child.signalCode ? undefined : new Promise((r) => child.once('exit', r)))),
    );
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    execFileSync(bin('initdb'), ['-D', primaryDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], {
      ...asPostgres,
      stdio: 'ignore',
    });
    const primaryPort = await freePort();
    const primary = serve(primaryDir, primaryPort);
    const adminUrl = `postgres://postgres@127.0.0.1:${primaryPort}/postgres`;
    await waitReady(adminUrl, primary);
    await withClient(adminUrl, (client) => client.query(`create database ${database}`));
    const primaryUrl = `postgres://postgres@127.0.0.1:${primaryPort}/${database}`;
    const pool = createPool({ connectionString: primaryUrl, max: 1, statementTimeoutMs: 60_000 });
    try {
      await migrate(pool);
      await migrateJobs(pool, DIRECTLY_WRITTEN_TASKS);
    } finally {
      await pool.end();
    }

    execFileSync(
      bin('pg_basebackup'),
      ['-h', '127.0.0.1', '-p', String(primaryPort), '-U', 'postgres', '-D', replicaDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync'],
      { ...asPostgres, stdio: 'ignore' },
    );
    const replicaPort = await freePort();
    const replica = serve(replicaDir, replicaPort);
    const replicaUrl = `postgres://postgres@127.0.0.1:${replicaPort}/${database}`;
    await waitReady(replicaUrl, replica);

    // PostgreSQL puts every backend in a session of its own (setsid), so the postmaster's
    // process group does not reach them: signal the postmaster and each of its children.
    const signalReplica = (signal: NodeJS.Signals) => {
      if (replica.pid === undefined) return;
      for (const pid of [replica.pid, ...childrenOf(replica.pid)]) {
        try {
          process.kill(pid, signal);
        } catch {}
      }
    };
    const pair: StreamingPair = {
      primaryUrl,
      replicaUrl,
      primaryPort,
      replicaPort,
      dir,
      pauseReplay: () => withClient(replicaUrl, (client) => client.query('select pg_wal_replay_pause()')).then(() => {}),
      resumeReplay: () => withClient(replicaUrl, (client) => client.query('select pg_wal_replay_resume()')).then(() => {}),
      freezeReplica: () => signalReplica('SIGSTOP'),
      thawReplica: () => signalReplica('SIGCONT'),
      killReplica: () => {
        signalReplica('SIGCONT');
        signalReplica('SIGKILL');
      },
      async waitCaughtUp(timeoutMs = 10_000) {
        const { rows } = await withClient(primaryUrl, (client) =>
          client.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn'),
        );
        const target = rows[0]?.lsn as string;
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const { rows: replayed } = await withClient(replicaUrl, (client) =>
            client.query<{ ok: boolean }>('select pg_last_wal_replay_lsn() >= $1::pg_lsn as ok', [target]),
          );
          if (replayed[0]?.ok) return;
          if (Date.now() > deadline) throw new Error(`replica did not reach ${target} within ${timeoutMs} ms`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      },
      stop,
    };
    return pair;
  } catch (error) {
    await stop();
    throw error;
  }
}

function childrenOf(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The command name in field 2 may hold spaces; the parent pid is the second field after it.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === parent) pids.push(Number(entry));
    } catch {}
  }
  return pids;
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

// A fresh cluster accepts connections in well under a second here; a standby once it has
// replayed to a consistent point. Thirty seconds is far beyond both on a loaded machine.
const READY_TIMEOUT_MS = 30_000;

async function waitReady(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`postgres for ${url} exited with ${child.exitCode} while starting`);
    try {
      await withClient(url, (client) => client.query('select 1'));
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`postgres at ${url} not ready within ${READY_TIMEOUT_MS} ms: ${(error as Error).message}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
