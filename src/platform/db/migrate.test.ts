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

  test('allows a gap in the numbering (numbers are reserved ahead) but refuses a repeated number', async () => {
    const gap = await migrationsDir({ '001_a.sql': '', '003_c.sql': '' });
    assert.deepEqual(
      (await readMigrations(gap)).map((migration) => migration.version),
      [1, 3],
    );
    const repeated = await migrationsDir({ '001_a.sql': '', '003_c.sql': '', '003_d.sql': '' });
    await assert.rejects(readMigrations(repeated), /distinct numbers from 001 up; 003_d\.sql repeats 003_c\.sql/);
  });

  test('refuses a badly named file', async () => {
    const dir = await migrationsDir({ '001_a.sql': '', '2-Second.sql': '' });
    await assert.rejects(readMigrations(dir), /"2-Second\.sql" must look like 001_name\.sql/);
  });
});

describe('data migrations', () => {
  test('014 leaves in the attempt log only the attempts a later one superseded', async () => {
    const { pool } = await emptyDatabase(0);
    const before = (await readMigrations()).filter((migration) => migration.version < 14);
    await migrate(pool, await migrationsDir(Object.fromEntries(before.map((migration) => [migration.name, migration.sql]))));
    // As 013 left them: every attempt logged, the last one also on its delivery. The events'
    // fan-out trigger is off (graphile-worker's schema, which it calls, is not installed here).
    await pool.query(`alter table events disable trigger user;
      insert into merchants (merchant_id, name) values ('acct_m', 'm');
      insert into webhook_endpoints (merchant_id, id, url, enabled_events, status, secret, created_at, updated_at)
        values ('acct_m', 'we_1', 'https://1.1.1.1/', '{*}', 'enabled', 'whsec_AAAA', now(), now());
      insert into events (merchant_id, id, type, object_id, data, created_at, sequence)
        select 'acct_m', 'evt_' || n, 'payment_intent.created', 'pi_' || n, '{}', now(), 1 from generate_series(1, 3) n;
      insert into webhook_deliveries (merchant_id, id, endpoint_id, event_id, status, round, attempts, last_attempt_at,
          last_status_code, last_duration_ms, created_at, updated_at)
        values ('acct_m', 'wd_once', 'we_1', 'evt_1', 'succeeded', 1, 1, now(), 200, 3, now(), now()),
               ('acct_m', 'wd_retried', 'we_1', 'evt_2', 'succeeded', 1, 2, now(), 200, 3, now(), now()),
               ('acct_m', 'wd_redelivered', 'we_1', 'evt_3', 'pending', 2, 0, now(), 200, 3, now(), now());
      insert into webhook_delivery_attempts (merchant_id, delivery_id, round, attempt, status_code, duration_ms, attempted_at)
        values ('acct_m', 'wd_once', 1, 1, 200, 3, now()),
               ('acct_m', 'wd_retried', 1, 1, 503, 3, now()), ('acct_m', 'wd_retried', 1, 2, 200, 3, now()),
               ('acct_m', 'wd_redelivered', 1, 1, 200, 3, now());`);
    assert.deepEqual(await migrate(pool), ['014_last_attempt_on_the_delivery.sql']);
    const { rows } = await pool.query<{ delivery_id: string; round: number; attempt: number }>(
      'select delivery_id, round, attempt from webhook_delivery_attempts order by delivery_id, round, attempt',
    );
    // A redelivered round's last attempt is no longer on its delivery: it stays logged.
    assert.deepEqual(rows, [
      { delivery_id: 'wd_redelivered', round: 1, attempt: 1 },
      { delivery_id: 'wd_retried', round: 1, attempt: 1 },
    ]);
  });
});
