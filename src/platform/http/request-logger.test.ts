import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { createLogger } from '../observability/logging.js';
import { createMetrics } from '../observability/metrics.js';
import { LazyChildLogger, lazyChildLoggerFactory } from './request-logger.js';
import { createHttpServer } from './server.js';

function capture(level: pino.Level) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({ level, destination: { write: (line: string) => lines.push(JSON.parse(line)) } });
  return { logger, lines };
}

const withoutTime = ({ time: _time, ...rest }: Record<string, unknown>) => rest;

describe('a lazy request logger', () => {
  test('writes the lines eager pino children write: same bindings, same order, same redaction', () => {
    const eager = capture('info');
    const lazy = capture('info');
    const bindings = [{ request_id: 'req_1' }, { route: '/v1/sales/:id' }, { merchant_id: 'mer_1', token: 'secret' }];
    let eagerLog = eager.logger.child(bindings[0] as pino.Bindings);
    let lazyLog = lazyChildLoggerFactory(lazy.logger, bindings[0] as pino.Bindings);
    for (const more of bindings.slice(1)) {
      eagerLog = eagerLog.child(more);
      lazyLog = lazyLog.child(more);
    }
    for (const log of [eagerLog, lazyLog]) {
      log.info({ status: 200 }, 'one');
      log.error(new Error('two'));
      log.warn('three %s', 'sk_test_0123456789abcdef');
      log.debug('not written');
    }
    assert.equal(eager.lines.length, 3);
    assert.deepEqual(lazy.lines.map(withoutTime), eager.lines.map(withoutTime));
    assert.deepEqual(Object.keys(lazy.lines[0] as object).slice(0, 7), [
      'level',
      'time',
      'service',
      'request_id',
      'route',
      'merchant_id',
      'token',
    ]);
    assert.equal((lazy.lines[0] as { token: string }).token, '[REDACTED]');
  });

  test('makes no pino child while nothing is written at an enabled level', () => {
    const parent = pino({ level: 'warn' }, { write: () => {} });
    let children = 0;
    const child = parent.child.bind(parent);
    parent.child = ((...args: Parameters<typeof child>) => {
      children += 1;
      return child(...args);
    }) as typeof parent.child;
    const log = lazyChildLoggerFactory(parent, { request_id: 'req_1' }).child({ route: '/x' }).child({ merchant_id: 'm' });
    log.info('off');
    log.debug({ a: 1 }, 'off');
    assert.equal(children, 0);
    assert.equal(log.level, 'warn');
    log.warn('on');
    log.error('on again');
    assert.equal(children, 1);
  });

  test('a child with options (a route log level) is pino made at once', () => {
    const { logger, lines } = capture('info');
    const log = new LazyChildLogger(logger, { request_id: 'req_1' }).child({ route: '/x' }, { level: 'debug' });
    assert.ok(!(log instanceof LazyChildLogger));
    log.debug('written');
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.request_id, 'req_1');
    assert.equal(lines[0]?.route, '/x');
  });

  test("a request's lines carry its request id and route through the HTTP server", async () => {
    const { logger, lines } = capture('info');
    const app = await createHttpServer({
      logger,
      bodyLimitBytes: 1024,
      metrics: createMetrics({ defaultMetrics: false }),
      version: 'test',
    });
    app.get('/v1/logs', async (request) => {
      request.log.info('inside');
      return { ok: true };
    });
    try {
      const response = await app.inject({ method: 'GET', url: '/v1/logs', headers: { 'x-request-id': 'req_given' } });
      assert.equal(response.statusCode, 200);
      const line = lines.find((entry) => entry.msg === 'inside');
      assert.equal(line?.request_id, 'req_given');
      assert.equal(line?.route, '/v1/logs');
    } finally {
      await app.close();
    }
  });
});
