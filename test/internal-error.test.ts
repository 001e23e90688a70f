/**
 * When the fault is ours: an error no code expected, thrown from a route of the app as a
 * process builds it, answers 500 in our error shape with a message that says what to do, and
 * leaks nothing of the error itself (no message, no stack); the log keeps it, under the request
 * id the response names.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { HttpProvider } from '../src/providers/http-provider.js';
import {
  createTestDatabase,
  createTestMerchant,
  PROVIDER_TIMEOUT_MS,
  TEST_ADMISSION_SECRET,
  TEST_PROVIDER_WEBHOOK_SECRET,
  TEST_TRAFFIC_LIMITS_OFF,
} from './helpers.js';

const { pool } = await createTestDatabase();
const merchant = await createTestMerchant(pool);
const logged: Array<{ level: number; request_id?: string; msg: string }> = [];
const logger = pino({ level: 'error' }, { write: (line: string) => logged.push(JSON.parse(line)) });
// No payment is made here: the provider is never called.
const providerUrl = 'http://127.0.0.1:1';
const config = loadConfig(
  {},
  {
    providerUrl,
    apiKeyCacheTtlMs: 0,
    admissionSecret: TEST_ADMISSION_SECRET,
    providerWebhookSecret: TEST_PROVIDER_WEBHOOK_SECRET,
    ...TEST_TRAFFIC_LIMITS_OFF,
  },
);
const provider = new HttpProvider({ baseUrl: providerUrl, timeoutMs: PROVIDER_TIMEOUT_MS, breakerThreshold: 5, halfOpenMs: 1_000 });
const app = await buildApp({ config, pool, provider, logger });
after(() => app.close());

// Bugs as they happen: a property of undefined, a parse of data we wrote badly, an error that
// carries details no caller may see (a host, a credential).
const SECRET_DETAIL = 'connect to db-primary.internal:5432 as floodgate password=hunter2';
// Each with what the log must show of it.
const failures: Record<string, { fail: () => unknown; logged: RegExp }> = {
  type_error: {
    fail: () => (undefined as unknown as { field: { value: number } }).field.value,
    logged: /Cannot read properties of undefined/,
  },
  syntax_error: { fail: () => JSON.parse('{"stored": oops}'), logged: /SyntaxError/ },
  detailed_error: {
    fail: () => {
      throw new Error(SECRET_DETAIL);
    },
    logged: /password=hunter2/,
  },
  not_an_error: {
    fail: () => {
      throw { reason: SECRET_DETAIL };
    },
    logged: /password=hunter2/,
  },
};
for (const [name, { fail }] of Object.entries(failures)) app.get(`/v1/test_failures/${name}`, async () => fail());

describe('an unexpected error in a route', () => {
  for (const [name, { logged: inLog }] of Object.entries(failures)) {
    test(`${name}: 500 internal_error in our shape, nothing of the error in the answer, all of it in the log`, async () => {
      const response = await app.inject({
        method: 'GET',
        url: `/v1/test_failures/${name}`,
        headers: { authorization: `Bearer ${merchant.secretKey}` },
      });
      assert.equal(response.statusCode, 500, response.body);
      assert.match(String(response.headers['content-type']), /^application\/json/);
      // Exactly this: nothing of the error (its message, a stack) reaches the caller.
      assert.deepEqual(response.json(), {
        error: {
          type: 'api_error',
          code: 'internal_error',
          message: 'Something went wrong on our side; it has been logged. Retry later.',
        },
      });
      const requestId = String(response.headers['x-request-id']);
      assert.match(requestId, /^req_/);
      const entries = logged.filter((entry) => entry.request_id === requestId);
      assert.deepEqual(
        entries.map((entry) => [entry.level, entry.msg]),
        [[50, 'unhandled error']],
      );
      assert.match(JSON.stringify(entries[0]), inLog);
    });
  }
});
