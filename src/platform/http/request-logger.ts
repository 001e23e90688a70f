/**
 * Each request's logger, made only when the request writes a line.
 *
 * Every request gets a child logger bound to its request id, then its route, then (once
 * authenticated) its merchant. A pino child is not free: it serializes and redacts its
 * bindings when it is made. At surge rates almost no request writes a line (request logging
 * is off, errors are rare), yet the three children cost a cached sale read more than its
 * cache lookup. Here a child only collects its bindings; the pino child is made, with all of
 * them at once, the first time a line is written at a level the logger lets through. The
 * lines are the same: the same bindings in the same order, under the same parent.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { pino } from 'pino';

type Bindings = pino.Bindings;
type ChildOptions = pino.ChildLoggerOptions;
type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * Whether the logger writes lines at `level`, for a caller that would gather a line's fields
 * for nothing otherwise. A logger that cannot say (pino and lazy children can) is taken to.
 */
export function levelEnabled(logger: FastifyBaseLogger, level: Level): boolean {
  const check = (logger as Partial<Pick<pino.Logger, 'isLevelEnabled'>>).isLevelEnabled;
  return typeof check === 'function' ? check.call(logger, level) : true;
}

export class LazyChildLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | undefined;

  /**
   * `bindings` are this logger's own; `before` is the lazy logger it is a child of, whose
   * bindings come first. Kept as a chain, not merged, until a line is written.
   */
  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly before?: LazyChildLogger,
  ) {}

  get level(): pino.LevelWithSilentOrString {
    return (this.made ?? this.parent).level;
  }

  set level(level: pino.LevelWithSilentOrString) {
    this.logger().level = level;
  }

  isLevelEnabled(level: Level): boolean {
    return levelEnabled(this.made ?? this.parent, level);
  }

  child(bindings: Bindings, options?: ChildOptions): FastifyBaseLogger {
    // Options (a level, serializers, a message prefix) are pino's to combine: made at once.
    if (this.made || hasOptions(options)) return this.logger().child(bindings, options);
    return new LazyChildLogger(this.parent, bindings, this);
  }

  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }

  error(...args: unknown[]): void {
    this.write('error', args);
  }

  warn(...args: unknown[]): void {
    this.write('warn', args);
  }

  info(...args: unknown[]): void {
    this.write('info', args);
  }

  debug(...args: unknown[]): void {
    this.write('debug', args);
  }

  trace(...args: unknown[]): void {
    this.write('trace', args);
  }

  silent(): void {}

  private write(level: Level, args: unknown[]): void {
    if (!this.made && !levelEnabled(this.parent, level)) return;
    const logger = this.logger();
    (logger[level] as (...rest: unknown[]) => void).apply(logger, args);
  }

  private logger(): FastifyBaseLogger {
    this.made ??= this.parent.child(this.allBindings());
    return this.made;
  }

  private allBindings(): Bindings {
    return this.before ? { ...this.before.allBindings(), ...this.bindings } : this.bindings;
  }
}

function hasOptions(options: ChildOptions | undefined): boolean {
  for (const _ in options) return true;
  return false;
}

/** Fastify's childLoggerFactory: the request's logger (see above). */
export function lazyChildLoggerFactory(logger: FastifyBaseLogger, bindings: Bindings, options?: ChildOptions): FastifyBaseLogger {
  return hasOptions(options) ? logger.child(bindings, options) : new LazyChildLogger(logger, bindings);
}
