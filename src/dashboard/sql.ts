/**
 * The dashboard's statements: users, and sessions when there is no Redis.
 */
import type { Queryable } from '../platform/db/pool.js';

export interface UserRow {
  merchant_id: string;
  id: string;
  email: string;
  password_hash: string;
}

export interface SessionRow {
  merchant_id: string;
  user_id: string;
  csrf_token: string;
  expires_at: Date;
}

export async function insertUser(db: Queryable, user: UserRow): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'dashboard_insert_user',
    text: `insert into dashboard_users (merchant_id, id, email, password_hash) values ($1, $2, $3, $4)
           on conflict do nothing`,
    values: [user.merchant_id, user.id, user.email, user.password_hash],
  });
  return rowCount === 1;
}

export async function selectUserByEmail(db: Queryable, email: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>({
    name: 'dashboard_select_user_by_email',
    text: `select merchant_id, id, email, password_hash from dashboard_users where lower(email) = lower($1)`,
    values: [email],
  });
  return rows[0];
}

export async function selectUser(db: Queryable, merchantId: string, id: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>({
    name: 'dashboard_select_user',
    text: `select merchant_id, id, email, password_hash from dashboard_users where merchant_id = $1 and id = $2`,
    values: [merchantId, id],
  });
  return rows[0];
}

export async function insertSession(db: Queryable, tokenHash: Buffer, session: SessionRow): Promise<void> {
  await db.query({
    name: 'dashboard_insert_session',
    text: `insert into dashboard_sessions (token_hash, merchant_id, user_id, csrf_token, expires_at) values ($1, $2, $3, $4, $5)`,
    values: [tokenHash, session.merchant_id, session.user_id, session.csrf_token, session.expires_at],
  });
}

export async function selectSession(db: Queryable, tokenHash: Buffer): Promise<SessionRow | undefined> {
  const { rows } = await db.query<SessionRow>({
    name: 'dashboard_select_session',
    text: `select merchant_id, user_id, csrf_token, expires_at from dashboard_sessions where token_hash = $1 and expires_at > now()`,
    values: [tokenHash],
  });
  return rows[0];
}

export async function deleteSession(db: Queryable, tokenHash: Buffer): Promise<void> {
  await db.query({ name: 'dashboard_delete_session', text: `delete from dashboard_sessions where token_hash = $1`, values: [tokenHash] });
}

/** Expired sessions, a batch at a time (sign-ins call it, so the table stays small without a job). */
export async function deleteExpiredSessions(db: Queryable, batch: number): Promise<void> {
  await db.query({
    name: 'dashboard_delete_expired_sessions',
    text: `delete from dashboard_sessions where token_hash in
             (select token_hash from dashboard_sessions where expires_at <= now() limit $1)`,
    values: [batch],
  });
}
