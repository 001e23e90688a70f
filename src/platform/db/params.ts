/**
 * Parameters of the batch statements that pg would encode slowly.
 *
 * A batch passes each column as an array (`unnest($1::text[], …)`), and pg writes an array
 * parameter as PostgreSQL's array literal, escaping every element with two regular expressions
 * (pg/lib/utils.js, escapeElement). For a jsonb[] column the elements are stored answers and
 * intents, JSON hundreds of characters long and full of quotes: that escaping was 4–5% of the
 * API's CPU in a surge of checkouts (bench/README.md, the twenty-second session).
 */

/**
 * A jsonb[] parameter: the array literal pg writes for `values.map((v) => JSON.stringify(v))`,
 * made by JSON.stringify alone. Quoting a JSON text as a JSON string escapes exactly its `"`
 * and `\` (JSON.stringify's output has no raw control characters and no lone surrogates, so
 * nothing else is escaped), and the array literal's quoting escapes exactly those two the same
 * way. As with pg, a null is JSON's null and an undefined is SQL's NULL (unquoted `null`,
 * which the literal reads as NULL in any case).
 */
export function jsonbArray(values: readonly unknown[]): string {
  const list = JSON.stringify(values.map((value) => JSON.stringify(value)));
  return `{${list.slice(1, -1)}}`;
}
