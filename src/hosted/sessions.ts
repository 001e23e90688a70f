/**
 * Buyer sessions of the hosted sale page. A session is one small document — who the buyer is
 * to the waiting room, their ticket, hold and order — kept where every API node can read it:
 * Redis when there is one, else PostgreSQL (single-node mode; a restart keeps the buyer's
 * place in the flow). The browser holds only the session id, in a signed cookie.
 *
 * Writes replace the whole document under a version check (compare-and-set), so two requests
 * of one buyer that race (a double click, two tabs, two nodes) cannot silently undo each
 * other's step: the loser re-reads and decides again.
 */
import { randomBytes } from 'node:crypto';

export interface BuyerSession {
  id: string;
  saleId: string;
  /** Who the buyer is to the waiting room and the holds: random, never shown. */
  buyerReference: string;
  /** The CSRF token every form and state-changing request of this session must carry. */
  csrfToken: string;
  createdAtMs: number;
  ticketId?: string;
  /** The first place in line this buyer was told: the start of their progress bar. */
  joinedPosition?: number;
  /** Kept on the server: a ticket id seen by someone else admits nobody. */
  admissionToken?: string;
  holdId?: string;
  orderId?: string;
  /** The payment attempt the next pay request makes; advances only after a refusal. */
  payAttempt: number;
  /** A one-time message for the next page view: what happened to the last step. */
  notice?: string;
}

export interface StoredSession {
  version: number;
  session: BuyerSession;
}

export interface SessionStore {
  /** Stores a new session (version 1). */
  create(session: BuyerSession, ttlMs: number): Promise<void>;
  get(id: string): Promise<StoredSession | undefined>;
  /** Replaces the session if it is still at `version` (then it is at version + 1); false otherwise. */
  replace(session: BuyerSession, version: number, ttlMs: number): Promise<boolean>;
  delete(id: string): Promise<void>;
}

// 32 random bytes: unguessable, as the only thing that names a buyer's session.
const SESSION_ID_BYTES = 32;
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export function newSession(saleId: string, nowMs = Date.now()): BuyerSession {
  return {
    id: randomBytes(SESSION_ID_BYTES).toString('base64url'),
    saleId,
    buyerReference: `hb_${randomBytes(16).toString('base64url')}`,
    csrfToken: randomBytes(24).toString('base64url'),
    createdAtMs: nowMs,
    payAttempt: 1,
  };
}

// Sessions a single process keeps at once before dropping the oldest: far more buyers than one
// node serves in a surge, few enough to bound its memory (about 1 KB each).
const MEMORY_SESSIONS_MAX = 200_000;

/** Sessions in this process's memory: for tests and tools; a process with a database uses PostgreSQL. */
export class MemorySessionStore implements SessionStore {
  private readonly sessions = new Map<string, { version: number; json: string; expiresAtMs: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  async create(session: BuyerSession, ttlMs: number): Promise<void> {
    if (this.sessions.size >= MEMORY_SESSIONS_MAX) {
      const oldest = this.sessions.keys().next().value;
      if (oldest !== undefined) this.sessions.delete(oldest);
    }
    this.sessions.set(session.id, { version: 1, json: JSON.stringify(session), expiresAtMs: this.now() + ttlMs });
  }

  async get(id: string): Promise<StoredSession | undefined> {
    const entry = this.sessions.get(id);
    if (!entry) return undefined;
    if (entry.expiresAtMs <= this.now()) {
      this.sessions.delete(id);
      return undefined;
    }
    return { version: entry.version, session: JSON.parse(entry.json) };
  }

  async replace(session: BuyerSession, version: number, ttlMs: number): Promise<boolean> {
    const entry = this.sessions.get(session.id);
    if (!entry || entry.version !== version || entry.expiresAtMs <= this.now()) return false;
    this.sessions.set(session.id, { version: version + 1, json: JSON.stringify(session), expiresAtMs: this.now() + ttlMs });
    return true;
  }

  async delete(id: string): Promise<void> {
    this.sessions.delete(id);
  }
}
