/**
 * The one registry of API error codes. Each code has a fixed HTTP status and error type;
 * callers may rely on the code never changing meaning. Anything not in this map becomes
 * `internal_error` at the edge, without details.
 */
export const API_ERRORS = {
  parameter_invalid: { status: 400, type: 'invalid_request_error' },
  parameter_missing: { status: 400, type: 'invalid_request_error' },
  parameter_unknown: { status: 400, type: 'invalid_request_error' },
  body_invalid_json: { status: 400, type: 'invalid_request_error' },
  body_too_large: { status: 413, type: 'invalid_request_error' },
  request_malformed: { status: 400, type: 'invalid_request_error' },
  request_timeout: { status: 408, type: 'invalid_request_error' },
  headers_too_large: { status: 431, type: 'invalid_request_error' },
  unsupported_media_type: { status: 415, type: 'invalid_request_error' },
  idempotency_key_invalid: { status: 400, type: 'invalid_request_error' },
  api_key_missing: { status: 401, type: 'authentication_error' },
  api_key_invalid: { status: 401, type: 'authentication_error' },
  signature_invalid: { status: 401, type: 'authentication_error' },
  secret_key_required: { status: 403, type: 'permission_error' },
  resource_missing: { status: 404, type: 'invalid_request_error' },
  route_not_found: { status: 404, type: 'invalid_request_error' },
  idempotency_key_in_use: { status: 409, type: 'idempotency_error' },
  payment_intent_unexpected_state: { status: 409, type: 'invalid_request_error' },
  idempotency_key_reused: { status: 422, type: 'idempotency_error' },
  admission_invalid: { status: 403, type: 'invalid_request_error' },
  sale_not_open: { status: 409, type: 'invalid_request_error' },
  sale_closed: { status: 409, type: 'invalid_request_error' },
  sold_out: { status: 409, type: 'invalid_request_error' },
  buyer_limit_exceeded: { status: 409, type: 'invalid_request_error' },
  hold_not_active: { status: 409, type: 'invalid_request_error' },
  hold_payment_in_progress: { status: 409, type: 'invalid_request_error' },
  csrf_invalid: { status: 403, type: 'invalid_request_error' },
  amount_too_large: { status: 400, type: 'invalid_request_error' },
  refund_exceeds_received: { status: 400, type: 'invalid_request_error' },
  charge_already_refunded: { status: 400, type: 'invalid_request_error' },
  url_not_allowed: { status: 400, type: 'invalid_request_error' },
  webhook_endpoint_limit_reached: { status: 400, type: 'invalid_request_error' },
  card_declined: { status: 402, type: 'card_error' },
  provider_declined: { status: 402, type: 'api_error' },
  rate_limited: { status: 429, type: 'rate_limit_error' },
  provider_unavailable: { status: 503, type: 'api_error' },
  overloaded: { status: 503, type: 'api_error' },
  service_unavailable: { status: 503, type: 'api_error' },
  waiting_room_unavailable: { status: 503, type: 'api_error' },
  internal_error: { status: 500, type: 'api_error' },
} as const satisfies Record<string, { status: number; type: string }>;

export type ApiErrorCode = keyof typeof API_ERRORS;

export interface ApiErrorBody {
  error: { type: string; code: ApiErrorCode; message: string; param?: string };
}

/** An expected failure to report to the caller; thrown only at the HTTP edge. */
export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly param?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = API_ERRORS[code].status;
  }

  toBody(): ApiErrorBody {
    const error: ApiErrorBody['error'] = { type: API_ERRORS[this.code].type, code: this.code, message: this.message };
    if (this.param !== undefined) error.param = this.param;
    return { error };
  }
}

export function errorBody(code: ApiErrorCode, message: string, param?: string): ApiErrorBody {
  return new ApiError(code, message, param).toBody();
}

/** The object found, or the 404 every retrieve answers for an unknown or another merchant's id. */
export function foundOr404<T>(found: T | undefined, object: string, id: string): T {
  if (found === undefined) throw new ApiError('resource_missing', `No such ${object}: '${id}'`, 'id');
  return found;
}
