/**
 * Admission tokens and the other values derived from the admission secret. Pure: HMACs only.
 *
 * A token is `adm_<payload>.<signature>`: the payload is base64url JSON
 * `{"v":1,"s":sale,"t":ticket,"b":buyer digest,"e":expiry in ms}` and the signature is
 * base64url HMAC-SHA256 over `adm_<payload>`. The buyer reference itself is never in the token
 * (nor in Redis): only its keyed digest, so a token or a queue dump does not carry an email.
 * The ticket id doubles as the token's id for the single-use mark: a ticket is admitted once.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export type ConsumeResult =
  | { kind: 'ok'; ticketId: string }
  | { kind: 'invalid' }
  | { kind: 'expired' }
  | { kind: 'replayed' }
  | { kind: 'wrong_buyer' }
  | { kind: 'wrong_sale' };

export interface AdmissionClaims {
  saleId: string;
  ticketId: string;
  buyerDigest: string;
  expiresAtMs: number;
}

export interface AdmissionKeys {
  token: Buffer;
  shuffle: Buffer;
  buyer: Buffer;
}

const PREFIX = 'adm_';
const VERSION = 1;
// A real token is about 200 characters; anything far longer is not ours and is not parsed.
export const ADMISSION_TOKEN_LENGTH_MAX = 1_024;
// HMAC-SHA256 is 32 bytes: 43 characters of base64url.
const SIGNATURE_CHARS = 43;
// 128 bits: buyer digests of one sale never collide in practice.
const BUYER_DIGEST_BYTES = 16;

/** One key per use, so a value made for one purpose never verifies as another. */
export function deriveAdmissionKeys(secret: string): AdmissionKeys {
  const derive = (label: string) => createHmac('sha256', secret).update(`floodgate admission ${label} v1`).digest();
  return { token: derive('token'), shuffle: derive('shuffle'), buyer: derive('buyer') };
}

export function buyerDigest(keys: AdmissionKeys, buyerRef: string): string {
  return createHmac('sha256', keys.buyer).update(buyerRef).digest().subarray(0, BUYER_DIGEST_BYTES).toString('base64url');
}

/** The sale's fairness seed: the same on every node, unknown to buyers. */
export function shuffleSeed(keys: AdmissionKeys, saleId: string): string {
  return createHmac('sha256', keys.shuffle).update(saleId).digest('hex');
}

export function signAdmissionToken(keys: AdmissionKeys, claims: AdmissionClaims): string {
  const payload = Buffer.from(
    JSON.stringify({ v: VERSION, s: claims.saleId, t: claims.ticketId, b: claims.buyerDigest, e: claims.expiresAtMs }),
  ).toString('base64url');
  const signed = `${PREFIX}${payload}`;
  return `${signed}.${sign(keys, signed)}`;
}

/** The claims of a token we signed, or undefined for anything else (malformed, forged, altered). */
export function readAdmissionToken(keys: AdmissionKeys, token: string): AdmissionClaims | undefined {
  if (token.length > ADMISSION_TOKEN_LENGTH_MAX || !token.startsWith(PREFIX)) return undefined;
  const dot = token.lastIndexOf('.');
  const signature = token.slice(dot + 1);
  if (dot < 0 || signature.length !== SIGNATURE_CHARS) return undefined;
  const expected = Buffer.from(sign(keys, token.slice(0, dot)));
  if (!timingSafeEqual(expected, Buffer.from(signature))) return undefined;
  try {
    const body = JSON.parse(Buffer.from(token.slice(PREFIX.length, dot), 'base64url').toString('utf8'));
    if (body?.v !== VERSION || typeof body.s !== 'string' || typeof body.t !== 'string' || typeof body.b !== 'string') return undefined;
    if (!Number.isSafeInteger(body.e)) return undefined;
    return { saleId: body.s, ticketId: body.t, buyerDigest: body.b, expiresAtMs: body.e };
  } catch {
    return undefined;
  }
}

/**
 * The checks that need no shared state, in the order a caller learns most from: a token for
 * another sale or buyer is refused as such even when it has also expired. Single use is the
 * store's to check, after these, so a wrong buyer cannot burn someone else's token.
 */
export function checkClaims(
  claims: AdmissionClaims,
  saleId: string,
  digest: string,
  nowMs: number,
): 'ok' | 'wrong_sale' | 'wrong_buyer' | 'expired' {
  if (claims.saleId !== saleId) return 'wrong_sale';
  if (claims.buyerDigest !== digest) return 'wrong_buyer';
  if (nowMs >= claims.expiresAtMs) return 'expired';
  return 'ok';
}

function sign(keys: AdmissionKeys, text: string): string {
  return createHmac('sha256', keys.token).update(text).digest('base64url');
}
