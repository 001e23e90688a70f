import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import type { BuyerResult } from './buyer.js';
import { chooseCard } from './buyer.js';
import { DrillClient, type RequestRecord } from './client.js';
import { DrillOptionError, parseDrillOptions } from './options.js';
import { checkInvariants } from './run.js';
import { percentiles, perSecond } from './stats.js';
import { computeVerdict, formatVerdict, type InvariantChecks } from './verdict.js';

const clean: InvariantChecks = { stockTotal: 10, soldUnits: 8, paidOrders: 8, chargedTwice: 0, notFinal: 0, auditViolations: 0 };

function record(partial: Partial<RequestRecord>): RequestRecord {
  return { kind: 'hold', atMs: 0, latencyMs: 10, status: 200, phase: 'surge', admitted: true, ...partial };
}

const buyer = (outcome: BuyerResult['outcome'], waitMs?: number): BuyerResult => ({
  buyer: 'b',
  phase: 'surge',
  arrivedMs: 0,
  waitMs,
  outcome,
  paymentIntents: [],
  rejoins: 0,
});

test('options: defaults, a target needs a secret key, bad numbers are refused with what to fix', () => {
  const options = parseDrillOptions({}, '/data', new Date('2026-01-02T03:04:05Z'));
  assert.equal(options.buyers, 500);
  assert.equal(options.surge, 10);
  assert.equal(options.stock, 250);
  assert.equal(options.target, undefined);
  assert.equal(options.reportFile, '/data/drills/drill-2026-01-02T03-04-05-000Z.html');
  assert.throws(() => parseDrillOptions({ target: 'http://x:4000' }, '/data'), /--secret-key/);
  assert.throws(() => parseDrillOptions({ target: 'ftp://x', 'secret-key': 'sk_test_1' }, '/data'), DrillOptionError);
  assert.throws(() => parseDrillOptions({ buyers: 'many' }, '/data'), /--buyers must be a number from 1/);
  assert.throws(() => parseDrillOptions({ 'secret-key': 'pk_test_1' }, '/data'), /secret key/);
  const targeted = parseDrillOptions({ target: 'http://127.0.0.1:4000/', 'secret-key': 'sk_test_abc', buyers: '40' }, '/data');
  assert.equal(targeted.target, 'http://127.0.0.1:4000');
  assert.equal(targeted.stock, 20);
});

test('verdict: passes when every invariant is 0, fails on oversold, a double charge, an unsettled payment or an audit violation', () => {
  const ok = computeVerdict([buyer('paid', 1000), buyer('sold_out')], [record({})], clean);
  assert.equal(ok.ok, true);
  assert.equal(ok.buyers.paid, 1);
  for (const broken of [
    { soldUnits: 11, paidOrders: 11 },
    { chargedTwice: 1 },
    { notFinal: 2 },
    { auditViolations: 1 },
    { paidOrders: 7 },
  ]) {
    const verdict = computeVerdict([], [], { ...clean, ...broken });
    assert.equal(verdict.ok, false, JSON.stringify(broken));
    assert.match(formatVerdict(verdict), /drill verdict: FAIL/);
  }
  // Without database access the checks that need it are reported as not run, not as passed silently.
  const blind = computeVerdict([], [], { ...clean, chargedTwice: null, auditViolations: null });
  assert.equal(blind.ok, true);
  assert.match(formatVerdict(blind), /charged twice\s+n\/a/);
  assert.match(formatVerdict(blind), /^drill verdict: PASS \(2 of 5 invariants not checked: set DATABASE_URL\)$/m);
  assert.match(formatVerdict(computeVerdict([], [], clean)), /^drill verdict: PASS$/m);
});

test('verdict: errors by kind, unexpected 5xx, and the admitted p99 against the baseline', () => {
  const records = [
    ...Array.from({ length: 100 }, () => record({ phase: 'baseline', latencyMs: 10 })),
    ...Array.from({ length: 100 }, (_, i) => record({ phase: 'surge', latencyMs: i < 98 ? 15 : 30 })),
    record({ status: 503, code: 'overloaded', admitted: false }),
    record({ status: 500, code: 'internal_error' }),
    record({ status: 0, code: 'ECONNRESET' }),
    // Requests of buyers not yet admitted are not part of the comparison.
    record({ kind: 'poll', admitted: false, latencyMs: 5_000 }),
  ];
  const verdict = computeVerdict([], records, clean);
  assert.equal(verdict.errors['503 overloaded'], 1);
  assert.equal(verdict.errors['500 internal_error'], 1);
  assert.equal(verdict.errors['no answer ECONNRESET'], 1);
  assert.equal(verdict.unexpected5xx, 1, 'only the 500: a 503 overloaded carries Retry-After');
  assert.equal(verdict.admittedP99.baselineMs, 10);
  assert.equal(verdict.admittedP99.surgeMs, 30);
  assert.equal(verdict.admittedP99.ratio, 3);
  // The table gives each p99's sample size, so a reader can tell how steady it is.
  assert.match(formatVerdict(verdict), /admitted requests' p99: surge 30 ms \((\d+) requests\) vs no surge 10 ms \(100\) = 3\.00x/);
});

test('stats and card mix', () => {
  assert.deepEqual(percentiles([5, 1, 3, 2, 4]), { count: 5, p50: 3, p95: 5, p99: 5, max: 5 });
  assert.deepEqual(perSecond([0, 999, 1000, 2500, 9000], 3), [2, 1, 1]);
  assert.equal(chooseCard(0.1), 'pm_card_visa');
  assert.equal(chooseCard(0.85), 'pm_card_declined');
  assert.equal(chooseCard(0.9), 'pm_card_insufficient_funds');
  assert.equal(chooseCard(0.95), 'pm_card_timeout');
});

test('the sold check reads the sale page again once its cache bound has passed, not a copy older than the last payment', async () => {
  // A target whose sale page is a cached copy from before the last paid order until a second has passed.
  const paid = 3;
  const startedAt = Date.now();
  const saleReads: number[] = [];
  const server = http.createServer((request, response) => {
    const send = (body: unknown, headers: Record<string, string> = {}) => {
      response.writeHead(200, { 'content-type': 'application/json', ...headers });
      response.end(JSON.stringify(body));
    };
    if (request.url?.startsWith('/v1/sales/')) {
      saleReads.push(Date.now() - startedAt);
      const sold = Date.now() - startedAt < 1_000 ? paid - 1 : paid;
      return send({ items: [{ stock: { total: 10, sold } }] }, { 'cache-control': 'private, max-age=0' });
    }
    const orders = Array.from({ length: paid }, (_, i) => ({ id: `ord_${i}`, status: 'paid' }));
    send({ data: [...orders, { id: 'ord_x', status: 'canceled' }], has_more: false });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new DrillClient(url, { socketsMax: 2 });
  try {
    const deployment = { url, secretKey: 'sk_test', buyerKey: 'sk_test', close: async () => {} };
    const checks = await checkInvariants(client, deployment, { id: 'sale_1' }, 10, 0);
    assert.deepEqual({ sold: checks.soldUnits, paid: checks.paidOrders }, { sold: 3, paid: 3 });
    assert.equal(saleReads.length, 2);
    assert.ok((saleReads[1] ?? 0) >= 1_000, `read again after the bound, at ${saleReads[1]} ms`);
  } finally {
    client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});
