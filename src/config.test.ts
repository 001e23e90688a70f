import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, describeConfig, loadConfig, maskUrl } from './config.js';

/** The problems loadConfig reports for env, or fails the test when it accepts env. */
function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail(`loadConfig accepted ${JSON.stringify(env)}`);
}

const REJECTED: Array<[name: string, value: string]> = [
  ['FLOODGATE_PORT', 'eighty'],
  ['FLOODGATE_PORT', '65536'],
  ['FLOODGATE_PORT', '-1'],
  ['FLOODGATE_PORT', '80.5'],
  ['FLOODGATE_PORT', ' '],
  ['FLOODGATE_PORT', '0x1f90'],
  ['FLOODGATE_DB_POOL_MAX', '0'],
  ['FLOODGATE_DB_POOL_MAX', '501'],
  ['FLOODGATE_DB_STATEMENT_TIMEOUT_MS', '99'],
  ['FLOODGATE_BODY_LIMIT_BYTES', '1023'],
  ['FLOODGATE_API_KEY_CACHE_TTL_MS', '300001'],
  ['REDIS_URL', 'http://127.0.0.1:6379'],
  ['REDIS_URL', 'not a url'],
  ['FLOODGATE_REDIS_KEY_PREFIX', 'has space:'],
  ['FLOODGATE_REDIS_KEY_PREFIX', 'glob*:'],
  ['FLOODGATE_CACHE_STALE_MS', '0'],
  ['FLOODGATE_RATE_LIMIT_KEY_PER_SECOND', '-1'],
  ['FLOODGATE_RATE_LIMIT_IP_PER_SECOND', 'lots'],
  ['FLOODGATE_RATE_LIMIT_WINDOW_SECONDS', '0'],
  ['FLOODGATE_TRUST_PROXY', 'true'],
  ['FLOODGATE_TRUST_PROXY', '0'],
  ['FLOODGATE_TRUST_PROXY', '10.0.0.0/33'],
  ['FLOODGATE_TRUST_PROXY', '127.0.0.1,proxy.example'],
  ['FLOODGATE_SHED_EVENT_LOOP_DELAY_MS', '0'],
  ['FLOODGATE_SHED_IN_FLIGHT_MAX', '0'],
  ['FLOODGATE_IDEMPOTENCY_KEY_TTL_HOURS', '23'],
  ['FLOODGATE_IDEMPOTENCY_LOCK_TIMEOUT_MS', '1e9'],
  ['FLOODGATE_PROVIDER_TIMEOUT_MS', '49'],
  ['FLOODGATE_PROVIDER_BREAKER_THRESHOLD', '0'],
  ['FLOODGATE_PROVIDER_BREAKER_WINDOW', '0'],
  ['FLOODGATE_PROVIDER_BREAKER_HALF_OPEN_MS', '99'],
  ['FLOODGATE_SIMULATOR_PORT', 'NaN'],
  ['FLOODGATE_SIMULATOR_LATENCY_MS', '60001'],
  ['FLOODGATE_SIMULATOR_ERROR_RATE', '1.5'],
  ['FLOODGATE_SIMULATOR_ERROR_RATE', '-0.1'],
  ['FLOODGATE_SIMULATOR_ERROR_RATE', 'half'],
  ['FLOODGATE_SIMULATOR_ERROR_RATE', ' '],
  ['FLOODGATE_EMBEDDED_PG_PORT', '1023'],
  ['FLOODGATE_LOG_LEVEL', 'verbose'],
  ['DATABASE_URL', 'not a url'],
  ['DATABASE_URL', 'mysql://root@localhost/floodgate'],
  ['FLOODGATE_PROVIDER_URL', 'ftp://provider.example'],
  ['FLOODGATE_PROVIDER_URL', '://'],
  ['FLOODGATE_ADMISSION_TOKEN_TTL_SECONDS', '9'],
  ['FLOODGATE_ADMISSION_TOKEN_TTL_SECONDS', '3601'],
  ['FLOODGATE_ADMISSION_SHOPPING_MAX_SECONDS', '59'],
  ['FLOODGATE_ADMISSION_SHOPPING_MAX_SECONDS', '86401'],
];

const EVERY_VARIABLE = [
  'DATABASE_URL',
  'FLOODGATE_HOST',
  'FLOODGATE_PORT',
  'FLOODGATE_DATA_DIR',
  'FLOODGATE_LOG_LEVEL',
  'FLOODGATE_DB_POOL_MAX',
  'FLOODGATE_DB_STATEMENT_TIMEOUT_MS',
  'FLOODGATE_BODY_LIMIT_BYTES',
  'FLOODGATE_API_KEY_CACHE_TTL_MS',
  'REDIS_URL',
  'FLOODGATE_REDIS_KEY_PREFIX',
  'FLOODGATE_CACHE_STALE_MS',
  'FLOODGATE_RATE_LIMIT_KEY_PER_SECOND',
  'FLOODGATE_RATE_LIMIT_IP_PER_SECOND',
  'FLOODGATE_RATE_LIMIT_WINDOW_SECONDS',
  'FLOODGATE_TRUST_PROXY',
  'FLOODGATE_SHED_EVENT_LOOP_DELAY_MS',
  'FLOODGATE_SHED_IN_FLIGHT_MAX',
  'FLOODGATE_IDEMPOTENCY_KEY_TTL_HOURS',
  'FLOODGATE_IDEMPOTENCY_LOCK_TIMEOUT_MS',
  'FLOODGATE_PROVIDER_URL',
  'FLOODGATE_PROVIDER_TIMEOUT_MS',
  'FLOODGATE_PROVIDER_BREAKER_THRESHOLD',
  'FLOODGATE_PROVIDER_BREAKER_WINDOW',
  'FLOODGATE_PROVIDER_BREAKER_HALF_OPEN_MS',
  'FLOODGATE_SIMULATOR_PORT',
  'FLOODGATE_SIMULATOR_LATENCY_MS',
  'FLOODGATE_SIMULATOR_ERROR_RATE',
  'FLOODGATE_EMBEDDED_PG_PORT',
  'FLOODGATE_ADMISSION_SECRET',
  'FLOODGATE_ADMISSION_TOKEN_TTL_SECONDS',
  'FLOODGATE_ADMISSION_SHOPPING_MAX_SECONDS',
];

describe('loadConfig', () => {
  for (const [name, value] of REJECTED) {
    test(`rejects ${name}=${JSON.stringify(value)}, naming the variable and the value`, () => {
      const problems = problemsOf({ [name]: value });
      assert.equal(problems.length, 1, problems.join('\n'));
      assert.ok(problems[0]?.startsWith(`${name} `), problems[0]);
      // A URL may hold a password, so URL problems do not repeat the value.
      if (!name.endsWith('_URL')) assert.ok(problems[0]?.includes(JSON.stringify(value)), problems[0]);
    });
  }

  test('rejects an admission secret under 32 characters without repeating it', () => {
    const problems = problemsOf({ FLOODGATE_ADMISSION_SECRET: 'short-secret-31-characters-long' });
    assert.deepEqual(problems, ['FLOODGATE_ADMISSION_SECRET must be at least 32 characters']);
  });

  test('reports every problem at once', () => {
    const problems = problemsOf({ FLOODGATE_PORT: 'x', FLOODGATE_DB_POOL_MAX: '0', FLOODGATE_SIMULATOR_ERROR_RATE: '2' });
    assert.deepEqual(
      problems.map((problem) => problem.split(' ')[0]),
      ['FLOODGATE_PORT', 'FLOODGATE_DB_POOL_MAX', 'FLOODGATE_SIMULATOR_ERROR_RATE'],
    );
  });

  test('accepts the bounds and typical values', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgresql://app@db:5432/floodgate',
      FLOODGATE_PORT: '0',
      FLOODGATE_DB_POOL_MAX: '500',
      FLOODGATE_IDEMPOTENCY_KEY_TTL_HOURS: '24',
      FLOODGATE_SIMULATOR_ERROR_RATE: '0.25',
      FLOODGATE_PROVIDER_URL: 'https://provider.example',
      FLOODGATE_LOG_LEVEL: 'debug',
    });
    assert.equal(config.port, 0);
    assert.equal(config.dbPoolMax, 500);
    assert.equal(config.idempotencyKeyTtlHours, 24);
    assert.equal(config.simulatorErrorRate, 0.25);
    assert.equal(config.providerUrl, 'https://provider.example');
    assert.equal(config.logLevel, 'debug');
    assert.ok(Object.isFrozen(config));
  });

  test('reads Redis, the trusted proxies and the surge limits', () => {
    const config = loadConfig({
      REDIS_URL: 'rediss://:pw@redis.example:6380/2',
      FLOODGATE_REDIS_KEY_PREFIX: 'shop{1}:',
      FLOODGATE_TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,loopback,::1',
      FLOODGATE_RATE_LIMIT_IP_PER_SECOND: '0',
    });
    assert.equal(config.redisUrl, 'rediss://:pw@redis.example:6380/2');
    assert.equal(config.redisKeyPrefix, 'shop{1}:');
    assert.equal(config.trustProxy, '10.0.0.0/8,127.0.0.1,loopback,::1');
    assert.equal(config.rateLimitIpPerSecond, 0);
    assert.equal(loadConfig({ FLOODGATE_TRUST_PROXY: '2' }).trustProxy, 2);
    assert.equal(loadConfig({}).trustProxy, false);
    assert.equal(loadConfig({}).redisKeyPrefix, 'floodgate:');
    assert.equal(describeConfig(config).redisUrl, 'rediss://:*****@redis.example:6380/2');
  });

  test('an empty variable means its default, for every variable', () => {
    const defaults = loadConfig({});
    for (const name of EVERY_VARIABLE) {
      assert.deepEqual(loadConfig({ [name]: '' }), defaults, `${name}=""`);
    }
  });
});

describe('describeConfig', () => {
  test('masks the database password and keeps the rest readable', () => {
    const config = loadConfig({ DATABASE_URL: 'postgres://app:s3cret-pa55@db.example:5432/floodgate' });
    const described = describeConfig(config);
    assert.equal(described.databaseUrl, 'postgres://app:*****@db.example:5432/floodgate');
    assert.ok(!JSON.stringify(described).includes('s3cret-pa55'));
    // The config itself still holds the real URL for the pool to use.
    assert.equal(config.databaseUrl, 'postgres://app:s3cret-pa55@db.example:5432/floodgate');
  });

  test('masks the admission secret', () => {
    const secret = 'admission-secret-0123456789abcdef-XYZ';
    const described = describeConfig(loadConfig({ FLOODGATE_ADMISSION_SECRET: secret }));
    assert.equal(described.admissionSecret, '*****');
    assert.ok(!JSON.stringify(described).includes(secret));
  });

  test('says when the database is embedded', () => {
    assert.equal(describeConfig(loadConfig({})).databaseUrl, '(embedded)');
  });

  test('maskUrl leaves a URL without a password alone and hides one it cannot parse', () => {
    assert.equal(maskUrl('postgres://app@db/floodgate'), 'postgres://app@db/floodgate');
    assert.equal(maskUrl('postgres://app:secret@[bad/floodgate'), '*****');
    assert.equal(maskUrl(undefined), undefined);
  });
});
