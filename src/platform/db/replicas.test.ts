/**
 * How a replica's probe becomes a decision. The routing itself runs against a real streaming
 * replica in test/faults/replica-reports.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeConfig, loadConfig } from '../../config.js';
import { judgeReplica } from './replicas.js';

const primaryReadAtMs = Date.UTC(2026, 10, 30, 12, 0, 0);
const probe = (overrides: Partial<Parameters<typeof judgeReplica>[0]> = {}) => ({
  in_recovery: true,
  caught_up: false,
  replayed_at: new Date(primaryReadAtMs - 2_000),
  replay_age_ms: 2_000,
  ...overrides,
});

describe('judgeReplica', () => {
  test('caught up with the primary position: fresh as of the moment it was read', () => {
    assert.deepEqual(judgeReplica(probe({ caught_up: true }), primaryReadAtMs, primaryReadAtMs + 3, 5_000), {
      ok: true,
      lagMs: 3,
      asOf: new Date(primaryReadAtMs),
    });
  });

  test('behind: as fresh as its last replayed commit, within the bound or skipped', () => {
    assert.deepEqual(judgeReplica(probe(), primaryReadAtMs, primaryReadAtMs, 5_000), {
      ok: true,
      lagMs: 2_000,
      asOf: new Date(primaryReadAtMs - 2_000),
    });
    assert.deepEqual(judgeReplica(probe(), primaryReadAtMs, primaryReadAtMs, 1_999), { ok: false, reason: 'replica_lagging' });
  });

  test('behind with nothing replayed yet is lagging by an unknown amount; a promoted server is no replica', () => {
    assert.deepEqual(judgeReplica(probe({ replayed_at: null, replay_age_ms: null }), primaryReadAtMs, primaryReadAtMs, 60_000), {
      ok: false,
      reason: 'replica_lagging',
    });
    assert.deepEqual(judgeReplica(probe({ in_recovery: false, caught_up: true }), primaryReadAtMs, primaryReadAtMs, 60_000), {
      ok: false,
      reason: 'replica_not_in_recovery',
    });
  });

  test('replica URLs are read from FLOODGATE_REPLICA_URLS and masked when printed', () => {
    const config = loadConfig({
      FLOODGATE_REPLICA_URLS: 'postgres://u:pw@r1:5432/db, postgresql://r2/db',
      FLOODGATE_REPLICA_MAX_LAG_MS: '250',
    });
    assert.deepEqual(config.replicaUrls, ['postgres://u:pw@r1:5432/db', 'postgresql://r2/db']);
    assert.equal(config.replicaMaxLagMs, 250);
    assert.deepEqual(describeConfig(config).replicaUrls, ['postgres://u:*****@r1:5432/db', 'postgresql://r2/db']);
    assert.throws(() => loadConfig({ FLOODGATE_REPLICA_MAX_LAG_MS: '-1' }), /FLOODGATE_REPLICA_MAX_LAG_MS must be a whole number/);
  });
});
