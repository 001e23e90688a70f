/**
 * Summarizes a V8 CPU profile (`npm run bench -- --profile` writes one per process to
 * bench/results/profiles/) as text small enough to commit beside a bench record:
 *
 *   npx tsx bench/profile-summary.ts bench/results/profiles/<run>/worker [--top N]
 *   npx tsx bench/profile-summary.ts bench/results/profiles/CPU.<…>.cpuprofile --phase hold_api
 *
 * Given a folder, it reads the main thread's profile in it (Node names it
 * CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile, the main thread with tid 0; the others are
 * tsx's module loader). Given a file, that file.
 *
 * Shares are of the samples in which the process ran JavaScript or native code, so idle time
 * (waiting on sockets) and time paused by the bench (SIGSTOP) count for nothing. Samples are
 * counted, not weighed by their time deltas: a process resumed after a pause would otherwise
 * charge the whole pause to its first sample.
 *
 * - by owner: the code a sample was in, with native functions (writev, HMAC, JSON) charged to
 *   the JavaScript that called them: a package of node_modules, a part of Node, or our own
 *   source by folder;
 * - by function, self: where the samples are;
 * `--phase NAME` keeps only the samples taken during the surge phases of that name (all rounds)
 * that loaded this profile's process: the surge bench writes each phase's window, in the
 * profiles' own clock, to phases.json beside the profiles when it runs with --profile.
 *
 * - our functions, inclusive: each of Floodgate's functions with everything it called (a
 *   callback's own stack starts at the event loop, so an awaited continuation counts apart).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  /** When the profile started, in µs of CLOCK_MONOTONIC (process.hrtime's clock). */
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A surge phase's time, in the profiles' clock, and the process it loaded. */
export interface PhaseWindow {
  name: string;
  round: number;
  pid: number;
  startUs: number;
  endUs: number;
}

export const PHASE_WINDOWS_FILE = 'phases.json';

const ROOT = path.resolve(import.meta.dirname, '..');
const TOP_DEFAULT = 30;
// Frames of the profiler's own bookkeeping: not work the process did.
const IDLE = new Set(['(idle)', '(root)']);
// A sample with one of these in its stack was loading modules (Node's loaders, tsx, esbuild).
const LOADING = /^node:internal\/modules\/|\/node_modules\/(tsx|esbuild)\//;

/** Who owns a frame: a package, a part of Node, our source folder, or a V8 pseudo-frame. */
export function ownerOf(frame: CallFrame): string | undefined {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith('(') ? functionName : undefined;
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const parts = url.slice(modules + '/node_modules/'.length).split('/');
    return (parts[0] ?? '').startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? url);
  }
  if (url.startsWith('node:')) return url.split('/')[0] as string;
  const file = url.startsWith('file://') ? new URL(url).pathname : url;
  const relative = path.relative(ROOT, file);
  if (!relative.startsWith('..')) {
    const parts = relative.split(path.sep);
    return parts.length > 2 ? `${parts[0]}/${parts[1]}` : (parts[0] ?? relative);
  }
  return 'other';
}

function label(frame: CallFrame): string {
  const where = frame.url ? ` ${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '';
  return `${frame.functionName || '(anonymous)'}${where}`;
}

function shortUrl(url: string): string {
  const file = url.startsWith('file://') ? new URL(url).pathname : url;
  const modules = file.lastIndexOf('/node_modules/');
  if (modules >= 0) return file.slice(modules + '/node_modules/'.length);
  const relative = path.relative(ROOT, file);
  return relative.startsWith('..') ? file : relative;
}

/** The samples taken inside one of `windows` (all of them without windows). */
function sampleIndexes(profile: CpuProfile, windows: PhaseWindow[] | undefined): number[] {
  const indexes: number[] = [];
  let at = profile.startTime;
  for (const [index, delta] of profile.timeDeltas.entries()) {
    at += delta;
    if (!windows || windows.some((window) => at >= window.startUs && at <= window.endUs)) indexes.push(index);
  }
  return indexes;
}

export function summarizeProfile(profile: CpuProfile, top: number, windows?: PhaseWindow[]): string {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const count = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);

  const owners = new Map<string, number>();
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let busy = 0;
  const callers = new Map<string, number>();
  let loading = 0;
  const kept = sampleIndexes(profile, windows);
  for (const index of kept) {
    const node = byId.get(profile.samples[index] as number);
    if (!node || IDLE.has(node.callFrame.functionName)) continue;
    const stack: ProfileNode[] = [];
    for (let at: ProfileNode | undefined = node; at; at = byId.get(parent.get(at.id) ?? -1)) stack.push(at);
    // Start-up (loading and compiling modules) is not the work being measured; it is counted apart.
    if (stack.some((at) => LOADING.test(at.callFrame.url))) {
      loading += 1;
      continue;
    }
    busy += 1;
    count(self, label(node.callFrame));
    const owned = stack.map((at) => ownerOf(at.callFrame));
    // A native frame (no URL) is charged to the nearest caller that has an owner.
    count(owners, owned.find((owner) => owner !== undefined) ?? 'native, no caller');
    // Node's own code is charged to the package (or our code) that called it.
    const caller = owned.find((owner) => owner !== undefined && !owner.startsWith('node:') && !owner.startsWith('('));
    count(callers, caller ?? owned.find((owner) => owner !== undefined) ?? 'native, no caller');
    const seen = new Set<string>();
    for (const at of stack) {
      const name = label(at.callFrame);
      if (at.callFrame.url && ownerOf(at.callFrame)?.startsWith('src/') && !seen.has(name)) {
        seen.add(name);
        count(inclusive, name);
      }
    }
  }
  const intervalUs = median(profile.timeDeltas.filter((delta) => delta > 0));
  const share = (n: number) => `${((n / Math.max(busy, 1)) * 100).toFixed(1).padStart(5)}%`;
  const table = (title: string, map: Map<string, number>, rows: number) => [
    title,
    ...[...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, rows)
      .map(([key, n]) => `  ${share(n)}  ${key}`),
  ];
  return [
    `${busy} busy samples (about ${((busy * intervalUs) / 1e6).toFixed(1)} s of CPU at a ${Math.round(intervalUs)} µs interval); ` +
      `${loading} more loading modules, ${kept.length - busy - loading} idle` +
      (windows
        ? ` (in ${windows.length} phase window(s) of ${Math.round(windows.reduce((sum, w) => sum + w.endUs - w.startUs, 0) / 1000)} ms)`
        : ''),
    '',
    ...table('by owner (native code charged to its JavaScript caller)', owners, top),
    '',
    ...table("by caller (Node's own code charged to the package or our code that called it)", callers, top),
    '',
    ...table('by function, self', self, top),
    '',
    ...table("Floodgate's functions, inclusive", inclusive, top),
  ].join('\n');
}

/** The file itself, or the main thread's profile in a folder of them. */
function mainThreadProfile(file: string): string {
  if (!statSync(file).isDirectory()) return file;
  const main = readdirSync(file).find((name) => name.endsWith('.cpuprofile') && name.split('.')[4] === '0');
  if (!main) throw new Error(`no main-thread profile (CPU.*.<pid>.0.*.cpuprofile) in ${file}`);
  return path.join(file, main);
}

/** The windows of the phases named `name` that loaded the process of `profileFile`. */
function phaseWindows(profileFile: string, name: string): PhaseWindow[] {
  const file = path.join(path.dirname(profileFile), PHASE_WINDOWS_FILE);
  // Node names a profile CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile.
  const pid = Number(path.basename(profileFile).split('.')[3]);
  const windows = (JSON.parse(readFileSync(file, 'utf8')) as PhaseWindow[]).filter((window) => window.name === name && window.pid === pid);
  if (windows.length === 0) throw new Error(`no phase ${name} of process ${pid} in ${file}`);
  return windows;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string' }, phase: { type: 'string' } } });
  const file = positionals[0];
  if (!file) {
    console.error('usage: npx tsx bench/profile-summary.ts <file.cpuprofile> [--top N] [--phase NAME]');
    process.exit(2);
  }
  const top = values.top === undefined ? TOP_DEFAULT : Number(values.top);
  const profileFile = mainThreadProfile(file);
  console.log(
    summarizeProfile(
      JSON.parse(readFileSync(profileFile, 'utf8')) as CpuProfile,
      top,
      values.phase === undefined ? undefined : phaseWindows(profileFile, values.phase),
    ),
  );
}
