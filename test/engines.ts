/**
 * Tests that need an engine the machine may lack (a PostgreSQL server binary, redis-server):
 * skipped with a message saying why when it is missing, but with CI=true a missing engine is a
 * failure, never a skip.
 */
import { existsSync } from 'node:fs';

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
