/**
 * A sale driven through the API as buyers and a merchant drive it: create a sale, join its
 * waiting room, hold, order and pay. For tests that need real orders (reports, faults).
 */
import assert from 'node:assert/strict';
import type { HttpServer } from '../src/platform/http/server.js';
import { key, type TestMerchant } from './helpers.js';

export interface SaleFlow {
  createSale(items: Array<{ name: string; price: number; stock: number }>, currency?: string): Promise<{ id: string; itemIds: string[] }>;
  /** Admits and holds `lines`; yields the hold's id. */
  hold(saleId: string, buyer: string, lines: Array<{ item: string; quantity: number }>): Promise<string>;
  /** Admits, holds `lines` and orders; pays with pm_card_visa unless `pay` is false. */
  buy(
    saleId: string,
    buyer: string,
    lines: Array<{ item: string; quantity: number }>,
    pay?: boolean,
  ): Promise<{ holdId: string; orderId: string; intentId: string }>;
}

export function saleFlow(app: HttpServer, merchant: TestMerchant): SaleFlow {
  const secret = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${merchant.secretKey}`, ...extra });
  const publishable = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${merchant.publishableKey}`, ...extra });
  const post = async (url: string, headers: Record<string, string>, payload: unknown) => {
    const response = await app.inject({ method: 'POST', url, headers, payload: payload as Record<string, unknown> });
    assert.equal(response.statusCode, 200, `${url}: ${response.body}`);
    return response.json();
  };
  return {
    async createSale(items, currency = 'usd') {
      const sale = await post('/v1/sales', secret({ 'idempotency-key': key('sale') }), {
        name: 'Report release',
        currency,
        opens_at: new Date(Date.now() - 60_000).toISOString(),
        per_buyer_limit: 10,
        hold_seconds: 600,
        max_shoppers: 100_000,
        admit_per_second: 10_000,
        items,
      });
      return { id: sale.id, itemIds: sale.items.map((item: { id: string }) => item.id) };
    },
    async hold(saleId, buyer, lines) {
      const joined = await post(`/v1/sales/${saleId}/queue`, publishable(), { buyer_reference: buyer });
      assert.equal(joined.status, 'admitted', JSON.stringify(joined));
      const hold = await post('/v1/holds', publishable({ 'idempotency-key': key('hold') }), {
        sale: saleId,
        buyer_reference: buyer,
        admission_token: joined.admission_token,
        items: lines,
      });
      return hold.id;
    },
    async buy(saleId, buyer, lines, pay = true) {
      const holdId = await this.hold(saleId, buyer, lines);
      const order = await post('/v1/orders', secret({ 'idempotency-key': key('order') }), { hold: holdId });
      if (pay) {
        await post(`/v1/payment_intents/${order.payment_intent}/confirm`, secret({ 'idempotency-key': key('confirm') }), {
          payment_method: 'pm_card_visa',
        });
      }
      return { holdId, orderId: order.id, intentId: order.payment_intent };
    },
  };
}
