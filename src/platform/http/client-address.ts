/**
 * The client's address, as Fastify's `request.ip` works it out, for code that sees the raw
 * request before Fastify does (a fast lane counting a rate limit per address). Both are given
 * the same trust function, so they cannot disagree about whose X-Forwarded-For counts.
 */
import type { IncomingMessage } from 'node:http';
import proxyAddr from '@fastify/proxy-addr';

/** Whose X-Forwarded-For sets the address: none, the nearest N hops, or listed addresses and ranges. */
export type TrustProxy = false | number | string;

export type TrustFunction = (address: string, hop: number) => boolean;

/** What Fastify is given as `trustProxy`: false, or the function deciding which hops to trust. */
export function trustFunction(trustProxy: TrustProxy | undefined): false | TrustFunction {
  if (trustProxy === undefined || trustProxy === false) return false;
  // Fastify accepts a hop count at run time but its types do not; this is what it does with one.
  if (typeof trustProxy === 'number') return (_address, hop) => hop < trustProxy;
  return proxyAddr.compile(trustProxy.split(',').map((entry) => entry.trim()));
}

/** The address Fastify's request.ip would give for this raw request. */
export function clientAddress(trust: false | TrustFunction): (request: IncomingMessage) => string {
  if (!trust) return (request) => request.socket.remoteAddress ?? '';
  return (request) => {
    const addresses = proxyAddr.all(request, trust);
    return addresses[addresses.length - 1] ?? '';
  };
}
