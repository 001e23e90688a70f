/**
 * The provider simulator's HTTP API (the routes a card acquirer offers), over the state and
 * rules of server.ts: configured latency and error rate first, then charges, captures,
 * cancels, refunds and card tokens.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { type ProviderSimulator, sleep } from './server.js';

const amountBody = {
  type: 'object',
  required: ['amount'],
  properties: { amount: { type: 'integer', minimum: 1 } },
} as const;

export function buildSimulatorApp(simulator: ProviderSimulator): FastifyInstance {
  const app = Fastify({ logger: false });

  app.addHook('onRequest', async (request, reply) => {
    if (simulator.latencyMs > 0) await sleep(simulator.latencyMs);
    if (request.method === 'POST' && simulator.errorRate > 0 && Math.random() < simulator.errorRate) {
      return reply.code(503).send({ error: { code: 'simulated_outage', message: 'Simulated provider error.' } });
    }
  });
  app.addHook('onClose', async () => simulator.releaseHeld());

  const keyOf = (headers: Record<string, unknown>): string | undefined => {
    const key = headers['idempotency-key'];
    return typeof key === 'string' && key.length > 0 ? key : undefined;
  };

  app.post<{ Body: { amount: number; currency: string; payment_method: string; capture: boolean } }>(
    '/v1/charges',
    {
      schema: {
        body: {
          type: 'object',
          required: ['amount', 'currency', 'payment_method', 'capture'],
          properties: {
            amount: { type: 'integer', minimum: 1 },
            currency: { type: 'string', pattern: '^[a-z]{3}$' },
            payment_method: { type: 'string' },
            capture: { type: 'boolean' },
          },
        },
      },
    },
    async (request, reply) => {
      const key = keyOf(request.headers);
      if (!key) return reply.code(400).send({ error: { code: 'idempotency_key_required', message: 'Idempotency-Key is required.' } });
      const response = await simulator.once(key, () => {
        const result = simulator.createCharge(key, request.body);
        simulator.notify(key, 'charge', result);
        return result;
      });
      if ((simulator.tokens.get(request.body.payment_method) ?? request.body.payment_method) === 'pm_card_timeout') await simulator.hold();
      return reply.code(response.status).send(response.body);
    },
  );

  for (const action of ['capture', 'cancel', 'refunds'] as const) {
    app.post<{ Params: { id: string }; Body: { amount?: number } }>(
      `/v1/charges/:id/${action}`,
      { schema: action === 'cancel' ? {} : { body: amountBody } },
      async (request, reply) => {
        const key = keyOf(request.headers);
        if (!key) return reply.code(400).send({ error: { code: 'idempotency_key_required', message: 'Idempotency-Key is required.' } });
        const { id } = request.params;
        const amount = request.body?.amount ?? 0;
        const response = await simulator.once(key, () => {
          const result =
            action === 'capture'
              ? simulator.capture(id, amount)
              : action === 'cancel'
                ? simulator.cancel(id)
                : simulator.refund(id, amount);
          simulator.notify(key, action === 'refunds' ? 'refund' : `charge.${action}`, result);
          return result;
        });
        if (action === 'refunds' && simulator.holdsRefundsOf(id)) await simulator.hold();
        return reply.code(response.status).send(response.body);
      },
    );
  }

  // Tokenization is called by buyers' browsers from the merchant's page (another origin), like a
  // real provider's hosted fields: it answers cross-origin requests, and needs no key.
  app.options('/v1/tokens', async (_request, reply) =>
    reply
      .code(204)
      .header('access-control-allow-origin', '*')
      .header('access-control-allow-methods', 'POST')
      .header('access-control-allow-headers', 'content-type')
      .header('access-control-max-age', '600')
      .send(),
  );
  app.post<{ Body: { card: { number: string; exp_month: number; exp_year: number; cvc: string } } }>(
    '/v1/tokens',
    {
      schema: {
        body: {
          type: 'object',
          required: ['card'],
          properties: {
            card: {
              type: 'object',
              required: ['number', 'exp_month', 'exp_year', 'cvc'],
              properties: {
                number: { type: 'string', minLength: 12, maxLength: 30 },
                exp_month: { type: 'integer', minimum: 1, maximum: 12 },
                exp_year: { type: 'integer', minimum: 2000, maximum: 2100 },
                cvc: { type: 'string', pattern: '^[0-9]{3,4}$' },
              },
            },
          },
        },
      },
      // A bad request's message must not echo the card back.
      errorHandler: (_error, _request, reply) =>
        reply
          .code(400)
          .header('access-control-allow-origin', '*')
          .send({ error: { code: 'card_invalid', message: 'Give number, exp_month (1-12), exp_year and a 3 or 4 digit cvc.' } }),
    },
    async (request, reply) => {
      const response = simulator.tokenize(request.body.card);
      return reply.code(response.status).header('access-control-allow-origin', '*').send(response.body);
    },
  );

  app.get<{ Params: { key: string } }>('/v1/operations/:key', async (request, reply) => {
    const stored = simulator.operations.get(request.params.key);
    if (!stored) return reply.code(404).send({ error: { code: 'resource_missing', message: 'No operation with that key.' } });
    const response = await stored;
    return { status: response.status, body: response.body };
  });

  app.get('/healthz', async () => ({ ok: true }));
  return app;
}
