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
 * An HTTP client for deliveries: undici's dispatcher, keep-alive connections per receiver, whose
 * every connection checks the addresses it connects to.
 *
 * undici rather than node:http: on this machine a POST of a delivery's size cost the sending
 * process about 100 µs of CPU with node:http's keep-alive agent and about 35 µs through undici's
 * dispatch, at 16 and at 100 requests in flight (bench/README.md, the twenty-third session),
 * and the HTTP request was the largest part of a delivery's cost to the worker.
 */
export function createTransport(options: { timeoutMs: number; allowPrivate: boolean; userAgent: string }): Transport {
  const agent = new Agent({
    connections: SOCKETS_PER_HOST_MAX,
    // Our own deadline covers the whole exchange (post); undici's would end it with errors of its own.
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
    let settled = false;
    let abort: ((reason?: Error) => void) | undefined;
    let bytes = 0;
    const finish = (result: AttemptResult) => {
      if (settled) return;
      settled = true;
      resolve(result);
    };
    // One deadline for the whole exchange; reading the answer's body counts too, so a receiver
    // that trickles it cannot hold the connection.
    const timer = setTimeout(() => {
      finish({ kind: 'error', error: `no response within ${options.timeoutMs} ms`, timedOut: true, durationMs: elapsedMs() });
      abort?.(new Error('webhook delivery timed out'));
    }, options.timeoutMs);
    agent.dispatch(
      {
        origin: target.origin,
        path: target.path,
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json', 'user-agent': options.userAgent },
        body,
      },
      {
        onConnect(abortRequest) {
          abort = abortRequest;
          if (settled) abortRequest(new Error('webhook delivery timed out'));
        },
        onHeaders(statusCode) {
          // 1xx answers are informational: the final status follows.
          if (statusCode >= 200) finish({ kind: 'response', statusCode, durationMs: elapsedMs() });
          return true;
        },
        // Only the status matters: the answer is read and dropped so the connection can be
        // reused, and a long one closes it instead.
        onData(chunk) {
          bytes += chunk.length;
          if (bytes > RESPONSE_BYTES_MAX) abort?.(new Error('webhook answer too long'));
          return true;
        },
        onComplete() {
          clearTimeout(timer);
        },
        onError(error: NodeJS.ErrnoException) {
          clearTimeout(timer);
          finish({
            kind: 'error',
            error: error.code ? `${error.code}: ${error.message}` : error.message,
            timedOut: false,
            durationMs: elapsedMs(),
          });
        },
      },
    );
  });
}
