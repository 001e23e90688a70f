/**
 * The waiting room in Redis, for any number of API nodes. Each operation is one Lua script, so
 * it is atomic and costs one round trip. The scripts mirror memory-store.ts and the rules in
 * domain.ts step for step; the shared test table holds both to the same answers.
 *
 * Keys of a sale share the hash tag `{saleId}`, so a script's keys sit in one Redis Cluster slot:
 *   q         sorted set  waiting tickets → order (pre-open: keyed-hash draw; after: 2^52 + arrival)
 *   due       sorted set  waiting tickets → deadline ms (domain.ts placeDeadlineMs; reclaimed once reached).
 *                        Not the `seen` (last-seen ms) of earlier versions: a new name, so a node
 *                        of either version never reads the other's scores as its own.
 *   pending   sorted set  admitted, token unused → token expiry ms
 *   shopping  sorted set  token used → slot expiry ms
 *   tickets   hash        ticket → "joinedAtMs:buyerDigest"
 *   refs      hash        buyerDigest → ticket (idempotent joins)
 *   meta      hash        arrivals, opened, credit, credit_at
 *   used:<ticket>         the token's single-use mark (SET NX PX)
 * Every write sets every key's time-to-live again (stateTtlMs), so an idle sale leaves nothing.
 */
import type { Cluster, Redis } from 'ioredis';
import { GroupCommit } from '../platform/db/group-commit.js';
import {
  ADMIT_BATCH_MAX,
  POST_OPEN_SCORE_BASE,
  QUEUE_STATE_IDLE_TTL_MS,
  RECLAIM_BATCH_MAX,
  type StepOutcome,
  type TicketState,
} from './domain.js';
import type { ClaimInput, ClaimResult, QueueStore, StepInput, TicketAnswer } from './store.js';

// Lua's tostring (and so \`..\`) keeps 14 digits, which would round 2^52-sized scores and
// fractional credit; fmt writes every double exactly, wherever a number becomes text.
const HELPERS = `
local q, due, pending, shopping, tickets, refs, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local function fmt(x) return string.format('%.17g', x) end
local function split(info)
  local sep = string.find(info, ':', 1, true)
  return string.sub(info, 1, sep - 1), string.sub(info, sep + 1)
end
local function forget(t)
  local info = redis.call('HGET', tickets, t)
  if not info then return end
  local _, digest = split(info)
  if redis.call('HGET', refs, digest) == t then redis.call('HDEL', refs, digest) end
  redis.call('HDEL', tickets, t)
end
`;

const STEP = `${HELPERS}
local now, opens_at, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_shoppers, grace, available = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local token_ttl, state_ttl, poll_max = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local reclaim_max, admit_max = ${RECLAIM_BATCH_MAX}, ${ADMIT_BATCH_MAX}

local function open_if_due()
  if redis.call('HGET', meta, 'opened') then return true end
  if now < opens_at then return false end
  redis.call('HSET', meta, 'opened', '1', 'credit', fmt(math.max(1, rate)), 'credit_at', fmt(now))
  return true
end

local function reclaim()
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', fmt(now), 'LIMIT', 0, reclaim_max)) do
    redis.call('ZREM', q, t)
    redis.call('ZREM', due, t)
    forget(t)
  end
  for _, slots in ipairs({pending, shopping}) do
    for _, t in ipairs(redis.call('ZRANGEBYSCORE', slots, '-inf', fmt(now), 'LIMIT', 0, reclaim_max)) do
      redis.call('ZREM', slots, t)
      forget(t)
    end
  end
end

-- domain.ts placeDeadlineMs and waitingPollSeconds, in the same order of operations, from the
-- place view() found (no position before opening).
local function touch(t, state)
  if state.kind ~= 'waiting' then return end
  local deadline
  if state.position then
    local retry = math.min(poll_max, math.max(1, math.ceil(math.ceil(state.position / rate) / 2)))
    deadline = now + retry * 1000 + grace
  else
    deadline = math.max(now, opens_at) + grace
  end
  redis.call('ZADD', due, fmt(deadline), t)
end

-- domain.ts refillCredit and admissionCount, in the same order of operations.
local function admit(opened)
  local admitted = {}
  if not opened then return admitted end
  local credit = tonumber(redis.call('HGET', meta, 'credit'))
  local credit_at = tonumber(redis.call('HGET', meta, 'credit_at'))
  if now > credit_at then
    credit = math.min(math.max(1, rate), credit + (now - credit_at) * rate / 1000)
    credit_at = now
  end
  local pending_n = redis.call('ZCARD', pending)
  local shoppers = pending_n + redis.call('ZCARD', shopping)
  local n = math.min(math.floor(credit), max_shoppers - shoppers, available - pending_n, redis.call('ZCARD', q), admit_max)
  if n > 0 then
    for _, t in ipairs(redis.call('ZRANGE', q, 0, n - 1)) do
      redis.call('ZREM', q, t)
      redis.call('ZREM', due, t)
      redis.call('ZADD', pending, fmt(now + token_ttl), t)
      local joined = split(redis.call('HGET', tickets, t))
      admitted[#admitted + 1] = {t, joined}
    end
    credit = credit - n
  end
  redis.call('HSET', meta, 'credit', fmt(credit), 'credit_at', fmt(credit_at))
  return admitted
end

local function outcome(opened, admitted)
  local pending_n = redis.call('ZCARD', pending)
  return {opened = opened, waiting = redis.call('ZCARD', q), pending = pending_n,
    shopping = redis.call('ZCARD', shopping), sold_out = available <= pending_n, admitted = admitted}
end

local function view(t, opened)
  if redis.call('ZSCORE', q, t) then
    if opened then return {kind = 'waiting', position = redis.call('ZRANK', q, t) + 1} end
    return {kind = 'waiting'}
  end
  local expires = redis.call('ZSCORE', pending, t)
  if expires then
    local _, digest = split(redis.call('HGET', tickets, t))
    return {kind = 'admitted', expires = expires, digest = digest}
  end
  if redis.call('ZSCORE', shopping, t) then return {kind = 'shopping'} end
  return {kind = 'unknown'}
end

local function keep()
  for _, key in ipairs({q, due, pending, shopping, tickets, refs, meta}) do redis.call('PEXPIRE', key, state_ttl) end
end
`;

const JOIN = `${STEP}
local ticket, digest, seed = ARGV[10], ARGV[11], ARGV[12]
local opened = open_if_due()
reclaim()
local t = redis.call('HGET', refs, digest)
if not t then
  t = ticket
  local arrival = redis.call('HINCRBY', meta, 'arrivals', 1)
  local score
  if opened then score = ${POST_OPEN_SCORE_BASE} + arrival
  else score = tonumber(string.sub(redis.sha1hex(seed .. ':' .. arrival), 1, 13), 16) end
  redis.call('ZADD', q, fmt(score), t)
  redis.call('HSET', tickets, t, fmt(now) .. ':' .. digest)
  redis.call('HSET', refs, digest, t)
end
local out = outcome(opened, admit(opened))
out.ticket = t
out.state = view(t, opened)
touch(t, out.state)
keep()
return cjson.encode(out)
`;

const POLL = `${STEP}
local t = ARGV[10]
local opened = open_if_due()
reclaim()
local out = outcome(opened, admit(opened))
out.state = view(t, opened)
touch(t, out.state)
keep()
return cjson.encode(out)
`;

const TICK = `${STEP}
local opened = open_if_due()
reclaim()
local out = outcome(opened, admit(opened))
keep()
return cjson.encode(out)
`;

const RELEASE = `${HELPERS}
local t = ARGV[1]
local removed = redis.call('ZREM', q, t) + redis.call('ZREM', pending, t) + redis.call('ZREM', shopping, t)
redis.call('ZREM', due, t)
forget(t)
return removed
`;

// KEYS: pending, shopping, then one used mark per claim; ARGV: per claim, its ticket, now, the
// mark's time-to-live and the shopping limit. Each claim is the one-ticket claim, in order:
// the mark is set first, so whatever else happens a token is accepted at most once (of two
// claims of one ticket in a call, the second is 'replayed'). The line has opened (someone was
// admitted), so the state's time-to-live is the idle one. Answers one result per claim.
const CLAIM = `
local out = {}
for i = 1, #KEYS - 2 do
  local t, now, used_ttl, shopping_max = ARGV[4 * i - 3], tonumber(ARGV[4 * i - 2]), ARGV[4 * i - 1], tonumber(ARGV[4 * i])
  if not redis.call('SET', KEYS[2 + i], '1', 'NX', 'PX', used_ttl) then
    out[i] = 'replayed'
  elseif not redis.call('ZSCORE', KEYS[1], t) then
    out[i] = 'lapsed'
  else
    redis.call('ZREM', KEYS[1], t)
    redis.call('ZADD', KEYS[2], string.format('%.17g', now + shopping_max), t)
    redis.call('PEXPIRE', KEYS[2], ${QUEUE_STATE_IDLE_TTL_MS})
    out[i] = 'ok'
  end
end
return out
`;

/** Most claims of one sale sent in one script call. */
const CLAIM_BATCH_MAX = 100;

const COMMANDS = {
  floodgateQueueJoin: { lua: JOIN, numberOfKeys: 7 },
  floodgateQueuePoll: { lua: POLL, numberOfKeys: 7 },
  floodgateQueueTick: { lua: TICK, numberOfKeys: 7 },
  floodgateQueueRelease: { lua: RELEASE, numberOfKeys: 7 },
  // The number of keys comes first in each call: one used mark per claim.
  floodgateQueueClaim: { lua: CLAIM },
} as const;

type CommandName = keyof typeof COMMANDS;
const STEP_KEYS = ['q', 'due', 'pending', 'shopping', 'tickets', 'refs', 'meta'] as const;
type Script = (...args: Array<string | number>) => Promise<unknown>;

export const DEFAULT_KEY_PREFIX = 'floodgate:';

interface RawOutcome {
  opened: boolean;
  waiting: number;
  pending: number;
  shopping: number;
  sold_out: boolean;
  /** cjson writes an empty Lua table as {}, not []. */
  admitted: Array<[string, string]> | Record<string, never>;
  ticket?: string;
  state?: { kind: 'waiting'; position?: number } | { kind: 'admitted'; expires: string; digest: string } | { kind: 'shopping' | 'unknown' };
}

export class RedisQueueStore implements QueueStore {
  /**
   * Defines the scripts on the client (ioredis sends EVALSHA and falls back to EVAL once per
   * connection). `keyPrefix` keeps deployments, and tests, apart on one Redis.
   */
  constructor(
    private readonly redis: Redis | Cluster,
    private readonly keyPrefix = DEFAULT_KEY_PREFIX,
  ) {
    for (const [name, definition] of Object.entries(COMMANDS)) {
      if (!(name in redis)) redis.defineCommand(name, definition);
    }
  }

  async join(input: StepInput & { ticketId: string; buyerDigest: string }): Promise<TicketAnswer & { ticketId: string }> {
    const raw = await this.run('floodgateQueueJoin', input, input.ticketId, input.buyerDigest, input.shuffleSeed);
    return { ticketId: raw.ticket as string, ...toAnswer(raw) };
  }

  async poll(input: StepInput & { ticketId: string }): Promise<TicketAnswer> {
    return toAnswer(await this.run('floodgateQueuePoll', input, input.ticketId));
  }

  async step(input: StepInput): Promise<StepOutcome> {
    return toOutcome(await this.run('floodgateQueueTick', input));
  }

  async release(saleId: string, ticketId: string): Promise<boolean> {
    return Number(await this.script('floodgateQueueRelease')(...this.keys(saleId), ticketId)) > 0;
  }

  /**
   * Claims of one sale made in the same turn of the event loop, or while that sale's last call
   * is out, go to Redis as one script call: a batch of holds commits tens of tickets at once,
   * and one call each cost the API more than the claim costs Redis.
   */
  private readonly claims = new GroupCommit<ClaimInput, ClaimResult>({
    windowMs: 0,
    batchMax: CLAIM_BATCH_MAX,
    maxRunning: 1,
    run: (saleId, batch) => this.claimAll(saleId, batch),
  });

  claim(input: ClaimInput): Promise<ClaimResult> {
    return this.claims.submit(input.saleId, input);
  }

  private async claimAll(saleId: string, batch: ClaimInput[]): Promise<ClaimResult[]> {
    const base = this.base(saleId);
    const keys = [`${base}pending`, `${base}shopping`, ...batch.map((input) => `${base}used:${input.ticketId}`)];
    const args = batch.flatMap((input) => [input.ticketId, input.nowMs, Math.max(1, Math.ceil(input.usedTtlMs)), input.shoppingMaxMs]);
    return (await this.script('floodgateQueueClaim')(keys.length, ...keys, ...args)) as ClaimResult[];
  }

  private async run(name: CommandName, input: StepInput, ...extra: string[]): Promise<RawOutcome> {
    const args = [
      input.nowMs,
      input.opensAtMs,
      String(input.admitPerSecond),
      input.maxShoppers,
      input.graceMs,
      input.availableUnits,
      input.tokenTtlMs,
      Math.max(1, Math.ceil(input.stateTtlMs)),
      input.pollMaxSeconds,
    ];
    return JSON.parse((await this.script(name)(...this.keys(input.saleId), ...args, ...extra)) as string) as RawOutcome;
  }

  private script(name: CommandName): Script {
    return ((this.redis as unknown as Record<CommandName, Script>)[name] as Script).bind(this.redis);
  }

  private base(saleId: string): string {
    return `${this.keyPrefix}queue:{${saleId}}:`;
  }

  /** The seven keys, in the order the scripts name them in KEYS. */
  private keys(saleId: string): string[] {
    const base = this.base(saleId);
    return STEP_KEYS.map((name) => base + name);
  }
}

function toOutcome(raw: RawOutcome): StepOutcome {
  const admitted = Array.isArray(raw.admitted) ? raw.admitted : [];
  return {
    opened: raw.opened,
    waiting: raw.waiting,
    pending: raw.pending,
    shopping: raw.shopping,
    soldOut: raw.sold_out,
    admitted: admitted.map(([ticketId, joinedAtMs]) => ({ ticketId, joinedAtMs: Number(joinedAtMs) })),
  };
}

function toAnswer(raw: RawOutcome): TicketAnswer {
  const state = raw.state ?? { kind: 'unknown' };
  let ticket: TicketState;
  if (state.kind === 'waiting') ticket = { kind: 'waiting', position: state.position ?? null };
  else if (state.kind === 'admitted') ticket = { kind: 'admitted', buyerDigest: state.digest, tokenExpiresAtMs: Number(state.expires) };
  else ticket = { kind: state.kind };
  return { state: ticket, outcome: toOutcome(raw) };
}
