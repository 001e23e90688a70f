/**
 * Coalesced calls (group commit for reads and writes of one kind): calls that arrive while the
 * previous run is in flight, or in the same turn of the event loop, run together as one. N
 * concurrent callers then cost one round trip, one statement and one commit instead of N, and
 * no call waits for a timer: an idle coalescer runs a call at the end of the current turn, and
 * a busy one runs what gathered as soon as its run returns, so a call waits at most one run.
 *
 * A run that throws fails every call of its batch with that error, as each call would have
 * failed alone (the database went away); a run answers each input, in order, otherwise.
 */
import assert from 'node:assert/strict';

export interface CoalesceOptions<I, O> {
  /** Runs a batch; answers one output per input, in the inputs' order. */
  run: (inputs: I[]) => Promise<O[]>;
  /** At most this many inputs per run; more wait for the next. */
  batchMax: number;
}

interface Waiting<I, O> {
  input: I;
  resolve: (output: O) => void;
  reject: (error: unknown) => void;
}

/** A function whose concurrent calls run in batches of `options.run`, one batch at a time. */
export function coalesce<I, O>(options: CoalesceOptions<I, O>): (input: I) => Promise<O> {
  assert.ok(options.batchMax >= 1, 'coalesce needs batchMax >= 1');
  let waiting: Waiting<I, O>[] = [];
  let running = false;
  let scheduled = false;

  const flush = () => {
    scheduled = false;
    if (running || waiting.length === 0) return;
    const batch = waiting.length <= options.batchMax ? waiting : waiting.slice(0, options.batchMax);
    waiting = batch === waiting ? [] : waiting.slice(options.batchMax);
    running = true;
    runBatch(batch).finally(() => {
      running = false;
      flush();
    });
  };

  const runBatch = async (batch: Waiting<I, O>[]) => {
    let outputs: O[];
    try {
      outputs = await options.run(batch.map((call) => call.input));
    } catch (error) {
      for (const call of batch) call.reject(error);
      return;
    }
    assert.equal(outputs.length, batch.length, 'a coalesced run answers every input');
    for (let index = 0; index < batch.length; index++) (batch[index] as Waiting<I, O>).resolve(outputs[index] as O);
  };

  return (input) =>
    new Promise<O>((resolve, reject) => {
      waiting.push({ input, resolve, reject });
      if (!running && !scheduled) {
        scheduled = true;
        // Calls made in this turn of the event loop (jobs started together) join this one.
        setImmediate(flush);
      }
    });
}
