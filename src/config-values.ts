/**
 * The readers of one kind of value each, over the environment: a value that is missing or
 * empty gives the fallback; a value that is present and wrong adds a problem that names the
 * variable and what to write instead (loadConfig reports every problem at once).
 */
import { isIP } from 'node:net';
import { parseSecretsKeys } from './platform/crypto/sealed.js';

export type Env = Record<string, string | undefined>;
export type TrustProxy = false | number | string;

const DECIMAL_INTEGER = /^-?\d+$/;
const DECIMAL_FRACTION = /^-?(\d+(\.\d*)?|\.\d+)$/;
// proxy-addr's names for address ranges, accepted besides addresses and CIDRs.
const PROXY_RANGE_NAMES = ['loopback', 'linklocal', 'uniquelocal'];

export function envReaders(env: Env, problems: string[]) {
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    // Number() reads " " as 0 and "0x10" as 16; only plain decimal digits are a whole number here.
    const value = DECIMAL_INTEGER.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isInteger(value) || value < min || value > max) {
      problems.push(`${name} must be a whole number from ${min} to ${max}; got "${raw}"`);
      return fallback;
    }
    return value;
  };
  const fraction = (name: string, fallback: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const value = DECIMAL_FRACTION.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isFinite(value) || value < 0 || value > 1) {
      problems.push(`${name} must be a number from 0 to 1; got "${raw}"`);
      return fallback;
    }
    return value;
  };
  const bool = (name: string, fallback: boolean): boolean => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    if (raw === '1' || raw === 'true') return true;
    if (raw === '0' || raw === 'false') return false;
    problems.push(`${name} must be 1 or 0 (true or false); got "${raw}"`);
    return fallback;
  };
  const url = (name: string, protocols: string[]): string | undefined => {
    const raw = env[name];
    if (raw === undefined || raw === '') return undefined;
    try {
      const parsed = new URL(raw);
      if (!protocols.includes(parsed.protocol)) {
        problems.push(`${name} must start with ${protocols.map((p) => `${p}//`).join(' or ')}`);
      }
    } catch {
      problems.push(`${name} is not a valid URL`);
    }
    return raw;
  };

  const secret = (name: string): string | undefined => {
    const raw = env[name];
    if (raw === undefined || raw === '') return undefined;
    // 32 characters is the least that makes an HMAC key worth its name.
    if (raw.length < 32) problems.push(`${name} must be at least 32 characters`);
    return raw;
  };

  return { int, fraction, bool, url, secret };
}

export function secretsKeys(raw: string | undefined, problems: string[]): string | undefined {
  if (raw === undefined || raw === '') return undefined;
  try {
    parseSecretsKeys(raw);
  } catch (error) {
    problems.push(`FLOODGATE_SECRETS_KEYS: ${(error as Error).message}`);
  }
  return raw;
}

/**
 * X-Forwarded-For is trusted only from the proxies named here: trusting it from anyone would
 * let every client pick the address its rate limit is counted against.
 */
export function trustProxy(raw: string | undefined, problems: string[]): TrustProxy {
  if (raw === undefined || raw === '' || raw === 'false') return false;
  if (DECIMAL_INTEGER.test(raw)) {
    const hops = Number(raw);
    if (hops >= 1 && hops <= 10) return hops;
  } else {
    const entries = raw.split(',').map((entry) => entry.trim());
    const valid = (entry: string) => {
      const [address, bits, ...rest] = entry.split('/');
      if (rest.length > 0 || !address) return false;
      if (PROXY_RANGE_NAMES.includes(entry)) return true;
      const family = isIP(address);
      if (family === 0) return false;
      if (bits === undefined) return true;
      return DECIMAL_INTEGER.test(bits) && Number(bits) >= 0 && Number(bits) <= (family === 4 ? 32 : 128);
    };
    if (entries.every(valid)) return entries.join(',');
  }
  problems.push(
    `FLOODGATE_TRUST_PROXY must be a number of proxy hops from 1 to 10 or a comma-separated list of proxy addresses or CIDRs; got "${raw}"`,
  );
  return false;
}
