/**
 * Floodgate's own processes (`floodgate start`, `api`, `worker`, `simulator`) run as child
 * processes, as an operator runs them, for tests that must see a real process: its /metrics, its
 * logs. Each listens on a free port it picks itself and says which in its log; the child is
 * killed when the test file ends.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { after } from 'node:test';
import { DEV_SECRETS_KEY } from '../src/platform/crypto/sealed.js';

const ROOT = path.resolve(import.meta.dirname, '..');
// tsx compiles the sources on start; on a loaded machine that takes a while.
const START_TIMEOUT_MS = 90_000;

export interface FloodgateProcess {
  child: ChildProcess;
  /** The API's base URL (start, api), the worker's metrics listener's or the simulator's. */
  url: string;
  /** Every line the process wrote to stdout and stderr so far. */
  readonly output: string[];
  stop(): Promise<void>;
}

/**
 * Starts `floodgate <role>` with the given environment (on top of a clean one: PATH, HOME) and
 * waits for the log line that names its URL.
 */
export async function startFloodgate(
  role: 'start' | 'api' | 'worker' | 'simulator' | 'drill',
  env: Record<string, string>,
  args: string[] = [],
): Promise<FloodgateProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), role, ...args], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      FLOODGATE_PORT: '0',
      FLOODGATE_SIMULATOR_PORT: '0',
      // As for the in-process test apps: on a loaded machine shedding would refuse the tests'
      // own requests; its own tests turn it on.
      FLOODGATE_SHED_EVENT_LOOP_DELAY_MS: '60000',
      FLOODGATE_SHED_IN_FLIGHT_MAX: '1000000',
      FLOODGATE_RATE_LIMIT_IP_PER_SECOND: '0',
      // The production roles refuse to start without a sealing key of their own.
      FLOODGATE_SECRETS_KEYS: DEV_SECRETS_KEY,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });
  const stop = async () => {
    if (exited) return;
    const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(timer);
  };
  after(stop);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`floodgate ${role} did not start in time:\n${output.join('\n')}`)), START_TIMEOUT_MS);
    const onLine = (line: string) => {
      output.push(line);
      const found = urlIn(line);
      if (found) {
        clearTimeout(timer);
        resolve(found);
      }
    };
    lines(child.stdout, onLine);
    lines(child.stderr, onLine);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`floodgate ${role} exited with ${code} before it listened:\n${output.join('\n')}`));
    });
  });
  return { child, url, output, stop };
}

function urlIn(line: string): string | undefined {
  try {
    const entry = JSON.parse(line) as { msg?: string; url?: string; metrics?: string };
    if (entry.msg === 'API listening' && entry.url) return entry.url;
    if (entry.msg === 'worker running' && entry.metrics) return entry.metrics.replace(/\/metrics$/, '');
    if (entry.msg === 'provider simulator listening' && entry.url) return entry.url;
  } catch {}
  return undefined;
}

export function lines(stream: NodeJS.ReadableStream | null, onLine: (line: string) => void): void {
  let buffered = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (chunk: string) => {
    buffered += chunk;
    let newline = buffered.indexOf('\n');
    while (newline >= 0) {
      onLine(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
      newline = buffered.indexOf('\n');
    }
  });
}
