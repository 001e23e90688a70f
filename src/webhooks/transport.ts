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
import { isIP } from 'node:net';
import { Agent } from 'undici';
import { describeError, exchange } from '../platform/http/exchange.js';
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

/** Where a URL posts to, worked out once per URL: its origin and path, or why it is refused. */
type Target = { kind: 'ok'; origin: string; path: string } | { kind: 'refused'; error: string };

// Targets remembered: far more endpoints than deliver at once. Past this the map starts over.
const TARGETS_MAX = 10_000;

/**
 * An HTTP client for deliveries: undici's dispatcher (see platform/http/exchange.ts), keep-alive
 * connections per receiver, whose every connection checks the addresses it connects to. The
 * HTTP request was the largest part of a delivery's cost to the worker, and through undici it
 * costs about 0.4 of what it did through node:http (bench/README.md, the twenty-third session).
 */
export function createTransport(options: { timeoutMs: number; allowPrivate: boolean; userAgent: string }): Transport {
  const agent = new Agent({
    connections: SOCKETS_PER_HOST_MAX,
    // Our own deadline covers the whole exchange (platform/http/exchange.ts); undici's would end it with errors of its own.
    headersTimeout: 0,
    bodyTimeout: 0,
    ...(options.allowPrivate ? {} : { connect: { lookup: guardedLookup } }),
  });
  const targets = new Map<string, Target>();
  const targetOf = (url: string): Target => {
    let target = targets.get(url);
    if (!target) {
      if (targets.size >= TARGETS_MAX) targets.clear();
      target = parseTarget(url, options.allowPrivate);
      targets.set(url, target);
    }
    return target;
  };
  return {
    post: (url, headers, body) => post(agent, options, targetOf(url), headers, body),
    close() {
      agent.destroy().catch(() => {});
    },
  };
}

/** Throws for a URL that does not parse (registration refuses those: see checkEndpointUrl). */
function parseTarget(raw: string, allowPrivate: boolean): Target {
  const url = new URL(raw);
  // A literal IP address never goes through lookup, so it is checked here.
  const host = hostOf(url);
  const refused = !allowPrivate && isIP(host) ? firstRefused([host]) : undefined;
  if (refused) return { kind: 'refused', error: refusal(host, host, refused.verdict) };
  return { kind: 'ok', origin: url.origin, path: `${url.pathname}${url.search}` };
}

function post(
  agent: Agent,
  options: { timeoutMs: number; userAgent: string },
  target: Target,
  headers: Record<string, string>,
  body: string,
): Promise<AttemptResult> {
  const started = process.hrtime.bigint();
  const elapsedMs = () => Number((process.hrtime.bigint() - started) / 1_000_000n);
  if (target.kind === 'refused') return Promise.resolve({ kind: 'error', error: target.error, timedOut: false, durationMs: elapsedMs() });
  return new Promise((resolve) => {
    // The attempt's result is the status, once it arrives; the answer's body is then read and
    // dropped under the same deadline, and nothing that happens to it changes the result.
    const request = {
      origin: target.origin,
      path: target.path,
      method: 'POST' as const,
      headers: { ...headers, 'content-type': 'application/json', 'user-agent': options.userAgent },
      body,
    };
    const onStatus = (statusCode: number) => resolve({ kind: 'response', statusCode, durationMs: elapsedMs() });
    exchange(agent, request, { timeoutMs: options.timeoutMs, answerBytesMax: RESPONSE_BYTES_MAX, keepAnswer: false, onStatus }).then(
      (end) => {
        if (end.kind !== 'failed') return;
        resolve(
          end.timedOut
            ? { kind: 'error', error: `no response within ${options.timeoutMs} ms`, timedOut: true, durationMs: elapsedMs() }
            : { kind: 'error', error: describeError(end.error), timedOut: false, durationMs: elapsedMs() },
        );
      },
    );
  });
}
