/**
 * `npm run coverage`: runs the suite (`test/run.ts`) under c8, which collects Node's own V8
 * coverage from every process the tests start and maps it back to the TypeScript through tsx's
 * source maps, then prints line and branch coverage per folder of src/. A report, not a gate:
 * the exit code is the test run's, whatever the numbers are. The full report (per file) is
 * left in coverage/ (coverage-summary.json, and `npx c8 report -r text` reprints it per file).
 *
 *   npm run coverage                  the whole suite
 *   npm run coverage -- src/sales     only the test files under a path (the table still covers src/)
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

interface Totals {
  total: number;
  covered: number;
}
interface FileSummary {
  lines: Totals;
  branches: Totals;
}

const ROOT = path.resolve(import.meta.dirname, '..');

function percent({ total, covered }: Totals): string {
  return total === 0 ? '   -  ' : `${((covered / total) * 100).toFixed(1).padStart(5)}%`;
}

function runSuiteUnderC8(filters: string[]): Promise<number> {
  const c8 = path.join(ROOT, 'node_modules', '.bin', 'c8');
  const tsx = path.join(ROOT, 'node_modules', '.bin', 'tsx');
  const args = [
    '--all',
    '--src=src',
    '--include=src/**/*.ts',
    '--exclude=**/*.test.ts',
    '--exclude=src/**/testing.ts',
    '--reporter=json-summary',
    '--reports-dir=coverage',
    '--temp-directory=coverage/tmp',
    tsx,
    'test/run.ts',
    ...filters,
  ];
  return new Promise((resolve) => {
    const child = spawn(c8, args, { cwd: ROOT, stdio: 'inherit' });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

async function printTable(): Promise<void> {
  const summary = JSON.parse(await readFile(path.join(ROOT, 'coverage', 'coverage-summary.json'), 'utf8')) as Record<string, FileSummary>;
  const folders = new Map<string, { lines: Totals; branches: Totals }>();
  for (const [file, numbers] of Object.entries(summary)) {
    if (file === 'total') continue;
    const folder = path.relative(ROOT, path.dirname(file)) || '.';
    const entry = folders.get(folder) ?? { lines: { total: 0, covered: 0 }, branches: { total: 0, covered: 0 } };
    entry.lines.total += numbers.lines.total;
    entry.lines.covered += numbers.lines.covered;
    entry.branches.total += numbers.branches.total;
    entry.branches.covered += numbers.branches.covered;
    folders.set(folder, entry);
  }
  const width = Math.max(6, ...[...folders.keys()].map((folder) => folder.length));
  console.log(`| ${'folder'.padEnd(width)} |  lines | branches |`);
  console.log(`| ${'-'.repeat(width)} | -----: | -------: |`);
  for (const folder of [...folders.keys()].sort()) {
    const entry = folders.get(folder);
    if (!entry) continue;
    console.log(`| ${folder.padEnd(width)} | ${percent(entry.lines)} |   ${percent(entry.branches)} |`);
  }
  const total = summary.total;
  if (total) console.log(`| ${'total'.padEnd(width)} | ${percent(total.lines)} |   ${percent(total.branches)} |`);
}

async function main(): Promise<number> {
  const code = await runSuiteUnderC8(process.argv.slice(2));
  await printTable();
  return code;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
