/**
 * Process control for a local cluster: each daemon started with its configuration written into
 * the cluster's directory and its output in <dir>/<name>.log; Floodgate's own roles started
 * with the cluster's wiring; PostgreSQL's processes found for the fault tests; and the
 * destructive teardown.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SERVER_NODE_FLAGS } from '../../platform/node-flags.js';
import { etcdArgs, haproxy503, haproxyConfig, type PgNodePorts, patroniConfig } from './configs.js';
import { findMarked, isRunning, postmasterPid, signal, startDaemon, waitFor } from './processes.js';
import { type ClusterState, clusterUrls, postgresUser } from './state.js';

const ROOT = path.resolve(import.meta.dirname, '../../..');
// The bound on a replica's lag behind the primary for HAProxy's replica port.
const MAX_REPLICA_LAG_BYTES = 1_048_576;

function logFile(state: ClusterState, name: string) {
  return path.join(state.dir, `${name}.log`);
}

export function startEtcd(state: ClusterState): number {
  return startDaemon({
    name: 'etcd',
    command: 'etcd',
    args: etcdArgs(state.ports, state.dir),
    logFile: logFile(state, 'etcd'),
  });
}

export async function waitEtcdHealthy(state: ClusterState, timeoutMs: number): Promise<void> {
  await waitFor('etcd healthy', timeoutMs, async () => {
    const response = await fetch(`http://127.0.0.1:${state.ports.etcdClient}/health`, { signal: AbortSignal.timeout(1_000) });
    return response.ok ? true : undefined;
  });
}

export async function writePatroniConfig(state: ClusterState, node: PgNodePorts): Promise<void> {
  const nodeDir = path.join(state.dir, node.name);
  await mkdir(nodeDir, { recursive: true, mode: 0o700 });
  const config = patroniConfig({
    scope: state.scope,
    node,
    dir: state.dir,
    etcdClient: state.ports.etcdClient,
    binDir: state.binDir,
  });
  await writeFile(path.join(nodeDir, 'patroni.yml'), JSON.stringify(config, null, 2));
  if (process.getuid?.() === 0) {
    const { uid, gid } = postgresUser();
    await chown(nodeDir, uid, gid);
    await chown(path.join(nodeDir, 'patroni.yml'), uid, gid);
  }
}

/** Patroni for node `name`, as the postgres user when we are root (its log file is theirs too). */
export async function startPatroni(state: ClusterState, name: string): Promise<number> {
  const file = logFile(state, name);
  await writeFile(file, '', { flag: 'a' });
  if (process.getuid?.() === 0) {
    const { uid, gid } = postgresUser();
    await chown(file, uid, gid);
  }
  return startDaemon({
    name,
    command: '/usr/bin/patroni',
    args: [path.join(state.dir, name, 'patroni.yml')],
    logFile: file,
    runAs: 'postgres',
    cwd: path.join(state.dir, name),
  });
}

export async function startHaproxy(state: ClusterState): Promise<number> {
  const file = path.join(state.dir, 'haproxy.cfg');
  const errorFile503 = path.join(state.dir, 'haproxy-503.http');
  await writeFile(errorFile503, haproxy503());
  await writeFile(file, haproxyConfig(state.ports, { maxReplicaLagBytes: MAX_REPLICA_LAG_BYTES, errorFile503 }));
  return startDaemon({
    name: 'haproxy',
    command: 'haproxy',
    args: ['-db', '-f', file],
    logFile: logFile(state, 'haproxy'),
  });
}

export async function startRedis(state: ClusterState): Promise<number> {
  const redisDir = path.join(state.dir, 'redis');
  await mkdir(redisDir, { recursive: true });
  return startDaemon({
    name: 'redis',
    command: 'redis-server',
    // Redis rewrites its process title (and with it the command line that names this
    // directory) unless told not to; `down` finds the cluster's processes by that name.
    args: [
      '--port',
      String(state.ports.redis),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      redisDir,
      '--set-proc-title',
      'no',
    ],
    logFile: logFile(state, 'redis'),
  });
}

/** The environment of the cluster's Floodgate processes: its wiring over what `up` inherited. */
function nodeEnv(state: ClusterState, extra: Record<string, string>): Record<string, string> {
  const urls = clusterUrls(state);
  return {
    ...state.inheritedEnv,
    FLOODGATE_LOG_LEVEL: 'warn',
    // Marks the process as this cluster's, for a teardown that trusts no recorded pid.
    FLOODGATE_CLUSTER_DIR: state.dir,
    DATABASE_URL: urls.database,
    REDIS_URL: urls.redis,
    FLOODGATE_REDIS_KEY_PREFIX: `${state.scope}:`,
    FLOODGATE_PROVIDER_URL: `http://127.0.0.1:${state.ports.simulator}`,
    FLOODGATE_PROVIDER_WEBHOOK_SECRET: state.secrets.providerWebhook,
    FLOODGATE_ADMISSION_SECRET: state.secrets.admission,
    FLOODGATE_SECRETS_KEYS: state.secrets.sealing,
    ...state.env,
    ...extra,
  };
}

/** `floodgate <role>` as one of the cluster's daemons, named `name` (its log: <dir>/<name>.log). */
export function startFloodgate(state: ClusterState, name: string, role: string, env: Record<string, string>): number {
  return startDaemon({
    name,
    command: process.execPath,
    args: [...SERVER_NODE_FLAGS, '--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), role],
    cwd: ROOT,
    env: nodeEnv(state, env),
    logFile: logFile(state, name),
  });
}

/** Runs a one-shot `floodgate` command with env; resolves with its exit code and output (rejects when migrate fails). */
export async function runFloodgate(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), ...args],
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        if (code !== 0 && args[0] === 'migrate') reject(new Error(`floodgate migrate failed: ${stderr}`));
        else resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The pids of a PostgreSQL node's postmaster and its children (backends, walsender...). */
export function postgresPids(state: ClusterState, name: string): number[] {
  const pid = postmasterPid(path.join(state.dir, name, 'data'));
  if (!pid) return [];
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((candidate) => candidate === pid || parentOf(candidate) === pid);
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/**
 * Destructive teardown: SIGKILL whatever mentions the cluster's directory (every daemon, orphan
 * postmasters too), then remove the directory. A graceful Patroni stop takes seconds per node;
 * nothing here needs to survive.
 */
export async function teardown(dir: string, options: { keepDir?: boolean } = {}): Promise<void> {
  const victims = findMarked(dir);
  // A frozen process (SIGSTOP) dies of SIGKILL too, but continuing it first lets it be reaped.
  for (const pid of victims) signal(pid, 'SIGCONT');
  for (const pid of victims) signal(pid, 'SIGKILL');
  // Processes die at once but are reaped late; wait until none is left running.
  await waitFor('cluster processes gone', 10_000, async () => (victims.every((pid) => !isRunning(pid)) ? true : undefined), 100).catch(
    () => {},
  );
  if (!options.keepDir && existsSync(dir)) await rm(dir, { recursive: true, force: true });
}
