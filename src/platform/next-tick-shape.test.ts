/**
 * The mechanism, checked on V8's own hidden classes rather than on timings: with one queued
 * object kept, nextTicks queued after several full collections still get the kept object's
 * map. (Without one, a small program's nextTick fell to V8's slow path after three to five:
 * bench/README.md, the twenty-ninth session.) The map check runs in a child process, where
 * `%HaveSameMap` (--allow-natives-syntax) and `gc()` (--expose-gc) are available.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { keepNextTickFast, keptNextTickObject } from './next-tick-shape.js';

const MODULE = path.join(import.meta.dirname, 'next-tick-shape.ts');

/**
 * Prints whether nextTicks queued after eight full collections, with no queued object alive
 * during any of them but the kept one, still get the kept object's map: one with no arguments,
 * one with two (as the streams queue theirs).
 */
const SAME_MAP_AFTER_COLLECTIONS = `
  import { createHook } from 'node:async_hooks';
  import { keepNextTickFast, keptNextTickObject } from ${JSON.stringify(MODULE)};
  keepNextTickFast();
  const kept = keptNextTickObject();
  const queued = (...args) => {
    let object;
    const hook = createHook({ init(_id, type, _trigger, resource) { if (type === 'TickObject') object ??= resource; } }).enable();
    process.nextTick(() => {}, ...args);
    hook.disable();
    return object;
  };
  for (let round = 0; round < 8; round++) {
    await new Promise((resolve) => setImmediate(resolve));
    globalThis.gc();
  }
  const sameMap = (object) => eval('%HaveSameMap(kept, object)');
  console.log(JSON.stringify([sameMap(queued()), sameMap(queued('state', 'stream'))]));
`;

test('the kept object is one of the objects nextTick queues', () => {
  keepNextTickFast();
  const kept = keptNextTickObject();
  assert.ok(kept, 'an object was kept');
  assert.deepEqual(
    Object.getOwnPropertySymbols(kept).map((symbol) => symbol.description),
    ['async_id_symbol', 'trigger_async_id_symbol'],
  );
  assert.deepEqual(Object.keys(kept), ['callback', 'args']);
  keepNextTickFast();
  assert.equal(keptNextTickObject(), kept, 'a second call keeps the same object');
});

test("nextTicks queued after full collections keep the kept object's map", async () => {
  const run = promisify(execFile);
  const { stdout } = await run(
    process.execPath,
    ['--allow-natives-syntax', '--expose-gc', '--import', 'tsx', '--input-type=module', '-e', SAME_MAP_AFTER_COLLECTIONS],
    { cwd: path.resolve(import.meta.dirname, '../..') },
  );
  assert.deepEqual(JSON.parse(stdout), [true, true]);
});
