/**
 * Cookies for browser sessions: parsing the Cookie header, writing Set-Cookie, and signing a
 * value so a client cannot forge or alter it. Generic: any page with its own sessions (the
 * hosted sale page, the operator dashboard) can use it with its own name and secret.
 *
 * A signed value is `<value>.<base64url HMAC-SHA256 of name "=" value>`: the signature covers
 * the cookie's name too, so a value signed for one cookie is worthless in another.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface CookieOptions {
  maxAgeSeconds?: number;
  path?: string;
  httpOnly?: boolean;
  /** Only over TLS; set it whenever the request came over https (directly or via a trusted proxy). */
  secure?: boolean;
  sameSite?: 'Strict' | 'Lax' | 'None';
}

// Browsers keep cookies up to 4096 bytes; ours are ids and signatures, far smaller.
const COOKIE_HEADER_PAIRS_MAX = 100;
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const COOKIE_VALUE = /^[!#-+\--:<-[\]-~]*$/;

/** The cookies of a Cookie header; the first of two with one name wins, as RFC 6265 orders them. */
export function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  if (!header) return cookies;
  for (const pair of header.split(';').slice(0, COOKIE_HEADER_PAIRS_MAX)) {
    const index = pair.indexOf('=');
    if (index <= 0) continue;
    const name = pair.slice(0, index).trim();
    const value = pair.slice(index + 1).trim();
    if (!cookies.has(name)) cookies.set(name, value);
  }
  return cookies;
}

/** A Set-Cookie header value. Throws on a name or value a browser would not keep as given. */
export function serializeCookie(name: string, value: string, options: CookieOptions = {}): string {
  if (!COOKIE_NAME.test(name)) throw new Error(`invalid cookie name ${JSON.stringify(name)}`);
  if (!COOKIE_VALUE.test(value)) throw new Error('invalid cookie value');
  const parts = [`${name}=${value}`, `Path=${options.path ?? '/'}`];
  if (options.maxAgeSeconds !== undefined) parts.push(`Max-Age=${Math.max(0, Math.floor(options.maxAgeSeconds))}`);
  if (options.httpOnly ?? true) parts.push('HttpOnly');
  if (options.secure) parts.push('Secure');
  parts.push(`SameSite=${options.sameSite ?? 'Lax'}`);
  return parts.join('; ');
}

function mac(secret: string, name: string, value: string): string {
  return createHmac('sha256', secret).update(`${name}=${value}`).digest('base64url');
}

/** `value` with its signature appended; `value` must be cookie-safe. */
export function signCookieValue(secret: string, name: string, value: string): string {
  return `${value}.${mac(secret, name, value)}`;
}

/** The value a signed cookie carries, or undefined when it was not signed with `secret` for `name`. */
export function verifyCookieValue(secret: string, name: string, signed: string | undefined): string | undefined {
  if (!signed) return undefined;
  const index = signed.lastIndexOf('.');
  if (index <= 0) return undefined;
  const value = signed.slice(0, index);
  const given = Buffer.from(signed.slice(index + 1));
  const expected = Buffer.from(mac(secret, name, value));
  return given.length === expected.length && timingSafeEqual(given, expected) ? value : undefined;
}
