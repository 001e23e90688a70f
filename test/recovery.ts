/**
 * The harness of the recovery tests: a request runs in an app that dies at a planned moment
 * (see crash.ts); then the same request is retried, first before the idempotency lock times
 * out (refused with 409), then by an app whose lock timeout is zero, standing in for a retry
 * that comes after the timeout (it must resume and complete).
 */
import assert from 'node:assert/strict';
import { after } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { buildApp } from '../src/app.js';
import { audit } from '../src/audit/service.js';
import type { Config } from '../src/config.js';
import { createMerchant } from '../src/merchants/service.js';
import type { HttpServer } from '../src/platform/http/server.js';
import { type CrashPlan, crashing } from './crash.js';
import { key, setupTestContext, type TestContext } from './helpers.js';

export interface Merchant {
  id: string;
  auth(extra?: Record<string, string>): Record<string, string>;
  /** The publishable key, which buyers' requests (queue, holds) carry. */
  publishable?: string;
}

export interface PostRequest {
  url: string;
  payload: Record<string, unknown>;
}

export interface Recovery {
  t: TestContext;
  /** An app whose idempotency locks time out at once: a retry sent after the timeout. */
  resumer: HttpServer;
  /** A merchant of its own per test, so counts of rows are exact. */
  newMerchant(): Promise<Merchant>;
  post(app: HttpServer, merchant: Merchant, request: PostRequest, idempotencyKey?: string): Promise<LightMyRequestResponse>;
  /**
   * Runs `request` in a process that dies as planned; returns the key it used and what it answered, if anything.
   * The dying process confirms on the general path, whose recovery points these tests stop at,
   * unless `config` says otherwise (a batch of confirms writes its first phase in one statement:
   * confirm-batches.ts, tested in recovery-confirm-batches.test.ts).
   */
  dieDuring(
    merchant: Merchant,
    request: PostRequest,
    plan: CrashPlan,
    config?: Partial<Config>,
  ): Promise<{ idempotencyKey: string; statusCode: number }>;
  /**
   * Runs `request` in a process that dies as planned before finishing; checks that the key is
   * left locked at `leaves.recoveryPoint` and that a retry before the lock timeout gets 409.
   */
  crash(
    merchant: Merchant,
    request: PostRequest,
    plan: CrashPlan,
    leaves: { recoveryPoint: string },
    config?: Partial<Config>,
  ): Promise<string>;
  counts(merchantId: string): Promise<Counts>;
  keyRow(merchantId: string, idempotencyKey: string): Promise<KeyRow | undefined>;
  /** No audit check finds a violation anywhere in the database. */
  assertAuditClean(): Promise<void>;
}

export interface Counts {
  intents: number;
  refunds: number;
  /** Attempts by operation, e.g. { authorize: 1 }. */
  attempts: Record<string, number>;
  /** Ledger transactions by kind, e.g. { capture: 1 }. */
  ledger: Record<string, number>;
  /** Events by type. */
  events: Record<string, number>;
}

export interface KeyRow {
  recovery_point: string;
  locked_at: Date | null;
  response_status: number | null;
  resource_id: string | null;
}

export async function setupRecovery(options: Parameters<typeof setupTestContext>[0] = {}): Promise<Recovery> {
  const t = await setupTestContext(options);
  const resumer = await buildApp({ config: { ...t.config, idempotencyLockTimeoutMs: 0 }, pool: t.pool, provider: t.provider });
  after(() => resumer.close());

  const post: Recovery['post'] = (app, merchant, request, idempotencyKey = key()) =>
    app.inject({
      method: 'POST',
      url: request.url,
      headers: merchant.auth({ 'idempotency-key': idempotencyKey }),
      payload: request.payload,
    });

  const keyRow: Recovery['keyRow'] = async (merchantId, idempotencyKey) => {
    const { rows } = await t.pool.query<KeyRow>(
      `select recovery_point, locked_at, response_status, resource_id from idempotency_keys
       where merchant_id = $1 and idempotency_key = $2`,
      [merchantId, idempotencyKey],
    );
    return rows[0];
  };

  const dieDuring: Recovery['dieDuring'] = async (merchant, request, plan, config = { confirmBatchMax: 1 }) => {
    const idempotencyKey = key('crash');
    const crash = crashing(t.pool, t.provider, plan);
    const dying = await buildApp({ config: { ...t.config, ...config }, pool: crash.pool, provider: crash.provider });
    try {
      const response = await post(dying, merchant, request, idempotencyKey);
      assert.equal(crash.died, true, 'the process died at the planned moment');
      return { idempotencyKey, statusCode: response.statusCode };
    } finally {
      await dying.close();
    }
  };

  return {
    t,
    resumer,
    post,
    keyRow,

    async newMerchant() {
      const created = await createMerchant(t.pool, `Recovery ${key('m')}`);
      return {
        id: created.merchant.id,
        auth: (extra = {}) => ({ authorization: `Bearer ${created.secret_key}`, ...extra }),
        publishable: created.publishable_key,
      };
    },

    dieDuring,

    async crash(merchant, request, plan, leaves, config) {
      const { idempotencyKey, statusCode } = await dieDuring(merchant, request, plan, config);
      assert.equal(statusCode, 500, 'the dying request did not complete');
      const left = await keyRow(merchant.id, idempotencyKey);
      assert.ok(left, 'the key was stored');
      assert.equal(left.recovery_point, leaves.recoveryPoint);
      assert.notEqual(left.locked_at, null, 'a dead process cannot unlock its key');
      assert.equal(left.response_status, null);

      const early = await post(t.app, merchant, request, idempotencyKey);
      assert.equal(early.statusCode, 409);
      assert.equal(early.json().error.code, 'idempotency_key_in_use');
      return idempotencyKey;
    },

    async counts(merchantId) {
      const grouped = async (sql: string) => {
        const { rows } = await t.pool.query<{ k: string; n: number }>(sql, [merchantId]);
        return Object.fromEntries(rows.map((row) => [row.k, row.n]));
      };
      const { rows } = await t.pool.query<{ intents: number; refunds: number }>(
        `select (select count(*)::int from payment_intents where merchant_id = $1) as intents,
                (select count(*)::int from refunds where merchant_id = $1) as refunds`,
        [merchantId],
      );
      return {
        intents: rows[0]?.intents ?? -1,
        refunds: rows[0]?.refunds ?? -1,
        attempts: await grouped('select operation as k, count(*)::int as n from payment_attempts where merchant_id = $1 group by 1'),
        ledger: await grouped('select kind as k, count(*)::int as n from ledger_transactions where merchant_id = $1 group by 1'),
        events: await grouped('select type as k, count(*)::int as n from events where merchant_id = $1 group by 1'),
      };
    },

    async assertAuditClean() {
      assert.deepEqual((await audit(t.pool)).violations, []);
    },
  };
}
