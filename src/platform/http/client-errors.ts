/**
 * Requests Node's HTTP parser refuses (a control byte in a header, headers too large, a request
 * that did not arrive in time) never reach Fastify: they are answered here, in our error shape.
 */
import { STATUS_CODES } from 'node:http';
import { ApiError } from './errors.js';

/** Writes our error body to a connection the HTTP parser gave up on, then closes it. */
export function answerClientError(error: NodeJS.ErrnoException, socket: import('node:stream').Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const refusal = clientErrorRefusal(error.code);
  if (socket.writable) {
    const body = JSON.stringify(refusal.toBody());
    socket.write(
      `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

export function clientErrorRefusal(code: string | undefined): ApiError {
  switch (code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ApiError('request_timeout', 'The request did not arrive in time; send it again, whole.');
    case 'HPE_HEADER_OVERFLOW':
      return new ApiError('headers_too_large', 'The request headers are too large.');
    case 'HPE_INVALID_HEADER_TOKEN':
    case 'HPE_INVALID_HEADER_VALUE':
    case 'HPE_INVALID_HEADER_CHARACTER':
    case 'HPE_LF_EXPECTED':
    case 'HPE_CR_EXPECTED':
      return new ApiError(
        'request_malformed',
        'A request header holds a character HTTP does not allow (a control byte or a bare line break); send header names and values as printable text.',
      );
    default:
      return new ApiError('request_malformed', 'The request is not valid HTTP/1.1.');
  }
}
