/**
 * One buyer's journey through a sale, as a buyer's page would walk it: join the line, poll
 * when Retry-After says, hold when admitted, order, pay (sometimes with a card that is declined
 * or whose answer times out, then with another), and sometimes walk away.
 */
import { randomBytes } from 'node:crypto';
import { FRONT_POLL_MS_MIN } from '../admission/service.js';
import { type DrillClient, type RequestRecord, sleep } from './client.js';

export type BuyerOutcome =
  | 'paid'
  | 'payment_pending'
  | 'declined'
  | 'sold_out'
  | 'abandoned_in_line'
  | 'abandoned_hold'
  | 'closed'
  | 'gave_up'
  | 'failed';

export interface BuyerResult {
  buyer: string;
  phase: RequestRecord['phase'];
  arrivedMs: number;
  admittedMs?: number;
  heldMs?: number;
  paidMs?: number;
  /** Time in line: from joining to admission. */
  waitMs?: number;
  /** Latency of the hold request and of the payment (order plus confirms). */
  holdLatencyMs?: number;
  paymentLatencyMs?: number;
  outcome: BuyerOutcome;
  /** The code of the request that ended the journey, for failed ones. */
  failure?: string;
  paymentIntents: string[];
  rejoins: number;
}

export interface BuyerPlan {
  saleId: string;
  itemId: string;
  /** The key the buyer's page uses (publishable, or the secret key on a merchant's server). */
  buyerKey: string;
  secretKey: string;
  phase: RequestRecord['phase'];
  /** Milliseconds since the drill started after which a buyer still in line gives up. */
  deadlineMs: number;
  /** Uniform random numbers drive every choice, so tests can pass their own. */
  random: () => number;
  abandonShare: number;
  /** Called once when the buyer leaves the line admitted (for the live count of buyers in line). */
  onAdmitted?: () => void;
}

/** The cards buyers pay with: most succeed; some are declined (and retry with another card), some time out. */
export function chooseCard(roll: number): 'pm_card_visa' | 'pm_card_declined' | 'pm_card_insufficient_funds' | 'pm_card_timeout' {
  if (roll < 0.8) return 'pm_card_visa';
  if (roll < 0.88) return 'pm_card_declined';
  if (roll < 0.92) return 'pm_card_insufficient_funds';
  return 'pm_card_timeout';
}

// Never sooner than the server tells the front of its line.
const POLL_INTERVAL_MIN_MS = FRONT_POLL_MS_MIN;

export async function runBuyer(client: DrillClient, plan: BuyerPlan): Promise<BuyerResult> {
  const buyer = `drill_${randomBytes(9).toString('base64url')}`;
  const result: BuyerResult = { buyer, phase: plan.phase, arrivedMs: client.now(), outcome: 'failed', paymentIntents: [], rejoins: 0 };
  const common = { key: plan.buyerKey, phase: plan.phase };
  // In line, a refused join or poll is tried again at Retry-After until the buyer gives up.
  const inLine = { ...common, retryUntilMs: plan.deadlineMs };
  const end = (outcome: BuyerOutcome, failure?: string) => {
    result.outcome = outcome;
    if (failure) result.failure = failure;
    return result;
  };
  const failureOf = (answer: { status: number; body: Record<string, unknown> }) =>
    (answer.body.error as { code?: string } | undefined)?.code ?? (answer.status === 0 ? 'no_answer' : `http_${answer.status}`);

  // --- The line.
  const joinPath = `/v1/sales/${plan.saleId}/queue`;
  let ticket = await client.send('join', 'POST', joinPath, { ...inLine, body: { buyer_reference: buyer } });
  while (ticket.status === 200 && ticket.body.status === 'waiting') {
    if (client.now() > plan.deadlineMs) return end('gave_up');
    // As the hosted page does: the body's milliseconds when given, else Retry-After's seconds.
    const retryAfterMs =
      typeof ticket.body.retry_after_ms === 'number' ? ticket.body.retry_after_ms : (ticket.retryAfterSeconds ?? 1) * 1000;
    await sleep(Math.max(POLL_INTERVAL_MIN_MS, retryAfterMs));
    const polled = await client.send('poll', 'GET', `${joinPath}/${ticket.body.ticket}`, inLine);
    if (polled.status === 404) {
      // Our place was lost (a poll came too late): join again, at the back.
      result.rejoins += 1;
      ticket = await client.send('join', 'POST', joinPath, { ...inLine, body: { buyer_reference: buyer } });
    } else ticket = polled;
  }
  if (ticket.status !== 200) return end(client.now() > plan.deadlineMs ? 'gave_up' : 'failed', failureOf(ticket));
  if (ticket.body.status === 'sold_out') return end('sold_out');
  if (ticket.body.status === 'closed') return end('closed');
  result.admittedMs = client.now();
  plan.onAdmitted?.();
  result.waitMs = result.admittedMs - result.arrivedMs;
  if (plan.random() < plan.abandonShare / 2) return end('abandoned_in_line');

  // --- The hold.
  const admitted = { ...common, admitted: true };
  const holdStarted = client.now();
  const hold = await client.send('hold', 'POST', '/v1/holds', {
    ...admitted,
    idempotencyKey: `${buyer}_hold`,
    body: {
      sale: plan.saleId,
      buyer_reference: buyer,
      admission_token: ticket.body.admission_token,
      items: [{ item: plan.itemId, quantity: 1 }],
    },
  });
  result.holdLatencyMs = client.now() - holdStarted;
  if (hold.status === 409 && failureOf(hold) === 'sold_out') return end('sold_out');
  if (hold.status !== 200) return end('failed', failureOf(hold));
  result.heldMs = client.now();
  const holdId = hold.body.id as string;
  if (plan.random() < plan.abandonShare / 2) {
    // Half release their hold, half just leave and let it expire.
    if (plan.random() < 0.5) await client.send('release', 'DELETE', `/v1/holds/${holdId}`, admitted);
    return end('abandoned_hold');
  }

  // --- The order and its payment, with the merchant's server holding the secret key.
  const merchant = { key: plan.secretKey, phase: plan.phase, admitted: true };
  const payStarted = client.now();
  const order = await client.send('order', 'POST', '/v1/orders', { ...merchant, idempotencyKey: `${buyer}_order`, body: { hold: holdId } });
  if (order.status !== 200) return end('failed', failureOf(order));
  const intent = order.body.payment_intent as string;
  result.paymentIntents.push(intent);
  const card = chooseCard(plan.random());
  const cards = card === 'pm_card_declined' ? [card, 'pm_card_visa'] : [card];
  for (const [attempt, paymentMethod] of cards.entries()) {
    const confirm = await client.send('confirm', 'POST', `/v1/payment_intents/${intent}/confirm`, {
      // A deliberately slow card is left out of the latency comparison: it measures the timeout.
      ...merchant,
      admitted: paymentMethod !== 'pm_card_timeout',
      idempotencyKey: `${buyer}_confirm_${attempt}`,
      body: { payment_method: paymentMethod },
    });
    result.paymentLatencyMs = client.now() - payStarted;
    const status = confirm.body.status;
    if (confirm.status === 200 && status === 'succeeded') {
      result.paidMs = client.now();
      return end('paid');
    }
    if (confirm.status === 200 && status === 'processing') return end('payment_pending');
    if (confirm.status === 402) continue;
    return end('failed', failureOf(confirm));
  }
  return end('declined');
}
