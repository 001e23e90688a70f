/**
 * Statement durations by name (floodgate_db_query_duration_seconds): every way a statement
 * runs on an instrumented pool is timed once, with its outcome: a checked-out client's
 * promise, and pool.query, which pg-pool runs with a callback.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createTestDatabase } from '../../../test/helpers.js';
import { createMetrics } from '../observability/metrics.js';
import { instrumentPool } from './metrics.js';

const { pool } = await createTestDatabase({ empty: true });
const metrics = createMetrics({ defaultMetrics: false });
instrumentPool(pool, metrics, { name: 'primary', max: 4 });

async function counts(): Promise<Map<string, number>> {
  const text = await metrics.registry.metrics();
  return new Map(
    [...text.matchAll(/^floodgate_db_query_duration_seconds_count\{statement="([^"]+)",outcome="([^"]+)"\} (\d+)$/gm)].map((m) => [
      `${m[1]}/${m[2]}`,
      Number(m[3]),
    ]),
  );
}

test('statements through pool.query and through a checked-out client are each timed once, by name and outcome', async () => {
  await pool.query({ name: 'probe_pool', text: 'select 1' });
  await pool.query({ name: 'probe_pool', text: 'select 1' });
  await assert.rejects(pool.query({ name: 'probe_pool_fails', text: 'select 1 / 0' }), /division by zero/);
  const client = await pool.connect();
  try {
    await client.query({ name: 'probe_client', text: 'select 1' });
    await assert.rejects(client.query({ name: 'probe_client_fails', text: 'select 1 / 0' }), /division by zero/);
    // A callback-style call on the client is timed too, once.
    await new Promise<void>((resolve, reject) =>
      client.query({ name: 'probe_callback', text: 'select 1' }, (error: Error | null) => (error ? reject(error) : resolve())),
    );
  } finally {
    client.release();
  }
  const seen = await counts();
  assert.equal(seen.get('probe_pool/ok'), 2);
  assert.equal(seen.get('probe_pool_fails/error'), 1);
  assert.equal(seen.get('probe_pool_fails/ok') ?? 0, 0);
  assert.equal(seen.get('probe_client/ok'), 1);
  assert.equal(seen.get('probe_client_fails/error'), 1);
  assert.equal(seen.get('probe_callback/ok'), 1);
});
