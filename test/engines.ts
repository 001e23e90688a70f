/**
 * Engines some tests need beyond PostgreSQL and Redis (Prometheus, promtool, Chromium). Where
 * one is missing its tests are skipped with a message saying so; under CI=true a missing
 * engine is a failure, since CI installs them (.ci/run).
 */
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** The binary's path if it is on PATH (or an absolute path that is executable), else undefined. */
export function findBinary(name: string): string | undefined {
  const candidates = path.isAbsolute(name) ? [name] : (process.env.PATH ?? '').split(path.delimiter).map((dir) => path.join(dir, name));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/** For node:test's `skip` option: false when every binary is there, else why the tests are skipped. */
export function engineSkip(...names: string[]): string | false {
  const missing = names.filter((name) => !findBinary(name));
  if (missing.length === 0) return false;
  const message = `${missing.join(', ')} not installed (apt-get install ${missing.map(aptPackage).join(' ')})`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${message}: .ci/run must install it`);
  console.log(`# skipped: ${message}`);
  return `skipped: ${message}`;
}

function aptPackage(binary: string): string {
  if (binary === 'promtool') return 'prometheus';
  if (binary.endsWith('chromium')) return 'chromium';
  return path.basename(binary);
}
