/**
 * The hosted page's HTML: small server-rendered pages, one per state of the buyer's flow. No
 * inline script and no inline style attribute (the Content-Security-Policy forbids both); the
 * one inline <style> carries the merchant's colour and is allowed by its hash. The script reads
 * what it needs from data- attributes.
 */
import { formatAmount, isCurrency } from '../money/currency.js';
import { sha256 } from '../platform/crypto/sha256.js';
import type { StaticAsset } from '../platform/http/static-assets.js';
import { format, type Strings } from './strings/en.js';

export interface PageSale {
  id: string;
  name: string;
  currency: string;
  opens_at: string;
  closes_at: string | null;
  per_buyer_limit: number;
  items: { id: string; name: string; price: number; stock: { available: number } }[];
  branding: { name: string | null; logo_url: string | null; color: string | null };
  success_url: string | null;
  cancel_url: string | null;
}

export interface Page {
  html: string;
  /** The CSP hash source of the inline style, to add to style-src. */
  styleHash: string;
  /** The logo's origin, the one other origin the page loads an image from; undefined without a logo. */
  imageOrigin?: string;
}

export interface Layout {
  t: Strings;
  sale: PageSale;
  assets: { css: StaticAsset; js: StaticAsset; icon: StaticAsset };
  /** data- attributes on <body> for the script: what to poll, count down, tokenize. */
  data?: Record<string, string>;
  title: string;
  body: string;
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (value: string | number): string => String(value).replace(/[&<>"']/g, (c) => ESCAPES[c] as string);

export function money(amount: number, currency: string): string {
  return isCurrency(currency) ? formatAmount(amount, currency) : `${amount} ${currency}`;
}

/** Black or white text, whichever reads better on the merchant's colour (WCAG relative luminance). */
export function textColourOn(hex: string): '#000000' | '#ffffff' {
  const channel = (index: number) => {
    const value = Number.parseInt(hex.slice(1 + index * 2, 3 + index * 2), 16) / 255;
    return value <= 0.03928 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4;
  };
  const luminance = 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
  // Contrast with black is (L + 0.05) / 0.05, with white 1.05 / (L + 0.05): pick the larger.
  return (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) ? '#000000' : '#ffffff';
}

// The default accent: dark enough for white text at WCAG AA.
const DEFAULT_ACCENT = '#1d4ed8';

function originOf(url: string | null): string | undefined {
  if (!url) return undefined;
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}

export function layout(page: Layout): Page {
  const { t, sale, assets } = page;
  const accent = sale.branding.color ?? DEFAULT_ACCENT;
  const style = `:root{--accent:${accent};--on-accent:${textColourOn(accent)}}`;
  const styleHash = `'sha256-${sha256(style, 'base64')}'`;
  const seller = sale.branding.name ?? sale.name;
  const data = Object.entries(page.data ?? {})
    .map(([key, value]) => ` data-${key}="${esc(value)}"`)
    .join('');
  const logo = sale.branding.logo_url ? `<img class="logo" src="${esc(sale.branding.logo_url)}" alt="" width="40" height="40">` : '';
  const html = `<!doctype html>
<html lang="${esc(t.lang)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(page.title)} · ${esc(sale.name)}</title>
<style>${style}</style>
<link rel="icon" href="${assets.icon.url}" type="image/svg+xml">
<link rel="stylesheet" href="${assets.css.url}" integrity="${assets.css.integrity}">
<script src="${assets.js.url}" integrity="${assets.js.integrity}" defer></script>
</head>
<body${data}>
<a class="skip" href="#main">${esc(t.skip)}</a>
<header class="brand">${logo}<span>${esc(format(t.soldBy, { name: seller }))}</span></header>
<main id="main" tabindex="-1">
<h1>${esc(sale.name)}</h1>
${page.body}
</main>
<footer><p>${esc(t.testMode)}</p></footer>
</body>
</html>
`;
  return { html, styleHash, imageOrigin: originOf(sale.branding.logo_url) };
}

export function notice(text: string | undefined, kind: 'error' | 'info' = 'error'): string {
  if (!text) return '';
  // role=alert: a screen reader announces the message as soon as the page shows it.
  return `<p class="notice ${kind}" role="alert">${esc(text)}</p>`;
}

export const csrfField = (token: string) => `<input type="hidden" name="csrf" value="${esc(token)}">`;

export function postButton(action: string, label: string, csrf: string | undefined, name = 'primary'): string {
  return `<form method="post" action="${esc(action)}">${csrf ? csrfField(csrf) : ''}<button type="submit" class="${name}">${esc(label)}</button></form>`;
}

export function itemsTable(t: Strings, sale: PageSale): string {
  const rows = sale.items
    .map((item) => {
      const left = item.stock.available > 0 ? format(t.availableCount, { count: item.stock.available }) : t.soldOutItem;
      return `<tr><th scope="row">${esc(item.name)}</th><td>${esc(money(item.price, sale.currency))}</td><td data-item="${esc(item.id)}">${esc(left)}</td></tr>`;
    })
    .join('');
  return `<table class="items"><thead><tr><th scope="col">${esc(sale.name)}</th><th scope="col">${esc(t.price)}</th><th scope="col">${esc(t.available)}</th></tr></thead><tbody>${rows}</tbody></table>`;
}

export function duration(t: Strings, seconds: number): string {
  if (seconds < 90) return format(t.seconds, { count: Math.max(0, Math.round(seconds)) });
  if (seconds < 5400) return format(t.minutes, { count: Math.round(seconds / 60) });
  return format(t.hours, { count: Math.round(seconds / 3600) });
}

/** A time for people: "10:00:00 UTC" style, shown with the ISO time in a <time> element. */
export function timeElement(iso: string): string {
  const text = `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
  return `<time datetime="${esc(iso)}">${esc(text)}</time>`;
}

export function quantityForm(t: Strings, sale: PageSale, action: string, csrf: string): string {
  const fields = sale.items
    .filter((item) => item.stock.available > 0)
    .map((item) => {
      const max = Math.min(sale.per_buyer_limit, item.stock.available);
      const label = format(t.quantityOf, { name: item.name });
      return `<div class="field"><label for="q-${esc(item.id)}">${esc(label)} (${esc(money(item.price, sale.currency))})</label>
<input id="q-${esc(item.id)}" name="qty_${esc(item.id)}" type="number" inputmode="numeric" min="0" max="${max}" value="0"></div>`;
    })
    .join('');
  return `<form method="post" action="${esc(action)}" class="quantities">${csrfField(csrf)}${fields}
<p>${esc(format(t.perBuyerLimit, { count: sale.per_buyer_limit }))}</p>
<button type="submit" class="primary">${esc(t.holdButton)}</button></form>`;
}

export function cardForm(t: Strings, action: string, csrf: string, amount: string): string {
  // The card inputs have no name: a form submitted without the script sends no card data here.
  // The script tokenizes the card at the provider and submits only the token.
  const messages = `data-unavailable="${esc(t.providerUnavailable)}" data-invalid="${esc(t.cardInvalid)}"`;
  return `<form method="post" action="${esc(action)}" class="card" id="pay-form" ${messages}>${csrfField(csrf)}
<input type="hidden" name="payment_method" value="">
<div class="field"><label for="card-number">${esc(t.cardNumber)}</label>
<input id="card-number" type="text" inputmode="numeric" autocomplete="cc-number" required pattern="[0-9 ]{12,23}"></div>
<div class="row"><div class="field"><label for="card-expiry">${esc(t.cardExpiry)}</label>
<input id="card-expiry" type="text" inputmode="numeric" autocomplete="cc-exp" required pattern="[0-9]{2} ?/ ?[0-9]{2}" placeholder="MM/YY"></div>
<div class="field"><label for="card-cvc">${esc(t.cardCvc)}</label>
<input id="card-cvc" type="text" inputmode="numeric" autocomplete="cc-csc" required pattern="[0-9]{3,4}"></div></div>
<p class="status" id="pay-status" role="status" aria-live="polite"></p>
<noscript><p class="notice error">${esc(t.needsScript)}</p></noscript>
<button type="submit" class="primary" id="pay-button" data-paying="${esc(t.paying)}">${esc(format(t.payButton, { amount }))}</button>
<p class="hint">${esc(t.testCards)}</p></form>`;
}
