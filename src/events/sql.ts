import type { Queryable } from '../platform/db/pool.js';

export interface EventRow {
  id: string;
  type: string;
  object_id: string;
  sequence: number;
  data: { object: Record<string, unknown> };
  created_at: Date;
}

/**
 * The event takes the next sequence number of its object. The caller holds the object's row
 * lock (or created the object in this transaction), so no other writer numbers concurrently;
 * the unique (merchant_id, object_id, sequence) refuses a caller that did not.
 */
export async function insertEvent(
  db: Queryable,
  event: { merchantId: string; id: string; type: string; objectId: string; data: unknown; createdAt: Date },
): Promise<void> {
  await db.query({
    name: 'events_insert',
    text: `insert into events (merchant_id, id, type, object_id, sequence, data, created_at)
           select $1, $2, $3, $4, coalesce(max(sequence), 0) + 1, $5, $6 from events where merchant_id = $1 and object_id = $4`,
    values: [event.merchantId, event.id, event.type, event.objectId, JSON.stringify(event.data), event.createdAt],
  });
}

/** SQL expressions (usually the caller's placeholders) for the columns of an object's first event. */
export interface FirstEventColumns {
  merchantId: string;
  id: string;
  type: string;
  data: string;
  createdAt: string;
  /** The CTE that created the object: its `id` column is the event's object. */
  objectCte: string;
  /** Joined to objectCte, for a batch whose other columns come from its request rows. */
  join?: string;
}

/**
 * A CTE named `event` recording the first event (sequence 1) of an object the same statement
 * creates in `objectCte`; no row there, no event. Inserting it fans it out like any event.
 */
export function firstEventCte(c: FirstEventColumns): string {
  return `event as (
             insert into events (merchant_id, id, type, object_id, sequence, data, created_at)
             select ${c.merchantId}, ${c.id}, ${c.type}, ${c.objectCte}.id, 1, ${c.data}, ${c.createdAt}
             from ${c.objectCte} ${c.join ?? ''}
             returning 1)`;
}

/** SQL expressions for the columns of a batch's events, one per row of `from`. */
export interface NextEventColumns {
  merchantId: string;
  id: string;
  type: string;
  objectId: string;
  data: string;
  createdAt: string;
  /** The rows to record from: each names a different object (one event per object per statement). */
  from: string;
}

/**
 * A CTE named `event` recording one event for each of a batch's objects, each taking its
 * object's next sequence number (insertEvent for many). The caller holds every object's row
 * lock, as insertEvent's does; the unique (merchant_id, object_id, sequence) refuses a batch
 * that names one object twice, and the statement then fails as a whole.
 */
export function nextEventCte(c: NextEventColumns): string {
  return `event as (
             insert into events (merchant_id, id, type, object_id, sequence, data, created_at)
             select ${c.merchantId}, ${c.id}, ${c.type}, ${c.objectId},
               (select coalesce(max(e.sequence), 0) + 1 from events e where e.merchant_id = ${c.merchantId} and e.object_id = ${c.objectId}),
               ${c.data}, ${c.createdAt}
             from ${c.from}
             returning 1)`;
}

/** Newest first, paging by id (ids are time-ordered). */
export async function selectEvents(
  db: Queryable,
  query: { merchantId: string; limit: number; startingAfter?: string; type?: string; objectId?: string },
): Promise<EventRow[]> {
  const { rows } = await db.query<EventRow>(
    `select id, type, object_id, sequence, data, created_at from events
     where merchant_id = $1 and ($2::text is null or id < $2) and ($3::text is null or type = $3)
       and ($4::text is null or object_id = $4)
     order by id desc limit $5`,
    [query.merchantId, query.startingAfter ?? null, query.type ?? null, query.objectId ?? null, query.limit],
  );
  return rows;
}

export async function selectEvent(db: Queryable, merchantId: string, id: string): Promise<EventRow | undefined> {
  const { rows } = await db.query<EventRow>(
    'select id, type, object_id, sequence, data, created_at from events where merchant_id = $1 and id = $2',
    [merchantId, id],
  );
  return rows[0];
}
