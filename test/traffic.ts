/**
 * A little of every kind of traffic against a running Floodgate, so that its metrics have
 * series to show: payments (succeeded, declined), a refund, a sale with its waiting room, a hold
 * and an order paid, a webhook endpoint, and a few errors.
 */
import { randomBytes } from 'node:crypto';

export interface TrafficKeys {
  secretKey: string;
  publishableKey: string;
}

async function call(base: string, key: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json', 'idempotency-key': randomBytes(8).toString('hex') }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** One round of traffic; returns the ids it made. Throws when something a round needs fails. */
export async function generateTraffic(base: string, keys: TrafficKeys): Promise<{ paymentId: string; saleId: string }> {
  const sk = keys.secretKey;
  const paid = await call(base, sk, 'POST', '/v1/payment_intents', {
    amount: 1200,
    currency: 'usd',
    payment_method: 'pm_card_visa',
    confirm: true,
  });
  if (paid.status !== 200) throw new Error(`payment: ${paid.status} ${JSON.stringify(paid.body)}`);
  await call(base, sk, 'POST', '/v1/payment_intents', { amount: 900, currency: 'usd', payment_method: 'pm_card_declined', confirm: true });
  await call(base, sk, 'POST', '/v1/refunds', { payment_intent: paid.body.id, amount: 200 });
  await call(base, sk, 'GET', '/v1/payment_intents?limit=5');
  await call(base, sk, 'GET', '/v1/balance');
  await call(base, 'sk_test_wrong', 'GET', '/v1/balance');
  await call(base, sk, 'GET', '/v1/payment_intents/pi_missing');
  const sale = await call(base, sk, 'POST', '/v1/sales', {
    name: 'Metrics sale',
    currency: 'usd',
    opens_at: new Date(Date.now() - 1000).toISOString(),
    items: [{ name: 'Ticket', price: 500, stock: 50 }],
  });
  if (sale.status !== 200) throw new Error(`sale: ${sale.status} ${JSON.stringify(sale.body)}`);
  const saleId = sale.body.id as string;
  const itemId = (sale.body.items as Array<{ id: string }>)[0]?.id;
  const pk = keys.publishableKey;
  await call(base, pk, 'GET', `/v1/sales/${saleId}`);
  const buyer = `buyer_${randomBytes(6).toString('hex')}`;
  let ticket = await call(base, pk, 'POST', `/v1/sales/${saleId}/queue`, { buyer_reference: buyer });
  for (let polls = 0; ticket.body.status === 'waiting' && polls < 20; polls += 1) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    ticket = await call(base, pk, 'GET', `/v1/sales/${saleId}/queue/${ticket.body.ticket}`);
  }
  if (ticket.body.status !== 'admitted') throw new Error(`queue: ${JSON.stringify(ticket.body)}`);
  const hold = await call(base, pk, 'POST', '/v1/holds', {
    sale: saleId,
    buyer_reference: buyer,
    admission_token: ticket.body.admission_token,
    items: [{ item: itemId, quantity: 1 }],
  });
  if (hold.status !== 200) throw new Error(`hold: ${hold.status} ${JSON.stringify(hold.body)}`);
  const order = await call(base, sk, 'POST', '/v1/orders', { hold: hold.body.id });
  if (order.status !== 200) throw new Error(`order: ${order.status} ${JSON.stringify(order.body)}`);
  await call(base, sk, 'POST', `/v1/payment_intents/${order.body.payment_intent}/confirm`, { payment_method: 'pm_card_visa' });
  return { paymentId: paid.body.id as string, saleId };
}
