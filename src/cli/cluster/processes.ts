/**
 * Starting and killing the local cluster's daemons. Each daemon runs detached in a process
 * group of its own, writing to a log file, so a `floodgate cluster up` can exit and leave them
 * running, and a teardown can kill a daemon with everything it started.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';

export interface DaemonSpec {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to (appended) with the daemon's stdout and stderr. */
  logFile: string;
  /** Run as this user (via runuser) when we are root: Patroni refuses to run PostgreSQL as root. */
  runAs?: string;
}

/** Starts a daemon in its own process group and returns its pid; it outlives this process. */
export function startDaemon(spec: DaemonSpec): number {
  const log = openSync(spec.logFile, 'a');
  try {
    const asOther = spec.runAs !== undefined && process.getuid?.() === 0;
    const command = asOther ? 'runuser' : spec.command;
    const args = asOther ? ['-u', spec.runAs as string, '--', spec.command, ...spec.args] : spec.args;
    const child = spawn(command, args, {
      cwd: spec.cwd,
      env: { ...process.env, ...spec.env },
      detached: true,
      stdio: ['ignore', log, log],
    });
    if (child.pid === undefined) throw new Error(`${spec.name}: could not start ${spec.command}`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(log);
  }
}

/**
 * Whether pid names a running process. A killed process stays a zombie until PID 1 reaps it
 * (about 1.4 s late on some machines), and `kill -0` still succeeds then: read its state instead.
 */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Signals pid's whole process group (it leads one: startDaemon made it so), else pid alone. */
export function signalGroup(pid: number, sig: NodeJS.Signals): void {
  if (!signal(-pid, sig)) signal(pid, sig);
}

interface ProcInfo {
  pid: number;
  ppid: number;
  cmdline: string;
}

function listProcesses(): ProcInfo[] {
  const found: ProcInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      found.push({ pid: Number(entry), ppid: Number(fields[1]), cmdline });
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

/** pid and every process below it. */
export function descendants(pid: number, processes = listProcesses()): number[] {
  const result = [pid];
  for (let i = 0; i < result.length; i++) {
    for (const proc of processes) if (proc.ppid === result[i]) result.push(proc.pid);
  }
  return result;
}

/**
 * Every process whose command line or environment mentions `marker` (the cluster's own
 * directory, unique per cluster), and everything below them; never this process or its
 * ancestors, which may mention it too (`floodgate cluster down --dir DIR`, run by npm). This is
 * what finds an orphan postmaster that outlived its Patroni: it was started with `-D <dir>/...`.
 * Pids recorded earlier are not trusted: after a reboot they may name someone else's process.
 */
export function findMarked(marker: string): number[] {
  const processes = listProcesses();
  const spared = ancestors(process.pid, processes);
  const roots = processes.filter(
    (proc) => !spared.has(proc.pid) && (mentions(proc.cmdline, marker) || mentions(environ(proc.pid), marker)),
  );
  const found = new Set<number>();
  for (const root of roots) for (const pid of descendants(root.pid, processes)) if (!spared.has(pid)) found.add(pid);
  return [...found];
}

/**
 * Whether text names the path `marker` itself or something inside it, not merely a longer name
 * that starts with it: the default directory `$TMPDIR/floodgate-cluster` is a prefix of every
 * `$TMPDIR/floodgate-cluster-XXXXXX` another cluster (a fault test's) lives in.
 */
export function mentions(text: string, marker: string): boolean {
  for (let at = text.indexOf(marker); at >= 0; at = text.indexOf(marker, at + 1)) {
    const next = text[at + marker.length];
    if (next === undefined || !/[\w.-]/.test(next)) return true;
  }
  return false;
}

function environ(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8');
  } catch {
    return '';
  }
}

/** pid and every process above it. */
function ancestors(pid: number, processes: ProcInfo[]): Set<number> {
  const parents = new Map(processes.map((proc) => [proc.pid, proc.ppid]));
  const result = new Set<number>();
  for (
    let current: number | undefined = pid;
    current !== undefined && current > 0 && !result.has(current);
    current = parents.get(current)
  ) {
    result.add(current);
  }
  return result;
}

/** The postmaster's pid from its data directory, if it is running. */
export function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(`${dataDir}/postmaster.pid`, 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 && isRunning(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** A port the kernel says is free now, from the ephemeral range: never a service's standard port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls check until it returns a value (not undefined), or throws after timeoutMs with what it last saw. */
export async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? `: ${last.message}` : '';
      throw new Error(`${what}: not within ${timeoutMs} ms${detail}`);
    }
    await sleep(intervalMs);
  }
}
