import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { createTestDatabase } from '../../../test/helpers.js';
import { migrate, readMigrations } from './migrate.js';
import { createPool, type Pool } from './pool.js';

/** A fresh database with nothing in it, and `count` pools on it (one per racing node). */
async function emptyDatabase(count: number): Promise<{ pool: Pool; pools: Pool[] }> {
  const { pool, url } = await createTestDatabase({ empty: true });
  const pools = Array.from({ length: count }, () => createPool({ connectionString: url, max: 1, statementTimeoutMs: 30_000 }));
  after(() => Promise.all(pools.map((p) => p.end())));
  return { pool, pools };
}

async function migrationsDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'floodgate-migrations-'));
  after(() => rm(dir, { recursive: true, force: true }));
  for (const [name, sql] of Object.entries(files)) await writeFile(path.join(dir, name), sql);
  return dir;
}

async function appliedVersions(pool: Pool): Promise<number[]> {
  const { rows } = await pool.query<{ version: number }>('select version from schema_migrations order by version');
  return rows.map((row) => row.version);
}

describe('migrate', () => {
  test('two nodes migrating a fresh database at once apply each file exactly once', async () => {
    const { pool, pools } = await emptyDatabase(2);
    const migrations = await readMigrations();
    const names = migrations.map((migration) => migration.name);
    assert.ok(names.length > 0);

    const results = await Promise.all(pools.map((p) => migrate(p)));
    assert.deepEqual(results.flat().sort(), names, `each migration applied by exactly one node: ${JSON.stringify(results)}`);
    assert.deepEqual(
      await appliedVersions(pool),
      migrations.map((migration) => migration.version),
    );
    // The schema is there: the ledger's balance trigger, the last object of the first file.
    const { rowCount } = await pool.query(`select 1 from pg_trigger where tgname = 'ledger_entries_balanced'`);
    assert.equal(rowCount, 1);

    assert.deepEqual(await migrate(pool), [], 'a second run applies nothing');
    assert.equal((await appliedVersions(pool)).length, names.length);
  });

  test('racing nodes wait for a slow migration instead of applying it again', async () => {
    const { pool, pools } = await emptyDatabase(4);
    const dir = await migrationsDir({
      '001_counter.sql': 'create table applied (name text not null);',
      '002_slow.sql': `select pg_sleep(0.3); insert into applied values ('002');`,
      '003_after.sql': `insert into applied values ('003');`,
    });
    const results = await Promise.all(pools.map((p) => migrate(p, dir)));
    assert.deepEqual(results.flat().sort(), ['001_counter.sql', '002_slow.sql', '003_after.sql']);
    const { rows } = await pool.query('select name from applied order by name');
    assert.deepEqual(
      rows.map((row) => row.name),
      ['002', '003'],
    );
    assert.deepEqual(await appliedVersions(pool), [1, 2, 3]);
  });

  test('a failing migration rolls back alone, names itself, and releases the lock', async () => {
    const { pool } = await emptyDatabase(0);
    const dir = await migrationsDir({
      '001_good.sql': 'create table good (id int);',
      '002_bad.sql': 'create table half_done (id int); select * from no_such_table;',
    });
    await assert.rejects(migrate(pool, dir), /migration 002_bad\.sql failed: .*no_such_table/);
    assert.deepEqual(await appliedVersions(pool), [1]);
    const { rows } = await pool.query(`select to_regclass('half_done') as half_done, to_regclass('good') as good`);
    assert.deepEqual(rows, [{ half_done: null, good: 'good' }]);

    // Fixed, it applies on the next run: the failed run did not keep the advisory lock.
    await writeFile(path.join(dir, '002_bad.sql'), 'create table half_done (id int);');
    assert.deepEqual(await migrate(pool, dir), ['002_bad.sql']);
    assert.deepEqual(await appliedVersions(pool), [1, 2]);
  });
});

describe('readMigrations', () => {
  test('reads files in order', async () => {
    const dir = await migrationsDir({ '002_b.sql': 'select 2;', '001_a.sql': 'select 1;', 'README.md': 'not a migration' });
    assert.deepEqual(await readMigrations(dir), [
      { version: 1, name: '001_a.sql', sql: 'select 1;' },
      { version: 2, name: '002_b.sql', sql: 'select 2;' },
    ]);
  });

  test('accepts a gap in the numbering (reserved numbers) but refuses a repeated number', async () => {
    const gap = await migrationsDir({ '001_a.sql': '', '003_c.sql': '' });
    assert.deepEqual(
      (await readMigrations(gap)).map((migration) => migration.version),
      [1, 3],
    );
    const repeated = await migrationsDir({ '001_a.sql': '', '002_b.sql': '', '002_c.sql': '' });
    await assert.rejects(readMigrations(repeated), /must not repeat; 002_c\.sql has the number of 002_b\.sql/);
  });

  test('refuses a badly named file', async () => {
    const dir = await migrationsDir({ '001_a.sql': '', '2-Second.sql': '' });
    await assert.rejects(readMigrations(dir), /"2-Second\.sql" must look like 001_name\.sql/);
  });
});
