import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { coalesce, GroupCommit } from './group-commit.js';

/** A run that records its batches and answers when released. */
function recorder() {
  const batches: number[][] = [];
  const releases: (() => void)[] = [];
  const run = (inputs: number[]) => {
    batches.push(inputs);
    return new Promise<string[]>((resolve) => releases.push(() => resolve(inputs.map((input) => `answer ${input}`))));
  };
  const releaseNext = async () => {
    while (releases.length === 0) await new Promise((resolve) => setImmediate(resolve));
    (releases.shift() as () => void)();
  };
  return { batches, run, releaseNext };
}

/** Group commit through its one-group form, coalesce (as the worker's delivery jobs use it). */
describe('coalesce', () => {
  test('calls of one turn run as one batch, each answered with its own output', async () => {
    const { batches, run, releaseNext } = recorder();
    const call = coalesce({ run, batchMax: 10 });
    const answers = Promise.all([call(1), call(2), call(3)]);
    await releaseNext();
    assert.deepEqual(await answers, ['answer 1', 'answer 2', 'answer 3']);
    assert.deepEqual(batches, [[1, 2, 3]]);
  });

  test('calls made while a batch runs wait for it and go together in the next, at most batchMax at a time', async () => {
    const { batches, run, releaseNext } = recorder();
    const call = coalesce({ run, batchMax: 2 });
    const first = call(1);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(batches, [[1]]);
    const later = Promise.all([call(2), call(3), call(4)]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(batches, [[1]], 'one batch at a time');
    await releaseNext();
    assert.equal(await first, 'answer 1');
    await releaseNext();
    await releaseNext();
    assert.deepEqual(await later, ['answer 2', 'answer 3', 'answer 4']);
    assert.deepEqual(batches, [[1], [2, 3], [4]]);
  });

  test('with sizeOf, a batch holds at most batchMax in size; a call larger than that goes alone', async () => {
    const { batches, run, releaseNext } = recorder();
    const call = coalesce({ run, batchMax: 10, sizeOf: (input: number) => input });
    const first = call(1);
    await new Promise((resolve) => setImmediate(resolve));
    const later = Promise.all([call(4), call(5), call(2), call(12), call(3)]);
    for (let batch = 0; batch < 5; batch++) await releaseNext();
    await Promise.all([first, later]);
    assert.deepEqual(batches, [[1], [4, 5], [2], [12], [3]]);
  });

  test("a failed run fails every call of its batch with the run's error; the next batch runs", async () => {
    let fail = true;
    const call = coalesce({
      run: async (inputs: number[]) => {
        if (fail) throw new Error('database unreachable');
        return inputs.map((input) => input * 2);
      },
      batchMax: 10,
    });
    const failed = await Promise.allSettled([call(1), call(2)]);
    assert.deepEqual(
      failed.map((result) => (result.status === 'rejected' ? (result.reason as Error).message : 'fulfilled')),
      ['database unreachable', 'database unreachable'],
    );
    fail = false;
    assert.deepEqual(await Promise.all([call(3), call(4)]), [6, 8]);
  });
});

describe('group commit with a window', () => {
  /** A group commit over recorder() whose window is long enough to see whether a batch waited it. */
  function windowed(windowMs: number) {
    const recorded = recorder();
    const commits = new GroupCommit<number, string>({ windowMs, batchMax: 10, maxRunning: 1, run: (_group, batch) => recorded.run(batch) });
    return { ...recorded, submit: (input: number) => commits.submit('sale', input) };
  }
  const elapse = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  test("a group's first batch waits out the window for company", async () => {
    const { batches, submit, releaseNext } = windowed(30);
    const answers = Promise.all([submit(1), submit(2)]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(batches, [], 'nothing runs before the window ends');
    await elapse(40);
    assert.deepEqual(batches, [[1, 2]]);
    await releaseNext();
    assert.deepEqual(await answers, ['answer 1', 'answer 2']);
  });

  test("once as many requests wait as the group's last batch had, the batch goes without waiting out the window", async () => {
    const { batches, submit, releaseNext } = windowed(30);
    const first = Promise.all([submit(1), submit(2), submit(3)]);
    await elapse(40);
    await releaseNext();
    await first;
    const second = Promise.all([submit(4), submit(5)]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(batches, [[1, 2, 3]], 'two of the three expected: the window still runs');
    const third = submit(6);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(
      batches,
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
      "the third starts the batch on the next turn, not at the window's end",
    );
    await releaseNext();
    assert.deepEqual(await second, ['answer 4', 'answer 5']);
    assert.equal(await third, 'answer 6');
  });

  test('after a batch of one, a lone request still waits for company: two are the least a batch expects', async () => {
    const { batches, submit, releaseNext } = windowed(30);
    const first = submit(1);
    await elapse(40);
    await releaseNext();
    await first;
    const second = submit(2);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(batches, [[1]], 'one request does not start a batch');
    const third = submit(3);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(batches, [[1], [2, 3]]);
    await releaseNext();
    assert.deepEqual(await Promise.all([second, third]), ['answer 2', 'answer 3']);
  });
});
