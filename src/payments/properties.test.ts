/**
 * Random sequences of API calls against the real app, database and simulator. Whatever the
 * sequence, the service never answers 5xx, every intent moves only along TRANSITIONS (final
 * states never change), the audit finds nothing, and the balance, the intents, the refunds and
 * the provider's charges all tell the same story.
 *
 * A provider wrapper looks at the database at the moment of every provider call. That shows
 * the `processing` status a single request passes through, and checks "record, then call":
 * the attempt is committed before the provider hears of it.
 *
 * Commands may run during a provider outage (the simulator answers 503 before recording
 * anything, so the outcome is unknown): a command that would have called the provider answers
 * `processing` (a refund: `pending`), and once the reconciler has run, the intent or refund ends
 * exactly as the command would have left it with the provider up. Two commands may race on one
 * intent: each answers as predicted from the state before the race, or from the state the other
 * left if that one succeeded, or is refused with a 4xx; at least one answers as predicted from
 * the state before, and every invariant still holds afterwards.
 *
 *   FC_RUNS=300 FC_SEED=42 npm test -- src/payments/properties     (see test/property.ts)
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { createTestDatabase, createTestMerchant, key, startTestSimulator, TEST_TRAFFIC_LIMITS_OFF } from '../../test/helpers.js';
import { assertProperty } from '../../test/property.js';
import { buildApp } from '../app.js';
import { audit } from '../audit/service.js';
import { loadConfig } from '../config.js';
import { ApiError } from '../platform/http/errors.js';
import { HttpProvider } from '../providers/http-provider.js';
import type { PaymentProvider } from '../providers/service.js';
import { canTransition, type PaymentIntentStatus } from './domain.js';
import { reconcileAttempt } from './reconciliation.js';

// Enough runs and steps to reach partial captures, refunds of refunds and replays of each,
// few enough that the file runs in seconds. FC_RUNS overrides it.
const RUNS = 30;
const STEPS_MAX = 15;

const { pool } = await createTestDatabase();
const sim = await startTestSimulator();

/** What one run has seen so far; the provider wrapper reports into the current run. */
interface Run {
  histories: Map<string, PaymentIntentStatus[]>;
  problems: string[];
}
let run: Run = { histories: new Map(), problems: [] };

const FIRST_STATUSES: readonly PaymentIntentStatus[] = ['requires_payment_method', 'requires_confirmation', 'processing'];

function observe(id: string, status: PaymentIntentStatus, where: string) {
  const history = run.histories.get(id);
  if (!history) {
    if (!FIRST_STATUSES.includes(status)) run.problems.push(`${id} was first seen ${status} (${where})`);
    run.histories.set(id, [status]);
    return;
  }
  const last = history.at(-1) as PaymentIntentStatus;
  if (last === status) return;
  history.push(status);
  if (!canTransition(last, status)) run.problems.push(`${id} went ${last} → ${status} (${where}); history ${history.join(' → ')}`);
}

/** Called just before each provider call, with our key for it. */
async function checkRecordedBeforeCall(operation: string, providerKey: string) {
  const { rows } = await pool.query(
    `select a.payment_intent_id, a.status as attempt_status, p.status, r.status as refund_status
     from payment_attempts a
     join payment_intents p on p.merchant_id = a.merchant_id and p.id = a.payment_intent_id
     left join refunds r on r.merchant_id = a.merchant_id and r.id = a.refund_id
     where a.provider_idempotency_key = $1`,
    [providerKey],
  );
  const [row] = rows;
  if (rows.length !== 1 || row.attempt_status !== 'started') {
    run.problems.push(`${operation} ${providerKey} called without one committed started attempt: ${JSON.stringify(rows)}`);
    return;
  }
  if (operation === 'refund') {
    if (row.status !== 'succeeded' || row.refund_status !== 'pending') run.problems.push(`refund called with ${JSON.stringify(row)}`);
    return;
  }
  observe(row.payment_intent_id, row.status, `during ${operation}`);
  if (row.status !== 'processing') run.problems.push(`${operation} called while ${row.payment_intent_id} is ${row.status}`);
}

/** Wraps a provider call with the check above. */
function observed<R extends { idempotencyKey: string }, T>(operation: string, call: (request: R) => Promise<T>) {
  return async (request: R) => {
    await checkRecordedBeforeCall(operation, request.idempotencyKey);
    return call(request);
  };
}

const config = loadConfig({}, { providerUrl: sim.url, providerTimeoutMs: 30_000, apiKeyCacheTtlMs: 0, ...TEST_TRAFFIC_LIMITS_OFF });
// The breaker never opens here: an outage lasts one command, and the next command must reach the
// provider again (the breaker has tests of its own in providers/).
const provider = new HttpProvider({ baseUrl: sim.url, timeoutMs: 30_000, breakerThreshold: 1_000_000, halfOpenMs: 10_000 });
const observing: PaymentProvider = {
  authorize: observed('authorize', (request) => provider.authorize(request)),
  capture: observed('capture', (request) => provider.capture(request)),
  cancel: observed('cancel', (request) => provider.cancel(request)),
  refund: observed('refund', (request) => provider.refund(request)),
  retrieve: (idempotencyKey) => provider.retrieve(idempotencyKey),
};
const app = await buildApp({ config, pool, provider: observing });
after(() => app.close());
// An error that is not an expected API error becomes a bare 500; keep its stack for the report.
app.addHook('onError', async (request, _reply, error) => {
  if (!(error instanceof ApiError) && !((error.statusCode ?? 500) < 500)) {
    run.problems.push(`${request.method} ${request.url} threw ${error.stack}`);
  }
});

// ── The commands ────────────────────────────────────────────────────────────────────────────

const paymentMethod = fc.oneof(
  { weight: 4, arbitrary: fc.constant('pm_card_visa') },
  { weight: 1, arbitrary: fc.constantFrom('pm_card_declined', 'pm_card_insufficient_funds') },
);
/** An amount relative to what the target allows, or an absolute one (often too large). */
const amountChoice = fc.option(
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('half', 'all', 'one_over') },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 6_000 }) },
  ),
  { nil: undefined },
);
type AmountChoice = typeof amountChoice extends fc.Arbitrary<infer T> ? T : never;
/** Which intent a command goes to: `aimed` picks among those whose status suits the command. */
const target = fc.record({
  index: fc.nat({ max: 30 }),
  aimed: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
});
const optional = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined });

/** True in about one command of six: the provider is down while it runs. */
const outage = fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) });
const create = fc.record({
  kind: fc.constant('create' as const),
  amount: fc.integer({ min: 1, max: 5_000 }),
  currency: fc.constantFrom('usd', 'eur', 'jpy'),
  capture_method: fc.constantFrom('automatic', 'manual'),
  payment_method: optional(paymentMethod),
  confirm: fc.boolean(),
  outage,
});
const confirmCommand = fc.record({ kind: fc.constant('confirm' as const), target, payment_method: optional(paymentMethod), outage });
const captureCommand = fc.record({ kind: fc.constant('capture' as const), target, amount: amountChoice, outage });
const cancelCommand = fc.record({ kind: fc.constant('cancel' as const), target, outage });
const refundCommand = fc.record({ kind: fc.constant('refund' as const), target, amount: amountChoice, outage });
/** A command on an existing intent, without an outage: what a race is made of. */
const onIntent = fc.oneof(confirmCommand, captureCommand, cancelCommand, refundCommand).map((cmd) => ({ ...cmd, outage: false }));
const command = fc.oneof(
  { weight: 2, arbitrary: create },
  { weight: 2, arbitrary: confirmCommand },
  { weight: 2, arbitrary: captureCommand },
  { weight: 1, arbitrary: cancelCommand },
  { weight: 2, arbitrary: refundCommand },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('replay' as const), which: fc.nat() }) },
  // Two commands sent at once to the same intent (the second's target is the first's).
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('race' as const), first: onIntent, second: onIntent }) },
);
// A sequence opens with a few creates, so that most commands have an intent to act on.
const sequence = fc
  .tuple(fc.array(create, { minLength: 1, maxLength: 3 }), fc.array(command, { maxLength: STEPS_MAX - 3, size: 'max' }))
  .map(([creates, rest]): Command[] => [...creates, ...rest]);
type Command = typeof command extends fc.Arbitrary<infer T> ? T : never;
type Single = Exclude<Command, { kind: 'replay' } | { kind: 'race' }>;
type OnIntent = Exclude<Single, { kind: 'create' }>;

interface ApiIntent {
  id: string;
  amount: number;
  currency: string;
  status: PaymentIntentStatus;
  capture_method: 'automatic' | 'manual';
  payment_method: string | null;
  amount_capturable: number;
  amount_received: number;
  amount_refunded: number;
}
interface ApiRefund {
  id: string;
  payment_intent: string;
  amount: number;
  currency: string;
  status: string;
}
interface Sent {
  url: string;
  body: Record<string, unknown>;
  key: string;
  status: number;
  response: unknown;
}

// An id of the right shape that names nothing, for commands sent while no intent exists.
const MISSING_INTENT = 'pi_0000000000000000000000';

const SUITS: Record<OnIntent['kind'], (intent: ApiIntent) => boolean> = {
  confirm: (intent) => intent.status === 'requires_payment_method' || intent.status === 'requires_confirmation',
  capture: (intent) => intent.status === 'requires_capture',
  cancel: (intent) => ['requires_payment_method', 'requires_confirmation', 'requires_capture'].includes(intent.status),
  refund: (intent) => intent.status === 'succeeded' && intent.amount_refunded < intent.amount_received,
};

function resolveAmount(choice: AmountChoice, room: number): number | undefined {
  if (choice === undefined || typeof choice === 'number') return choice;
  const base = Math.max(room, 1);
  return choice === 'half' ? Math.max(1, Math.floor(base / 2)) : choice === 'all' ? base : base + 1;
}

type Request = { url: string; body: Record<string, unknown>; intent?: ApiIntent };

/** The request a command makes, given the intents as last listed (oldest first). */
function requestFor(cmd: Single, intents: ApiIntent[]): Request {
  if (cmd.kind === 'create') {
    const { kind: _, outage: __, ...body } = cmd;
    return { url: '/v1/payment_intents', body };
  }
  const suitable = intents.filter((candidate) => SUITS[cmd.kind](candidate));
  const candidates = cmd.target.aimed && suitable.length > 0 ? suitable : intents;
  const intent = candidates.length > 0 ? candidates[cmd.target.index % candidates.length] : undefined;
  const id = intent?.id ?? MISSING_INTENT;
  switch (cmd.kind) {
    case 'confirm':
      return { intent, url: `/v1/payment_intents/${id}/confirm`, body: { payment_method: cmd.payment_method } };
    case 'capture':
      return {
        intent,
        url: `/v1/payment_intents/${id}/capture`,
        body: { amount_to_capture: resolveAmount(cmd.amount, intent?.amount_capturable ?? 0) },
      };
    case 'cancel':
      return { intent, url: `/v1/payment_intents/${id}/cancel`, body: {} };
    case 'refund': {
      const room = intent ? intent.amount_received - intent.amount_refunded : 0;
      return { intent, url: '/v1/refunds', body: { payment_intent: id, amount: resolveAmount(cmd.amount, room) } };
    }
  }
}

// Payments here belong to no order: nothing listens for their success.
const noOrders = async () => {};
// The reconciler in these runs: one round, and an open attempt counts as lost at once.
const RECONCILE_NOW = { baseDelayMs: 1, maxDelayMs: 1, maxAttempts: 1, staleAfterMs: 0 };

const UNEXPECTED_STATE: Outcome = [409, 'payment_intent_unexpected_state'];
/** HTTP status; the resulting status or the error code; for a success, the amount moved. */
type Outcome = [number, string, number?];

const charge = (method: string, captureMethod: string, amount: number): Outcome =>
  method !== 'pm_card_visa'
    ? [402, 'card_declined']
    : captureMethod === 'automatic'
      ? [200, 'succeeded', amount]
      : [200, 'requires_capture'];

/** The answer a command must get, predicted from the intent as it was before the command. */
function expectedOutcome(cmd: Single, request: Request): Outcome {
  const predicted = expectedWithProviderUp(cmd, request);
  if (!cmd.outage || !callsProvider(cmd, request, predicted)) return predicted;
  return cmd.kind === 'refund' ? [200, 'pending'] : [200, 'processing'];
}

/**
 * What a command answers when it runs after the other command of a race has succeeded, from the
 * intent as that command left it; undefined when the other did not move the intent. Either
 * order is a valid one: a capture may meet the intent its racing confirm has just authorized, a
 * refund the intent a confirm or capture has just charged or the other refund partly refunded.
 * (An Outcome carries the amount received or refunded, which is all the later command depends on.)
 */
function outcomeAfter(cmd: Single, request: Request, other: Single, otherOutcome: Outcome): Outcome | undefined {
  const { intent } = request;
  if (otherOutcome[0] !== 200 || intent === undefined) return undefined;
  const moved = otherOutcome[2] ?? 0;
  const after: ApiIntent | undefined =
    other.kind === 'refund'
      ? { ...intent, amount_refunded: intent.amount_refunded + moved }
      : otherOutcome[1] === 'succeeded'
        ? { ...intent, status: 'succeeded', amount_received: moved, amount_capturable: 0 }
        : otherOutcome[1] === 'requires_capture'
          ? { ...intent, status: 'requires_capture', amount_capturable: intent.amount }
          : otherOutcome[1] === 'canceled'
            ? { ...intent, status: 'canceled', amount_capturable: 0 }
            : undefined;
  return after ? expectedWithProviderUp(cmd, { ...request, intent: after }) : undefined;
}

/** Whether the command reaches the provider, given the answer it gets while the provider is up. */
function callsProvider(cmd: Single, { intent }: Request, predicted: Outcome): boolean {
  switch (cmd.kind) {
    case 'create':
      return cmd.confirm && cmd.payment_method !== undefined;
    case 'confirm':
      return predicted[0] === 200 || predicted[1] === 'card_declined';
    case 'cancel':
      return predicted[0] === 200 && intent?.status === 'requires_capture';
    case 'capture':
    case 'refund':
      return predicted[0] === 200;
  }
}

function expectedWithProviderUp(cmd: Single, { intent, body }: Request): Outcome {
  if (cmd.kind === 'create') {
    if (!cmd.confirm) return [200, cmd.payment_method ? 'requires_confirmation' : 'requires_payment_method'];
    return cmd.payment_method ? charge(cmd.payment_method, cmd.capture_method, cmd.amount) : [400, 'parameter_missing'];
  }
  if (!intent) return [404, 'resource_missing'];
  switch (cmd.kind) {
    case 'confirm': {
      if (!SUITS.confirm(intent)) return UNEXPECTED_STATE;
      const method = cmd.payment_method ?? intent.payment_method;
      return method ? charge(method, intent.capture_method, intent.amount) : [400, 'parameter_missing'];
    }
    case 'capture': {
      if (!SUITS.capture(intent)) return UNEXPECTED_STATE;
      const amount = (body.amount_to_capture as number | undefined) ?? intent.amount_capturable;
      return amount > intent.amount_capturable ? [400, 'amount_too_large'] : [200, 'succeeded', amount];
    }
    case 'cancel':
      return SUITS.cancel(intent) ? [200, 'canceled'] : UNEXPECTED_STATE;
    case 'refund': {
      if (intent.status !== 'succeeded') return UNEXPECTED_STATE;
      const room = intent.amount_received - intent.amount_refunded;
      const amount = (body.amount as number | undefined) ?? room;
      if (room === 0) return [400, 'charge_already_refunded'];
      return amount > room ? [400, 'refund_exceeds_received'] : [200, 'succeeded', amount];
    }
  }
}

/** The answer as an Outcome, to compare with the prediction. */
function outcomeOf(cmd: Command, statusCode: number, json: Record<string, unknown> & { error?: { code: string } }): Outcome {
  const label = (json.error?.code ?? json.status) as string;
  if (json.error || json.status !== 'succeeded') return [statusCode, label];
  return [statusCode, label, (cmd.kind === 'refund' ? json.amount : json.amount_received) as number];
}

// ── One run ─────────────────────────────────────────────────────────────────────────────────

async function runSequence(commands: Command[]): Promise<void> {
  run = { histories: new Map(), problems: [] };
  const merchant = await createTestMerchant(pool);
  const headers = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${merchant.secretKey}`, ...extra });
  const get = async <T>(url: string): Promise<T> => {
    const response = await app.inject({ method: 'GET', url, headers: headers() });
    assert.equal(response.statusCode, 200, `GET ${url}: ${response.body}`);
    return response.json() as T;
  };
  const listAll = async <T>(url: string): Promise<T[]> => {
    const page = await get<{ data: T[]; has_more: boolean }>(url);
    assert.equal(page.has_more, false, 'a run never makes more than a page of objects');
    return page.data.reverse();
  };
  const post = (url: string, body: Record<string, unknown>, idempotencyKey: string) =>
    app.inject({ method: 'POST', url, headers: headers({ 'idempotency-key': idempotencyKey }), payload: body });

  const sent: Sent[] = [];
  let intents: ApiIntent[] = [];
  /** Sends one command, with the provider down for it when it says so. */
  const send = async (cmd: Single, request: Request, where: string) => {
    const idempotencyKey = key('prop');
    sim.simulator.errorRate = cmd.outage ? 1 : 0;
    const response = await post(request.url, request.body, idempotencyKey).finally(() => {
      sim.simulator.errorRate = 0;
    });
    assert.ok(response.statusCode < 500, `${where}: ${response.statusCode} ${response.body}\n${run.problems.join('\n')}`);
    sent.push({ url: request.url, body: request.body, key: idempotencyKey, status: response.statusCode, response: response.json() });
    return outcomeOf(cmd, response.statusCode, response.json());
  };
  /**
   * After an outage: the reconciler settles the open attempt, sending the call the provider
   * never saw, and the intent (or refund) ends as the command would have left it.
   */
  const settleAfterOutage = async (cmd: Single, request: Request, where: string) => {
    const predicted = expectedWithProviderUp(cmd, request);
    const { rows } = await pool.query<{ merchant_id: string; id: string }>(
      `select merchant_id, id from payment_attempts where merchant_id = $1 and status in ('started', 'unknown')`,
      [merchant.id],
    );
    assert.equal(rows.length, 1, `${where}: the outage left one open attempt`);
    for (const row of rows) {
      const result = await reconcileAttempt(
        { pool, provider, options: RECONCILE_NOW, onPaymentSucceeded: noOrders },
        { merchant_id: row.merchant_id, attempt_id: row.id, round: 1 },
      );
      assert.equal(result, 'settled', where);
    }
    const answered = sent.at(-1)?.response as { id: string };
    if (cmd.kind === 'refund') {
      const refund = await get<ApiRefund>(`/v1/refunds/${answered.id}`);
      assert.deepEqual([refund.status, refund.amount], [predicted[1], predicted[2]], `${where}: the refund after reconciliation`);
      return;
    }
    const intent = await get<ApiIntent>(`/v1/payment_intents/${answered.id}`);
    const status = predicted[1] === 'card_declined' ? 'requires_payment_method' : predicted[1];
    assert.equal(intent.status, status, `${where}: the intent after reconciliation`);
    if (predicted[2] !== undefined) assert.equal(intent.amount_received, predicted[2], `${where}: received after reconciliation`);
  };
  for (const [step, cmd] of commands.entries()) {
    const where = `step ${step} ${JSON.stringify(cmd)}`;
    if (cmd.kind === 'replay') {
      if (sent.length === 0) continue;
      const original = sent[cmd.which % sent.length] as Sent;
      const again = await post(original.url, original.body, original.key);
      assert.ok(again.statusCode < 500, `${where}: ${again.statusCode} ${again.body}\n${run.problems.join('\n')}`);
      if (original.status === 503) {
        // A provider that certainly did not act releases the key: the retry runs the request
        // anew, and from then on its answer is the one replayed.
        Object.assign(original, { status: again.statusCode, response: again.json() });
      } else {
        assert.equal(again.statusCode, original.status, `${where}: a replay answers as the first time`);
        assert.deepEqual(again.json(), original.response, `${where}: a replay answers as the first time`);
      }
    } else if (cmd.kind === 'race') {
      const first = requestFor(cmd.first, intents);
      // The second command goes to the first one's intent, so the two really contend.
      const second = requestFor({ ...cmd.second, target: { index: 0, aimed: false } }, first.intent ? [first.intent] : []);
      const outcomes = await Promise.all([send(cmd.first, first, where), send(cmd.second, second, where)]);
      const predicted = [expectedOutcome(cmd.first, first), expectedOutcome(cmd.second, second)];
      const requests = [first, second];
      for (const [index, outcome] of outcomes.entries()) {
        const asPredicted = isDeepStrictEqual(outcome, predicted[index]);
        // A command that goes second meets the intent as the other command left it.
        const afterOther = outcomeAfter(
          [cmd.first, cmd.second][index] as Single,
          requests[index] as Request,
          [cmd.first, cmd.second][1 - index] as Single,
          outcomes[1 - index] as Outcome,
        );
        assert.ok(
          asPredicted || isDeepStrictEqual(outcome, afterOther) || (outcome[0] >= 400 && outcome[0] < 500),
          `${where}: ${JSON.stringify(outcome)} is neither predicted nor a refusal`,
        );
      }
      assert.ok(
        outcomes.some((outcome, index) => isDeepStrictEqual(outcome, predicted[index])),
        `${where}: one of the racing commands went first and answers as predicted: ${JSON.stringify({ outcomes, predicted })}`,
      );
    } else {
      const request = requestFor(cmd, intents);
      const outcome = await send(cmd, request, where);
      const expected = expectedOutcome(cmd, request);
      assert.deepEqual(outcome, expected, `${where}: ${JSON.stringify(sent.at(-1)?.response)}`);
      if (expected[1] === 'processing' || expected[1] === 'pending') await settleAfterOutage(cmd, request, where);
    }

    // Kept in the order first seen, so a command's target does not move when ids tie on time.
    const listed = new Map((await listAll<ApiIntent>('/v1/payment_intents?limit=100')).map((intent) => [intent.id, intent]));
    const known = intents.map((intent) => listed.get(intent.id));
    assert.ok(
      known.every((intent) => intent !== undefined),
      `${where}: intents never disappear`,
    );
    intents = [...(known as ApiIntent[]), ...[...listed.values()].filter((intent) => !intents.some((k) => k.id === intent.id))];
    for (const intent of intents) {
      observe(intent.id, intent.status, `after ${where}`);
      assert.notEqual(
        intent.status,
        'processing',
        `${where}: ${intent.id} left processing with a provider that answers or refuses at once`,
      );
    }
    assert.deepEqual(run.problems, [], where);
  }
  await checkTotals(merchant.id, intents, await listAll<ApiRefund>('/v1/refunds?limit=100'), await get('/v1/balance'));
}

/** The audit, the balance, the intents, the refunds and the provider's charges agree. */
async function checkTotals(merchantId: string, intents: ApiIntent[], refunds: ApiRefund[], balance: { available: unknown }) {
  // This run's own merchant only, so that a failing run shrinks to itself (earlier runs were
  // checked when they ran, and the whole database is checked once more at the end).
  const violations = (await audit(pool)).violations.filter((violation) => violation.merchant_id === merchantId);
  assert.deepEqual(violations, []);

  const expected = new Map<string, number>();
  const add = (currency: string, amount: number) => expected.set(currency, (expected.get(currency) ?? 0) + amount);
  for (const intent of intents) add(intent.currency, intent.amount_received);
  for (const refund of refunds) if (refund.status === 'succeeded') add(refund.currency, -refund.amount);
  const nonZero = (entries: Array<[string, number]>) => entries.filter(([, amount]) => amount !== 0).sort();
  const available = (balance.available as Array<{ currency: string; amount: number }>).map((b): [string, number] => [b.currency, b.amount]);
  assert.deepEqual(nonZero(available), nonZero([...expected]), 'balance = received − succeeded refunds, per currency');

  const { rows } = await pool.query<{ id: string; provider_reference: string | null }>(
    'select id, provider_reference from payment_intents where merchant_id = $1',
    [merchantId],
  );
  const references = new Map(rows.map((row) => [row.id, row.provider_reference]));
  for (const intent of intents) {
    const total = (statuses: string[]) =>
      refunds.filter((r) => r.payment_intent === intent.id && statuses.includes(r.status)).reduce((sum, r) => sum + r.amount, 0);
    const refunded = total(['succeeded']);
    assert.equal(
      intent.amount_refunded,
      total(['pending', 'succeeded']),
      `${intent.id}: amount_refunded is its pending and succeeded refunds`,
    );
    const reference = references.get(intent.id);
    const charge = reference ? sim.simulator.charges.get(reference) : undefined;
    const seen = { status: intent.status, charge: charge && [charge.status, charge.amount_captured, charge.amount_refunded] };
    switch (intent.status) {
      case 'succeeded':
        assert.deepEqual(seen, { status: intent.status, charge: ['captured', intent.amount_received, refunded] }, intent.id);
        break;
      case 'requires_capture':
        assert.deepEqual(seen, { status: intent.status, charge: ['authorized', 0, 0] }, intent.id);
        assert.equal(charge?.amount, intent.amount_capturable);
        break;
      case 'canceled':
        // Canceled after an authorization, the provider released it; canceled before, there is no charge.
        if (charge) assert.equal(charge.status, 'canceled', intent.id);
        break;
      default:
        assert.equal(charge, undefined, `${intent.id} is ${intent.status} yet has a charge at the provider`);
    }
  }
}

describe('payment API properties', () => {
  test(`random call sequences, races and outages keep every invariant (FC_RUNS, default ${RUNS}, of up to ${STEPS_MAX} steps)`, async () => {
    await assertProperty('payment API', fc.asyncProperty(sequence, runSequence), RUNS);
  });

  test('after all the runs, the audit finds nothing anywhere', async () => {
    assert.deepEqual((await audit(pool)).violations, []);
  });

  test('the observer can tell an illegal transition', () => {
    // The property above is only as good as this check: make sure it objects when it should.
    run = { histories: new Map(), problems: [] };
    observe('pi_a', 'requires_confirmation', 'test');
    observe('pi_a', 'processing', 'test');
    observe('pi_a', 'succeeded', 'test');
    assert.deepEqual(run.problems, []);
    observe('pi_a', 'requires_capture', 'test');
    observe('pi_b', 'succeeded', 'test');
    assert.equal(run.problems.length, 2, run.problems.join('\n'));
  });
});
