/**
 * `npm test`: finds a PostgreSQL (DATABASE_URL, else the machine's on 127.0.0.1:5432, else the
 * embedded one), migrates a template database once, then runs every *.test.ts file with
 * node's test runner, naming the files explicitly (a bare directory finds no .ts files on
 * Node 20). Each test file clones the template into a fresh database of its own.
 *
 *   npm test                      all tests
 *   npm test -- src/payments      only files under a path
 */
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/platform/db/embedded.js';
import { migrate } from '../src/platform/db/migrate.js';
import { createPool } from '../src/platform/db/pool.js';
import { migrateJobs } from '../src/platform/jobs/runner.js';
import { DIRECTLY_WRITTEN_TASKS } from '../src/sales/jobs.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const TEMPLATE = `floodgate_test_template_${process.pid}`;
// The embedded server for tests lives apart from `npm start`'s, on its own port.
const EMBEDDED_TEST_PORT = 5499;

async function reachable(connectionString: string): Promise<boolean> {
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

async function findServer(): Promise<{ adminUrl: string; stop?: () => Promise<void> }> {
  if (process.env.DATABASE_URL) return { adminUrl: process.env.DATABASE_URL };
  const local = 'postgres://postgres@127.0.0.1:5432/postgres';
  if (await reachable(local)) return { adminUrl: local };
  console.log('# no PostgreSQL on 127.0.0.1:5432 and no DATABASE_URL: starting the embedded one for tests');
  const embedded = await startEmbeddedPostgres({ dataDir: path.join(ROOT, '.floodgate', 'test'), port: EMBEDDED_TEST_PORT });
  return { adminUrl: embedded.connectionString, stop: embedded.stop };
}

async function findTestFiles(filters: string[]): Promise<string[]> {
  const files: string[] = [];
  for (const dir of ['src', 'test']) {
    const entries = await readdir(path.join(ROOT, dir), { recursive: true });
    for (const entry of entries) {
      if (entry.endsWith('.test.ts')) files.push(path.join(dir, entry));
    }
  }
  const wanted = filters.length === 0 ? files : files.filter((file) => filters.some((filter) => file.includes(path.normalize(filter))));
  return wanted.sort();
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

async function main(): Promise<number> {
  const files = await findTestFiles(process.argv.slice(2));
  if (files.length === 0) {
    console.error('no test files matched');
    return 1;
  }
  const server = await findServer();
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${TEMPLATE}`);
    await admin.query(`create database ${TEMPLATE}`);
    const templateUrl = withDatabase(server.adminUrl, TEMPLATE);
    const pool = createPool({ connectionString: templateUrl, max: 1, statementTimeoutMs: 60_000 });
    await migrate(pool);
    await migrateJobs(pool, DIRECTLY_WRITTEN_TASKS);
    await pool.end();

    const code = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=600000', ...files], {
        cwd: ROOT,
        stdio: 'inherit',
        env: { ...process.env, FLOODGATE_TEST_ADMIN_URL: server.adminUrl, FLOODGATE_TEST_TEMPLATE: TEMPLATE },
      });
      child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0)));
    });
    return code;
  } finally {
    await admin.query(`drop database if exists ${TEMPLATE} with (force)`).catch(() => {});
    await admin.end();
    await server.stop?.();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
