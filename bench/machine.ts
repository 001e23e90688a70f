/**
 * What the benchmark needs to know about the machine: its description for the report, CPU
 * time of processes and of the whole machine (to tell a CPU-bound run from a noisy one), and
 * a free port.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';

// Linux reports process CPU in clock ticks; 100 per second on every common kernel build.
const TICKS_PER_SECOND = 100;

/** User plus system CPU time of a live process, in ms; undefined once it has exited. */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    // The command name (field 2) may contain spaces; the fields we want follow its ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/**
 * Write system calls a live process has made (Linux /proc/<pid>/io syscw); undefined once it has
 * exited. node-pg sends each query in one write (a prepared statement's messages are corked),
 * so for a worker this counts its round trips to PostgreSQL, plus its HTTP requests.
 */
export function processWrites(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const match = /^syscw: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface CpuSnapshot {
  busy: number;
  total: number;
}

/** The machine's CPU counters; busyFraction of two snapshots is the share of all cores in use. */
export function cpuSnapshot(): CpuSnapshot {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] as string;
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number) as number[];
    const idleAll = (idle ?? 0) + (iowait ?? 0);
    const busy = (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0);
    return { busy, total: busy + idleAll };
  } catch {
    return { busy: 0, total: 0 };
  }
}

export function busyFraction(before: CpuSnapshot, after: CpuSnapshot): number {
  const total = after.total - before.total;
  return total > 0 ? Math.round(((after.busy - before.busy) / total) * 100) / 100 : Number.NaN;
}

/** CPU time used by everything on the machine between two snapshots, in ms. */
export function busyMs(before: CpuSnapshot, after: CpuSnapshot): number {
  return ((after.busy - before.busy) * 1000) / TICKS_PER_SECOND;
}

export interface MachineInfo {
  cores: number;
  cpuModel: string;
  node: string;
  postgres: string;
  pgbench: string;
  loadAverage: number[];
}

export function machineInfo(postgresVersion: string): MachineInfo {
  let pgbench = 'unknown';
  try {
    pgbench = execFileSync('pgbench', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    // Reported as unknown; running it later fails with a clearer message.
  }
  return {
    cores: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    postgres: postgresVersion,
    pgbench,
    loadAverage: os.loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

/**
 * A port nobody listens on right now, from the kernel. Another process could take it before
 * the server binds it; the server then fails to start and the run stops with that error.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
