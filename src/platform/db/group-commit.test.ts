import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { coalesce } from './group-commit.js';

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
