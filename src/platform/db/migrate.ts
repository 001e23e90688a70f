/**
 * Applies the numbered plain-SQL files in migrations/ in order, each in its own transaction,
 * under a session advisory lock so that several nodes starting together apply each file once.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Pool } from './pool.js';

export const MIGRATIONS_DIR = path.resolve(fileURLToPath(import.meta.url), '../../../../migrations');

// An arbitrary constant shared by every Floodgate node: the key of the migration lock.
const MIGRATION_LOCK_KEY = 727_274_001;
const MIGRATION_FILE = /^(\d{3,})_[a-z0-9_]+\.sql$/;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export async function readMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((file) => file.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = MIGRATION_FILE.exec(file);
    if (!match) throw new Error(`migration file name "${file}" must look like 001_name.sql`);
    migrations.push({ version: Number(match[1]), name: file, sql: await readFile(path.join(dir, file), 'utf8') });
  }
  // Numbers may skip (engineers reserve numbers for work that lands in any order; each file is
  // applied when its own number is missing from schema_migrations), but never repeat.
  migrations.forEach((migration, index) => {
    const previous = migrations[index - 1];
    if (previous && migration.version <= previous.version) {
      throw new Error(`migration numbers must not repeat; ${migration.name} has the number of ${previous.name}`);
    }
  });
  return migrations;
}

/** Returns the names of the migrations applied by this call (empty when already up to date). */
export async function migrate(pool: Pool, dir = MIGRATIONS_DIR): Promise<string[]> {
  const migrations = await readMigrations(dir);
  const client = await pool.connect();
  try {
    // A migration may rebuild an index for minutes, and a node may wait that long for another
    // node's migrations: neither is bound by the pool's statement timeout.
    await client.query('set statement_timeout = 0');
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    await client.query(`create table if not exists schema_migrations (
      version integer primary key,
      name text not null,
      applied_at timestamptz not null default now())`);
    const { rows } = await client.query<{ version: number }>('select version from schema_migrations');
    const applied = new Set(rows.map((row) => row.version));
    const done: string[] = [];
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      await client.query('begin');
      try {
        await client.query(migration.sql);
        await client.query('insert into schema_migrations (version, name) values ($1, $2)', [migration.version, migration.name]);
        await client.query('commit');
      } catch (error) {
        await client.query('rollback');
        throw new Error(`migration ${migration.name} failed: ${(error as Error).message}`);
      }
      done.push(migration.name);
    }
    return done;
  } finally {
    await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(() => {});
    await client.query('reset statement_timeout').catch(() => {});
    client.release();
  }
}
