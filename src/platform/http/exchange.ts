/**
 * One outgoing HTTP exchange through an undici dispatcher, as the webhook transport and the
 * provider connector make them: one deadline for the whole exchange (connecting, the answer's
 * head and its body, so a server that trickles its answer cannot hold the connection), and the
 * answer read up to a cap (a longer one ends the exchange and its connection). Redirects are
 * never followed: a dispatcher's raw `dispatch` does not.
 *
 * undici's `dispatch` with a bare handler rather than node:http or undici's `request`: a POST
 * costs the caller about 0.4 of node:http's CPU (bench/http-clients.ts), and the response
 * streams of `request` gave back most of that.
 */
import type { Dispatcher } from 'undici';

export type ExchangeEnd =
  /** The whole answer came: its status, and its body when asked to keep it. */
  | { kind: 'complete'; status: number; body: Buffer }
  /** No whole answer: the connection failed, the answer was too long, or the deadline passed. */
  | { kind: 'failed'; error: NodeJS.ErrnoException; timedOut: boolean };

export interface ExchangeOptions {
  timeoutMs: number;
  /** An answer longer than this ends the exchange as failed. */
  answerBytesMax: number;
  /** Keep the answer's body (otherwise it is read and dropped, so the connection can be reused). */
  keepAnswer: boolean;
  /** Called once the final status arrives (not for 1xx), before the body is read. */
  onStatus?: (status: number) => void;
}

export function exchange(dispatcher: Dispatcher, request: Dispatcher.DispatchOptions, options: ExchangeOptions): Promise<ExchangeEnd> {
  return new Promise((resolve) => {
    let settled = false;
    let abort: ((reason: Error) => void) | undefined;
    let status = 0;
    let bytes = 0;
    const chunks: Buffer[] = [];
    const end = (result: ExchangeEnd) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(() => {
      const error = new Error(`no whole answer within ${options.timeoutMs} ms`);
      end({ kind: 'failed', error, timedOut: true });
      abort?.(error);
    }, options.timeoutMs);
    dispatcher.dispatch(request, {
      onConnect(abortRequest) {
        abort = abortRequest;
        // The deadline passed while the request waited for a connection.
        if (settled) abortRequest(new Error(`no whole answer within ${options.timeoutMs} ms`));
      },
      onHeaders(statusCode) {
        // 1xx answers are informational: the final status follows.
        if (statusCode >= 200 && status === 0) {
          status = statusCode;
          options.onStatus?.(statusCode);
        }
        return true;
      },
      onData(chunk) {
        bytes += chunk.length;
        if (bytes > options.answerBytesMax) abort?.(new Error(`answered more than ${options.answerBytesMax} bytes`));
        else if (options.keepAnswer) chunks.push(chunk);
        return true;
      },
      onComplete() {
        end({ kind: 'complete', status, body: Buffer.concat(chunks) });
      },
      onError(error: NodeJS.ErrnoException) {
        end({ kind: 'failed', error, timedOut: false });
      },
    });
  });
}

/** An exchange's error as a log line or an attempt's record shows it: the code first, when there is one. */
export function describeError(error: NodeJS.ErrnoException): string {
  return error.code ? `${error.code}: ${error.message}` : error.message;
}
