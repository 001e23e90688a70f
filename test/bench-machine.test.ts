/**
 * The bench's account of CPU used outside it (bench/machine.ts outsideCpu): the neighbours that
 * take a core from a surge phase are named, nothing of the bench's own is blamed on them, and
 * the surge summary names the rate phases they disturbed (bench/surge-report.ts). And its count
 * of a process's page faults, with what one costs on this machine.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { outsideCpu, type ProcessCpu, pageFaultUs, processMinorFaults, processTable } from '../bench/machine.js';
import { formatSurgeTable, type SurgePhase, summarizeSurge } from '../bench/surge-report.js';

const BENCH = 1000;

function readIfThere(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function table(entries: Array<[pid: number, ppid: number, command: string, ms: number]>): Map<number, ProcessCpu> {
  return new Map(entries.map(([pid, ppid, command, ms]) => [pid, { ppid, command, ms }]));
}

describe('outsideCpu', () => {
  test("names the neighbours' CPU by command and leaves out the bench's tree, PostgreSQL, Redis and the kernel's threads", () => {
    const before = table([
      [1, 0, 'init', 0],
      [2, 0, 'kthreadd', 0],
      [BENCH, 900, 'node', 500],
      [900, 1, 'bash', 10],
      [1001, BENCH, 'node', 200], // the API, a child of the bench
      [1002, 1001, 'node', 50], // and a grandchild
      [300, 1, 'postgres', 1_000],
      [301, 300, 'postgres', 100],
      [400, 1, 'redis-server', 100],
      [20, 2, 'kworker/0:1', 5],
      [2989, 1, 'beam.smp', 31_000],
      [3008, 2989, 'erl_child_setup', 0],
      [500, 1, 'mariadbd', 700],
    ]);
    const after = table([
      [1, 0, 'init', 0],
      [2, 0, 'kthreadd', 0],
      [BENCH, 900, 'node', 900],
      [900, 1, 'bash', 10],
      [1001, BENCH, 'node', 5_200],
      [1002, 1001, 'node', 150],
      [1003, BENCH, 'pgbench', 80], // started during the window
      [300, 1, 'postgres', 1_400],
      [301, 300, 'postgres', 3_100],
      [400, 1, 'redis-server', 400],
      [20, 2, 'kworker/0:1', 300],
      [2989, 1, 'beam.smp', 31_040],
      // An Erlang VM that started and ended within the window: its parent reaped it.
      [3008, 2989, 'erl_child_setup', 290],
      [500, 1, 'mariadbd', 720],
      [600, 1, 'python3', 30], // started during the window, outside the bench
    ]);
    assert.deepEqual(outsideCpu(before, after, BENCH), [
      { command: 'erl_child_setup', ms: 290 },
      { command: 'beam.smp', ms: 40 },
      { command: 'python3', ms: 30 },
      { command: 'mariadbd', ms: 20 },
    ]);
  });

  test('a parent loop in a torn table ends, and the processes in it count as outside', () => {
    const before = table([
      [10, 11, 'a', 0],
      [11, 10, 'b', 0],
    ]);
    const after = table([
      [10, 11, 'a', 5],
      [11, 10, 'b', 7],
    ]);
    assert.deepEqual(outsideCpu(before, after, BENCH), [
      { command: 'b', ms: 7 },
      { command: 'a', ms: 5 },
    ]);
  });

  test("a process outside the bench's tree that burns CPU is named from /proc", async () => {
    // Detached into a session of its own and reparented: it is not our child once its
    // short-lived parent has exited, as a neighbour's process is not. It burns until stopped, so
    // the test waits for its CPU, not for a guess of how long a busy machine takes to give it.
    const script =
      "const c = require('node:child_process').spawn(process.execPath, ['-e', 'for (;;);'], { detached: true, stdio: 'ignore' }); console.log(c.pid); process.exit(0);";
    const before = processTable();
    const launcher = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    launcher.stdout.on('data', (chunk) => {
      out += chunk;
    });
    await new Promise((resolve) => launcher.once('exit', resolve));
    const burner = Number(out.trim());
    assert.ok(burner > 0, 'the launcher printed its child');
    try {
      let after = processTable();
      for (const deadline = Date.now() + 20_000; (after.get(burner)?.ms ?? 0) < 100 && Date.now() < deadline; after = processTable()) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const entry = after.get(burner);
      assert.ok(entry, 'the burner is running');
      // Its parent gone, its ancestry does not reach us.
      assert.notEqual(entry.ppid, process.pid);
      const outside = outsideCpu(before, after, process.pid);
      const node = outside.find((line) => line.command === entry.command);
      assert.ok(node && node.ms >= 100, `the burner's CPU is outside the bench: ${JSON.stringify(outside)}`);
      // The burner's own row: outside when the bench is this process, nobody's when it is the bench.
      const burnerOnly = new Map([[burner, entry]]);
      assert.deepEqual(outsideCpu(before, burnerOnly, process.pid), [{ command: entry.command, ms: Math.round(entry.ms) }]);
      assert.deepEqual(outsideCpu(before, burnerOnly, burner), []);
    } finally {
      process.kill(burner, 'SIGKILL');
    }
  });
});

describe('page faults', () => {
  test("a process's minor faults grow by about a page's worth when it touches fresh memory", () => {
    const before = processMinorFaults(process.pid);
    assert.ok(before !== undefined && before > 0, `read ${before} faults of this process`);
    const bytes = 16 * 1024 * 1024;
    const pages = new Uint8Array(new ArrayBuffer(bytes));
    for (let at = 0; at < bytes; at += 4096) pages[at] = 1;
    const taken = (processMinorFaults(process.pid) ?? 0) - before;
    // One fault per 4 KB page touched (a test process does little else meanwhile), unless the
    // kernel maps every anonymous region in 2 MB pages (transparent huge pages "always").
    const hugePagesAlways = /\[always\]/.test(readIfThere('/sys/kernel/mm/transparent_hugepage/enabled'));
    const least = hugePagesAlways ? bytes / (2 * 1024 * 1024) : bytes / 4096 / 8;
    assert.ok(taken >= least && taken <= (bytes / 4096) * 2, `${taken} faults for ${bytes / 4096} fresh pages`);
    assert.equal(processMinorFaults(2 ** 22 + 1), undefined, 'no figure for a pid that does not exist');
  });

  test('the machine reports what one fault costs', () => {
    const us = pageFaultUs();
    assert.ok(Number.isFinite(us) && us > 0 && us < 1_000, `a page fault costs ${us} µs`);
  });
});

describe('the surge summary', () => {
  const ratePhase = (round: number, p99Ms: number, outside: { command: string; ms: number }[]): SurgePhase => ({
    round,
    name: 'hold_api_rate',
    clients: 120,
    durationS: 5,
    rate: 3_000,
    overloaded: false,
    throughput: 3_000,
    latency: { count: 15_000, meanMs: 8, p50Ms: 7, p90Ms: 12, p99Ms, p999Ms: p99Ms, maxMs: p99Ms },
    errors: {},
    cpu: {
      machineBusy: 0.7,
      clientUsPerTx: 80,
      serverUsPerTx: 180,
      backendsUsPerTx: 110,
      redisUsPerTx: 25,
      providerUsPerTx: Number.NaN,
      otherCores: 0.1,
      outside,
    },
  });
  const background = [
    { command: 'process_api', ms: 70 },
    { command: 'beam.smp', ms: 30 },
  ];

  test("names the rate phases in which one command outside the bench took 100 ms or more, and gives the others' p99", () => {
    const phases = [
      ratePhase(0, 300, [{ command: 'erl_child_setup', ms: 300 }]), // the warm-up: never judged
      ratePhase(1, 36, background), // 100 ms in all, no single command near it
      ratePhase(2, 63, [{ command: 'erl_child_setup', ms: 280 }, ...background]),
      ratePhase(3, 40, []),
    ];
    const { holdAtRate } = summarizeSurge(phases, 3);
    assert.equal(holdAtRate.api.p99Ms, 40, 'the goal still reads every round');
    assert.deepEqual(holdAtRate.disturbed, [{ round: 2, p99Ms: 63, outside: 'erl_child_setup 280 ms, process_api 70 ms, beam.smp 30 ms' }]);
    assert.equal(holdAtRate.undisturbedP99Ms, 38);
    const table = formatSurgeTable(summarizeSurge(phases, 3), { quick: false, rounds: 3, durationS: 5, clients: 20 });
    assert.match(
      table,
      /took CPU from the hold @ 60% phase of round 2 \(p99 63 ms; erl_child_setup 280 ms.*p99 of the other rounds: 38 ms/,
    );
  });

  test('says nothing of neighbours when none took a core, and reads records made before the list existed', () => {
    const old = ratePhase(1, 45, []);
    delete old.cpu.outside;
    const { holdAtRate } = summarizeSurge([old, ratePhase(2, 41, background)], 2);
    assert.deepEqual(holdAtRate.disturbed, []);
    assert.equal(holdAtRate.undisturbedP99Ms, 43);
  });
});
