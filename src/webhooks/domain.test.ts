import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { ConfigError, loadConfig } from '../config.js';
import { newSecret, outcomeOf, retryCapMs, retryDelayMs, scheduleSpanMs, signatureHeader } from './domain.js';

const HOUR_MS = 3_600_000;

describe('webhook retry schedule', () => {
  const defaults = loadConfig({});
  const schedule = {
    retryBaseMs: defaults.webhookRetryBaseMs,
    retryMaxMs: defaults.webhookRetryMaxMs,
    maxAttempts: defaults.webhookMaxAttempts,
  };

  test('the default schedule gives up after about three days', () => {
    const span = scheduleSpanMs(schedule);
    assert.ok(span > 70 * HOUR_MS && span < 74 * HOUR_MS, `caps sum to ${span / HOUR_MS} hours`);
  });

  test('caps double from the base and stop at the maximum', () => {
    assert.equal(retryCapMs(1, schedule), 30_000);
    assert.equal(retryCapMs(2, schedule), 60_000);
    assert.equal(retryCapMs(10, schedule), 30_000 * 512);
    assert.equal(retryCapMs(11, schedule), 8 * HOUR_MS);
    assert.equal(retryCapMs(1000, schedule), 8 * HOUR_MS);
  });

  test('full jitter: every delay lies between 0 and its cap', () => {
    assert.equal(
      retryDelayMs(3, schedule, () => 0),
      0,
    );
    assert.equal(
      retryDelayMs(3, schedule, () => 0.5),
      60_000,
    );
    assert.ok(retryDelayMs(3, schedule, () => 0.999_999) < 120_000);
    for (let attempt = 1; attempt < 25; attempt++) {
      const delay = retryDelayMs(attempt, schedule);
      assert.ok(delay >= 0 && delay <= retryCapMs(attempt, schedule));
    }
  });

  test('2xx succeeds, 410 disables, anything else retries until the last attempt', () => {
    const response = (statusCode: number) => ({ kind: 'response' as const, statusCode, durationMs: 1 });
    assert.equal(outcomeOf(response(204), 1, 3), 'succeeded');
    assert.equal(outcomeOf(response(410), 1, 3), 'endpoint_disabled');
    assert.equal(outcomeOf(response(302), 1, 3), 'retry_scheduled');
    assert.equal(outcomeOf(response(500), 2, 3), 'retry_scheduled');
    assert.equal(outcomeOf(response(500), 3, 3), 'dead');
    assert.equal(outcomeOf({ kind: 'error', error: 'ECONNREFUSED', timedOut: false, durationMs: 1 }, 3, 3), 'dead');
  });
});

describe('webhook configuration', () => {
  test('is read from the environment and checked', () => {
    const config = loadConfig({
      FLOODGATE_WEBHOOK_TIMEOUT_MS: '2500',
      FLOODGATE_WEBHOOK_RETRY_BASE_MS: '10',
      FLOODGATE_WEBHOOK_RETRY_MAX_MS: '100',
      FLOODGATE_WEBHOOK_MAX_ATTEMPTS: '4',
      FLOODGATE_WEBHOOK_ALLOW_PRIVATE: '1',
    });
    assert.deepEqual(
      [config.webhookTimeoutMs, config.webhookRetryBaseMs, config.webhookRetryMaxMs, config.webhookMaxAttempts, config.webhookAllowPrivate],
      [2500, 10, 100, 4, true],
    );
    assert.equal(loadConfig({}).webhookAllowPrivate, false);
    assert.throws(() => loadConfig({ FLOODGATE_WEBHOOK_ALLOW_PRIVATE: 'yes' }), ConfigError);
    assert.throws(() => loadConfig({ FLOODGATE_WEBHOOK_RETRY_BASE_MS: '1000', FLOODGATE_WEBHOOK_RETRY_MAX_MS: '10' }), ConfigError);
  });
});

describe('webhook signatures', () => {
  test('secrets are whsec_ and base64 of 32 random bytes', () => {
    const secret = newSecret();
    assert.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/);
    assert.equal(Buffer.from(secret.slice('whsec_'.length), 'base64').length, 32);
    assert.notEqual(newSecret(), secret);
  });

  test('each of several secrets verifies with the standardwebhooks library', () => {
    const [current, previous, stranger] = [newSecret(), newSecret(), newSecret()];
    const body = JSON.stringify({ id: 'evt_1', object: 'event' });
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = {
      'webhook-id': 'evt_1',
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signatureHeader([current, previous], 'evt_1', timestamp, body),
    };
    assert.deepEqual(new Webhook(current).verify(body, headers), { id: 'evt_1', object: 'event' });
    assert.deepEqual(new Webhook(previous).verify(body, headers), { id: 'evt_1', object: 'event' });
    assert.throws(() => new Webhook(stranger).verify(body, headers), /No matching signature/);
  });
});
