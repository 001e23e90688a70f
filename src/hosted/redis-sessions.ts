/**
 * Buyer sessions in Redis: one string key per session holding `{"v":version,"s":session}`,
 * expiring with the session. The version check of a replace runs in a Lua script, so it is
 * atomic however many API nodes write.
 */
import type { Cluster, Redis } from 'ioredis';
import type { BuyerSession, SessionStore, StoredSession } from './sessions.js';

// Compare-and-set: replaces the document only if its version is still ARGV[1].
const REPLACE_SCRIPT = `
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current).v ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`;

export class RedisSessionStore implements SessionStore {
  constructor(
    private readonly redis: Redis | Cluster,
    /** Under the connection's own prefix; keeps sessions apart from other keys. */
    private readonly keyPrefix = 'hosted:session:',
  ) {}

  private key(id: string): string {
    return `${this.keyPrefix}${id}`;
  }

  async create(session: BuyerSession, ttlMs: number): Promise<void> {
    await this.redis.set(this.key(session.id), JSON.stringify({ v: 1, s: session }), 'PX', Math.max(1, Math.ceil(ttlMs)));
  }

  async get(id: string): Promise<StoredSession | undefined> {
    const raw = await this.redis.get(this.key(id));
    if (!raw) return undefined;
    const doc = JSON.parse(raw) as { v: number; s: BuyerSession };
    return { version: doc.v, session: doc.s };
  }

  async replace(session: BuyerSession, version: number, ttlMs: number): Promise<boolean> {
    const json = JSON.stringify({ v: version + 1, s: session });
    const result = await this.redis.eval(
      REPLACE_SCRIPT,
      1,
      this.key(session.id),
      String(version),
      json,
      String(Math.max(1, Math.ceil(ttlMs))),
    );
    return result === 1;
  }

  async delete(id: string): Promise<void> {
    await this.redis.del(this.key(id));
  }
}
