/**
 * The process logger: JSON lines (pino) with the request id, trace id, merchant id and route of
 * the request a line belongs to, and nothing secret in them. Secrets are removed twice: by path
 * (headers, known secret fields) and by shape (API keys, webhook secrets, bearer tokens and card
 * numbers anywhere in a string, messages included), since a secret in an error message or a
 * URL has no known path.
 */
import { trace } from '@opentelemetry/api';
import { pino } from 'pino';

export type Logger = pino.Logger;
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

const CENSOR = '[REDACTED]';

// Fields that hold secrets wherever they appear in a logged object (one level of nesting under
// any key, and at the top).
const SECRET_FIELDS = [
  'authorization',
  'cookie',
  'set-cookie',
  'secret',
  'secret_key',
  'password',
  'admission_token',
  'token',
  'card_number',
  'cvc',
];
const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  ...SECRET_FIELDS.flatMap((field) => (/^[a-z_]+$/.test(field) ? [field, `*.${field}`] : [`["${field}"]`, `*["${field}"]`])),
];

const SHAPES: Array<[RegExp, string]> = [
  // Tokens first: a bearer token that is an API key goes whole.
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}/gi, `$1 ${CENSOR}`],
  // API keys: the prefix says which kind leaked, the rest is gone.
  [/\b(sk|pk|rk)_(test|live)_[A-Za-z0-9]{6,}/g, `$1_$2_${CENSOR}`],
  [/\bwhsec_[A-Za-z0-9+/=_-]{6,}/g, `whsec_${CENSOR}`],
  [/\bfg_session=[^;\s"]+/g, `fg_session=${CENSOR}`],
];
// 13 to 19 digits, optionally grouped by spaces or dashes: the shape of a card number.
const CARD_SHAPE = /\b\d(?:[ -]?\d){12,18}\b/g;

/** Luhn's checksum, which every card number passes (and most other digit runs do not). */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let digit = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      digit *= 2;
      if (digit > 9) digit -= 9;
    }
    sum += digit;
  }
  return sum % 10 === 0;
}

/** The text with every key, secret, token and card-shaped number in it replaced. */
export function scrubText(text: string): string {
  let scrubbed = text;
  for (const [shape, replacement] of SHAPES) scrubbed = scrubbed.replace(shape, replacement);
  return scrubbed.replace(CARD_SHAPE, (match) => {
    const digits = match.replace(/[ -]/g, '');
    return digits.length >= 13 && digits.length <= 19 && luhnValid(digits) ? `${CENSOR} card` : match;
  });
}

// Deep enough for request and error objects; deeper structures are cut, not walked.
const SCRUB_DEPTH_MAX = 6;

/** Every string in the value scrubbed; numbers (timestamps) left alone. */
export function scrubValue(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return scrubText(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth >= SCRUB_DEPTH_MAX) return '[too deep]';
  if (value instanceof Error) {
    return {
      type: value.name,
      message: scrubText(value.message),
      stack: value.stack ? scrubText(value.stack) : undefined,
      code: (value as { code?: unknown }).code,
    };
  }
  if (Array.isArray(value)) return value.map((item) => scrubValue(item, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) out[key] = scrubValue(item, depth + 1);
  return out;
}

export function createLogger(options: { level: LogLevel; destination?: pino.DestinationStream }): Logger {
  return pino(
    {
      level: options.level,
      base: { service: 'floodgate' },
      redact: { paths: REDACT_PATHS, censor: CENSOR },
      // The trace a line belongs to, when tracing is on (OTEL_EXPORTER_OTLP_ENDPOINT).
      mixin() {
        const context = trace.getActiveSpan()?.spanContext();
        return context ? { trace_id: context.traceId, span_id: context.spanId } : {};
      },
      formatters: {
        log: (object) => scrubValue(object) as Record<string, unknown>,
      },
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((arg) => (typeof arg === 'string' ? scrubText(arg) : arg)) as Parameters<typeof method>);
        },
      },
    },
    options.destination,
  );
}
