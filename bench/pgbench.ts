/**
 * Runs pgbench with the server's statement and reads its per-transaction log, so that its
 * percentiles come from raw samples through the same code as the HTTP side's.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { processCpuMs } from './machine.js';
import type { PgbenchScript } from './statement.js';
import { type LatencySummary, summarize } from './stats.js';

export interface PgbenchJob {
  databaseUrl: string;
  clients: number;
  durationS: number;
  /** Transactions per second for pgbench -R; absent for a closed loop. */
  rate?: number;
}

export interface PgbenchResult {
  /** pgbench's own figure, which leaves out the time its clients took to connect. */
  tps: number;
  transactions: number;
  failed: number;
  latency: LatencySummary;
  /** CPU time of the pgbench process itself (its client side), in ms. */
  cpuMs: number;
}

// pgbench gets this long past its duration to connect, finish and write its logs.
const PGBENCH_GRACE_MS = 30_000;

export async function runPgbench(script: PgbenchScript, job: PgbenchJob): Promise<PgbenchResult> {
  const dir = await mkdtemp(path.join(tmpdir(), 'floodgate-pgbench-'));
  try {
    const scriptFile = path.join(dir, 'create_intent.sql');
    await writeFile(scriptFile, script.script);
    // A script whose ids step by :clients (the hold capture's) steps by this run's client count.
    const variables = {
      ...script.variables,
      ...('clients' in script.variables ? { clients: String(job.clients) } : {}),
      idbase: String(100_000_000_000_000_000 + Date.now() * 1000),
    };
    const args = [
      '--no-vacuum',
      '--protocol=prepared',
      `--client=${job.clients}`,
      // One thread, like the single-threaded HTTP load generator; its schedule for -R is then
      // one Poisson process shared by all clients, as the generator's is.
      '--jobs=1',
      `--time=${job.durationS}`,
      `--file=${scriptFile}`,
      '--log',
      `--log-prefix=${path.join(dir, 'tx')}`,
      ...(job.rate ? [`--rate=${job.rate}`] : []),
      ...Object.entries(variables).map(([name, value]) => `--define=${name}=${value}`),
      job.databaseUrl,
    ];
    const { stdout, cpuMs } = await run('pgbench', args, job.durationS * 1000 + PGBENCH_GRACE_MS);
    const tps = Number(/^tps = ([\d.]+)/m.exec(stdout)?.[1]);
    const transactions = Number(/actually processed: (\d+)/.exec(stdout)?.[1]);
    const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
    if (!Number.isFinite(tps) || !Number.isFinite(transactions)) throw new Error(`could not read pgbench output:\n${stdout}`);
    return { tps: Math.round(tps), transactions, failed, latency: summarize(await readLatencies(dir)), cpuMs };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The third field of each log line is the transaction's latency in µs; under --rate it is
 * counted from the scheduled start, so schedule lag is included, as in the HTTP generator.
 */
async function readLatencies(dir: string): Promise<number[]> {
  const samples: number[] = [];
  for (const file of (await readdir(dir)).filter((name) => name.startsWith('tx.'))) {
    for (const line of (await readFile(path.join(dir, file), 'utf8')).split('\n')) {
      const fields = line.split(' ');
      if (fields.length >= 6) samples.push(Number(fields[2]));
    }
  }
  return samples;
}

/** Runs a command to completion within timeoutMs, sampling its CPU time as it goes. */
function run(command: string, args: string[], timeoutMs: number): Promise<{ stdout: string; cpuMs: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let cpuMs = 0;
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    // /proc is gone once the process exits, so keep the last reading (off by at most 200 ms).
    const sampler = setInterval(() => {
      cpuMs = processCpuMs(child.pid) ?? cpuMs;
    }, 200);
    const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearInterval(sampler);
      clearTimeout(killer);
      if (code === 0) resolve({ stdout: stdout + stderr, cpuMs });
      else reject(new Error(`${command} exited with ${code ?? signal}:\n${stderr.slice(-2000)}`));
    });
  });
}
