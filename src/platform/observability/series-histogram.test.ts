import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { SeriesHistogram } from './series-histogram.js';

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const LABELS = ['method', 'route', 'status_class'] as const;
type Label = (typeof LABELS)[number];

function pair() {
  const theirs = new Registry();
  const ours = new Registry();
  const config = { name: 'test_duration_seconds', help: 'Test durations', labelNames: LABELS, buckets: BUCKETS };
  return {
    theirs: { registry: theirs, histogram: new Histogram({ ...config, registers: [theirs] }) },
    ours: { registry: ours, histogram: new SeriesHistogram({ ...config, registers: [ours] }) },
  };
}

const labelSets: Array<Record<Label, string>> = [
  { method: 'GET', route: '/v1/sales/:id', status_class: '2xx' },
  { method: 'POST', route: '/v1/holds', status_class: '4xx' },
  { method: 'GET', route: 'unmatched', status_class: '4xx' },
];

describe('a series histogram', () => {
  test('exports what prom-client exports for the same observations, text and JSON', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(fc.nat(labelSets.length - 1), fc.oneof(fc.constantFrom(...BUCKETS, 0, 11), fc.double({ min: 0, max: 20, noNaN: true }))),
          {
            maxLength: 60,
          },
        ),
        async (observations) => {
          const { theirs, ours } = pair();
          const held = labelSets.map((labels) => ours.histogram.series(labels));
          for (const [index, value] of observations) {
            theirs.histogram.observe(labelSets[index] as Record<Label, string>, value);
            held[index]?.observe(value);
          }
          assert.equal(await ours.registry.metrics(), await theirs.registry.metrics());
          assert.deepEqual(await ours.registry.getMetricsAsJSON(), await theirs.registry.getMetricsAsJSON());
          assert.deepEqual(await ours.histogram.get(), await theirs.histogram.get());
        },
      ),
    );
  });

  test('observe with labels finds the same series; a reset empties it and a held series comes back', async () => {
    const { theirs, ours } = pair();
    const held = ours.histogram.series(labelSets[0] as Record<Label, string>);
    held.observe(0.002);
    ours.histogram.observe(labelSets[0] as Record<Label, string>, 0.2);
    theirs.histogram.observe(labelSets[0] as Record<Label, string>, 0.002);
    theirs.histogram.observe(labelSets[0] as Record<Label, string>, 0.2);
    assert.equal(await ours.registry.metrics(), await theirs.registry.metrics());
    ours.registry.resetMetrics();
    theirs.registry.resetMetrics();
    assert.equal(await ours.registry.metrics(), await theirs.registry.metrics());
    held.observe(3);
    theirs.histogram.observe(labelSets[0] as Record<Label, string>, 3);
    assert.equal(await ours.registry.metrics(), await theirs.registry.metrics());
  });

  test('refuses what prom-client refuses: an unknown label, a value that is not a number', () => {
    const { ours } = pair();
    assert.throws(() => ours.histogram.series({ method: 'GET', colour: 'red' } as never), /no label colour/);
    assert.throws(() => ours.histogram.series(labelSets[0] as Record<Label, string>).observe(Number.NaN), /finite/);
  });
});
