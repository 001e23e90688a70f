/**
 * The dashboard's pages, rendered on the server: plain HTML that works without scripts, with a
 * small script (web/dashboard/dashboard.js) and uPlot for the live charts.
 */
import { type Currency, formatAmount, isCurrency } from '../money/currency.js';
import { html, type SafeHtml } from './html.js';

export interface PageContext {
  title: string;
  email?: string;
  csrfToken?: string;
  /** The nav item to mark as current. */
  section?: 'live' | 'sales' | 'payments' | 'webhooks' | 'balance';
  notice?: string;
  error?: string;
}

const SECTIONS = [
  ['live', '/dashboard', 'Live'],
  ['sales', '/dashboard/sales', 'Sales'],
  ['payments', '/dashboard/payments', 'Payments'],
  ['webhooks', '/dashboard/webhooks', 'Webhooks'],
  ['balance', '/dashboard/balance', 'Balance'],
] as const;

export function money(amount: number, currency: string): string {
  return isCurrency(currency) ? formatAmount(amount, currency as Currency) : `${amount} ${currency}`;
}

export function time(unixSeconds: number | null | undefined): string {
  return unixSeconds
    ? new Date(unixSeconds * 1000)
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, ' UTC')
    : '';
}

export function csrfField(token: string | undefined): SafeHtml {
  return html`<input type="hidden" name="csrf" value="${token ?? ''}">`;
}

export function layout(context: PageContext, body: SafeHtml, options: { scripts?: boolean } = {}): string {
  const nav = context.email
    ? html`<nav aria-label="Dashboard">
        ${SECTIONS.map(([key, href, label]) => html`<a href="${href}" ${key === context.section ? html`aria-current="page"` : ''}>${label}</a>`)}
        <span class="who">${context.email}</span>
        <form method="post" action="/dashboard/logout">${csrfField(context.csrfToken)}<button type="submit">Sign out</button></form>
      </nav>`
    : '';
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${context.title} · Floodgate</title>
<link rel="stylesheet" href="/dashboard/assets/dashboard.css">
${options.scripts ? html`<link rel="stylesheet" href="/dashboard/assets/uPlot.min.css"><script src="/dashboard/assets/uPlot.iife.min.js" defer></script><script src="/dashboard/assets/dashboard.js" defer></script>` : ''}
</head><body>
<header><a class="brand" href="/dashboard">Floodgate</a>${nav}</header>
<main>
<h1>${context.title}</h1>
${context.notice ? html`<p class="notice" role="status">${context.notice}</p>` : ''}
${context.error ? html`<p class="error" role="alert">${context.error}</p>` : ''}
${body}
</main></body></html>`.value;
}

export function loginPage(error?: string, email = ''): string {
  return layout(
    { title: 'Sign in', error },
    html`<form method="post" action="/dashboard/login" class="login">
      <label>Email <input type="email" name="email" autocomplete="username" required value="${email}"></label>
      <label>Password <input type="password" name="password" autocomplete="current-password" required></label>
      <button type="submit">Sign in</button>
    </form>`,
  );
}

export function livePage(context: PageContext): string {
  return layout(
    { ...context, title: 'Live operations', section: 'live' },
    html`<p class="hint">This node's traffic, updated every 2 seconds.</p>
    <div class="cards" id="live-cards">
      <div class="card"><span>Requests/s</span><b data-field="requestsPerSecond">–</b></div>
      <div class="card"><span>p99</span><b data-field="p99Ms">–</b></div>
      <div class="card"><span>Errors (5xx)</span><b data-field="errorRatio">–</b></div>
      <div class="card"><span>Jobs waiting</span><b data-field="jobsWaiting">–</b></div>
      <div class="card"><span>Oldest job</span><b data-field="oldestJobSeconds">–</b></div>
      <div class="card"><span>Provider breaker</span><b data-field="breakerOpen">–</b></div>
      <div class="card"><span>Replica lag</span><b data-field="replicaLagSeconds">–</b></div>
    </div>
    <div id="live-charts" data-source="/dashboard/api/live"></div>`,
    { scripts: true },
  );
}

export interface SaleSummary {
  id: string;
  name: string;
  status: string;
  opens_at: string;
}

export function salesPage(context: PageContext, sales: SaleSummary[]): string {
  return layout(
    { ...context, title: 'Sales', section: 'sales' },
    html`<table><thead><tr><th>Sale</th><th>Status</th><th>Opens</th></tr></thead><tbody>
      ${sales.map((sale) => html`<tr><td><a href="/dashboard/sales/${sale.id}">${sale.name}</a> <code>${sale.id}</code></td><td>${sale.status}</td><td>${sale.opens_at}</td></tr>`)}
    </tbody></table>${sales.length === 0 ? html`<p>No sales yet.</p>` : ''}`,
  );
}

export function salePage(context: PageContext, sale: { id: string; name: string }): string {
  return layout(
    { ...context, title: `Sale: ${sale.name}`, section: 'sales' },
    html`<p class="hint"><code>${sale.id}</code> — the line as this node sees it, updated every 2 seconds.</p>
    <div class="cards" id="sale-cards">
      <div class="card"><span>Waiting</span><b data-field="waiting">–</b></div>
      <div class="card"><span>Admitted</span><b data-field="admitted">–</b></div>
      <div class="card"><span>Held</span><b data-field="held">–</b></div>
      <div class="card"><span>Sold</span><b data-field="sold">–</b></div>
      <div class="card"><span>Remaining</span><b data-field="available">–</b></div>
      <div class="card"><span>Admitted/s</span><b data-field="admissionRate">–</b></div>
    </div>
    <div id="sale-charts" data-source="/dashboard/api/sales/${sale.id}"></div>`,
    { scripts: true },
  );
}

export interface IntentView {
  id: string;
  amount: number;
  currency: string;
  status: string;
  amount_received: number;
  description?: string | null;
  created: number;
}

const PAYMENT_STATUSES = ['requires_payment_method', 'requires_confirmation', 'processing', 'requires_capture', 'succeeded', 'canceled'];

export function paymentsPage(context: PageContext, query: { q: string; status: string }, intents: IntentView[], next?: string): string {
  return layout(
    { ...context, title: 'Payments', section: 'payments' },
    html`<form method="get" action="/dashboard/payments" class="search" role="search">
      <label>Payment id <input type="search" name="q" value="${query.q}" placeholder="pi_..."></label>
      <label>Status <select name="status"><option value="">any</option>
        ${PAYMENT_STATUSES.map((status) => html`<option value="${status}" ${status === query.status ? html`selected` : ''}>${status}</option>`)}
      </select></label>
      <button type="submit">Search</button>
    </form>
    <table><thead><tr><th>Payment</th><th>Amount</th><th>Status</th><th>Created</th></tr></thead><tbody>
      ${intents.map(
        (intent) =>
          html`<tr><td><a href="/dashboard/payments/${intent.id}">${intent.id}</a></td><td>${money(intent.amount, intent.currency)}</td><td><span class="status ${intent.status}">${intent.status}</span></td><td>${time(intent.created)}</td></tr>`,
      )}
    </tbody></table>
    ${intents.length === 0 ? html`<p>No payments match.</p>` : ''}
    ${next ? html`<p><a href="/dashboard/payments?status=${query.status}&amp;starting_after=${next}">Older payments</a></p>` : ''}`,
  );
}

export function paymentPage(
  context: PageContext,
  intent: IntentView & { amount_refunded: number },
  events: Array<{ id: string; type: string; created: number }>,
  attempts: Array<{ id: string; operation: string; amount: number; status: string; error_code: string | null; created: number | null }>,
  refunds: Array<{ id: string; amount: number; status: string; created: number }>,
): string {
  const refundable = intent.status === 'succeeded' && intent.amount_received - intent.amount_refunded > 0;
  return layout(
    { ...context, title: `Payment ${intent.id}`, section: 'payments' },
    html`<dl class="facts">
      <dt>Amount</dt><dd>${money(intent.amount, intent.currency)}</dd>
      <dt>Status</dt><dd><span class="status ${intent.status}">${intent.status}</span></dd>
      <dt>Received</dt><dd>${money(intent.amount_received, intent.currency)}</dd>
      <dt>Refunded</dt><dd>${money(intent.amount_refunded, intent.currency)}</dd>
      <dt>Description</dt><dd>${intent.description ?? ''}</dd>
      <dt>Created</dt><dd>${time(intent.created)}</dd>
    </dl>
    ${refundable ? html`<p><a class="button" href="/dashboard/payments/${intent.id}/refund">Refund…</a></p>` : ''}
    <h2>Refunds</h2>
    <table><thead><tr><th>Refund</th><th>Amount</th><th>Status</th><th>Created</th></tr></thead><tbody>
      ${refunds.map((refund) => html`<tr><td>${refund.id}</td><td>${money(refund.amount, intent.currency)}</td><td>${refund.status}</td><td>${time(refund.created)}</td></tr>`)}
    </tbody></table>
    <h2>Events</h2>
    <table><thead><tr><th>Event</th><th>Type</th><th>Created</th></tr></thead><tbody>
      ${events.map((event) => html`<tr><td>${event.id}</td><td>${event.type}</td><td>${time(event.created)}</td></tr>`)}
    </tbody></table>
    <h2>Provider attempts</h2>
    <table><thead><tr><th>Attempt</th><th>Operation</th><th>Amount</th><th>Status</th><th>Error</th><th>Created</th></tr></thead><tbody>
      ${attempts.map((attempt) => html`<tr><td>${attempt.id}</td><td>${attempt.operation}</td><td>${money(attempt.amount, intent.currency)}</td><td>${attempt.status}</td><td>${attempt.error_code ?? ''}</td><td>${time(attempt.created)}</td></tr>`)}
    </tbody></table>`,
  );
}

export function refundPage(context: PageContext, intent: IntentView & { amount_refunded: number }, idempotencyKey: string): string {
  const remaining = intent.amount_received - intent.amount_refunded;
  return layout(
    { ...context, title: `Refund ${intent.id}`, section: 'payments' },
    html`<form method="post" action="/dashboard/payments/${intent.id}/refund" class="confirm">
      ${csrfField(context.csrfToken)}
      <input type="hidden" name="idempotency_key" value="${idempotencyKey}">
      <p>Refund up to <b>${money(remaining, intent.currency)}</b> of this payment to the buyer's card. This cannot be undone.</p>
      <label>Amount in minor units (${intent.currency}) <input type="number" name="amount" min="1" max="${remaining}" value="${remaining}" required></label>
      <label><input type="checkbox" name="confirm" value="yes" required> I confirm this refund</label>
      <button type="submit" class="danger">Refund</button>
      <a href="/dashboard/payments/${intent.id}">Cancel</a>
    </form>`,
  );
}

export interface DeliveryView {
  id: string;
  event: string;
  event_type?: string;
  endpoint: string;
  status: string;
  attempts?: number;
  created: number;
}

export function webhooksPage(context: PageContext, status: string, deliveries: DeliveryView[]): string {
  return layout(
    { ...context, title: 'Webhook deliveries', section: 'webhooks' },
    html`<form method="get" action="/dashboard/webhooks" class="search">
      <label>Status <select name="status"><option value="">any</option>
        ${['pending', 'succeeded', 'dead', 'canceled'].map((s) => html`<option value="${s}" ${s === status ? html`selected` : ''}>${s}</option>`)}
      </select></label><button type="submit">Filter</button></form>
    <table><thead><tr><th>Delivery</th><th>Event</th><th>Endpoint</th><th>Status</th><th>Attempts</th><th>Created</th><th></th></tr></thead><tbody>
      ${deliveries.map(
        (
          delivery,
        ) => html`<tr><td>${delivery.id}</td><td>${delivery.event} ${delivery.event_type ? html`<small>${delivery.event_type}</small>` : ''}</td><td>${delivery.endpoint}</td>
          <td><span class="status ${delivery.status}">${delivery.status}</span></td><td>${delivery.attempts ?? ''}</td><td>${time(delivery.created)}</td>
          <td><form method="post" action="/dashboard/webhooks/redeliver">${csrfField(context.csrfToken)}<input type="hidden" name="event" value="${delivery.event}"><button type="submit">Redeliver</button></form></td></tr>`,
      )}
    </tbody></table>${deliveries.length === 0 ? html`<p>No deliveries.</p>` : ''}`,
  );
}

export function balancePage(context: PageContext, available: Array<{ currency: string; amount: number }>): string {
  return layout(
    { ...context, title: 'Balance', section: 'balance' },
    html`<table><thead><tr><th>Currency</th><th>Available</th></tr></thead><tbody>
      ${available.map((row) => html`<tr><td>${row.currency.toUpperCase()}</td><td>${money(row.amount, row.currency)}</td></tr>`)}
    </tbody></table>${available.length === 0 ? html`<p>Nothing yet.</p>` : ''}`,
  );
}
