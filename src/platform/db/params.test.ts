/**
 * jsonbArray must be byte for byte the literal pg writes for the same values, and read back by
 * PostgreSQL as the same jsonb values.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { createTestDatabase } from '../../../test/helpers.js';
import { jsonbArray } from './params.js';

// pg's own encoder of a parameter, which jsonbArray stands in for (pg's types do not declare it).
const pgUtils = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue: (value: unknown) => string };

const awkward: unknown[] = [
  { id: 'pi_1', amount: 500, metadata: {} },
  null,
  { text: 'a "quoted" word, a back\\slash, a \\" pair' },
  { lines: 'one\ntwo\r\nthree\ttab\u0000nul\u001f' },
  { braces: '{not,an,array}', comma: ',', space: ' NULL ' },
  { unicode: 'café 票 🎟️', separators: '\u2028\u2029', lone: '\ud800 and \udfff' },
  'a bare string',
  42,
  [1, [2, { deep: ['"'] }]],
  true,
  {},
  [],
];
// PostgreSQL's jsonb refuses these two, however they are sent: the byte test keeps them.
const unstorable = /\\u0000|\\ud[89a-f]/i;

test('jsonbArray writes the literal pg writes for the JSON of each value', () => {
  for (const values of [awkward, [], [null], [{ a: 1 }]]) {
    const expected = pgUtils.prepareValue(values.map((value) => JSON.stringify(value)));
    assert.equal(jsonbArray(values), expected);
  }
  // An undefined is SQL's NULL either way: pg spells it NULL, JSON.stringify null.
  assert.equal(jsonbArray([undefined, { a: 1 }]), '{null,"{\\"a\\":1}"}');
  assert.equal(pgUtils.prepareValue([undefined, JSON.stringify({ a: 1 })]), '{NULL,"{\\"a\\":1}"}');
});

test('PostgreSQL reads jsonbArray back as the same jsonb values, nulls included', async () => {
  const { pool } = await createTestDatabase({ empty: true });
  const storable = [...awkward.filter((value) => !unstorable.test(JSON.stringify(value))), undefined];
  assert.equal(storable.length, awkward.length - 1);
  const { rows } = await pool.query<{ value: unknown; missing: boolean }>(
    'select value, value is null as missing from unnest($1::jsonb[]) with ordinality as v(value, n) order by n',
    [jsonbArray(storable)],
  );
  assert.equal(rows.length, storable.length);
  rows.forEach((row, index) => {
    const value = storable[index];
    // undefined is SQL's NULL; null is JSON's null, which pg reads back as null too.
    assert.equal(row.missing, value === undefined);
    // What PostgreSQL stores is the JSON text's meaning: parse it as a client would.
    if (value !== undefined) assert.deepEqual(row.value, JSON.parse(JSON.stringify(value)));
  });
});
