/**
 * The delivery jobs' statement: what a job reads before it sends (the delivery, its endpoint and
 * secrets, its event) and what it records after, for every job of a node in one round trip.
 */
import type { EventRow } from '../events/service.js';
import { type Pool, type Queryable, withTransaction } from '../platform/db/pool.js';
import { DELIVER_BATCH_TASK } from './service.js';
import type { DeliveryStatus } from './sql.js';

/** What a delivery job needs: the delivery's state, where and how to send it, and what. */
export interface DeliveryTarget {
  status: DeliveryStatus;
  round: number;
  attempts: number;
  event_id: string;
  endpoint_id: string;
  url: string;
  endpoint_status: 'enabled' | 'disabled';
  /** The current secret first, then the previous one while its overlap lasts. */
  secrets: string[];
  /** The event to send; undefined if it is missing (deliveries reference events, so never). */
  event: EventRow | undefined;
}

/** A delivery, by its key. */
export interface DeliveryKey {
  merchantId: string;
  deliveryId: string;
}

export interface AttemptRecord {
  merchantId: string;
  deliveryId: string;
  round: number;
  attempt: number;
  status: DeliveryStatus;
  nextAttemptAt: Date | null;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  attemptedAt: Date;
}

type TargetRow = Omit<DeliveryTarget, 'event' | 'secrets'> & {
  n: number | null;
  secret: string;
  previous_secret: string | null;
  event_type: string | null;
  event_object_id: string;
  event_sequence: number;
  event_data: EventRow['data'];
  event_created_at: Date;
};

/**
 * The delivery jobs' reads and writes, in one statement however many: the deliveries `keys`
 * name, with their endpoint and event (a job's first read), and the `attempts` recorded (its
 * last write, one commit for all). Jobs that start and jobs that finish at the same time thus
 * share one round trip.
 *
 * An attempt is recorded only if its delivery is still pending and waiting for exactly that
 * attempt: a job run twice (its worker died after sending) or overtaken by a redelivery records
 * nothing; of two records of the same attempt in one call, one is. The reads see the deliveries
 * as they were before this statement's records (a read and a write of one delivery never meet
 * in one call: a job reads before it sends, and records after).
 *
 * Answers in the order asked: each key's target (undefined when there is no such delivery or
 * its endpoint is gone) and whether each attempt was recorded.
 */
export async function readAndRecord(
  db: Queryable,
  keys: readonly DeliveryKey[],
  attempts: readonly AttemptRecord[],
): Promise<{ targets: (DeliveryTarget | undefined)[]; recorded: boolean[] }> {
  const column = <T>(pick: (attempt: AttemptRecord) => T) => attempts.map(pick);
  const { rows } = await db.query<TargetRow & { recorded: number[] | null }>({
    name: 'webhooks_read_and_record',
    // Every array is read through a scalar subquery, (select $n): hidden from the planner, a batch
    // is estimated at ten rows whatever its size, so PostgreSQL keeps one generic plan. Seen as
    // constants, small batches looked cheaper to plan each time, and it did: planning this
    // statement took three times as long as running it.
    text: `with input as (
             select * from unnest((select $3::text[]), (select $4::text[]), (select $5::int[]), (select $6::int[]),
                                  (select $7::text[]), (select $8::timestamptz[]), (select $9::int[]), (select $10::text[]),
                                  (select $11::int[]), (select $12::timestamptz[])) with ordinality
               as i (merchant_id, delivery_id, round, attempt, status, next_attempt_at, status_code, error, duration_ms,
                     attempted_at, n)),
           -- The attempt recorded becomes the delivery's last; the one it supersedes (\`prior\`, the
           -- row as this statement's snapshot has it) moves to the log
           -- (migrations/014_last_attempt_on_the_delivery.sql). A first attempt supersedes none.
           delivery as (
             update webhook_deliveries d
             set status = i.status, attempts = i.attempt, next_attempt_at = i.next_attempt_at, last_attempt_at = i.attempted_at,
                 last_status_code = i.status_code, last_error = i.error, last_duration_ms = i.duration_ms, updated_at = now()
             from input i
             join webhook_deliveries prior on prior.merchant_id = i.merchant_id and prior.id = i.delivery_id
             where d.merchant_id = i.merchant_id and d.id = i.delivery_id and d.status = 'pending' and d.round = i.round
               and d.attempts = i.attempt - 1
             returning i.n, prior.merchant_id, prior.id as delivery_id, prior.round, prior.attempts as attempt,
               prior.last_status_code as status_code, prior.last_error as error, prior.last_duration_ms as duration_ms,
               prior.last_attempt_at as attempted_at),
           -- A data-modifying WITH runs to completion whether or not the query reads it. An
           -- attempt already logged (by a worker from before 014, which logged every attempt)
           -- stays as it is.
           logged as (
             insert into webhook_delivery_attempts (merchant_id, delivery_id, round, attempt, status_code, error, duration_ms, attempted_at)
             select merchant_id, delivery_id, round, attempt, status_code, error, duration_ms, attempted_at from delivery
             where attempt > 0
             on conflict do nothing)
           -- One row at least, for the records' answer, however few targets; the answer rides on
           -- one row only (node-postgres parses an array in JavaScript, character by character,
           -- and a call of a hundred records and a hundred reads sent it a hundred times).
           select case when row_number() over () = 1 then array(select n::int from delivery) end as recorded, target.*
           from (select) as one
           left join (
             select k.n::int as n, t.*
             from unnest((select $1::text[]), (select $2::text[])) with ordinality as k (merchant_id, delivery_id, n)
             -- Each key is looked up by itself, as a one-key query would be: the fence (offset 0)
             -- keeps the planner from joining the keys to whole tables (guessing ten keys, it
             -- hashed them against every endpoint of every merchant).
             cross join lateral (
               select d.status, d.round, d.attempts, d.event_id, d.endpoint_id, e.url, e.status as endpoint_status, e.secret,
                 case when e.previous_secret_expires_at > now() then e.previous_secret end as previous_secret,
                 ev.type as event_type, ev.object_id as event_object_id, ev.sequence as event_sequence, ev.data as event_data,
                 ev.created_at as event_created_at
               from webhook_deliveries d
               join webhook_endpoints e on e.merchant_id = d.merchant_id and e.id = d.endpoint_id
               -- The event by its whole key (a lateral subquery with a limit is never flattened):
               -- joined, it was once read through an index on the merchant alone, every event of
               -- the merchant for each delivery, when the statistics were those of a younger table.
               left join lateral (
                 select type, object_id, sequence, data, created_at from events
                 where merchant_id = d.merchant_id and id = d.event_id limit 1) ev on true
               where d.merchant_id = k.merchant_id and d.id = k.delivery_id
               offset 0) as t) as target on true`,
    values: [
      keys.map((key) => key.merchantId),
      keys.map((key) => key.deliveryId),
      column((a) => a.merchantId),
      column((a) => a.deliveryId),
      column((a) => a.round),
      column((a) => a.attempt),
      column((a) => a.status),
      column((a) => a.nextAttemptAt),
      column((a) => a.statusCode),
      column((a) => a.error),
      column((a) => a.durationMs),
      column((a) => a.attemptedAt),
    ],
  });
  const targets: (DeliveryTarget | undefined)[] = new Array(keys.length).fill(undefined);
  const recorded = new Array<boolean>(attempts.length).fill(false);
  for (const row of rows) for (const n of row.recorded ?? []) recorded[n - 1] = true;
  for (const row of rows) {
    const {
      n,
      recorded: _recorded,
      secret,
      previous_secret,
      event_type,
      event_object_id,
      event_sequence,
      event_data,
      event_created_at,
      ...target
    } = row;
    if (n === null) continue;
    const event =
      event_type === null
        ? undefined
        : {
            id: row.event_id,
            type: event_type,
            object_id: event_object_id,
            sequence: event_sequence,
            data: event_data,
            created_at: event_created_at,
          };
    targets[n - 1] = { ...target, secrets: previous_secret === null ? [secret] : [secret, previous_secret], event };
  }
  return { targets, recorded };
}

/** The running batch job that takes waiting ones: its id, and what its deliveries wait for. */
export interface RunningBatch {
  jobId: string;
  merchantId: string;
  round: number;
  attempt: number;
  /** How many deliveries its own payload names. */
  deliveries: number;
}

// Waiting jobs a take looks at, from the queue's head: other tasks' and merchants' jobs wait
// there too, and graphile-worker's own fetch looks at its head the same way.
const QUEUE_HEAD_LOOKED_AT = 200;
// At most this many jobs a take locks: each is a write, even if the take then leaves it.
const JOBS_TAKEN_MAX = 64;

/**
 * Moves waiting batch jobs of the same merchant, round and attempt into the running job
 * `running`, up to `room` deliveries in all, and answers their delivery ids in order.
 *
 * The fan-out adds a job per statement, so a queue that backs up is many small jobs, and a job
 * costs the worker and PostgreSQL about as much as a delivery (fetched, locked, run, completed).
 * A job that starts late takes the others waiting behind it instead. The taken jobs are deleted
 * and their ids appended to the running job's payload in the same statement: if its worker dies
 * or it fails, graphile-worker runs it again with every delivery it took, with its retries, so
 * nothing taken is lost. Only jobs no worker holds are taken (`skip locked`, as graphile-worker's
 * own fetch), without a key or a queue (the fan-out sets neither), due now, from the head of
 * the queue.
 *
 * This writes graphile-worker's job table itself, like platform/jobs/queue.ts; the version is
 * pinned (package.json). A taken job's trace context goes with it: its deliveries' spans are
 * the running job's.
 *
 * The queue's head is read in index order, with index scans only, whatever the table's
 * statistics say. A queue table's statistics are those of whenever it was last analyzed, often
 * near empty; a surge then fills it. Expecting a few rows, the planner read the head through a
 * bitmap of graphile-worker's index and sorted it. A bitmap scan, unlike a plain index scan,
 * never marks the index entries of deleted jobs dead, so every take visited every job finished
 * or taken since the table was last vacuumed, again and again as the drain went on: in quick
 * drains of 5,000 deliveries a take cost 55 and 82 ms on average, and PostgreSQL 244 and 284 µs
 * of CPU per delivery; read in index order (the same runs with this setting), 1.5 and 2.0 ms,
 * and 99 and 109 µs (bench/README.md, the twenty-third session). Every other lookup of the
 * statement is by key.
 */
export function takeWaitingBatches(pool: Pool, running: RunningBatch, room: number): Promise<string[]> {
  return withTransaction(pool, (client) => takeFromHead(client, running, room), { indexScansOnly: true });
}

async function takeFromHead(db: Queryable, running: RunningBatch, room: number): Promise<string[]> {
  // As many jobs as fill the room if they are the size of the running one's first payload (the
  // statements of one merchant in a surge are alike), and two more for smaller ones.
  const jobsLookedFor = Math.min(JOBS_TAKEN_MAX, Math.ceil(room / Math.max(1, running.deliveries)) + 2);
  const { rows } = await db.query<{ delivery_ids: string[] }>({
    name: 'webhooks_take_waiting_batches',
    text: `with waiting as (
             select j.id, j.payload
             from graphile_worker._private_jobs j
             where j.id in (
                 -- The queue's head in graphile-worker's own order, read from its index (looking
                 -- for the merchant's jobs among all waiting ones, PostgreSQL sorted them all).
                 select id from graphile_worker._private_jobs
                 where is_available and job_queue_id is null and run_at <= now()
                 order by priority, run_at
                 limit ${QUEUE_HEAD_LOOKED_AT})
               and j.is_available and j.key is null
               and j.task_id = (select id from graphile_worker._private_tasks where identifier = $2)
               and j.payload->>'merchant_id' = $3 and (j.payload->>'round')::int = $4 and (j.payload->>'attempt')::int = $5
             limit $7
             for update of j skip locked),
           counted as (
             select id, sum(json_array_length(payload->'delivery_ids')) over (order by id) as deliveries from waiting),
           taken as (
             delete from graphile_worker._private_jobs j using counted c
             where j.id = c.id and c.deliveries <= $6
             returning j.id, j.payload),
           ids as (
             select coalesce(jsonb_agg(d.id order by t.id, d.n), '[]'::jsonb) as ids
             from taken t cross join lateral json_array_elements_text(t.payload->'delivery_ids') with ordinality as d (id, n)),
           grown as (
             update graphile_worker._private_jobs j
             set payload = (j.payload::jsonb || jsonb_build_object('delivery_ids', (j.payload::jsonb->'delivery_ids') || ids.ids))::json
             from ids
             where j.id = $1 and jsonb_array_length(ids.ids) > 0)
           select array(select jsonb_array_elements_text(ids)) as delivery_ids from ids`,
    values: [running.jobId, DELIVER_BATCH_TASK, running.merchantId, running.round, running.attempt, room, jobsLookedFor],
  });
  return rows[0]?.delivery_ids ?? [];
}
