/**
 * The HTTP client a webhook delivery and a provider call go out through: CPU per POST of a
 * delivery's size, node:http's keep-alive agent against undici's dispatcher (what
 * src/webhooks/transport.ts and src/providers/http-provider.ts use), to the bench's own
 * receiver in its own process, alternated in the same run:
 *
 *   npm run bench:http-clients [-- --requests 20000 --rounds 3]
 *
 * It prints each round's CPU per request (this process only: user + system, so the kernel's
 * loopback work for the request counts too) and the ratio undici ÷ node:http, median of the
 * rounds' own ratios. Both keep 16 connections and the same requests in flight.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { Agent } from 'undici';
import { Receiver } from './receiver.js';
import { median, round } from './stats.js';

const { values } = parseArgs({ options: { requests: { type: 'string' }, rounds: { type: 'string' } } });
const REQUESTS = Number(values.requests ?? 20_000);
const ROUNDS = Number(values.rounds ?? 3);
const CONNECTIONS = 16;
const IN_FLIGHT = [16, 100];

// A payment_intent.succeeded event's size, with a webhook's headers.
const body = JSON.stringify({
  id: 'evt_0000000000000000000000',
  object: 'event',
  type: 'payment_intent.succeeded',
  created: 1_764_000_000,
  sequence: 3,
  data: { object: { id: 'pi_0000000000000000000000', object: 'payment_intent', amount: 500, metadata: { note: 'x'.repeat(600) } } },
});
const headers = {
  'webhook-id': 'evt_0000000000000000000000',
  'webhook-timestamp': '1764000000',
  'webhook-signature': `v1,${'A'.repeat(44)}`,
  'content-type': 'application/json',
  'user-agent': 'Floodgate-Webhooks/bench',
};

const receiver = await Receiver.start();
const url = new URL(receiver.url);
const nodeAgent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
const undiciAgent = new Agent({ connections: CONNECTIONS, headersTimeout: 0, bodyTimeout: 0 });

function viaNodeHttp(): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      method: 'POST',
      agent: nodeAgent,
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
    });
    request.on('response', (response) => {
      response.resume();
      response.on('end', () => resolve());
    });
    request.on('error', reject);
    request.end(body);
  });
}

function viaUndici(): Promise<void> {
  return new Promise((resolve, reject) => {
    undiciAgent.dispatch(
      { origin: url.origin, path: url.pathname, method: 'POST', headers, body },
      {
        onConnect() {},
        onHeaders: () => true,
        onData: () => true,
        onComplete: () => resolve(),
        onError: reject,
      },
    );
  });
}

/** CPU of this process per request (µs), `inFlight` requests at a time. */
async function cpuPerRequest(send: () => Promise<void>, inFlight: number): Promise<number> {
  let started = 0;
  const lane = async () => {
    while (started < REQUESTS) {
      started += 1;
      await send();
    }
  };
  const before = process.cpuUsage();
  await Promise.all(Array.from({ length: inFlight }, lane));
  const used = process.cpuUsage(before);
  return (used.user + used.system) / REQUESTS;
}

try {
  // Warm both: connections open, code compiled.
  await cpuPerRequest(viaNodeHttp, 16);
  await cpuPerRequest(viaUndici, 16);
  console.log(`POST of ${Buffer.byteLength(body)} bytes, ${REQUESTS} requests a phase, ${CONNECTIONS} connections, CPU µs per request`);
  for (const inFlight of IN_FLIGHT) {
    const ratios: number[] = [];
    for (let n = 1; n <= ROUNDS; n++) {
      const node = await cpuPerRequest(viaNodeHttp, inFlight);
      const undici = await cpuPerRequest(viaUndici, inFlight);
      ratios.push(undici / node);
      console.log(`  ${inFlight} in flight, round ${n}: node:http ${node.toFixed(1)}, undici ${undici.toFixed(1)}`);
    }
    console.log(`${inFlight} in flight: undici ÷ node:http = ${round(median(ratios), 2)} (median of ${ROUNDS} rounds)`);
  }
} finally {
  nodeAgent.destroy();
  await undiciAgent.close();
  receiver.stop();
}
