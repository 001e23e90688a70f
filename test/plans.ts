/**
 * Plans of the statements our functions send, for the tests that hold the hot path's lookups to
 * their indexes: a statement is caught as it is sent and explained instead of run.
 */
import assert from 'node:assert/strict';
import type { Queryable } from '../src/platform/db/pool.js';

export interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

/** Every node of a plan, the root first. */
export function planNodes(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(planNodes)];
}

/** The scans of a table in a plan, as node type and index: `Index Scan events_pkey`, `Seq Scan`. */
export function scansOf(plan: PlanNode, relation: string): string[] {
  return planNodes(plan)
    .filter((node) => node['Relation Name'] === relation && node['Node Type'].endsWith('Scan'))
    .map((node) => `${node['Node Type']} ${node['Index Name'] ?? ''}`.trim());
}

/** The plan PostgreSQL makes for a statement as it was sent, on `db` (a transaction's client keeps its settings). */
export async function explain(db: Queryable, statement: { text: string; values: unknown[] }): Promise<PlanNode> {
  const { rows } = await db.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>({
    text: `explain (format json) ${statement.text}`,
    values: statement.values,
  });
  return rows[0]?.['QUERY PLAN'][0].Plan as PlanNode;
}

/** What a statement was sent with; the function that sent it is stopped there. */
class Caught {
  constructor(readonly sent: { text: string; values: unknown[] }) {}
}

/** The plan of the one statement `send` makes, caught instead of run, explained on `db`. */
export async function planOf(db: Queryable, send: (caught: Queryable) => Promise<unknown>): Promise<PlanNode> {
  const catcher = {
    // A statement comes as a config object, or as its text and values.
    query: async (config: string | { text: string; values: unknown[] }, values: unknown[] = []) => {
      throw new Caught(typeof config === 'string' ? { text: config, values } : config);
    },
  } as unknown as Queryable;
  const caught = await send(catcher).then(
    () => assert.fail('the function sent no statement'),
    (error: unknown) => (error instanceof Caught ? error.sent : assert.fail(String(error))),
  );
  return explain(db, caught);
}
