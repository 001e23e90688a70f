/**
 * Orders: a hold turned into an order with its PaymentIntent, and, when the request says
 * `confirm: true` with a `payment_method`, that payment confirmed in the same request, as
 * Stripe's `confirm: true` does for a PaymentIntent. A buyer's checkout is then two requests
 * (hold, order) instead of three, and in a surge an order batch also writes the confirm's
 * first phase (order-batches.ts), so the confirm batcher's start is not needed for it.
 *
 * An order that confirms runs under two keys: the request's own, which stores the order as
 * created, and the confirm's, derived from it (see confirmContext), which goes through the
 * payments' confirm exactly as `POST /v1/payment_intents/:id/confirm` would. Each part is
 * idempotent, so a retry of the order replays the order, then replays the confirm's answer or
 * resumes it where a crash left it (the provider call again under the same provider key).
 * The answer is put together from the two, the same way on every replay.
 */
import type { PaymentDeps } from '../payments/service.js';
import * as payments from '../payments/service.js';
import { createIntentInTransaction } from '../payments/service.js';
import type { Pool } from '../platform/db/pool.js';
import type { RequestContext } from '../platform/http/context.js';
import { ApiError } from '../platform/http/errors.js';
import { page } from '../platform/http/pagination.js';
import { errorReply, ok, type Reply } from '../platform/http/reply.js';
import { fingerprint, type IdempotencyOptions, singlePhase } from '../platform/idempotency/service.js';
import { newId } from '../platform/ids.js';
import type { OrderCreationBatcher, StartedConfirm } from './order-batches.js';
import * as sql from './sql.js';

/** What orders need of the sales capability's dependencies (service.ts's SalesDeps extends it). */
export interface OrderDeps {
  pool: Pool;
  idempotency: IdempotencyOptions;
  /** Writes concurrent orders together; absent: every order is its own transaction. */
  orderBatcher?: OrderCreationBatcher;
  /** For orders that confirm their payment; the app always gives them. */
  payments?: PaymentDeps;
}

export interface OrderParams {
  hold: string;
  payment_method?: string;
  confirm?: boolean;
}

/** What an order's answer carries besides the order itself. */
type OrderBody = ReturnType<typeof toApiOrder> & { payment_intent_object?: unknown };

/**
 * The context of the confirm an order runs for its request: a key derived from the order's (a
 * space cannot be in a client's key, so it never meets one), and the fingerprint of the
 * confirm it stands for. The same order request always derives the same context.
 */
export function confirmContext(order: RequestContext, intentId: string, paymentMethod: string): RequestContext {
  const path = `/v1/payment_intents/${intentId}/confirm`;
  return {
    merchantId: order.merchantId,
    keyKind: order.keyKind,
    idempotencyKey: `${order.idempotencyKey} confirm`,
    method: 'POST',
    path,
    fingerprint: fingerprint('POST', path, { payment_method: paymentMethod }),
  };
}

export async function createOrder(deps: OrderDeps, ctx: RequestContext, params: OrderParams): Promise<Reply> {
  const paymentMethod = params.confirm ? params.payment_method : undefined;
  if (params.confirm && !paymentMethod) {
    return errorReply(new ApiError('parameter_missing', 'payment_method is required when confirm is true.', 'payment_method'));
  }
  if (!params.confirm && params.payment_method !== undefined) {
    return errorReply(
      new ApiError(
        'parameter_invalid',
        "payment_method is used only with confirm: true; to pay later, confirm the order's PaymentIntent.",
        'payment_method',
      ),
    );
  }
  const paying = paymentMethod === undefined ? undefined : { deps: paymentDeps(deps), method: paymentMethod };
  if (deps.orderBatcher) {
    const outcome = await deps.orderBatcher.submit({
      merchantId: ctx.merchantId,
      keyKind: ctx.keyKind,
      key: ctx.idempotencyKey,
      fingerprint: ctx.fingerprint,
      method: ctx.method,
      path: ctx.path,
      holdId: params.hold,
      confirm: paying && { paymentMethod: paying.method, context: (intentId) => confirmContext(ctx, intentId, paying.method) },
    });
    if (outcome.kind === 'created') {
      return paying ? confirmOrder(deps, paying.deps, ctx, outcome.body as OrderBody, paying.method, outcome.confirm) : ok(outcome.body);
    }
  }
  // Alone: no batcher, or the batch left this request to the path that answers every case.
  const reply = await createOrderAlone(deps, ctx, params.hold);
  if (!paying || reply.status !== 200) return reply;
  return confirmOrder(deps, paying.deps, ctx, reply.body as OrderBody, paying.method);
}

function paymentDeps(deps: OrderDeps): PaymentDeps {
  // The app always wires payments in; only a unit test's sales alone lacks them.
  if (!deps.payments) throw new Error('orders that confirm need the payments capability (SalesDeps.payments)');
  return deps.payments;
}

/**
 * Confirms the order's payment under the derived key, and answers with the order and the
 * payment as confirmed. A refusal (a declined card, an unavailable provider) is the confirm's
 * own answer: its error names the PaymentIntent, which the buyer confirms again to retry.
 */
async function confirmOrder(
  deps: OrderDeps,
  paying: PaymentDeps,
  ctx: RequestContext,
  order: OrderBody,
  paymentMethod: string,
  started?: StartedConfirm,
): Promise<Reply> {
  // Already paid (an earlier request paid this hold's order): nothing is left to confirm.
  if (order.status === 'paid') return ok(order);
  const confirmed = started
    ? await payments.continueStartedConfirm(paying, started.context, started.started)
    : await payments.confirmPaymentIntent(paying, confirmContext(ctx, order.payment_intent, paymentMethod), order.payment_intent, {
        payment_method: paymentMethod,
      });
  if (confirmed.status !== 200) return confirmed;
  const intent = confirmed.body as { status: string };
  // A payment that succeeded paid its order in the same transaction; the order's row gives its
  // paid_at, which never changes after, so a replay reads the same answer.
  const paid =
    intent.status !== 'succeeded'
      ? undefined
      : deps.orderBatcher
        ? await deps.orderBatcher.read(ctx.merchantId, order.id)
        : await sql.selectOrder(deps.pool, ctx.merchantId, order.id);
  const { payment_intent_object: _created, ...asCreated } = order;
  return ok({ ...(paid ? toApiOrder(paid) : asCreated), payment_intent_object: intent });
}

/** One order in its own transaction, answering every case (a missing hold, one that ended, an order that exists). */
function createOrderAlone(deps: OrderDeps, ctx: RequestContext, holdId: string): Promise<Reply> {
  return singlePhase(deps, ctx, async (client) => {
    const hold = await sql.selectHold(client, ctx.merchantId, holdId, true);
    if (!hold) return errorReply(new ApiError('resource_missing', `No such hold: '${holdId}'`, 'hold'));
    const existing = await sql.selectOrderByHold(client, ctx.merchantId, hold.id);
    if (existing) return ok(toApiOrder(existing));
    if (hold.status !== 'active' || hold.expires_at <= new Date()) {
      return errorReply(new ApiError('hold_not_active', 'This hold has ended; place a new hold.', 'hold'));
    }
    const orderId = newId('ord');
    const intent = await createIntentInTransaction(client, ctx.merchantId, {
      amount: hold.amount,
      currency: hold.currency,
      description: `Order ${orderId}`,
      metadata: { order_id: orderId, hold_id: hold.id, sale_id: hold.sale_id },
    });
    const order = await sql.insertOrder(client, sql.orderOfHold(hold, orderId, intent.id, new Date()));
    return ok({ ...toApiOrder(order), payment_intent_object: intent });
  });
}

export function toApiOrder(order: sql.OrderRow) {
  return {
    id: order.id,
    object: 'order' as const,
    sale: order.sale_id,
    hold: order.hold_id,
    payment_intent: order.payment_intent_id,
    amount: order.amount,
    currency: order.currency,
    status: order.status,
    paid_at: order.paid_at ? Math.floor(order.paid_at.getTime() / 1000) : null,
    created: Math.floor(order.created_at.getTime() / 1000),
  };
}

export async function retrieveOrder(pool: Pool, merchantId: string, id: string) {
  const order = await sql.selectOrder(pool, merchantId, id);
  return order ? toApiOrder(order) : undefined;
}

export async function listOrders(pool: Pool, query: { merchantId: string; limit: number; startingAfter?: string; saleId?: string }) {
  const orders = await sql.selectOrders(pool, { ...query, limit: query.limit + 1 });
  return page(orders.map(toApiOrder), query.limit, '/v1/orders');
}
