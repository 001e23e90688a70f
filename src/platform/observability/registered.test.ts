import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Counter, Registry } from 'prom-client';
import { registeredCounter, Tally } from './registered.js';

const config = { name: 'test_lookups_total', help: 'Lookups', labelNames: ['cache', 'outcome'] as const };

test('tallies show in every scrape, beside direct increments, for every instance sharing the counter', async () => {
  const registry = new Registry();
  const counter = registeredCounter(registry, config);
  assert.equal(registeredCounter(registry, config), counter);
  const hits = new Tally(counter, { cache: 'a', outcome: 'hit' });
  const otherHits = new Tally(counter, { cache: 'b', outcome: 'hit' });
  for (let i = 0; i < 3; i++) hits.inc();
  otherHits.inc();
  counter.inc({ cache: 'a', outcome: 'miss' });
  const scraped = await registry.metrics();
  assert.match(scraped, /^test_lookups_total\{cache="a",outcome="hit"\} 3$/m);
  assert.match(scraped, /^test_lookups_total\{cache="b",outcome="hit"\} 1$/m);
  assert.match(scraped, /^test_lookups_total\{cache="a",outcome="miss"\} 1$/m);
  hits.inc();
  assert.match(await registry.metrics(), /^test_lookups_total\{cache="a",outcome="hit"\} 4$/m);
  // Closed, it folds what it still holds and counts no more into the counter.
  hits.inc();
  hits.close();
  hits.inc();
  assert.match(await registry.metrics(), /^test_lookups_total\{cache="a",outcome="hit"\} 5$/m);
});

test('a tally refuses a counter it cannot fold into', () => {
  const counter = new Counter({ ...config, registers: [] });
  assert.throws(() => new Tally(counter, { cache: 'a', outcome: 'hit' }), /registeredCounter/);
});
