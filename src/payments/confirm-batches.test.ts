/**
 * Coalesced confirmation: every guarantee of the general confirm per request, inside batches
 * (own attempt, ledger posting, event, paid order and replay; a key twice, an intent twice, a
 * key reused; a decline among successes), and batches that fail as a whole writing nothing and
 * sending each request down the general path.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { key, setupTestContext } from '../../test/helpers.js';
import { saleFlow } from '../../test/sale-flow.js';
import { audit } from '../audit/service.js';
import type { RequestContext } from '../platform/http/context.js';
import { fingerprint } from '../platform/idempotency/service.js';
import { convertPaidHold, convertPaidHolds, RELEASE_ADMISSION_TASK } from '../sales/holds.js';
import { salesTasks } from '../sales/jobs.js';
import { ConfirmBatcher } from './confirm-batches.js';
import { completionReply } from './routes.js';
import { confirmPaymentIntent, type PaymentDeps } from './service.js';

const t = await setupTestContext();
const flow = saleFlow(t.app, t.merchant);
const sale = await flow.createSale([{ name: 'Hot item', price: 2500, stock: 1_000 }]);
const itemId = sale.itemIds[0] as string;

/** Orders `n` checkouts of the hot item, unpaid: their intents await a confirm. */
async function orders(n: number, label: string) {
  const bought = [];
  for (let i = 0; i < n; i++) bought.push(await flow.buy(sale.id, `${label}_${i}_${key()}`, [{ item: itemId, quantity: 1 }], false));
  return bought;
}

function confirm(intentId: string, idempotencyKey = key('confirm'), paymentMethod = 'pm_card_visa') {
  return t.app.inject({
    method: 'POST',
    url: `/v1/payment_intents/${intentId}/confirm`,
    headers: t.auth({ 'idempotency-key': idempotencyKey }),
    payload: { payment_method: paymentMethod },
  });
}

/** Count and sum of the batch-size histogram of one phase. */
async function batchMetrics(phase: 'start' | 'complete'): Promise<{ batches: number; confirms: number }> {
  const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
  const value = (name: string) => Number(new RegExp(`^${name}\\{phase="${phase}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  return { batches: value('floodgate_confirm_batch_size_count'), confirms: value('floodgate_confirm_batch_size_sum') };
}

// The admission release jobs, with their payloads (graphile_worker.jobs does not show them).
const RELEASE_JOBS = `graphile_worker._private_jobs j
  join graphile_worker._private_tasks k on k.id = j.task_id and k.identifier = 'release_admission'`;
const countOf = async (sql: string, values: unknown[]) => (await t.pool.query<{ n: number }>(sql, values)).rows[0]?.n;

describe('coalesced confirmation', () => {
  test('concurrent confirms share batches; each gets its own attempt, posting, event, paid order and replay', async () => {
    const bought = await orders(30, 'surge');
    const ids = bought.map((b) => b.intentId);
    const keys = ids.map(() => key('confirm'));
    const [startBefore, completeBefore] = [await batchMetrics('start'), await batchMetrics('complete')];
    const answers = await Promise.all(ids.map((id, i) => confirm(id, keys[i])));
    for (const answer of answers) assert.equal(answer.statusCode, 200, answer.body);
    assert.deepEqual(
      answers.map((answer) => [answer.json().id, answer.json().status, answer.json().amount_received]),
      ids.map((id) => [id, 'succeeded', 2500]),
    );
    const [startAfter, completeAfter] = [await batchMetrics('start'), await batchMetrics('complete')];
    assert.equal(startAfter.confirms - startBefore.confirms, 30, 'every confirm went through the start batcher');
    assert.ok(
      startAfter.batches - startBefore.batches < 30,
      `30 concurrent starts took ${startAfter.batches - startBefore.batches} batches`,
    );
    assert.equal(completeAfter.confirms - completeBefore.confirms, 30, 'every capture went through the completion batcher');

    const perIntent = (sql: string) => countOf(sql, [t.merchant.id, ids]);
    assert.equal(
      await perIntent(
        `select count(*)::int as n from payment_attempts where merchant_id = $1 and payment_intent_id = any($2)
         and operation = 'authorize' and status = 'succeeded' and provider_reference is not null`,
      ),
      30,
    );
    assert.equal(
      await perIntent(
        `select count(distinct t.payment_intent_id)::int as n from ledger_transactions t
         join ledger_entries e on e.merchant_id = t.merchant_id and e.transaction_id = t.id
         where t.merchant_id = $1 and t.payment_intent_id = any($2) and t.kind = 'capture' and e.amount in (2500, -2500)`,
      ),
      30,
    );
    assert.equal(
      await perIntent(
        `select count(*)::int as n from events where merchant_id = $1 and object_id = any($2)
         and type = 'payment_intent.succeeded' and sequence = 2 and data->'object'->>'status' = 'succeeded'`,
      ),
      30,
    );
    assert.equal(
      await perIntent(`select count(*)::int as n from orders where merchant_id = $1 and payment_intent_id = any($2) and status = 'paid'`),
      30,
    );
    assert.equal(
      await perIntent(
        `select count(*)::int as n from holds h join orders o on o.merchant_id = h.merchant_id and o.hold_id = h.id
         where h.merchant_id = $1 and o.payment_intent_id = any($2) and h.status = 'converted'`,
      ),
      30,
    );
    // The admission releases: each paid hold's ticket in exactly one job of its sale, a batch's
    // job (its tickets) or, for a request a batch left to the general path, that path's (its ticket).
    assert.equal(
      await perIntent(
        `select count(*)::int as n from holds h
         join orders o on o.merchant_id = h.merchant_id and o.hold_id = h.id
         where h.merchant_id = $1 and o.payment_intent_id = any($2) and h.admission_ticket is not null
           and (select count(*) from ${RELEASE_JOBS}
                cross join lateral json_array_elements_text(coalesce(j.payload -> 'tickets', json_build_array(j.payload -> 'ticket'))) as ticket
                where j.payload ->> 'sale_id' = h.sale_id and ticket = h.admission_ticket) = 1`,
      ),
      30,
    );
    // Most in a batch's job: fewer jobs than checkouts.
    const releaseJobs = await countOf(`select count(*)::int as n from ${RELEASE_JOBS}`, []);
    assert.ok(releaseJobs !== undefined && releaseJobs < 30, `${releaseJobs} release jobs for 30 checkouts`);
    // The worker's task, run on those jobs, frees each of the 30 tickets once.
    const freed: string[] = [];
    const release = salesTasks({ pool: t.pool, releaseAdmission: async (_sale, ticket) => freed.push(ticket) })[RELEASE_ADMISSION_TASK] as (
      payload: unknown,
      helpers: never,
    ) => Promise<void>;
    for (const job of (await t.pool.query<{ payload: unknown }>(`select j.payload from ${RELEASE_JOBS}`)).rows) {
      await release(job.payload, undefined as never);
    }
    const tickets = await t.pool.query<{ ticket: string }>(
      `select h.admission_ticket as ticket from holds h join orders o on o.merchant_id = h.merchant_id and o.hold_id = h.id
       where h.merchant_id = $1 and o.payment_intent_id = any($2)`,
      [t.merchant.id, ids],
    );
    assert.deepEqual(freed.sort(), tickets.rows.map((row) => row.ticket).sort());
    await assert.rejects(release({ sale_id: 'sale_x', tickets: ['tkt_a', 7] }, undefined as never), /malformed payload/);

    const replays = await Promise.all(ids.map((id, i) => confirm(id, keys[i])));
    for (const [i, replay] of replays.entries()) {
      assert.equal(replay.statusCode, 200);
      assert.equal(replay.headers['idempotent-replayed'], 'true');
      assert.deepEqual(replay.json(), answers[i]?.json());
    }
    assert.deepEqual((await audit(t.pool)).violations, []);
  });

  test('the same key sent twice at once charges once; the other is told it is in use or gets the same answer', async () => {
    const [order] = await orders(1, 'twice');
    const shared = key('twice');
    const answers = await Promise.all([confirm(order?.intentId as string, shared), confirm(order?.intentId as string, shared)]);
    const succeeded = answers.filter((answer) => answer.statusCode === 200);
    assert.ok(succeeded.length >= 1, answers.map((answer) => answer.body).join(' '));
    for (const answer of answers) {
      if (answer.statusCode === 200) assert.deepEqual(answer.json(), succeeded[0]?.json());
      else assert.equal(answer.json().error.code, 'idempotency_key_in_use');
    }
    assert.equal(
      await countOf('select count(*)::int as n from payment_attempts where merchant_id = $1 and payment_intent_id = $2', [
        t.merchant.id,
        order?.intentId,
      ]),
      1,
    );
  });

  test('two confirms of one intent at once: exactly one charge, the other refused as today', async () => {
    const [order] = await orders(1, 'double');
    const answers = await Promise.all([confirm(order?.intentId as string), confirm(order?.intentId as string)]);
    const statuses = answers.map((answer) => answer.statusCode).sort();
    assert.deepEqual(statuses, [200, 409], answers.map((answer) => answer.body).join(' '));
    const refused = answers.find((answer) => answer.statusCode === 409);
    assert.equal(refused?.json().error.code, 'payment_intent_unexpected_state');
    assert.equal(
      await countOf('select count(*)::int as n from payment_attempts where merchant_id = $1 and payment_intent_id = $2', [
        t.merchant.id,
        order?.intentId,
      ]),
      1,
    );
  });

  test("a paid hold's expiry job that a worker is running loses its key and its retries, as remove_job leaves it", async () => {
    const [running, waiting] = await orders(2, 'expiring');
    const expiryKeys = [running, waiting].map((bought) => `expire_hold:${bought?.holdId}`);
    // A worker has taken the first hold's expiry job (as graphile-worker's get_job marks it).
    await t.pool.query(`update graphile_worker._private_jobs set locked_at = now(), locked_by = 'a-worker' where key = $1`, [
      expiryKeys[0],
    ]);
    const [jobId] = (await t.pool.query<{ id: string }>('select id from graphile_worker._private_jobs where key = $1', [expiryKeys[0]]))
      .rows;
    const answers = await Promise.all([confirm(running?.intentId as string), confirm(waiting?.intentId as string)]);
    assert.deepEqual(
      answers.map((answer) => answer.json().status),
      ['succeeded', 'succeeded'],
    );
    const { rows } = await t.pool.query<{ key: string | null; retries_left: number }>(
      'select key, max_attempts - attempts as retries_left from graphile_worker._private_jobs where id = $1 or key = any($2)',
      [jobId?.id, expiryKeys],
    );
    // The running one stays for its worker to finish, without its key and never run again; the other is gone.
    assert.deepEqual(rows, [{ key: null, retries_left: 0 }]);
  });

  test('a key reused for another intent or another card is refused (422)', async () => {
    const [first, second] = await orders(2, 'reuse');
    const reused = key('reuse');
    assert.equal((await confirm(first?.intentId as string, reused)).statusCode, 200);
    const [otherIntent, otherCard] = await Promise.all([
      confirm(second?.intentId as string, reused),
      confirm(first?.intentId as string, reused, 'pm_card_declined'),
    ]);
    assert.equal(otherIntent.statusCode, 422);
    assert.equal(otherIntent.json().error.code, 'idempotency_key_reused');
    assert.equal(otherCard.statusCode, 422);
    assert.equal(
      await countOf('select count(*)::int as n from payment_attempts where merchant_id = $1 and payment_intent_id = $2', [
        t.merchant.id,
        second?.intentId,
      ]),
      0,
    );
  });

  test('a decline in the same batch as successes is declined alone', async () => {
    const bought = await orders(6, 'decline');
    const before = await batchMetrics('start');
    const answers = await Promise.all(
      bought.map((b, i) => confirm(b.intentId, key('mixed'), i === 2 ? 'pm_card_declined' : 'pm_card_visa')),
    );
    const after = await batchMetrics('start');
    assert.ok(after.batches - before.batches < 6, 'the confirms shared start batches');
    for (const [i, answer] of answers.entries()) {
      if (i === 2) {
        assert.equal(answer.statusCode, 402, answer.body);
        assert.equal(answer.json().error.code, 'card_declined');
        assert.equal(answer.json().error.payment_intent.status, 'requires_payment_method');
      } else {
        assert.equal(answer.statusCode, 200, answer.body);
        assert.equal(answer.json().status, 'succeeded');
      }
    }
    const declined = bought[2]?.intentId;
    assert.equal(
      await countOf(`select count(*)::int as n from orders where payment_intent_id = $1 and status = 'awaiting_payment'`, [declined]),
      1,
    );
    assert.equal(await countOf('select count(*)::int as n from ledger_transactions where payment_intent_id = $1', [declined]), 0);
    assert.equal(
      await countOf(`select count(*)::int as n from events where object_id = $1 and type = 'payment_intent.payment_failed'`, [declined]),
      1,
    );
  });
});

describe('the batcher', () => {
  const batcher = new ConfirmBatcher({
    pool: t.pool,
    ttlHours: 24,
    windowMs: 5,
    batchMax: 100,
    maxRunning: 1,
    present: completionReply,
    onPaymentsSucceeded: convertPaidHolds,
  });
  const deps: PaymentDeps = {
    pool: t.pool,
    provider: t.provider,
    idempotency: { ttlHours: 24, lockTimeoutMs: 60_000 },
    confirmBatcher: batcher,
    present: completionReply,
    onPaymentSucceeded: async () => undefined,
  };
  const contextFor = (intentId: string, keyKind: string = 'secret'): RequestContext => ({
    merchantId: t.merchant.id,
    keyKind: keyKind as RequestContext['keyKind'],
    idempotencyKey: key('direct'),
    method: 'POST',
    path: `/v1/payment_intents/${intentId}/confirm`,
    fingerprint: fingerprint('POST', `/v1/payment_intents/${intentId}/confirm`, { payment_method: 'pm_card_visa' }),
  });

  test('a batched confirm stores and records what the general path does', async () => {
    const [batched, alone] = (await orders(2, 'same')).map((b) => b.intentId as string);
    const general: PaymentDeps = { ...deps, confirmBatcher: undefined, onPaymentSucceeded: convertPaidHold };
    const [viaBatch, viaGeneral] = await Promise.all([
      confirmPaymentIntent(deps, contextFor(batched as string), batched as string, { payment_method: 'pm_card_visa' }),
      confirmPaymentIntent(general, contextFor(alone as string), alone as string, { payment_method: 'pm_card_visa' }),
    ]);
    const { rows } = await t.pool.query<{ id: string; status: number; body: Record<string, unknown>; event: Record<string, unknown> }>(
      `select k.resource_id as id, k.response_status as status, k.response_body as body, e.data as event
       from idempotency_keys k join events e on e.merchant_id = k.merchant_id and e.object_id = k.resource_id
       where k.merchant_id = $1 and k.resource_id = any($2) and e.type = 'payment_intent.succeeded'`,
      [t.merchant.id, [batched, alone]],
    );
    const stored = (id: string | undefined) => rows.find((row) => row.id === id);
    const anonymous = (body: unknown) => ({ ...(body as Record<string, unknown>), id: 'pi', created: 0, description: '', metadata: {} });
    assert.equal(viaBatch.status, 200);
    assert.deepEqual(anonymous(viaBatch.body), anonymous(viaGeneral.body));
    assert.deepEqual(stored(batched)?.body, viaBatch.body);
    assert.deepEqual(anonymous(stored(batched)?.body), anonymous(stored(alone)?.body));
    assert.deepEqual(stored(batched)?.event, { object: stored(batched)?.body });
    assert.deepEqual(stored(alone)?.event, { object: stored(alone)?.body });
    // Both paths remove the paid hold's expiry job; an unpaid order's hold keeps its own.
    const [unpaid] = (await orders(1, 'unpaid')).map((b) => b.intentId as string);
    const expiryJobs = await t.pool.query<{ intent: string; jobs: number }>(
      `select o.payment_intent_id as intent, count(j.id)::int as jobs
       from orders o left join graphile_worker.jobs j on j.key = 'expire_hold:' || o.hold_id and j.task_identifier = 'expire_hold'
       where o.merchant_id = $1 and o.payment_intent_id = any($2) group by o.payment_intent_id`,
      [t.merchant.id, [batched, alone, unpaid]],
    );
    const jobsOf = (intent: string | undefined) => expiryJobs.rows.find((row) => row.intent === intent)?.jobs;
    assert.deepEqual([jobsOf(batched), jobsOf(alone), jobsOf(unpaid)], [0, 0, 1]);
  });

  test('a start batch whose statement fails writes nothing, and its requests then succeed alone', async () => {
    const bought = await orders(3, 'failstart');
    const ids = bought.map((b) => b.intentId);
    // Past authentication no key has another kind; here it stands for any row the database refuses.
    const contexts = [contextFor(ids[0] as string), contextFor(ids[1] as string, 'bogus'), contextFor(ids[2] as string)];
    const outcomes = await Promise.all(
      contexts.map((ctx, i) => batcher.start({ ctx, intentId: ids[i] as string, paymentMethod: 'pm_card_visa' })),
    );
    assert.deepEqual(
      outcomes.map((outcome) => outcome.kind),
      ['single', 'single', 'single'],
    );
    assert.equal(await countOf('select count(*)::int as n from payment_attempts where payment_intent_id = any($1)', [ids]), 0);
    assert.equal(await countOf(`select count(*)::int as n from payment_intents where id = any($1) and status = 'processing'`, [ids]), 0);

    // Through the use case: the good requests of such a batch are paid, the bad one fails alone.
    const results = await Promise.allSettled(
      contexts.map((ctx, i) => confirmPaymentIntent(deps, ctx, ids[i] as string, { payment_method: 'pm_card_visa' })),
    );
    assert.equal(results[0]?.status === 'fulfilled' && results[0].value.status, 200);
    assert.equal(results[1]?.status, 'rejected', 'the bad request meets its own error');
    assert.equal(results[2]?.status === 'fulfilled' && results[2].value.status, 200);
  });

  test('a completion batch that fails writes nothing, and its requests then complete alone', async () => {
    const bought = await orders(3, 'failcomplete');
    const ids = bought.map((b) => b.intentId);
    const contexts = ids.map((id) => contextFor(id));
    const started = await Promise.all(
      contexts.map((ctx, i) => batcher.start({ ctx, intentId: ids[i] as string, paymentMethod: 'pm_card_visa' })),
    );
    const calls = started.map((outcome, i) => {
      assert.equal(outcome.kind, 'started');
      if (outcome.kind !== 'started') throw new Error('unreachable');
      const charge = { reference: `ch_test_${i}`, status: 'captured' as const, amount: 2500, amountCaptured: 2500, amountRefunded: 0 };
      // The middle call names a key nobody holds: the batch must fail as a whole.
      const ctx = i === 1 ? { ...contexts[i], idempotencyKey: key('nobody') } : contexts[i];
      return { ctx: ctx as RequestContext, intent: outcome.intent, attempt: outcome.attempt, charge };
    });
    const outcomes = await Promise.all(calls.map((call) => batcher.complete(call)));
    assert.deepEqual(
      outcomes.map((outcome) => outcome.kind),
      ['single', 'single', 'single'],
    );
    assert.equal(
      await countOf(`select count(*)::int as n from payment_attempts where payment_intent_id = any($1) and status = 'started'`, [ids]),
      3,
    );
    assert.equal(await countOf(`select count(*)::int as n from payment_intents where id = any($1) and status = 'processing'`, [ids]), 3);
    assert.equal(await countOf('select count(*)::int as n from ledger_transactions where payment_intent_id = any($1)', [ids]), 0);

    // Alone they complete: the first and last through a batch of their own, with their own keys.
    const again = await Promise.all([batcher.complete(calls[0] as (typeof calls)[0]), batcher.complete(calls[2] as (typeof calls)[0])]);
    assert.deepEqual(
      again.map((outcome) => outcome.kind === 'completed' && outcome.reply.status),
      [200, 200],
    );
    assert.equal(await countOf(`select count(*)::int as n from orders where payment_intent_id = any($1) and status = 'paid'`, [ids]), 2);
  });
});
