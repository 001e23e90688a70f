/**
 * A provider webhook for an attempt whose request is still calling or completing it waits for
 * that request (attempts-in-flight.ts, provider-webhooks.ts awaitRequest) instead of completing
 * the payment itself: the registry's own rules, then the race itself, through a node whose
 * provider answers only when the test lets it, with the webhook on that node or on another one,
 * and the bound past which the webhook completes the attempt itself.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { key, setupTestContext, TEST_PROVIDER_WEBHOOK_SECRET, type TestContext } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import type { Config } from '../config.js';
import type { Pool } from '../platform/db/pool.js';
import type { HttpServer } from '../platform/http/server.js';
import type { PaymentProvider } from '../providers/provider.js';
import { signSimulatorWebhook } from '../providers/simulator/server.js';
import { AttemptsInFlight } from './attempts-in-flight.js';
import { PROVIDER_WEBHOOK_PATH, waitingSlots } from './provider-webhooks.js';

describe('AttemptsInFlight', () => {
  test('marks an attempt from the start of its work to its end, whether the work succeeds or fails', async () => {
    const inFlight = new AttemptsInFlight();
    let finish!: (value: string) => void;
    const running = inFlight.run('mer_1', 'att_1', () => new Promise<string>((resolve) => (finish = resolve)));
    assert.equal(inFlight.has('mer_1', 'att_1'), true);
    assert.equal(inFlight.has('mer_2', 'att_1'), false, "another merchant's attempt of the same id");
    let ended = false;
    const waiting = inFlight.ended('mer_1', 'att_1', 60_000).then(() => (ended = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(ended, false, 'ended before the work did');
    finish('paid');
    assert.equal(await running, 'paid');
    await waiting;
    assert.equal(inFlight.has('mer_1', 'att_1'), false);

    const failing = inFlight.run('mer_1', 'att_2', async () => {
      throw new Error('provider unreachable');
    });
    const failedEnd = inFlight.ended('mer_1', 'att_2', 60_000);
    await assert.rejects(failing, /provider unreachable/);
    await failedEnd;
    assert.equal(inFlight.has('mer_1', 'att_2'), false);
  });

  test('ended resolves at once for an attempt not in flight, and after the bound for one that never ends', async () => {
    const inFlight = new AttemptsInFlight();
    await inFlight.ended('mer_1', 'att_none', 60_000);
    void inFlight.run('mer_1', 'att_stuck', () => new Promise(() => {}));
    await inFlight.ended('mer_1', 'att_stuck', 20);
    assert.equal(inFlight.has('mer_1', 'att_stuck'), true, 'the bound ends the wait, not the mark');
  });
});

const t = await setupTestContext();

/** The pool, with the name of every statement sent through pool.query (an event's attempt reads among them) recorded. */
function recordingPool(pool: Pool, names: string[]): Pool {
  return new Proxy(pool, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (property !== 'query') return value.bind(target);
      return (...args: unknown[]) => {
        names.push((args[0] as { name?: string } | undefined)?.name ?? 'other');
        return value.apply(target, args);
      };
    },
  });
}

/**
 * A node whose provider's answers reach their request only once the test opens the gate (the
 * simulator has recorded its webhook by then), with the statements it sends through pool.query.
 */
async function gatedNode(ctx: TestContext, gated: 'authorize' | 'refund' = 'authorize') {
  let answered!: (idempotencyKey: string) => void;
  const providerAnswered = new Promise<string>((resolve) => (answered = resolve));
  let openGate!: () => void;
  const gate = new Promise<void>((resolve) => (openGate = resolve));
  const held = async <T>(idempotencyKey: string, call: Promise<T>): Promise<T> => {
    const outcome = await call;
    answered(idempotencyKey);
    await gate;
    return outcome;
  };
  const provider: PaymentProvider = {
    authorize: (request) =>
      gated === 'authorize' ? held(request.idempotencyKey, ctx.provider.authorize(request)) : ctx.provider.authorize(request),
    capture: (request) => ctx.provider.capture(request),
    cancel: (request) => ctx.provider.cancel(request),
    refund: (request) => (gated === 'refund' ? held(request.idempotencyKey, ctx.provider.refund(request)) : ctx.provider.refund(request)),
    retrieve: (idempotencyKey) => ctx.provider.retrieve(idempotencyKey),
  };
  const statements: string[] = [];
  return { node: await plainNode(ctx, {}, statements, provider), statements, providerAnswered, openGate };
}

async function plainNode(
  ctx: TestContext,
  overrides: Partial<Config>,
  statements: string[] = [],
  provider: PaymentProvider = ctx.provider,
): Promise<HttpServer> {
  const node = await buildApp({ config: { ...ctx.config, ...overrides }, pool: recordingPool(ctx.pool, statements), provider });
  after(() => node.close());
  return node;
}

/** A confirmed creation on `node`, held at the gate: its answer and the provider's webhook for it, not yet delivered. */
async function confirmHeld(node: HttpServer, providerAnswered: Promise<string>) {
  const confirm = node.inject({
    method: 'POST',
    url: '/v1/payment_intents',
    headers: t.auth({ 'idempotency-key': key() }),
    payload: { amount: 4500, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
  });
  const providerKey = await providerAnswered;
  const event = t.sim.simulator.webhooksSent.find((sent) => sent.idempotency_key === providerKey);
  assert.ok(event, 'the simulator recorded its webhook');
  return { confirm, body: JSON.stringify(event) };
}

function deliver(node: HttpServer, body: string) {
  return node.inject({
    method: 'POST',
    url: PROVIDER_WEBHOOK_PATH,
    headers: {
      'content-type': 'application/json',
      'simulator-signature': signSimulatorWebhook(TEST_PROVIDER_WEBHOOK_SECRET, Math.floor(Date.now() / 1000), body),
    },
    payload: body,
  });
}

/** Whether `webhook` has answered within half a second (it must not have, while its request is held). */
async function answeredEarly(webhook: Promise<unknown>): Promise<boolean> {
  const early = await Promise.race([webhook.then(() => 'answered' as const), new Promise((resolve) => setTimeout(resolve, 500))]);
  return early === 'answered';
}

/** The payment was completed once: one posting, one succeeded event, the one provider event recorded. */
async function assertCompletedOnce(intentId: string, providerEventId: string) {
  const { rows } = await t.pool.query(
    `select (select count(*)::int from ledger_transactions l where l.merchant_id = p.merchant_id and l.payment_intent_id = p.id) as postings,
            (select array_agg(e.type order by e.id) from events e where e.merchant_id = p.merchant_id and e.object_id = p.id) as events,
            (select count(*)::int from provider_events v where v.merchant_id = p.merchant_id and v.event_id = $3) as provider_events
     from payment_intents p where p.merchant_id = $1 and p.id = $2`,
    [t.merchant.id, intentId, providerEventId],
  );
  assert.deepEqual(rows[0], { postings: 1, events: ['payment_intent.created', 'payment_intent.succeeded'], provider_events: 1 });
}

describe('a provider webhook for an attempt whose request is still calling', () => {
  for (const where of ['the same node', 'another node'] as const) {
    test(`on ${where}: waits for the request's completion, then only records its event`, async () => {
      const held = await gatedNode(t);
      const receiverStatements: string[] = [];
      const receiver = where === 'the same node' ? held.node : await plainNode(t, {}, receiverStatements);
      const { confirm, body } = await confirmHeld(held.node, held.providerAnswered);
      const webhook = deliver(receiver, body);
      // Before the wait, the webhook completed the payment itself here while the request was held.
      assert.equal(await answeredEarly(webhook), false, 'the webhook did not wait for the request in flight');
      held.openGate();

      const confirmed = await confirm;
      assert.equal(confirmed.statusCode, 200, confirmed.body);
      assert.equal(confirmed.json().status, 'succeeded');
      const delivered = await webhook;
      assert.equal(delivered.statusCode, 200, delivered.body);
      assert.deepEqual(delivered.json(), { received: true, result: 'already_settled' });
      await assertCompletedOnce(confirmed.json().id, JSON.parse(body).id);
      // The calling node knows its request in memory; another node reads the attempt again.
      const polled = (where === 'the same node' ? held.statements : receiverStatements).includes('payments_select_attempt_request_wait');
      assert.equal(polled, where === 'another node');
    });
  }

  test('past the bound (half the provider timeout after the attempt was written) completes the attempt itself', {
    timeout: 30_000,
  }, async () => {
    const held = await gatedNode(t);
    const impatient = await plainNode(t, { providerTimeoutMs: 300 });
    const { confirm, body } = await confirmHeld(held.node, held.providerAnswered);
    const delivered = await deliver(impatient, body);
    assert.equal(delivered.statusCode, 200, delivered.body);
    assert.deepEqual(delivered.json(), { received: true, result: 'applied' });
    held.openGate();
    const confirmed = await confirm;
    assert.equal(confirmed.statusCode, 200, confirmed.body);
    assert.equal(confirmed.json().status, 'succeeded');
    await assertCompletedOnce(confirmed.json().id, JSON.parse(body).id);
  });

  test('a call that times out while its event waits: the event applies the answer, the confirm answers it, once', {
    timeout: 30_000,
  }, async () => {
    // pm_card_timeout: the simulator charges and reports at once, and holds its answer past
    // the node's provider timeout (1 s). The request then learns the outcome only from the
    // event or from its own retrieve after the timeout; either way the payment completes once.
    // (With the wait bounded by the whole provider timeout instead, this passes too: the
    // retrieve finds the charge.)
    const node = await plainNode(t, { providerTimeoutMs: 1_000 });
    const sent = t.sim.simulator.webhooksSent.length;
    const confirm = node.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 4500, currency: 'usd', payment_method: 'pm_card_timeout', confirm: true },
    });
    while (t.sim.simulator.webhooksSent.length === sent) await new Promise((resolve) => setTimeout(resolve, 5));
    const body = JSON.stringify(t.sim.simulator.webhooksSent[sent]);
    const delivered = await deliver(node, body);
    assert.deepEqual(delivered.json(), { received: true, result: 'applied' });
    const confirmed = await confirm;
    assert.equal(confirmed.statusCode, 200, confirmed.body);
    assert.equal(confirmed.json().status, 'succeeded', 'the request found the payment completed by the event');
    await assertCompletedOnce(confirmed.json().id, JSON.parse(body).id);
  });
});

describe('a provider webhook for a refund whose request is still calling', () => {
  test('waits for the refund request on its node, then only records its event: the refund is applied once', async () => {
    const held = await gatedNode(t, 'refund');
    const paid = await held.node.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 4500, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
    });
    assert.equal(paid.json().status, 'succeeded', paid.body);
    const refund = held.node.inject({
      method: 'POST',
      url: '/v1/refunds',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { payment_intent: paid.json().id, amount: 1500 },
    });
    const providerKey = await held.providerAnswered;
    const event = t.sim.simulator.webhooksSent.find((sent) => sent.idempotency_key === providerKey);
    assert.ok(event, 'the simulator recorded its refund webhook');
    const webhook = deliver(held.node, JSON.stringify(event));
    assert.equal(await answeredEarly(webhook), false, 'the webhook did not wait for the refund in flight');
    held.openGate();
    const refunded = await refund;
    assert.equal(refunded.statusCode, 200, refunded.body);
    assert.equal(refunded.json().status, 'succeeded');
    assert.deepEqual((await webhook).json(), { received: true, result: 'already_settled' });
    assert.equal(held.statements.includes('payments_select_attempt_request_wait'), false, 'known in memory on its node');
    const { rows } = await t.pool.query(
      `select (select count(*)::int from refunds r where r.merchant_id = p.merchant_id and r.payment_intent_id = p.id) as refunds,
              p.amount_refunded
       from payment_intents p where p.merchant_id = $1 and p.id = $2`,
      [t.merchant.id, paid.json().id],
    );
    assert.deepEqual(rows[0], { refunds: 1, amount_refunded: 1500 });
  });
});

describe('waitingSlots', () => {
  test('lets at most max events wait at once, and a slot given back is taken again', () => {
    const slots = waitingSlots(2);
    assert.equal(slots.take(), true);
    assert.equal(slots.take(), true);
    assert.equal(slots.take(), false, 'a third event completes at once');
    slots.give();
    assert.equal(slots.take(), true);
  });
});
