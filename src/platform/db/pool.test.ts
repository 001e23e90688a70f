/**
 * Transactions on a pipelining pool: BEGIN travels with the first statement, and
 * withTransactionEndingIn's last statement with the COMMIT. Neither may change what commits.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { createTestDatabase } from '../../../test/helpers.js';
import { createPool, withTransaction, withTransactionEndingIn } from './pool.js';

const { pool, url } = await createTestDatabase({ empty: true });
await pool.query('create table pipelined (id int primary key, n int not null check (n >= 0))');

async function ids(): Promise<number[]> {
  const { rows } = await pool.query<{ id: number }>('select id from pipelined order by id');
  return rows.map((row) => row.id);
}

test('a transaction whose BEGIN was pipelined is one transaction: a throw rolls back every statement', async () => {
  await pool.query('truncate pipelined');
  await assert.rejects(
    withTransaction(pool, async (client) => {
      await client.query('insert into pipelined values (1, 1)');
      await client.query('insert into pipelined values (2, 1)');
      throw new Error('refused after two writes');
    }),
    /refused after two writes/,
  );
  assert.deepEqual(await ids(), []);
  // And it commits when fn returns.
  await withTransaction(pool, async (client) => {
    await client.query('insert into pipelined values (3, 1)');
  });
  assert.deepEqual(await ids(), [3]);
});

test('withTransactionEndingIn commits its last statement with the others, and returns its answer', async () => {
  await pool.query('truncate pipelined');
  const { value, last } = await withTransactionEndingIn(pool, async (client) => {
    await client.query('insert into pipelined values (1, 1)');
    return { value: 'decided', last: client.query<{ id: number }>('insert into pipelined values (2, 1) returning id') };
  });
  assert.equal(value, 'decided');
  assert.deepEqual(
    last.rows.map((row) => row.id),
    [2],
  );
  assert.deepEqual(await ids(), [1, 2]);
});

test('a last statement that fails turns its pipelined COMMIT into a rollback, and the call rejects with its error', async () => {
  await pool.query('truncate pipelined');
  await pool.query('insert into pipelined values (9, 5)');
  await assert.rejects(
    withTransactionEndingIn(pool, async (client) => {
      await client.query('insert into pipelined values (1, 1)');
      // The constraint refuses what a count checked afterwards could no longer undo.
      return { value: 'decided', last: client.query('update pipelined set n = n - 6 where id = 9') };
    }),
    /pipelined_n_check/,
  );
  assert.deepEqual(await ids(), [9]);
  const { rows } = await pool.query<{ n: number }>('select n from pipelined where id = 9');
  assert.equal(rows[0]?.n, 5);
  // The connection went back to the pool usable, outside any transaction.
  const client = await pool.connect();
  try {
    assert.equal((await client.query<{ open: boolean }>('select now() <> statement_timestamp() as open')).rows[0]?.open, false);
  } finally {
    client.release();
  }
});

test("a pool's sessions plan a prepared statement once, however its values change", async () => {
  const client = await pool.connect();
  try {
    const lookup = (id: number) => ({ name: 'pool_test_lookup', text: 'select n from pipelined where id = $1', values: [id] });
    for (let id = 1; id <= 8; id += 1) await client.query(lookup(id));
    const { rows } = await client.query<{ generic: number; custom: number }>(
      `select generic_plans::int as generic, custom_plans::int as custom from pg_prepared_statements where name = 'pool_test_lookup'`,
    );
    // PostgreSQL's default plans the first five executions for their values (custom plans).
    assert.deepEqual(rows, [{ generic: 8, custom: 0 }]);
  } finally {
    client.release();
  }
});

/** An empty, analyzed table of keys; a named statement that bumps two of its rows by key; a session's plan of it. */
async function keyedTable(table: string) {
  await pool.query(`create table ${table} (k text primary key, n int not null); analyze ${table}`);
  const name = `pool_test_bump_${table}`;
  return {
    bump: { name, text: `update ${table} g set n = g.n + 1 from unnest($1::text[]) as r(k) where g.k = r.k`, values: [['k1', 'k2']] },
    plan: async (client: pg.PoolClient) =>
      (await client.query<{ 'QUERY PLAN': string }>(`explain execute ${name}('{k1,k2}')`)).rows.map((row) => row['QUERY PLAN']).join('\n'),
  };
}

test('a session plans its statements again once its plans are old, at the sizes the tables have grown to', async () => {
  const { bump, plan } = await keyedTable('growing');
  const refreshing = createPool({ connectionString: url, max: 1, statementTimeoutMs: 30_000, planRefreshMs: 100 });
  try {
    const client = await refreshing.connect();
    try {
      await client.query(bump);
      // Planned on an empty table: it reads the table whole.
      assert.match(await plan(client), /Seq Scan on growing/);
      await client.query(`insert into growing select 'k' || i, 0 from generate_series(1, 50000) i`);
      await client.query(bump);
      // The plan is kept while it is young, though the table grew.
      assert.match(await plan(client), /Seq Scan on growing/);
    } finally {
      client.release();
    }
    await sleep(150);
    const later = await refreshing.connect();
    try {
      const { rowCount } = await later.query(bump);
      assert.equal(rowCount, 2);
      // The same prepared statement, planned again at the table's size: by its key.
      assert.match(await plan(later), /Index Scan using growing_pkey/);
    } finally {
      later.release();
    }
  } finally {
    await refreshing.end();
  }
});

test('a transaction of keyed lookups plans its statements by key even on an empty table, and keeps that plan as it grows', async () => {
  const { bump, plan } = await keyedTable('keyed');
  const keyedPool = createPool({ connectionString: url, max: 1, statementTimeoutMs: 30_000 });
  try {
    // Planned on the empty table, inside the transaction.
    const first = await withTransaction(
      keyedPool,
      async (client) => {
        await client.query(bump);
        const { rows } = await client.query<{ enable_seqscan: string }>('show enable_seqscan');
        return { plan: await plan(client as pg.PoolClient), seqscan: rows[0]?.enable_seqscan };
      },
      { keyedLookups: true },
    );
    assert.equal(first.seqscan, 'off');
    assert.match(first.plan, /Index Scan using keyed_pkey/);
    // The setting ends with the transaction; the plan is kept, and serves the grown table by key.
    await keyedPool.query(`insert into keyed select 'k' || i, 0 from generate_series(1, 50000) i`);
    const client = await keyedPool.connect();
    try {
      assert.equal((await client.query<{ enable_seqscan: string }>('show enable_seqscan')).rows[0]?.enable_seqscan, 'on');
      const { rowCount } = await client.query(bump);
      assert.equal(rowCount, 2);
      assert.match(await plan(client), /Index Scan using keyed_pkey/);
    } finally {
      client.release();
    }
  } finally {
    await keyedPool.end();
  }
});

test('every pooled session keeps its plans and never JIT-compiles a statement', async () => {
  const settings = await pool.query<{ name: string; setting: string }>(
    `select name, setting from pg_settings where name in ('plan_cache_mode', 'jit') order by name`,
  );
  assert.deepEqual(settings.rows, [
    { name: 'jit', setting: 'off' },
    { name: 'plan_cache_mode', setting: 'force_generic_plan' },
  ]);
});
