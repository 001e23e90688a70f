/**
 * Money, a concept of its own that payments and sales share: pure rules, no I/O, so any
 * capability may import it (the lint rule in biome.json allows src/money/ as it does platform/).
 *
 * ISO 4217 currencies we accept, with their exponent (minor-unit digits). Amounts are always
 * integers in minor units: 1000 USD-minor is $10.00, 1000 JPY is ¥1000, 1000 BHD-minor is
 * 1.000 BD. The exponent decides the largest amount we accept.
 */
export const CURRENCY_EXPONENTS = {
  aud: 2,
  bhd: 3,
  cad: 2,
  chf: 2,
  eur: 2,
  gbp: 2,
  hkd: 2,
  idr: 2,
  inr: 2,
  jod: 3,
  jpy: 0,
  krw: 0,
  kwd: 3,
  myr: 2,
  nzd: 2,
  omr: 3,
  php: 2,
  sgd: 2,
  thb: 2,
  usd: 2,
  vnd: 0,
} as const satisfies Record<string, 0 | 2 | 3>;

export type Currency = keyof typeof CURRENCY_EXPONENTS;

export const SUPPORTED_CURRENCIES = Object.keys(CURRENCY_EXPONENTS) as Currency[];

// One payment of at most 99,999,999 major units: far above any ticket or merch basket, and
// with exponent 3 still below 2^53 minor units, so amounts stay exact as JS numbers.
const MAX_MAJOR_UNITS = 99_999_999;

export function isCurrency(value: string): value is Currency {
  return Object.hasOwn(CURRENCY_EXPONENTS, value);
}

export function maxAmount(currency: Currency): number {
  return MAX_MAJOR_UNITS * 10 ** CURRENCY_EXPONENTS[currency];
}

/** Formats minor units for people, e.g. formatAmount(123456, 'usd') → "1234.56 USD". */
export function formatAmount(amount: number, currency: Currency): string {
  const exponent = CURRENCY_EXPONENTS[currency];
  const sign = amount < 0 ? '-' : '';
  const digits = String(Math.abs(amount)).padStart(exponent + 1, '0');
  const major = exponent === 0 ? digits : `${digits.slice(0, -exponent)}.${digits.slice(-exponent)}`;
  return `${sign}${major} ${currency.toUpperCase()}`;
}
