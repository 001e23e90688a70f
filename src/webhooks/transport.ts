/**
 * The network side of webhooks: checking an endpoint URL when it is registered, and POSTing a
 * delivery. Both refuse addresses that are not public (see addresses.ts) unless private
 * addresses are explicitly allowed (local development and tests).
 *
 * The check at registration is advice to the merchant; the one that protects us runs at
 * connect time, on the very address the socket connects to: a custom `lookup` on the agent
 * refuses the connection when any resolved address is not allowed, so a DNS answer that
 * changes after registration (DNS rebinding) gains nothing. Redirects are never followed.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { type AddressVerdict, classifyAddress, REASON_TEXT } from './addresses.js';
import type { AttemptResult } from './domain.js';

// Resolving a name normally takes milliseconds; a registration should not wait on a broken
// resolver for longer than this.
const REGISTRATION_LOOKUP_TIMEOUT_MS = 5_000;
// Connections kept per receiver host by one process: enough to deliver in parallel, few enough
// not to look like an attack to a small receiver. A worker runs as many jobs at once by default
// (FLOODGATE_WORKER_CONCURRENCY).
const SOCKETS_PER_HOST_MAX = 16;
// Only the status matters; a receiver's answer beyond this is not read.
const RESPONSE_BYTES_MAX = 64 * 1024;

export type UrlCheck = { kind: 'ok'; url: URL } | { kind: 'invalid'; message: string } | { kind: 'not_allowed'; message: string };

/** The host of a URL without IPv6 brackets, as a socket sees it. */
function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

function refusal(host: string, address: string, verdict: AddressVerdict): string {
  const reason = verdict.allowed ? 'allowed' : REASON_TEXT[verdict.reason];
  return host === address
    ? `${address} is ${reason}; webhooks go to public addresses only.`
    : `${host} resolves to ${address}, ${reason}; webhooks go to public addresses only.`;
}

/** The first address of `addresses` that is not allowed, with its verdict. */
function firstRefused(addresses: readonly string[]) {
  for (const address of addresses) {
    const verdict = classifyAddress(address);
    if (!verdict.allowed) return { address, verdict };
  }
  return undefined;
}

/** Checks a URL a merchant registers: http(s), and (unless allowed) resolving to public addresses only. */
export async function checkEndpointUrl(raw: string, options: { allowPrivate: boolean }): Promise<UrlCheck> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { kind: 'invalid', message: 'url is not a valid absolute URL.' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    return { kind: 'invalid', message: 'url must start with https:// or http://.' };
  if (url.username || url.password) return { kind: 'invalid', message: 'url must not carry a user name or password.' };
  if (options.allowPrivate) return { kind: 'ok', url };
  const host = hostOf(url);
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : await resolveAll(host);
  } catch {
    return { kind: 'invalid', message: `url's host ${host} does not resolve.` };
  }
  const refused = firstRefused(addresses);
  return refused ? { kind: 'not_allowed', message: refusal(host, refused.address, refused.verdict) } : { kind: 'ok', url };
}

async function resolveAll(host: string): Promise<string[]> {
  const lookup = new Promise<LookupAddress[]>((resolve, reject) =>
    dnsLookup(host, { all: true }, (error, addresses) => (error ? reject(error) : resolve(addresses))),
  );
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('lookup timed out')), REGISTRATION_LOOKUP_TIMEOUT_MS);
  });
  try {
    return (await Promise.race([lookup, timeout])).map((entry) => entry.address);
  } finally {
    clearTimeout(timer);
  }
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** dns.lookup that fails when any address the name resolves to is not allowed. */
function guardedLookup(hostname: string, options: LookupOptions, callback: LookupCallback): void {
  dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
    if (error) return callback(error, '');
    const refused = firstRefused(addresses.map((entry) => entry.address));
    if (refused || addresses.length === 0) {
      const message = refused ? refusal(hostname, refused.address, refused.verdict) : `${hostname} has no address`;
      return callback(Object.assign(new Error(message), { code: 'EADDRNOTALLOWED' }), '');
    }
    if (options.all) return callback(null, addresses);
    const first = addresses[0] as LookupAddress;
    callback(null, first.address, first.family);
  });
}

export interface Transport {
  post(url: string, headers: Record<string, string>, body: string): Promise<AttemptResult>;
  close(): void;
}

/** An HTTP client for deliveries, with keep-alive agents that check every address they connect to. */
export function createTransport(options: { timeoutMs: number; allowPrivate: boolean; userAgent: string }): Transport {
  const agentOptions = {
    keepAlive: true,
    maxSockets: SOCKETS_PER_HOST_MAX,
    ...(options.allowPrivate ? {} : { lookup: guardedLookup }),
  };
  const agents = { 'http:': new http.Agent(agentOptions), 'https:': new https.Agent(agentOptions) };
  return {
    post: (url, headers, body) => post(agents, options, new URL(url), headers, body),
    close() {
      agents['http:'].destroy();
      agents['https:'].destroy();
    },
  };
}

function post(
  agents: { 'http:': http.Agent; 'https:': https.Agent },
  options: { timeoutMs: number; allowPrivate: boolean; userAgent: string },
  url: URL,
  headers: Record<string, string>,
  body: string,
): Promise<AttemptResult> {
  const started = process.hrtime.bigint();
  const elapsedMs = () => Number((process.hrtime.bigint() - started) / 1_000_000n);
  // A literal IP address never goes through lookup, so it is checked here.
  const host = hostOf(url);
  const refused = !options.allowPrivate && isIP(host) ? firstRefused([host]) : undefined;
  if (refused) {
    return Promise.resolve({ kind: 'error', error: refusal(host, host, refused.verdict), timedOut: false, durationMs: elapsedMs() });
  }
  const client = url.protocol === 'https:' ? https : http;
  const agent = url.protocol === 'https:' ? agents['https:'] : agents['http:'];
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: AttemptResult) => {
      if (settled) return;
      settled = true;
      resolve(result);
    };
    const request = client.request(url, {
      method: 'POST',
      agent,
      headers: {
        ...headers,
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
        'user-agent': options.userAgent,
      },
    });
    // One deadline for the whole exchange; reading the answer's body counts too, so a receiver
    // that trickles it cannot hold the connection.
    const timer = setTimeout(() => {
      finish({ kind: 'error', error: `no response within ${options.timeoutMs} ms`, timedOut: true, durationMs: elapsedMs() });
      request.destroy();
    }, options.timeoutMs);
    request.on('response', (response) => {
      finish({ kind: 'response', statusCode: response.statusCode ?? 0, durationMs: elapsedMs() });
      drain(response, request);
      response.on('end', () => clearTimeout(timer));
    });
    request.on('close', () => clearTimeout(timer));
    request.on('error', (error: NodeJS.ErrnoException) => {
      finish({
        kind: 'error',
        error: error.code ? `${error.code}: ${error.message}` : error.message,
        timedOut: false,
        durationMs: elapsedMs(),
      });
    });
    request.end(body);
  });
}

/** Reads and drops the response so the connection can be reused; a long answer closes it instead. */
function drain(response: http.IncomingMessage, request: http.ClientRequest): void {
  let bytes = 0;
  response.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > RESPONSE_BYTES_MAX) request.destroy();
  });
  response.on('error', () => {});
}
