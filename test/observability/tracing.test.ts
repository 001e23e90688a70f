/**
 * Traces end to end: a `floodgate start` with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a
 * receiver in this test exports one trace per payment request: the HTTP server span, its SQL
 * statements and its provider call as children, and the webhook job it enqueued running as a
 * consumer span in the same trace (the context travelled in the job's payload), with the job's
 * own SQL under it and a span per delivery. Logs of the request carry the trace id.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { createTestDatabase, key } from '../helpers.js';
import { startFloodgate } from '../processes.js';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Array<{ key: string; value: { stringValue?: string; intValue?: string | number } }>;
}
const KIND = { server: 2, client: 3, consumer: 5 } as const;

function attribute(span: OtlpSpan, name: string): string | number | undefined {
  const found = span.attributes.find((a) => a.key === name)?.value;
  return found?.stringValue ?? (found?.intValue === undefined ? undefined : Number(found.intValue));
}

async function startReceiver() {
  const spans: OtlpSpan[] = [];
  let hooks = 0;
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      if (request.url === '/v1/traces') {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          resourceSpans: Array<{ scopeSpans: Array<{ spans: OtlpSpan[] }> }>;
        };
        for (const resource of body.resourceSpans) for (const scope of resource.scopeSpans) spans.push(...scope.spans);
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } else {
        hooks += 1;
        response.writeHead(200).end('ok');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const address = server.address() as { port: number };
  return { url: `http://127.0.0.1:${address.port}`, spans, hooks: () => hooks };
}

test('one trace from the HTTP request through its SQL, the provider call and the job it enqueued', async () => {
  const receiver = await startReceiver();
  const { url: databaseUrl } = await createTestDatabase();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'floodgate-trace-'));
  after(() => rm(dataDir, { recursive: true, force: true }));
  const floodgate = await startFloodgate('start', {
    DATABASE_URL: databaseUrl,
    FLOODGATE_DATA_DIR: dataDir,
    FLOODGATE_WEBHOOK_ALLOW_PRIVATE: '1',
    FLOODGATE_LOG_LEVEL: 'debug',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '100',
  });
  const demo = JSON.parse(await readFile(path.join(dataDir, 'demo-merchant.json'), 'utf8')) as { secret_key: string };
  const headers = { authorization: `Bearer ${demo.secret_key}`, 'content-type': 'application/json' };
  const endpoint = await fetch(`${floodgate.url}/v1/webhook_endpoints`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ url: `${receiver.url}/hook`, enabled_events: ['payment_intent.succeeded'] }),
  });
  assert.equal(endpoint.status, 200, await endpoint.text());
  const paid = await fetch(`${floodgate.url}/v1/payment_intents`, {
    method: 'POST',
    headers: { ...headers, 'idempotency-key': key() },
    body: JSON.stringify({ amount: 1500, currency: 'usd', payment_method: 'pm_card_visa', confirm: true }),
  });
  assert.equal(paid.status, 200);

  // Wait for the request's span and the webhook job's run to be exported.
  let server: OtlpSpan | undefined;
  let consumer: OtlpSpan | undefined;
  let delivery: OtlpSpan | undefined;
  for (let tries = 0; tries < 300 && !(server && consumer && delivery); tries += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    server = receiver.spans.find((span) => span.kind === KIND.server && span.name === 'POST /v1/payment_intents');
    consumer = receiver.spans.find(
      (span) => span.kind === KIND.consumer && span.name === 'process deliver_webhooks' && span.traceId === server?.traceId,
    );
    delivery = receiver.spans.find((span) => span.name === 'process deliver_webhook' && span.parentSpanId === consumer?.spanId);
  }
  assert.ok(server, `no server span; got ${receiver.spans.map((s) => s.name).join(', ')}`);
  assert.ok(
    consumer,
    `no deliver_webhooks span in the request's trace; got ${receiver.spans.map((s) => `${s.name}@${s.traceId}`).join(', ')}`,
  );
  assert.ok(delivery, `no span of the delivery under the batch's; got ${receiver.spans.map((s) => s.name).join(', ')}`);
  assert.equal(attribute(server, 'http.request.method'), 'POST');
  assert.equal(attribute(server, 'http.route'), '/v1/payment_intents');
  assert.equal(attribute(server, 'http.response.status_code'), 200);

  const children = receiver.spans.filter((span) => span.parentSpanId === server.spanId);
  const sql = children.filter((span) => attribute(span, 'db.system.name') === 'postgresql');
  assert.ok(sql.length >= 3, `SQL spans under the request: ${sql.length}`);
  assert.ok(sql.every((span) => span.kind === KIND.client && String(attribute(span, 'db.query.text')).length > 0));
  assert.ok(!sql.some((span) => String(attribute(span, 'db.query.text')).includes(demo.secret_key)), 'statement text only, never values');
  const provider = children.find((span) => span.kind === KIND.client && String(attribute(span, 'url.full')).endsWith('/v1/charges'));
  assert.ok(provider, `no provider span under the request; children: ${children.map((s) => s.name).join(', ')}`);
  assert.equal(attribute(provider, 'http.request.method'), 'POST');
  assert.equal(attribute(provider, 'http.response.status_code'), 200);

  // The batch job continues the request's trace, with its own SQL beneath it; the delivery has
  // the span a deliver_webhook job has, beneath the batch's.
  assert.equal(consumer.parentSpanId, server.spanId);
  assert.equal(attribute(consumer, 'messaging.destination.name'), 'deliver_webhooks');
  assert.ok(receiver.spans.some((span) => span.parentSpanId === consumer.spanId && attribute(span, 'db.system.name') === 'postgresql'));
  assert.equal(delivery.kind, KIND.consumer);
  assert.equal(attribute(delivery, 'messaging.destination.name'), 'deliver_webhook');
  assert.match(String(attribute(delivery, 'floodgate.webhook_delivery.id')), /^wd_/);

  // The request's log lines carry its trace id.
  const traced = floodgate.output.some(
    (line) => line.includes(`"trace_id":"${server.traceId}"`) && line.includes('"route":"/v1/payment_intents"'),
  );
  assert.ok(traced, 'a log line of the request carries its trace id');
});
