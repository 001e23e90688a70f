/**
 * Engines some tests need beyond the machine's PostgreSQL and Redis (a PostgreSQL server binary,
 * redis-server, Prometheus, promtool, Chromium): where one is missing its tests are skipped with
 * a message saying why; under CI=true a missing engine is a failure, since CI installs them.
 */
import { accessSync, constants, existsSync } from 'node:fs';
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
export function binarySkip(...names: string[]): string | false {
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

/** For node:test's `skip`: false when every path exists, else the reason. Throws under CI. */
export function engineSkip(engine: string, paths: string[]): string | false {
  const missing = paths.filter((file) => !existsSync(file));
  if (missing.length === 0) return false;
  const message = `skipped: ${engine} not installed (${missing.join(', ')} missing)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${message.replace('skipped: ', '')}: .ci/run must install it`);
  console.log(`# ${message}`);
  return message;
}

/** A TCP port nobody listens on now (and, for Redis Cluster, its bus port + 10000 too). */
export async function freePort(options: { alsoPlus?: number } = {}): Promise<number> {
  const { createServer } = await import('node:net');
  const tryPort = (port: number) =>
    new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen({ host: '127.0.0.1', port }, () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 25_000);
    if (!(await tryPort(port))) continue;
    if (options.alsoPlus !== undefined && !(await tryPort(port + options.alsoPlus))) continue;
    return port;
  }
  throw new Error('no free port found');
}
