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

const { values } = parseArgs({ options: { 'database-url': { type: 'string' }, seconds: { type: 'string', default: '600' } } });
if (!values['database-url']) {
  console.error('usage: npx tsx bench/drill-sampler.ts --database-url URL [--seconds N]');
  process.exit(2);
}
const CLOCK_TICKS_PER_SECOND = 100;
const SAMPLE_MS = 100;
const LINE_MS = 10_000;

/** CPU ticks so far of every process, by a name that groups a kind (each PostgreSQL backend counts as postgres). */
function processTicks(): Map<string, { name: string; ticks: number }> {
  const byPid = new Map<string, { name: string; ticks: number }>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const role = /floodgate\.js (\S+)|cli\/main\.ts (\S+)/.exec(command);
      const name = comm === 'node' || comm.startsWith('MainThread') ? `node ${role?.[1] ?? role?.[2] ?? command.slice(0, 24)}` : comm;
      byPid.set(pid, { name, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return byPid;
}

function machineTicks(): { idle: number; total: number } {
  const ticks = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').split(/\s+/).slice(1).map(Number);
  return { idle: (ticks[3] ?? 0) + (ticks[4] ?? 0), total: ticks.reduce((sum, tick) => sum + tick, 0) };
}

const client = new pg.Client({ connectionString: values['database-url'] });
await client.connect();
let waits = new Map<string, number>();
let samples = 0;
let active = 0;
let lastProcesses = processTicks();
let lastMachine = machineTicks();
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
  const processes = processTicks();
  const machine = machineTicks();
  const byName = new Map<string, number>();
  for (const [pid, now] of processes) {
    const used = now.ticks - (lastProcesses.get(pid)?.ticks ?? now.ticks);
    if (used > 0) byName.set(now.name, (byName.get(now.name) ?? 0) + used);
  }
  const busy = 100 * (1 - (machine.idle - lastMachine.idle) / (machine.total - lastMachine.total));
  const top = [...byName]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([name, ticks]) => `${name} ${((ticks / CLOCK_TICKS_PER_SECOND / (LINE_MS / 1000)) * 100).toFixed(0)}%`);
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
