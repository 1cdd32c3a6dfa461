import { createHash } from "node:crypto";

/**
 * The Lua scripts. Each runs atomically on the server, so every decision
 * (is the key free, whose is it) and its effect happen in one step, in one
 * round trip. Keys are always passed as KEYS, so they work on Redis Cluster
 * (one hash tag) and honour a client's `keyPrefix`.
 *
 * Data model, per lock: the string key `x` says who has the lock: an owner
 * token (32 hex characters, PX = the lease) for an exclusive holder, or the
 * marker `r` (shared readers) or `s` (semaphore slots) while the sorted set
 * `z` of that mode has holders (member: owner, score: expiry in server ms).
 * The marker lives at least as long as the longest holder, so an exclusive
 * acquire is a single `SET NX PX`. `f` is the fencing counter, incremented
 * by every grant. Modes on the wire: `x` exclusive, `r` shared, `s` semaphore.
 *
 * The common paths come first in each script, before any helper is defined.
 */

/** Helpers of the slower paths: server time, holders of a sorted set, the check and the grant. */
const HELPERS = `
local t
local function now()
  if not t then
    local c = redis.call('TIME')
    t = tonumber(c[1]) * 1000 + math.floor(tonumber(c[2]) / 1000)
  end
  return t
end
-- Drops expired holders of sorted set z; returns how many are left and the earliest expiry, in ms from now.
local function holders(z)
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now())
  local n = redis.call('ZCARD', z)
  if n == 0 then return 0, 0 end
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  return n, tonumber(first[2]) - now()
end
-- Keeps key k alive at least ms longer.
local function keep(k, ms)
  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
end
-- 0 when owner may hold the lock in mode now, otherwise ms until that may change.
local function available(x, z, owner, mode, limit)
  local v = redis.call('GET', x)
  if mode == 'x' then
    if not v or v == owner then return 0 end
    return math.max(redis.call('PTTL', x), 1)
  end
  if v and v ~= mode then return math.max(redis.call('PTTL', x), 1) end
  if mode == 's' and v then
    local n, wait = holders(z)
    if n >= limit and not redis.call('ZSCORE', z, owner) then return math.max(wait, 1) end
  end
  return 0
end
local function grant(x, z, f, owner, mode, ttl)
  if mode == 'x' then
    redis.call('SET', x, owner, 'PX', ttl)
  else
    if not redis.call('GET', x) then redis.call('DEL', z) end
    redis.call('ZADD', z, now() + ttl, owner)
    -- The marker (and the set) outlive every holder; +1 ms covers rounding.
    redis.call('SET', x, mode, 'KEEPTTL')
    keep(x, ttl + 1)
    keep(z, ttl + 1)
  end
  return redis.call('INCR', f)
end
-- Fair queue: drops waiters whose entry expired (crashed or gone).
local function purgeQueue(q, qe)
  local dead = redis.call('ZRANGEBYSCORE', qe, '-inf', now())
  for _, m in ipairs(dead) do redis.call('ZREM', q, m) end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', qe, '-inf', now()) end
end
`;

/**
 * KEYS: x f [z] (z only for shared and semaphore). ARGV: owner, mode, ttl, limit.
 * Returns {1, fencingToken} or {0, msUntilItMayBeFree}. Idempotent for the same owner.
 */
const ACQUIRE = `
local x, f, z = KEYS[1], KEYS[2], KEYS[3]
local owner, mode = ARGV[1], ARGV[2]
if mode == 'x' then
  if redis.call('SET', x, owner, 'NX', 'PX', ARGV[3]) then return {1, redis.call('INCR', f)} end
  if redis.call('GET', x) == owner then
    redis.call('PEXPIRE', x, ARGV[3])
    return {1, redis.call('INCR', f)}
  end
  return {0, math.max(redis.call('PTTL', x), 1)}
end
${HELPERS}
local ttl, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local wait = available(x, z, owner, mode, limit)
if wait > 0 then return {0, wait} end
return {1, grant(x, z, f, owner, mode, ttl)}
`;

/**
 * Fair (FIFO) acquire. KEYS: x f z q qe qn. ARGV: owner, mode, ttl, limit,
 * enqueue ("1": join or stay in the queue, "0": a one-off try that only
 * succeeds when nobody waits ahead), waiterTtl.
 * Returns {1, fencingToken} or {0, msUntilItMayChange}.
 */
const FAIR_ACQUIRE = `
local x, f, z, q, qe, qn = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local owner, mode = ARGV[1], ARGV[2]
if mode == 'x' and redis.call('EXISTS', q) == 0 then
  -- Nobody queued: the plain exclusive path.
  if redis.call('SET', x, owner, 'NX', 'PX', ARGV[3]) then return {1, redis.call('INCR', f)} end
end
${HELPERS}
local ttl, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local enqueue, waiterTtl = ARGV[5] == '1', tonumber(ARGV[6])
purgeQueue(q, qe)
local member = mode .. owner
local rank = redis.call('ZRANK', q, member)
local position = rank or redis.call('ZCARD', q)
local wait = available(x, z, owner, mode, limit)
-- FIFO: only the head may take an exclusive lock; shared or semaphore
-- waiters may join a head of their own mode (semaphore: while slots last).
local turn = position == 0
if not turn and mode ~= 'x' then
  turn = true
  for _, m in ipairs(redis.call('ZRANGE', q, 0, position - 1)) do
    if string.sub(m, 1, 1) ~= mode then turn = false break end
  end
  if turn and mode == 's' then turn = holders(z) + position < limit end
end
if wait == 0 and turn then
  if rank then
    redis.call('ZREM', q, member)
    redis.call('ZREM', qe, member)
  end
  return {1, grant(x, z, f, owner, mode, ttl)}
end
if enqueue then
  if not rank then redis.call('ZADD', q, redis.call('INCR', qn), member) end
  redis.call('ZADD', qe, now() + waiterTtl, member)
  keep(q, waiterTtl)
  keep(qe, waiterTtl)
  keep(qn, waiterTtl)
end
if wait == 0 then
  -- Free, but others are ahead: wake again when the head's entry would expire.
  local head = redis.call('ZRANGE', q, 0, 0)[1]
  local expiry = head and redis.call('ZSCORE', qe, head)
  wait = expiry and math.max(tonumber(expiry) - now(), 1) or 1
end
return {0, wait}
`;

/**
 * KEYS: x c [z [q qe]] (z unless exclusive and not fair). ARGV: owner, mode, publish command, tag, fair ("1"/"0").
 * Owner-checked release; publishes a notification when something was freed:
 * `x` + tag when the key is free, `s` + tag when one semaphore slot is. In fair mode it also removes the owner's queue entry
 * (a waiter giving up) and names the new head of the queue instead
 * ("o" + its mode letter and first 16 characters), so only that waiter's
 * process wakes. Returns 1 when a hold was released.
 */
const RELEASE = `
local x, c, z = KEYS[1], KEYS[2], KEYS[3]
local owner, mode, publish = ARGV[1], ARGV[2], ARGV[3]
local fair = ARGV[5] == '1'
if mode == 'x' and not fair then
  if redis.call('GET', x) ~= owner then return 0 end
  redis.call('DEL', x)
  redis.call(publish, c, 'x' .. ARGV[4])
  return 1
end
${HELPERS}
local released, freed, kind = 0, false, mode
if mode == 'x' then
  if redis.call('GET', x) == owner then
    redis.call('DEL', x)
    released, freed = 1, true
  end
else
  released = redis.call('ZREM', z, owner)
  if released == 1 then
    local n = holders(z)
    if n == 0 then
      if redis.call('GET', x) == mode then redis.call('DEL', x) end
      redis.call('DEL', z)
    end
    freed = mode == 's' or n == 0
    -- Nobody left: as free as after an exclusive release.
    if n == 0 then kind = 'x' end
  end
end
if fair then
  local q, qe = KEYS[4], KEYS[5]
  purgeQueue(q, qe)
  local member = mode .. owner
  local rank = redis.call('ZRANK', q, member)
  if rank then
    redis.call('ZREM', q, member)
    redis.call('ZREM', qe, member)
  end
  if freed or rank == 0 then
    local head = redis.call('ZRANGE', q, 0, 0)[1]
    if head then redis.call(publish, c, 'o' .. string.sub(head, 1, 17)) end
  end
elseif freed then
  redis.call(publish, c, kind .. ARGV[4])
end
return released
`;

/**
 * KEYS: x [z]. ARGV: owner, mode, ttl. Owner-checked: sets the hold's expiry
 * to ttl from now. Returns 1, or 0 when the owner no longer holds it.
 */
const EXTEND = `
local x, z, owner, mode = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if mode == 'x' then
  if redis.call('GET', x) ~= owner then return 0 end
  redis.call('PEXPIRE', x, ARGV[3])
  return 1
end
${HELPERS}
local ttl = tonumber(ARGV[3])
local score = redis.call('ZSCORE', z, owner)
if redis.call('GET', x) ~= mode or not score or tonumber(score) <= now() then
  redis.call('ZREM', z, owner)
  return 0
end
redis.call('ZADD', z, 'XX', now() + ttl, owner)
keep(x, ttl + 1)
keep(z, ttl + 1)
return 1
`;

/**
 * Redlock's fencing write-back. KEYS: x f [z]. ARGV: owner, mode, token,
 * catchUp. While the owner still holds the lock here, raises the counter to
 * at least token; returns 1, or 0 when not held (the write does not count
 * towards the majority). With catchUp "1" it raises the counter regardless
 * (a token that was granted is never too high for a counter) and returns 1.
 */
const FENCE = `
${HELPERS}
local x, f, z, owner, mode = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
if ARGV[4] == '1' then
elseif mode == 'x' then
  if redis.call('GET', x) ~= owner then return 0 end
else
  local score = redis.call('ZSCORE', z, owner)
  if redis.call('GET', x) ~= mode or not score or tonumber(score) <= now() then return 0 end
end
if tonumber(redis.call('GET', f) or '0') < tonumber(ARGV[3]) then redis.call('SET', f, ARGV[3]) end
return 1
`;

/**
 * KEYS: x r s f. Read-only snapshot: {exclusive owner or false, its pttl,
 * readers {owner, msLeft, ...}, slots {owner, msLeft, ...}, fence counter or false}.
 */
const INSPECT = `
${HELPERS}
local function live(z)
  local out = {}
  local all = redis.call('ZRANGEBYSCORE', z, '(' .. now(), '+inf', 'WITHSCORES')
  for i = 1, #all, 2 do
    out[#out + 1] = all[i]
    out[#out + 1] = tonumber(all[i + 1]) - now()
  end
  return out
end
local v = redis.call('GET', KEYS[1])
local owner, readers, slots = false, {}, {}
if v == 'r' then readers = live(KEYS[2]) elseif v == 's' then slots = live(KEYS[3]) elseif v then owner = v end
return {owner, redis.call('PTTL', KEYS[1]), readers, slots, redis.call('GET', KEYS[4])}
`;

/** A Lua script, sent by EVALSHA (the connection loads it with SCRIPT LOAD first). */
export class Script {
  readonly sha: string;
  readonly lua: string;

  constructor(lua: string) {
    this.lua = lua;
    this.sha = createHash("sha1").update(lua).digest("hex");
  }
}

/** Every script this package runs. */
export const scripts = {
  acquire: new Script(ACQUIRE),
  fairAcquire: new Script(FAIR_ACQUIRE),
  release: new Script(RELEASE),
  extend: new Script(EXTEND),
  fence: new Script(FENCE),
  inspect: new Script(INSPECT),
} as const;
