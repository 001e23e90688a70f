/**
 * The schema stays ready to be distributed by merchant on Citus (docs/scaling.md): every
 * primary key, unique index and foreign key of every table leads with merchant_id, the
 * distribution column, unless the table is declared a reference table (copied to every node).
 * A migration that breaks this fails here, not on the day the data is sharded.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DISTRIBUTION_COLUMN, REFERENCE_TABLES } from '../src/platform/db/distribution.js';
import type { Queryable } from '../src/platform/db/pool.js';
import { createTestDatabase } from './helpers.js';

const { pool } = await createTestDatabase();

interface Violation {
  table: string;
  kind: 'primary key' | 'unique index' | 'foreign key';
  name: string;
  columns: string[];
}

/** Keys of the public schema's tables whose first column is not the distribution column. */
async function violations(db: Queryable): Promise<Violation[]> {
  const { rows } = await db.query<Violation>(`
    select c.relname as table, 'primary key' as kind, i.relname as name,
           array(select a.attname from unnest(x.indkey) with ordinality k(attnum, n)
                 join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum order by k.n)::text[] as columns
    from pg_index x join pg_class c on c.oid = x.indrelid join pg_class i on i.oid = x.indexrelid
    where c.relnamespace = 'public'::regnamespace and x.indisprimary
    union all
    select c.relname, 'unique index', i.relname,
           array(select a.attname from unnest(x.indkey) with ordinality k(attnum, n)
                 join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum order by k.n)::text[]
    from pg_index x join pg_class c on c.oid = x.indrelid join pg_class i on i.oid = x.indexrelid
    where c.relnamespace = 'public'::regnamespace and x.indisunique and not x.indisprimary
    union all
    select c.relname, 'foreign key', f.conname,
           array(select a.attname from unnest(f.conkey) with ordinality k(attnum, n)
                 join pg_attribute a on a.attrelid = f.conrelid and a.attnum = k.attnum order by k.n)::text[]
    from pg_constraint f join pg_class c on c.oid = f.conrelid
    where c.relnamespace = 'public'::regnamespace and f.contype = 'f'
    order by 1, 2, 3`);
  return rows.filter((row) => row.columns[0] !== DISTRIBUTION_COLUMN && !REFERENCE_TABLES.includes(row.table));
}

describe('Citus-ready schema', () => {
  test('every primary key, unique index and foreign key leads with merchant_id, or its table is a reference table', async () => {
    assert.deepEqual(await violations(pool), []);
  });

  test('every table of the schema has a primary key (Citus distributes and routes by it)', async () => {
    const { rows } = await pool.query(`
      select c.relname from pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
        and not exists (select 1 from pg_index x where x.indrelid = c.oid and x.indisprimary)`);
    assert.deepEqual(rows, []);
  });

  test('the declared reference tables exist: a renamed table must not hide behind a stale name', async () => {
    const { rows } = await pool.query<{ relname: string }>(
      `select relname from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r' and relname = any($1)`,
      [REFERENCE_TABLES],
    );
    assert.deepEqual(rows.map((row) => row.relname).sort(), [...REFERENCE_TABLES].sort());
  });

  test('the check catches a key that does not lead with merchant_id', async () => {
    const client = await pool.connect();
    try {
      await client.query('begin');
      await client.query('create table not_sharded (id text primary key, merchant_id text not null, code text not null)');
      await client.query('create unique index not_sharded_code on not_sharded (code, merchant_id)');
      await client.query(
        'alter table orders add constraint orders_hold_only foreign key (hold_id, merchant_id) references holds (id, merchant_id) not valid',
      );
      assert.deepEqual(
        (await violations(client)).map((violation) => `${violation.table} ${violation.kind} ${violation.columns.join(',')}`),
        ['not_sharded primary key id', 'not_sharded unique index code,merchant_id', 'orders foreign key hold_id,merchant_id'],
      );
    } finally {
      await client.query('rollback');
      client.release();
    }
  });
});
