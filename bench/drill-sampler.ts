/**
 * Where a drill's time goes, sampled while it runs: every 100 ms what PostgreSQL's client
 * backends are doing (pg_stat_activity: running, or waiting on what), and every 10 s the
 * machine's busy share and the CPU of each kind of process (from /proc, so Linux only). One
 * line per 10 s, to read beside the drill's timeline:
 *
 *   npx tsx bench/drill-sampler.ts --database-url postgres://…/floodgate [--seconds 600]
 *
 * Start it just after the drill (with `--target`, point it at the deployment's database; for a
 * drill that starts its own `start`, its embedded database is in the drill's log as
 * postgres://postgres:…@127.0.0.1:<port>/floodgate, password `floodgate`). "pg active" is the
 * mean number of client backends not idle; the waits after it are means too, so 0.5 of
 * `idle in transaction/Client:ClientRead` is half a backend, on average, holding a transaction
 * open while its client prepares the next statement. A process that starts and ends within one
 * 10 s line is in the machine's share but not among the processes.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { busyFraction, cpuSnapshot, processCpuMs } from './machine.js';

const { values } = parseArgs({ options: { 'database-url': { type: 'string' }, seconds: { type: 'string', default: '600' } } });
if (!values['database-url']) {
  console.error('usage: npx tsx bench/drill-sampler.ts --database-url URL [--seconds N]');
  process.exit(2);
}
const SAMPLE_MS = 100;
const LINE_MS = 10_000;

/** Each live process's name, grouping a kind: every PostgreSQL backend counts as postgres, a Floodgate process by its role. */
function processNames(): Map<number, string> {
  const names = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const role = /floodgate\.js (\S+)|cli\/main\.ts (\S+)/.exec(command);
      names.set(
        Number(entry),
        comm === 'node' || comm.startsWith('MainThread') ? `node ${role?.[1] ?? role?.[2] ?? command.slice(0, 24)}` : comm,
      );
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return names;
}

/** CPU ms so far of every live process (machine.ts processCpuMs), with its name. */
function processCpu(): Map<number, { name: string; ms: number }> {
  const cpu = new Map<number, { name: string; ms: number }>();
  for (const [pid, name] of processNames()) {
    const ms = processCpuMs(pid);
    if (ms !== undefined) cpu.set(pid, { name, ms });
  }
  return cpu;
}

const client = new pg.Client({ connectionString: values['database-url'] });
await client.connect();
let waits = new Map<string, number>();
let samples = 0;
let active = 0;
let lastProcesses = processCpu();
let lastMachine = cpuSnapshot();
const startedAt = Date.now();

const sampler = setInterval(async () => {
  const { rows } = await client.query<{ state: string; wait: string }>(
    `select state, coalesce(wait_event_type || ':' || wait_event, 'cpu') as wait from pg_stat_activity
     where pid <> pg_backend_pid() and backend_type = 'client backend' and state <> 'idle'`,
  );
  samples += 1;
  active += rows.length;
  for (const row of rows) waits.set(`${row.state}/${row.wait}`, (waits.get(`${row.state}/${row.wait}`) ?? 0) + 1);
}, SAMPLE_MS);

const reporter = setInterval(() => {
  const processes = processCpu();
  const machine = cpuSnapshot();
  const byName = new Map<string, number>();
  for (const [pid, now] of processes) {
    const used = now.ms - (lastProcesses.get(pid)?.ms ?? now.ms);
    if (used > 0) byName.set(now.name, (byName.get(now.name) ?? 0) + used);
  }
  const busy = busyFraction(lastMachine, machine) * 100;
  const top = [...byName]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([name, ms]) => `${name} ${((ms / LINE_MS) * 100).toFixed(0)}%`);
  const topWaits = [...waits]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 5)
    .map(([wait, count]) => `${wait} ${(count / Math.max(samples, 1)).toFixed(2)}`);
  const elapsed = ((Date.now() - startedAt) / 1000).toFixed(0);
  console.log(
    `${elapsed}s machine ${busy.toFixed(0)}% | ${top.join(', ')} (of one core) | pg active ${(active / Math.max(samples, 1)).toFixed(2)}: ${topWaits.join(', ')}`,
  );
  lastProcesses = processes;
  lastMachine = machine;
  waits = new Map();
  samples = 0;
  active = 0;
}, LINE_MS);

const stop = async () => {
  clearInterval(sampler);
  clearInterval(reporter);
  await client.end().catch(() => {});
};
setTimeout(stop, Number(values.seconds) * 1000);
// The database going away (the drill's own `start` stopping) ends the sampling.
client.on('error', () => void stop());
process.on('SIGINT', () => void stop());
