/**
 * Dashboard sessions, shared by every node: in Redis when there is one, else in PostgreSQL
 * (single-node mode keeps them in the database, so a restart does not sign everyone out).
 * The cookie holds a random token; only its SHA-256 is stored.
 */
import { randomBytes } from 'node:crypto';
import { sha256 } from '../platform/crypto/sha256.js';
import type { Pool } from '../platform/db/pool.js';
import type { RedisConnections } from '../platform/redis/client.js';
import * as sql from './sql.js';

export interface Session {
  merchantId: string;
  userId: string;
  /** Sent back in every form; a POST without it is refused (with the SameSite cookie, against CSRF). */
  csrfToken: string;
  expiresAt: Date;
}

export interface SessionStore {
  create(session: Omit<Session, 'csrfToken' | 'expiresAt'>, ttlSeconds: number): Promise<{ token: string; session: Session }>;
  find(token: string): Promise<Session | undefined>;
  destroy(token: string): Promise<void>;
}

// Tokens are 256 random bits; anything else in the cookie is not ours.
const TOKEN = /^[A-Za-z0-9_-]{43}$/;
const EXPIRED_SWEEP_BATCH = 100;

const hashOf = (token: string) => sha256(token);

function newSession(session: Omit<Session, 'csrfToken' | 'expiresAt'>, ttlSeconds: number) {
  return {
    token: randomBytes(32).toString('base64url'),
    session: { ...session, csrfToken: randomBytes(24).toString('base64url'), expiresAt: new Date(Date.now() + ttlSeconds * 1000) },
  };
}

export function createSessionStore(options: { pool: Pool; redis?: RedisConnections }): SessionStore {
  return options.redis ? redisStore(options.redis) : postgresStore(options.pool);
}

function postgresStore(pool: Pool): SessionStore {
  return {
    async create(input, ttlSeconds) {
      const created = newSession(input, ttlSeconds);
      await sql.deleteExpiredSessions(pool, EXPIRED_SWEEP_BATCH);
      const { session } = created;
      await sql.insertSession(pool, hashOf(created.token), {
        merchant_id: session.merchantId,
        user_id: session.userId,
        csrf_token: session.csrfToken,
        expires_at: session.expiresAt,
      });
      return created;
    },
    async find(token) {
      if (!TOKEN.test(token)) return undefined;
      const row = await sql.selectSession(pool, hashOf(token));
      return row ? { merchantId: row.merchant_id, userId: row.user_id, csrfToken: row.csrf_token, expiresAt: row.expires_at } : undefined;
    },
    async destroy(token) {
      if (TOKEN.test(token)) await sql.deleteSession(pool, hashOf(token));
    },
  };
}

function redisStore(redis: RedisConnections): SessionStore {
  const keyOf = (token: string) => `dashboard:session:${hashOf(token).toString('hex')}`;
  return {
    async create(input, ttlSeconds) {
      const created = newSession(input, ttlSeconds);
      // Redis expires the key itself; expiresAt inside is checked too, for clocks that disagree.
      await redis.client.set(keyOf(created.token), JSON.stringify(created.session), 'EX', ttlSeconds);
      return created;
    },
    async find(token) {
      if (!TOKEN.test(token)) return undefined;
      const raw = await redis.client.get(keyOf(token));
      if (!raw) return undefined;
      const parsed = JSON.parse(raw) as Session & { expiresAt: string };
      const session = { ...parsed, expiresAt: new Date(parsed.expiresAt) };
      return session.expiresAt.getTime() > Date.now() ? session : undefined;
    },
    async destroy(token) {
      if (TOKEN.test(token)) await redis.client.del(keyOf(token));
    },
  };
}
