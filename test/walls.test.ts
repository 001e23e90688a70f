/**
 * The walls between capabilities are lint rules (biome.json) and a cycle check (dpdm), run by
 * `npm run check`. These tests show both can fail: probes that break a wall are refused, and
 * the same imports through the front door pass.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';

const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'node_modules', '.bin');
const run = promisify(execFile);

async function probeProject(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'floodgate-walls-'));
  after(() => rm(dir, { recursive: true, force: true }));
  // The project's own configuration: the lint rules, the resolution of './x.js' to x.ts, and
  // the cycle check's script.
  for (const file of ['biome.json', 'tsconfig.json', 'package.json']) await copyFile(path.join(ROOT, file), path.join(dir, file));
  for (const [name, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), text);
  }
  return dir;
}

interface Diagnostic {
  category: string;
  location: { path: string; start: { line: number } };
}

async function lint(dir: string): Promise<Diagnostic[]> {
  const result = await run(path.join(BIN, 'biome'), ['lint', '--reporter=json', '.'], { cwd: dir }).catch(
    (error: { stdout: string }) => error,
  );
  const report = JSON.parse(result.stdout) as { diagnostics: Diagnostic[] };
  return report.diagnostics.filter((d) => d.category === 'lint/style/noRestrictedImports');
}

describe('the walls between capabilities', () => {
  test("a capability may import another's service.ts, platform/ and money/, never its sql.ts or other files", async () => {
    const dir = await probeProject({
      'src/sales/probe.ts': [
        "import { a } from '../payments/sql.js';",
        "import { b } from '../payments/domain.js';",
        "import { c } from '../payments/service.js';",
        "import { d } from '../platform/db/pool.js';",
        "import { e } from '../money/currency.js';",
        'export const all = [a, b, c, d, e];',
        '',
      ].join('\n'),
    });
    const refused = (await lint(dir)).map((d) => `${d.location.path}:${d.location.start.line}`);
    assert.deepEqual(refused.sort(), ['src/sales/probe.ts:1', 'src/sales/probe.ts:2']);
  });

  test('platform/ imports no capability', async () => {
    const dir = await probeProject({
      'src/platform/http/probe.ts': [
        "import { a } from '../../sales/service.js';",
        "import { b } from '../db/pool.js';",
        "import { c } from '../../config.js';",
        'export const all = [a, b, c];',
        '',
      ].join('\n'),
    });
    const refused = (await lint(dir)).map((d) => `${d.location.path}:${d.location.start.line}`);
    assert.deepEqual(refused, ['src/platform/http/probe.ts:1']);
  });

  test('the cycle check refuses a cycle, even of type imports inside one folder', async () => {
    const dir = await probeProject({
      'src/a.ts': "import type { B } from './b.js';\nexport type A = { b?: B };\n",
      'src/b.ts': "import type { A } from './a.js';\nexport type B = { a?: A };\n",
    });
    // The same script `npm run check` runs, with the project's tools on the PATH.
    const env = { ...process.env, PATH: `${BIN}${path.delimiter}${process.env.PATH ?? ''}` };
    const check = () => run('npm', ['run', '--silent', 'check:cycles'], { cwd: dir, env });
    await assert.rejects(check(), 'npm run check:cycles fails on a cycle');
    await writeFile(path.join(dir, 'src/b.ts'), 'export type B = { a?: unknown };\n');
    await check();
  });
});
