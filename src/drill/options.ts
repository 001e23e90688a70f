/**
 * `floodgate drill` options: parsed and checked once, with messages that say what to fix.
 */
import path from 'node:path';

export interface DrillOptions {
  /** Base URL of a running deployment; absent: the drill starts its own `floodgate start`. */
  target: string | undefined;
  secretKey: string | undefined;
  /** Buyers who arrive in the surge. */
  buyers: number;
  /** Arrival rate as a multiple of the sustainable rate. */
  surge: number;
  /** The sustainable checkout rate (buyers admitted per second): the sale's admit_per_second. */
  rate: number;
  /** The longest the arrivals last, in seconds; arrivals stop earlier once every buyer came. */
  durationSeconds: number;
  /** Units on sale; default half the buyers, so the sale sells out and the line sees sold_out. */
  stock: number;
  /** Buyers who arrive one by one at half the sustainable rate before the surge: the no-surge baseline. */
  baselineBuyers: number;
  reportFile: string;
  /** Share of admitted buyers who walk away (before holding, or holding and never paying). */
  abandonShare: number;
  progress: boolean;
  json: boolean;
}

export class DrillOptionError extends Error {}

const DEFAULTS = { buyers: 500, surge: 10, rate: 20, durationSeconds: 60, abandonShare: 0.05 } as const;

function number(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new DrillOptionError(`--${name} must be a number from ${min} to ${max}; got ${JSON.stringify(raw)}`);
  }
  return value;
}

export function parseDrillOptions(values: Record<string, string | boolean | undefined>, dataDir: string, now = new Date()): DrillOptions {
  const str = (name: string) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const target = str('target');
  const secretKey = str('secret-key');
  if (target !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(target);
    } catch {
      throw new DrillOptionError(`--target must be a URL such as http://127.0.0.1:4000; got ${JSON.stringify(target)}`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
      throw new DrillOptionError('--target must be an http:// or https:// URL');
    if (!secretKey) throw new DrillOptionError('--target needs --secret-key sk_test_... (the merchant the drill sells as)');
  }
  if (secretKey !== undefined && !secretKey.startsWith('sk_'))
    throw new DrillOptionError('--secret-key must be a secret key (sk_test_...)');
  const buyers = Math.floor(number(str('buyers'), 'buyers', DEFAULTS.buyers, 1, 1_000_000));
  const surge = number(str('surge'), 'surge', DEFAULTS.surge, 0.1, 1000);
  const rate = number(str('rate'), 'rate', DEFAULTS.rate, 0.1, 10_000);
  const durationSeconds = number(str('duration'), 'duration', DEFAULTS.durationSeconds, 1, 3600);
  const stock = Math.floor(number(str('stock'), 'stock', Math.max(1, Math.ceil(buyers / 2)), 1, 10_000_000));
  // Enough arrivals at the calm rate for a p99 to mean something, and not so many that the
  // baseline dominates a small drill.
  const baselineBuyers = Math.floor(number(str('baseline'), 'baseline', Math.min(200, Math.max(20, Math.ceil(buyers / 5))), 0, 100_000));
  const abandonShare = number(str('abandon'), 'abandon', DEFAULTS.abandonShare, 0, 1);
  const stamp = now.toISOString().replace(/[:.]/g, '-');
  const reportFile = path.resolve(str('report') ?? path.join(dataDir, 'drills', `drill-${stamp}.html`));
  return {
    target: target?.replace(/\/+$/, ''),
    secretKey,
    buyers,
    surge,
    rate,
    durationSeconds,
    stock,
    baselineBuyers,
    reportFile,
    abandonShare,
    progress: values['no-progress'] !== true,
    json: values.json === true,
  };
}
