/**
 * What the benchmark needs to know about the machine: its description for the report, CPU
 * time of processes and of the whole machine (to tell a CPU-bound run from a noisy one), and
 * a free port.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { median, round } from './stats.js';

// Linux reports process CPU in clock ticks; 100 per second on every common kernel build.
const TICKS_PER_SECOND = 100;

/**
 * A live process's /proc/<pid>/stat: its command, and the fields after it (index 0 is field 3,
 * the state; 1 the ppid; 11 to 14 utime, stime, cutime, cstime); undefined once it has exited.
 */
function readStat(pid: number | string): { command: string; fields: string[] } | undefined {
  try {
    // The command (field 2) may contain spaces and parentheses; the other fields follow its last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    return { command: stat.slice(stat.indexOf('(') + 1, close), fields: stat.slice(close + 2).split(' ') };
  } catch {
    return undefined;
  }
}

const ticksToMs = (...ticks: (string | undefined)[]) => (ticks.reduce((sum, tick) => sum + Number(tick), 0) * 1000) / TICKS_PER_SECOND;

/** User plus system CPU time of a live process, in ms; undefined once it has exited. */
export function processCpuMs(pid: number | undefined): number | undefined {
  const stat = pid === undefined ? undefined : readStat(pid);
  return stat && ticksToMs(stat.fields[11], stat.fields[12]);
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

/** Minor page faults a live process has taken (/proc/<pid>/stat field 10); undefined once it has exited. */
export function processMinorFaults(pid: number | undefined): number | undefined {
  const stat = pid === undefined ? undefined : readStat(pid);
  return stat && Number(stat.fields[7]);
}

// Each probe touches this much fresh memory, one byte per 4 KB page: one minor fault a page.
const FAULT_PROBE_BYTES = 64 * 1024 * 1024;
const PAGE_BYTES = 4096;

/** One try of pageFaultUs: µs per fault, or NaN when touching fresh memory took no fault. */
function faultProbe(): number {
  // A zero-filled buffer this large is mapped fresh and not written: every page is untouched.
  const pages = new Uint8Array(new ArrayBuffer(FAULT_PROBE_BYTES));
  const before = processMinorFaults(process.pid) ?? 0;
  let started = process.hrtime.bigint();
  for (let at = 0; at < FAULT_PROBE_BYTES; at += PAGE_BYTES) pages[at] = 1;
  const firstNs = Number(process.hrtime.bigint() - started);
  const taken = (processMinorFaults(process.pid) ?? 0) - before;
  started = process.hrtime.bigint();
  for (let at = 0; at < FAULT_PROBE_BYTES; at += PAGE_BYTES) pages[at] = 2;
  const againNs = Number(process.hrtime.bigint() - started);
  return taken > 0 ? (firstNs - againNs) / taken / 1000 : Number.NaN;
}

/**
 * What one minor page fault costs on this machine, in µs: the bench touches 64 MB of fresh
 * pages, then the same pages again, and the difference is divided by the faults it took (the
 * median of three tries, about half a second in all on a VM that charges 11 µs a fault). A
 * process's faults times this is CPU it spent on the kernel and the hypervisor mapping memory:
 * commonly put at 0.1–0.3 µs a fault on bare metal (not measured here), about 11 µs on the PVM
 * machines the bench has run on. NaN when no try took a fault.
 */
export function pageFaultUs(): number {
  return round(median([faultProbe(), faultProbe(), faultProbe()]), 2);
}

/** A process as /proc/<pid>/stat shows it: its parent, its command, its CPU and its reaped children's, in ms. */
export interface ProcessCpu {
  ppid: number;
  command: string;
  ms: number;
}

/**
 * Every live process's CPU, by pid. A process's figure includes the children it has reaped
 * (cutime, cstime), so one that starts and ends between two tables still shows, in its parent.
 */
export function processTable(): Map<number, ProcessCpu> {
  const table = new Map<number, ProcessCpu>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    // One that exited while the table was read is missing: its parent's reaped-children time holds its CPU.
    const stat = readStat(entry);
    if (!stat) continue;
    const { command, fields } = stat;
    table.set(Number(entry), { ppid: Number(fields[1]), command, ms: ticksToMs(fields[11], fields[12], fields[13], fields[14]) });
  }
  return table;
}

// Processes that serve the bench though they are not its children: the machine's PostgreSQL
// (backends, WAL writer, checkpointer) and Redis.
const SERVING_COMMANDS = new Set(['postgres', 'redis-server']);
// The kernel's own threads descend from kthreadd (pid 2); their CPU is mostly the loopback
// traffic and page faults of the bench's processes.
const KTHREADD = 2;

/**
 * The CPU that processes outside the bench used between two tables, summed by command and
 * largest first: everything but the bench's own process tree (`benchPid` and its descendants),
 * PostgreSQL, Redis and the kernel's threads. On a shared machine these are the neighbours
 * that take a core from a phase (this one's RabbitMQ starts an Erlang VM every minute).
 */
export function outsideCpu(
  before: Map<number, ProcessCpu>,
  after: Map<number, ProcessCpu>,
  benchPid: number,
): { command: string; ms: number }[] {
  const ours = new Map<number, boolean>();
  const isOurs = (pid: number): boolean => {
    const known = ours.get(pid);
    if (known !== undefined) return known;
    const entry = after.get(pid) ?? before.get(pid);
    // Marked before the walk up, so a parent loop in a torn table ends.
    ours.set(pid, false);
    const result =
      pid === benchPid ||
      pid === KTHREADD ||
      (entry !== undefined && (SERVING_COMMANDS.has(entry.command) || (entry.ppid > 1 && isOurs(entry.ppid))));
    ours.set(pid, result);
    return result;
  };
  const byCommand = new Map<string, number>();
  for (const [pid, entry] of after) {
    // A pid seen only now started during the window: all its CPU is the window's.
    const used = entry.ms - (before.get(pid)?.ms ?? 0);
    if (used <= 0 || isOurs(pid)) continue;
    byCommand.set(entry.command, (byCommand.get(entry.command) ?? 0) + used);
  }
  return [...byCommand].map(([command, ms]) => ({ command, ms: Math.round(ms) })).sort((a, b) => b.ms - a.ms);
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
  /** CPU one minor page fault costs, in µs (pageFaultUs); absent in records made before it was measured. */
  pageFaultUs?: number;
}

/** ", a page fault costs N µs" for a machine's description; empty when it was not measured. */
export function faultCostText(machine: MachineInfo): string {
  return Number.isFinite(machine.pageFaultUs) ? `, a page fault costs ${machine.pageFaultUs} µs` : '';
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
    pageFaultUs: pageFaultUs(),
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
