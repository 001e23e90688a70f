/**
 * Every report query is served by an index: with tables as large as a busy deployment's (tens
 * of thousands of payments and orders over many merchants), EXPLAIN each statement exactly as
 * src/reporting/sql.ts sends it, and fail on a sequential scan of any large table.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as reports from '../src/reporting/sql.js';
import { createTestDatabase } from './helpers.js';

const { pool } = await createTestDatabase();

// A table with more rows than this is large: scanning it whole for one merchant's report is
// the mistake this test is for.
const LARGE_TABLE_ROWS = 5_000;

/**
 * Straight in SQL: the API would take minutes to make this much. Ids are zero-padded numbers
 * with the right prefix, so merchants' rows interleave in each table. `minutesApart` spreads a
 * merchant's payments back in time; orders go round the merchant's sales.
 */
async function seed(merchants: [number, number], perMerchant: number, salesPerMerchant: number, minutesApart: number) {
  const [first, last] = merchants;
  const acct = `'acct_' || lpad(m::text, 22, '0')`;
  const sale = (n: string) => `'sale_' || lpad((m * 1000 + ${n})::text, 22, '0')`;
  const row = (prefix: string) => `'${prefix}_' || lpad((m * 1000000 + n)::text, 22, '0')`;
  await pool.query(`
  insert into merchants (merchant_id, name) select ${acct}, 'm' || m from generate_series(${first}, ${last}) m;
  insert into payment_intents (merchant_id, id, amount, currency, status, capture_method, amount_received, created_at, updated_at)
    select ${acct}, ${row('pi')}, 1000 + n, (array['usd','eur','thb'])[1 + n % 3],
           (array['succeeded','requires_payment_method','canceled'])[1 + n % 3], 'automatic', case when n % 3 = 0 then 1000 + n else 0 end,
           now() - make_interval(mins => n * ${minutesApart}), now()
    from generate_series(${first}, ${last}) m, generate_series(1, ${perMerchant}) n;
  insert into sales (merchant_id, id, name, currency, opens_at, per_buyer_limit, hold_seconds, admit_per_second, max_shoppers, grace_seconds)
    select ${acct}, ${sale('s')}, 'sale', 'usd', now() - interval '1 day', 10, 600, 100, 1000, 30
    from generate_series(${first}, ${last}) m, generate_series(0, ${salesPerMerchant - 1}) s;
  insert into sale_items (merchant_id, id, sale_id, name, price, stock_total, stock_allocated)
    select ${acct}, 'item_' || lpad((m * 1000 + s * 3 + i)::text, 22, '0'), ${sale('s')}, 'item', 500, 100000, 100000
    from generate_series(${first}, ${last}) m, generate_series(0, ${salesPerMerchant - 1}) s, generate_series(0, 2) i;
  insert into holds (merchant_id, id, sale_id, buyer_reference, status, amount, currency, expires_at)
    select ${acct}, ${row('hold')}, ${sale(`n % ${salesPerMerchant}`)}, 'buyer-' || n, 'converted', 500, 'usd', now()
    from generate_series(${first}, ${last}) m, generate_series(1, ${perMerchant}) n;
  insert into hold_lines (merchant_id, hold_id, item_id, quantity)
    select ${acct}, ${row('hold')}, 'item_' || lpad((m * 1000 + (n % ${salesPerMerchant}) * 3 + n % 3)::text, 22, '0'), 1
    from generate_series(${first}, ${last}) m, generate_series(1, ${perMerchant}) n;
  insert into orders (merchant_id, id, sale_id, hold_id, payment_intent_id, amount, currency, status, paid_at)
    select ${acct}, ${row('ord')}, ${sale(`n % ${salesPerMerchant}`)}, ${row('hold')}, ${row('pi')}, 500, 'usd',
           case when n % 4 = 0 then 'awaiting_payment' else 'paid' end, now()
    from generate_series(${first}, ${last}) m, generate_series(1, ${perMerchant}) n;`);
}

// One big merchant with most of the rows (many sales, payments over a year and more), and many
// small ones. A report of the big merchant that an index led by merchant_id alone serves still
// reads most of a table; the planner then scans it, and the test fails.
await seed([1, 1], 24_000, 40, 30);
await seed([2, 101], 60, 1, 60);
await pool.query('analyze');

const MERCHANT = `acct_${'1'.padStart(22, '0')}`;
const SALE = `sale_${'1007'.padStart(22, '0')}`;

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

function seqScans(node: PlanNode): string[] {
  const own = node['Node Type'] === 'Seq Scan' && node['Relation Name'] ? [node['Relation Name']] : [];
  return [...own, ...(node.Plans ?? []).flatMap(seqScans)];
}

async function largeTables(): Promise<Set<string>> {
  const { rows } = await pool.query<{ relname: string }>(
    `select relname from pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace and reltuples > $1`,
    [LARGE_TABLE_ROWS],
  );
  return new Set(rows.map((row) => row.relname));
}

async function explain(text: string, values: unknown[]): Promise<PlanNode> {
  const { rows } = await pool.query(`explain (format json) ${text}`, values);
  return (rows[0]['QUERY PLAN'] as Array<{ Plan: PlanNode }>)[0]?.Plan as PlanNode;
}

const STATEMENTS: Array<[string, string, unknown[]]> = [
  ['payments by day', reports.PAYMENT_TOTALS, [MERCHANT, new Date(Date.now() - 30 * 86_400_000), new Date()]],
  ['sale', reports.SALE, [MERCHANT, SALE]],
  ['items sold, held and revenue', reports.ITEM_SALES, [MERCHANT, SALE]],
  ['orders by status', reports.ORDERS_BY_STATUS, [MERCHANT, SALE]],
  ['order export, first page', reports.ORDER_EXPORT_PAGE, [MERCHANT, SALE, '', 1000]],
  ['order export, a later page', reports.ORDER_EXPORT_PAGE, [MERCHANT, SALE, `ord_${'1012007'.padStart(22, '0')}`, 1000]],
];

describe('report query plans', () => {
  test('the seeded tables are large', async () => {
    const large = await largeTables();
    for (const table of ['payment_intents', 'orders', 'holds', 'hold_lines']) assert.ok(large.has(table), `${table} is large`);
  });

  for (const [name, text, values] of STATEMENTS) {
    test(`${name}: no sequential scan of a large table`, async () => {
      const large = await largeTables();
      const plan = await explain(text, values);
      const scanned = seqScans(plan).filter((table) => large.has(table));
      assert.deepEqual(scanned, [], `${name} scans ${scanned.join(', ')}:\n${JSON.stringify(plan, null, 1)}`);
    });
  }

  test('the check itself catches a scan: a query by a column no index leads with', async () => {
    const plan = await explain('select count(*) from orders where amount = $1', [500]);
    assert.deepEqual(seqScans(plan), ['orders']);
  });
});
