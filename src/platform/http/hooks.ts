/**
 * Hooks for the hot path. Every request passes each global hook, and an async hook costs a
 * promise and a turn of the microtask queue even when it has nothing to do: a cached sale read
 * passed eight of them, most doing nothing at all (no limit to count, nothing to trace). A
 * step here returns undefined when it is done at once, or the promise of the work it had to
 * start (a database or Redis call); the hook made from it calls Fastify back synchronously in
 * the first case. A step that throws, or whose promise rejects, fails the request exactly as
 * an async hook's rejection does.
 */
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';

export type HookStep = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown> | undefined;

/** A Fastify callback hook (onRequest, preValidation, onResponse) running `step`. */
export type CallbackHook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void;

export function callbackHook(step: HookStep): CallbackHook {
  return (request, reply, done) => {
    let pending: Promise<unknown> | undefined;
    try {
      pending = step(request, reply);
    } catch (error) {
      done(error as Error);
      return;
    }
    if (pending === undefined) done();
    else
      pending.then(
        () => done(),
        (error: unknown) => done((error ?? new Error('a hook failed without an error')) as Error),
      );
  };
}
