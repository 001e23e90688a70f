/**
 * The hosted page's own table: buyer sessions in single-node mode (migration 009).
 */
import type { Queryable } from '../platform/db/pool.js';
import type { BuyerSession, SessionStore, StoredSession } from './sessions.js';

export async function insertSession(db: Queryable, session: BuyerSession, ttlMs: number): Promise<void> {
  await db.query({
    name: 'hosted_insert_session',
    text: `insert into hosted_sessions (id, version, data, expires_at) values ($1, 1, $2, now() + $3 * interval '1 millisecond')`,
    values: [session.id, JSON.stringify(session), Math.ceil(ttlMs)],
  });
}

export async function selectSession(db: Queryable, id: string): Promise<StoredSession | undefined> {
  const { rows } = await db.query<{ version: number; data: BuyerSession }>({
    name: 'hosted_select_session',
    text: 'select version, data from hosted_sessions where id = $1 and expires_at > now()',
    values: [id],
  });
  const row = rows[0];
  return row ? { version: row.version, session: row.data } : undefined;
}

/** Compare-and-set on the version; also refuses a session that has expired. */
export async function replaceSession(db: Queryable, session: BuyerSession, version: number, ttlMs: number): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'hosted_replace_session',
    text: `update hosted_sessions set version = version + 1, data = $3, expires_at = now() + $4 * interval '1 millisecond'
           where id = $1 and version = $2 and expires_at > now()`,
    values: [session.id, version, JSON.stringify(session), Math.ceil(ttlMs)],
  });
  return rowCount === 1;
}

export async function deleteSession(db: Queryable, id: string): Promise<void> {
  await db.query({ name: 'hosted_delete_session', text: 'delete from hosted_sessions where id = $1', values: [id] });
}

/** Deletes up to `limit` expired sessions; returns how many. */
export async function deleteExpiredSessions(db: Queryable, limit: number): Promise<number> {
  const { rowCount } = await db.query({
    name: 'hosted_delete_expired_sessions',
    text: `delete from hosted_sessions where id in (select id from hosted_sessions where expires_at <= now() limit $1)`,
    values: [limit],
  });
  return rowCount ?? 0;
}

// A sweep of up to 500 rows every 100 creates removes expired sessions five times faster than
// they can appear, in a statement short enough not to delay the buyer whose create runs it.
const EXPIRED_SWEEP_EVERY_CREATES = 100;
const EXPIRED_SWEEP_BATCH_MAX = 500;

/** Buyer sessions in PostgreSQL: single-node mode, where a restart must not lose a buyer's place. */
export class PostgresSessionStore implements SessionStore {
  private created = 0;
  constructor(private readonly db: Queryable) {}
  async create(session: BuyerSession, ttlMs: number) {
    await insertSession(this.db, session, ttlMs);
    // Expired sessions are swept as new ones arrive: a bounded delete every so many creates
    // keeps the table at about the live sessions without a job of its own.
    this.created += 1;
    if (this.created % EXPIRED_SWEEP_EVERY_CREATES === 0) await deleteExpiredSessions(this.db, EXPIRED_SWEEP_BATCH_MAX);
  }
  get(id: string) {
    return selectSession(this.db, id);
  }
  replace(session: BuyerSession, version: number, ttlMs: number) {
    return replaceSession(this.db, session, version, ttlMs);
  }
  delete(id: string) {
    return deleteSession(this.db, id);
  }
}
