/**
 * Reading many rows of a merchant-scoped table (primary key merchant_id, id) at once, as the
 * batches do. Each row is probed by its key, one lateral subquery with `limit 1` per id: as a
 * join (`(merchant_id, id) in (select * from unnest(...))`), the plan kept from a near-empty
 * table (pool.ts: plans live 10 s, and a surge starts on small tables) read the whole table on
 * every batch while the surge grew it.
 */
import type { Queryable } from './pool.js';

/** The key the rows come back under: merchant and id, which no id contains. */
export const scopedKey = (merchantId: string, id: string): string => `${merchantId}\u0000${id}`;

/** A table's by-ids read: the statement's name (prepared once per connection), the table and its columns. */
export interface ByIdsRead {
  name: string;
  table: string;
  columns: string;
}

/** The rows of `merchantIds[n]`, `ids[n]` that exist, by scopedKey. */
export async function selectByScopedIds<Row extends { merchant_id: string; id: string }>(
  db: Queryable,
  read: ByIdsRead,
  merchantIds: string[],
  ids: string[],
): Promise<Map<string, Row>> {
  const { rows } = await db.query<Row>({
    name: read.name,
    text: `select found.* from unnest($1::text[], $2::text[]) as r(merchant_id, id)
           cross join lateral (select ${read.columns} from ${read.table} where merchant_id = r.merchant_id and id = r.id limit 1) found`,
    values: [merchantIds, ids],
  });
  return new Map(rows.map((row) => [scopedKey(row.merchant_id, row.id), row]));
}
