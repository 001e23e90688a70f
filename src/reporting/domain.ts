/**
 * Pure rules of the reports: the date range a payments report covers, and CSV encoding.
 */

/** The longest payments report: a year (and a leap day) of daily rows. */
export const REPORT_RANGE_DAYS_MAX = 366;
/** Without `from`, a payments report covers this many days up to `to`. */
export const REPORT_RANGE_DAYS_DEFAULT = 30;
/** Orders read per query of a CSV export: large enough to amortise the round trip, small in memory. */
export const EXPORT_PAGE_ROWS = 1_000;

const DAY_MS = 86_400_000;
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

export type DateRange =
  | { ok: true; from: string; to: string; fromAt: Date; toBefore: Date }
  | { ok: false; param: 'from' | 'to'; message: string };

/** A calendar date YYYY-MM-DD as midnight UTC, or undefined if it is no real date. */
export function parseDay(value: string): Date | undefined {
  const match = DATE.exec(value);
  if (!match) return undefined;
  const at = new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])));
  return at.toISOString().slice(0, 10) === value ? at : undefined;
}

export function formatDay(at: Date): string {
  return at.toISOString().slice(0, 10);
}

/**
 * The UTC days from `from` to `to`, both included. `to` defaults to today, `from` to
 * REPORT_RANGE_DAYS_DEFAULT - 1 days before `to`.
 */
export function reportRange(query: { from?: string; to?: string }, now = new Date()): DateRange {
  const to = query.to === undefined ? parseDay(formatDay(now)) : parseDay(query.to);
  if (!to) return { ok: false, param: 'to', message: `to must be a date YYYY-MM-DD (UTC); got '${query.to}'` };
  const from = query.from === undefined ? new Date(to.getTime() - (REPORT_RANGE_DAYS_DEFAULT - 1) * DAY_MS) : parseDay(query.from);
  if (!from) return { ok: false, param: 'from', message: `from must be a date YYYY-MM-DD (UTC); got '${query.from}'` };
  if (from > to) return { ok: false, param: 'from', message: `from (${formatDay(from)}) must not be after to (${formatDay(to)})` };
  const days = (to.getTime() - from.getTime()) / DAY_MS + 1;
  if (days > REPORT_RANGE_DAYS_MAX) {
    return { ok: false, param: 'from', message: `a report covers at most ${REPORT_RANGE_DAYS_MAX} days; this asks for ${days}` };
  }
  return { ok: true, from: formatDay(from), to: formatDay(to), fromAt: from, toBefore: new Date(to.getTime() + DAY_MS) };
}

/**
 * One CSV field (RFC 4180). A text that a spreadsheet would run as a formula (= + - @, tab,
 * carriage return first) gets a leading apostrophe: buyer references come from buyers.
 */
export function csvField(value: string | number | null): string {
  if (value === null) return '';
  if (typeof value === 'number') return String(value);
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

export function csvLine(fields: Array<string | number | null>): string {
  return `${fields.map(csvField).join(',')}\r\n`;
}
