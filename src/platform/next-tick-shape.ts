/**
 * Keeps `process.nextTick` on V8's fast path for the life of a server process (Node.js 20).
 *
 * nextTick queues each callback in an object literal with two computed keys, Node's async id
 * symbols. V8 builds such an object by adding the keys one by one, moving it through a chain of
 * hidden classes (maps) that V8 holds only weakly. When a full garbage collection finds no such
 * object alive, as between two bursts of work, the chain dies and the next nextTick builds a new
 * one. After a few of these, the inline cache in nextTick has seen too many maps: it gives up
 * and sends every later nextTick through the runtime. In a small program nextTick then cost
 * about 200 ns instead of about 40, for good, from the third to fifth full collection on. A
 * server answers each request with about six nextTicks (its streams' end, close and write
 * callbacks): perf put 12% of the API's CPU in cached sale reads in those runtime calls, where a
 * bare Fastify server, with few full collections, paid none. Keeping one object took the read
 * from 0.77–0.83 of the bare server's rate to 0.88–0.92 in alternated runs (bench/README.md, the
 * twenty-ninth session).
 *
 * One queued object kept alive keeps its map, and through it the whole chain: async_hooks hands
 * it over once, as the resource of the first TickObject queued while a hook is on. The hook is
 * on for that one nextTick only, so nothing else pays for it.
 */
import { createHook } from 'node:async_hooks';

let keptTickObject: object | undefined;

/** Keeps one of nextTick's queued objects alive; once per process. */
export function keepNextTickFast(): void {
  if (keptTickObject) return;
  const hook = createHook({
    init(_asyncId, type, _triggerAsyncId, resource) {
      if (type === 'TickObject' && !keptTickObject) keptTickObject = resource;
    },
  }).enable();
  try {
    process.nextTick(noop);
  } finally {
    hook.disable();
  }
}

/** The queued object kept, for tests: undefined until keepNextTickFast has run. */
export function keptNextTickObject(): object | undefined {
  return keptTickObject;
}

function noop(): void {}
