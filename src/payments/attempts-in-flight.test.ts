/**
 * A provider webhook for an attempt this node's request is still calling or completing waits
 * for that request (attempts-in-flight.ts) instead of completing the payment itself: the
 * registry's own rules, then the race itself through a node whose provider answers only when
 * the test lets it.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { key, setupTestContext, TEST_PROVIDER_WEBHOOK_SECRET } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import type { PaymentProvider } from '../providers/provider.js';
import { signSimulatorWebhook } from '../providers/simulator/server.js';
import { AttemptsInFlight } from './attempts-in-flight.js';
import { PROVIDER_WEBHOOK_PATH } from './provider-webhooks.js';

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

describe('a provider webhook for an attempt in flight on this node', () => {
  test("waits for the request's completion, then only records its event: the payment completes once, in the request", async () => {
    const t = await setupTestContext();
    // The provider's answer reaches the request only when the test opens the gate; the
    // simulator has recorded its webhook by then, as a provider that reports at once would.
    let answered!: (idempotencyKey: string) => void;
    const providerAnswered = new Promise<string>((resolve) => (answered = resolve));
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const provider: PaymentProvider = {
      authorize: async (request) => {
        const outcome = await t.provider.authorize(request);
        answered(request.idempotencyKey);
        await gate;
        return outcome;
      },
      capture: (request) => t.provider.capture(request),
      cancel: (request) => t.provider.cancel(request),
      refund: (request) => t.provider.refund(request),
      retrieve: (idempotencyKey) => t.provider.retrieve(idempotencyKey),
    };
    const node = await buildApp({ config: t.config, pool: t.pool, provider });
    after(() => node.close());

    const confirm = node.inject({
      method: 'POST',
      url: '/v1/payment_intents',
      headers: t.auth({ 'idempotency-key': key() }),
      payload: { amount: 4500, currency: 'usd', payment_method: 'pm_card_visa', confirm: true },
    });
    const providerKey = await providerAnswered;
    const event = t.sim.simulator.webhooksSent.find((sent) => sent.idempotency_key === providerKey);
    assert.ok(event, 'the simulator recorded its webhook');
    const body = JSON.stringify(event);
    const webhook = node.inject({
      method: 'POST',
      url: PROVIDER_WEBHOOK_PATH,
      headers: {
        'content-type': 'application/json',
        'simulator-signature': signSimulatorWebhook(TEST_PROVIDER_WEBHOOK_SECRET, Math.floor(Date.now() / 1000), body),
      },
      payload: body,
    });
    // Before this change the webhook completed the payment itself here, while the request
    // waited: it must still be waiting when the request's answer is let through.
    const early = await Promise.race([webhook.then(() => 'answered' as const), new Promise((resolve) => setTimeout(resolve, 500))]);
    assert.notEqual(early, 'answered', 'the webhook did not wait for the request in flight');
    openGate();

    const confirmed = await confirm;
    assert.equal(confirmed.statusCode, 200, confirmed.body);
    assert.equal(confirmed.json().status, 'succeeded');
    const delivered = await webhook;
    assert.equal(delivered.statusCode, 200, delivered.body);
    assert.deepEqual(delivered.json(), { received: true, result: 'already_settled' });
    const { rows } = await t.pool.query(
      `select (select count(*)::int from ledger_transactions l where l.merchant_id = p.merchant_id and l.payment_intent_id = p.id) as postings,
              (select array_agg(e.type order by e.id) from events e where e.merchant_id = p.merchant_id and e.object_id = p.id) as events,
              (select count(*)::int from provider_events v where v.merchant_id = p.merchant_id) as provider_events
       from payment_intents p where p.merchant_id = $1 and p.id = $2`,
      [t.merchant.id, confirmed.json().id],
    );
    assert.deepEqual(rows[0], { postings: 1, events: ['payment_intent.created', 'payment_intent.succeeded'], provider_events: 1 });
  });
});
