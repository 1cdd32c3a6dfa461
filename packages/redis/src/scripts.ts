import { createHash } from "node:crypto";

/**
 * The Lua scripts. Each runs atomically on the server, so every decision
 * (is the key free, whose is it) and its effect happen in one step, in one
 * round trip. Keys are always passed as KEYS, so they work on Redis Cluster
 * (one hash tag) and honour a client's `keyPrefix`.
 *
 * Data model, per lock: the string key `x` says who has the lock: an owner
 * token (32 hex characters, PX = the lease) for an exclusive holder, or a
 * marker while the sorted set of that mode has holders (member: owner,
 * score: expiry in server ms): `r` for shared readers (set `r`), `s` plus
 * the limit (`s3`) for semaphore slots (set `s`). The marker lives at least
 * as long as the longest holder, so an exclusive acquire is a single
 * `SET NX PX`, and it carries the limit the holders took the key with, so a
 * request with another limit is refused in the same atomic step. `f` is the
 * fencing counter, incremented by every grant (never deleted: force-release
 * keeps it, so later tokens are higher). Modes on the wire: `x` exclusive,
 * `r` shared, `s` semaphore.
 *
 * `d` (hash, the holders' details), field: owner, value: the grant's token,
 * then a space and the holder's label when it gave one. Every shared and
 * semaphore holder has a field (its own token: the counter moves on with
 * each reader); an exclusive holder only when labelled (its token is the
 * counter's value), so an unlabelled exclusive grant costs nothing more. The
 * label is always an ARGV, stored and returned as bytes: never part of a key
 * name, never evaluated.
 *
 * Acquire replies: `t<token>` granted (a status string no other script
 * returns: a reply read out of turn can never pass for a grant, as a bare
 * integer such as extend's 0 or 1 would), `{0, ms}` refused (ms until it may
 * change), `{2, limit}` refused because the holders use another limit (an
 * exclusive or shared holder's limit is 1).
 *
 * The common paths come first in each script, before any helper is defined.
 */

/** The keys and first arguments of both acquire scripts. */
const ACQUIRE_HEAD = `
local x, f = KEYS[1], KEYS[2]
local owner, mode = ARGV[1], ARGV[2]
`;

/**
 * Only `x` and `f` are sent (the fast path touches nothing else): the other
 * names are `x`'s with another last letter, so they keep its hash tag (one
 * Cluster slot) and the client's `keyPrefix`. Made after the fast path.
 */
const SIBLINGS = `
local base = string.sub(x, 1, -2)
local r, s, d = base .. 'r', base .. 's', base .. 'd'
`;

/**
 * An exclusive holder's value is its owner token, followed by `+` once
 * someone may wait: its release publishes only then, so an uncontended cycle
 * costs no PUBLISH. A refused attempt marks the holder (APPEND keeps the
 * TTL); a waiter subscribes before the attempt that marks, so it misses no
 * release. A grant through a client that still has waiters of the key is
 * marked at once (they attempt only when told of a release). Fair mode
 * needs no mark: its release wakes the head of the queue.
 */
const WAITED = `
local function ownedBy(v) return v == owner or v == owner .. '+' end
local function waitFor(v)
  if string.sub(v, -1) ~= '+' then redis.call('APPEND', x, '+') end
  return math.max(redis.call('PTTL', x), 1)
end
`;

/**
 * The end of an exclusive grant: the token and, with a label, the holder's
 * field in `d`, which lives as long as the lock (no other field of `d` is
 * live then). Defined after the unlabelled fast path, which needs none of it.
 */
const EXCLUSIVE_TOKEN = `
local function exclusiveToken(ttl, label)
  local token = redis.call('INCR', f)
  if label then
    redis.call('DEL', d)
    redis.call('HSET', d, owner, token .. ' ' .. label)
    redis.call('PEXPIRE', d, ttl)
  end
  return 't' .. token
end
`;

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
-- The kind of holder value v says: 'x' an owner token, 'r' readers, 's' semaphore slots, false free.
local function kind(v)
  if not v then return false end
  if v == 'r' then return 'r' end
  if string.sub(v, 1, 1) == 's' then return 's' end
  return 'x'
end
-- Drops expired holders of sorted set z and their fields in hash d; returns how many are
-- left and the earliest expiry, in ms from now.
local function holders(z, d)
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now())
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now())
    for _, owner in ipairs(dead) do redis.call('HDEL', d, owner) end
  end
  local n = redis.call('ZCARD', z)
  if n == 0 then return 0, 0 end
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  return n, tonumber(first[2]) - now()
end
-- Keeps key k alive at least ms longer.
local function keep(k, ms)
  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
end
-- Who holds the key: their kind (false: free), the limit they took it with, how many
-- they are, the earliest of their expiries (ms from now) and the exclusive owner.
-- A marker that outlived its holders (expired, or gone) is removed: the key is free.
local function state(x, r, s, d)
  local v = redis.call('GET', x)
  local k = kind(v)
  if not k then return false, 0, 0, 0 end
  if k == 'x' then return 'x', 1, 1, math.max(redis.call('PTTL', x), 1), v end
  local z = k == 'r' and r or s
  local n, first = holders(z, d)
  if n == 0 then
    redis.call('DEL', x, z, d)
    return false, 0, 0, 0
  end
  if k == 'r' then return 'r', 1, n, math.max(first, 1) end
  return 's', tonumber(string.sub(v, 2)) or 0, n, math.max(first, 1)
end
-- Whether x still marks holders of mode (shared or semaphore).
local function marks(x, mode)
  return kind(redis.call('GET', x)) == mode
end
-- Fair queue: drops waiters whose entry expired (crashed or gone).
local function purgeQueue(q, qe)
  local dead = redis.call('ZRANGEBYSCORE', qe, '-inf', now())
  for _, w in ipairs(dead) do redis.call('ZREM', q, w) end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', qe, '-inf', now()) end
end
-- Fair queue: names its head on channel c ('o', its mode letter and 16 characters of its
-- owner), so that only that waiter's process wakes; false when nobody waits.
local function wakeHead(q, c, publish)
  local head = redis.call('ZRANGE', q, 0, 0)[1]
  if head then redis.call(publish, c, 'o' .. string.sub(head, 1, 17)) end
  return head ~= nil
end
`;

/** The check and the grant of the acquire scripts' slower paths (after ACQUIRE_HEAD and HELPERS). */
const GRANT = `
-- 0 when owner may hold the key in mode now, otherwise ms until that may change;
-- or nil and the holders' limit when they took it with a limit other than limit.
local function available(limit)
  local k, current, n, first, holder = state(x, r, s, d)
  if not k then return 0 end
  if current ~= limit then return nil, current end
  if k == 'x' then
    if mode == 'x' and ownedBy(holder) then return 0 end
    return waitFor(holder)
  end
  if mode == 'x' or k ~= mode then return math.max(redis.call('PTTL', x), 1) end
  if mode == 's' and n >= limit and not redis.call('ZSCORE', s, owner) then return first end
  return 0
end
local function grant(ttl, limit, label)
  if mode == 'x' then
    redis.call('SET', x, value, 'PX', ttl)
    return exclusiveToken(ttl, label)
  end
  local z = mode == 'r' and r or s
  local marker = mode == 'r' and 'r' or ('s' .. limit)
  if redis.call('GET', x) ~= marker then redis.call('DEL', z, d) end
  redis.call('ZADD', z, now() + ttl, owner)
  -- The marker (and the set) outlive every holder; +1 ms covers rounding.
  redis.call('SET', x, marker, 'KEEPTTL')
  keep(x, ttl + 1)
  keep(z, ttl + 1)
  local token = redis.call('INCR', f)
  -- Each reader or slot keeps its own token (and label).
  redis.call('HSET', d, owner, label and (token .. ' ' .. label) or token)
  keep(d, ttl + 1)
  return 't' .. token
end
`;

/**
 * KEYS: x f. ARGV: owner, mode, ttl, limit, mark ('+' when the client has
 * waiters of the key: an exclusive grant is marked at once, see WAITED), [label].
 * Returns 't' .. fencingToken, {0, msUntilItMayBeFree} or {2, holdersLimit}.
 * Idempotent for the same owner.
 */
const ACQUIRE = `${ACQUIRE_HEAD}
local value, label = owner .. ARGV[5], ARGV[6]
local fresh = mode == 'x' and redis.call('SET', x, value, 'NX', 'PX', ARGV[3])
if fresh and not label then return 't' .. redis.call('INCR', f) end
${SIBLINGS}
${EXCLUSIVE_TOKEN}
if fresh then return exclusiveToken(ARGV[3], label) end
${WAITED}
if mode == 'x' then
  local v = redis.call('GET', x)
  if ownedBy(v) then
    redis.call('PEXPIRE', x, ARGV[3])
    return exclusiveToken(ARGV[3], label)
  end
  -- Another exclusive holder (owner tokens are hex: never a marker).
  if v ~= 'r' and string.sub(v, 1, 1) ~= 's' then return {0, waitFor(v)} end
end
${HELPERS}
${GRANT}
local ttl, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local wait, current = available(limit)
if current then return {2, current} end
if wait > 0 then return {0, wait} end
return grant(ttl, limit, label)
`;

/**
 * Fair (FIFO) acquire. KEYS: x f (the queue's names derived as the others).
 * ARGV: owner, mode, ttl, limit,
 * enqueue ("1": join or stay in the queue, "0": a one-off try that only
 * succeeds when nobody waits ahead), waiterTtl[, label].
 * Returns 't' .. fencingToken, {0, msUntilItMayChange} or {2, holdersLimit}
 * (the waiter's queue entry stays: leaving the queue wakes the next one).
 */
const FAIR_ACQUIRE = `${ACQUIRE_HEAD}
${SIBLINGS}
local q, qe, qn = base .. 'q', base .. 'qe', base .. 'qn'
local value, label = owner, ARGV[7]
-- Nobody queued: the plain exclusive path.
local fresh = mode == 'x' and redis.call('EXISTS', q) == 0
  and redis.call('SET', x, value, 'NX', 'PX', ARGV[3])
if fresh and not label then return 't' .. redis.call('INCR', f) end
${EXCLUSIVE_TOKEN}
if fresh then return exclusiveToken(ARGV[3], label) end
${WAITED}
${HELPERS}
${GRANT}
local ttl, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local enqueue, waiterTtl = ARGV[5] == '1', tonumber(ARGV[6])
purgeQueue(q, qe)
local member = mode .. owner
local rank = redis.call('ZRANK', q, member)
local position = rank or redis.call('ZCARD', q)
local wait, current = available(limit)
if current then return {2, current} end
-- FIFO: only the head may take an exclusive lock; shared or semaphore
-- waiters may join a head of their own mode (semaphore: while slots last).
local turn = position == 0
if not turn and mode ~= 'x' then
  turn = true
  for _, w in ipairs(redis.call('ZRANGE', q, 0, position - 1)) do
    if string.sub(w, 1, 1) ~= mode then turn = false break end
  end
  if turn and mode == 's' then turn = holders(s, d) + position < limit end
end
if wait == 0 and turn then
  if rank then
    redis.call('ZREM', q, member)
    redis.call('ZREM', qe, member)
  end
  return grant(ttl, limit, label)
end
if enqueue then
  if not rank then redis.call('ZADD', q, redis.call('INCR', qn), member) end
  redis.call('ZADD', qe, now() + waiterTtl, member)
  keep(q, waiterTtl)
  keep(qe, waiterTtl)
  keep(qn, waiterTtl)
end
-- Another waiter is ahead: try again when its entry would expire, at the latest (a crashed
-- head's release notification never comes; a live head's client keeps its entry fresh).
local head = redis.call('ZRANGE', q, 0, 0)[1]
local expiry = head and head ~= member and redis.call('ZSCORE', qe, head)
if expiry then
  local left = math.max(tonumber(expiry) - now(), 1)
  if wait == 0 or left < wait then wait = left end
end
return {0, math.max(wait, 1)}
`;

/**
 * KEYS: x c [d [z [q qe]]] (d unless an unlabelled exclusive holder and not
 * fair; z unless exclusive and not fair). ARGV: owner, publish command, then
 * what may be left out when it is the default: mode ('x'), tag (''), fair
 * ("1"/"0", "0"), labelled ("1"/"0", "0").
 * Owner-checked release; publishes a notification when something was freed
 * that someone may wait for: `x` + tag when the key is free (an exclusive
 * holder: only when a refused attempt marked it, see WAITED), `s` + tag when
 * one semaphore slot is. The tag is empty but for Redlock (whose waiters hear
 * each release once, however many members publish it). In fair mode it also
 * removes the owner's queue entry (a waiter giving up) and names the new head
 * of the queue instead, so only that waiter's process wakes. Returns 1 when a
 * hold was released.
 */
const RELEASE = `
local x, c, d, z = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local owner, publish, mode, tag = ARGV[1], ARGV[2], ARGV[3] or 'x', ARGV[4] or ''
local fair, labelled = ARGV[5] == '1', ARGV[6] == '1'
if mode == 'x' and not fair then
  local v = redis.call('GET', x)
  if v == owner then
    redis.call('DEL', x)
  elseif v == owner .. '+' then
    redis.call('DEL', x)
    redis.call(publish, c, 'x' .. tag)
  else
    return 0
  end
  if labelled then redis.call('HDEL', d, owner) end
  return 1
end
${HELPERS}
local released, freed, freedKind = 0, false, mode
if mode == 'x' then
  local v = redis.call('GET', x)
  if v == owner or v == owner .. '+' then
    redis.call('DEL', x)
    if labelled then redis.call('HDEL', d, owner) end
    released, freed = 1, true
  end
else
  released = redis.call('ZREM', z, owner)
  redis.call('HDEL', d, owner)
  if released == 1 then
    local n = holders(z, d)
    if n == 0 then
      if marks(x, mode) then redis.call('DEL', x) end
      redis.call('DEL', z, d)
    end
    freed = mode == 's' or n == 0
    -- Nobody left: as free as after an exclusive release.
    if n == 0 then freedKind = 'x' end
  end
end
if fair then
  local q, qe = KEYS[5], KEYS[6]
  purgeQueue(q, qe)
  local member = mode .. owner
  local rank = redis.call('ZRANK', q, member)
  if rank then
    redis.call('ZREM', q, member)
    redis.call('ZREM', qe, member)
  end
  if freed or rank == 0 then wakeHead(q, c, publish) end
elseif freed then
  redis.call(publish, c, freedKind .. tag)
end
return released
`;

/**
 * KEYS: x [d [z]] (d for a labelled exclusive holder and for shared and
 * semaphore holders; z for the latter). ARGV: owner, mode, ttl.
 * Owner-checked: sets the hold's expiry (and its field's) to ttl from now.
 * Returns 1, or 0 when the owner no longer holds it.
 */
const EXTEND = `
local x, d, z, owner, mode = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
if mode == 'x' then
  local v = redis.call('GET', x)
  if v ~= owner and v ~= owner .. '+' then return 0 end
  redis.call('PEXPIRE', x, ARGV[3])
  if d then redis.call('PEXPIRE', d, ARGV[3]) end
  return 1
end
${HELPERS}
local ttl = tonumber(ARGV[3])
local score = redis.call('ZSCORE', z, owner)
if not marks(x, mode) or not score or tonumber(score) <= now() then
  redis.call('ZREM', z, owner)
  redis.call('HDEL', d, owner)
  return 0
end
redis.call('ZADD', z, 'XX', now() + ttl, owner)
keep(x, ttl + 1)
keep(z, ttl + 1)
keep(d, ttl + 1)
return 1
`;

/**
 * Redlock's fencing write-back. KEYS: x f [d [z]] (as the extend script's,
 * with f second). ARGV: owner, mode, token,
 * catchUp. While the owner still holds the lock here, raises the counter
 * (and the token in the holder's field, when it has one) to at least token;
 * returns 1, or 0 when not held (the write does not count towards the
 * majority). With catchUp "1" it raises them regardless (a token that was
 * granted is never too high for a counter) and returns 1.
 */
const FENCE = `
${HELPERS}
local x, f, d, z, owner, mode = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2]
local token = tonumber(ARGV[3])
if ARGV[4] == '1' then
elseif mode == 'x' then
  local v = redis.call('GET', x)
  if v ~= owner and v ~= owner .. '+' then return 0 end
else
  local score = redis.call('ZSCORE', z, owner)
  if not marks(x, mode) or not score or tonumber(score) <= now() then return 0 end
end
if tonumber(redis.call('GET', f) or '0') < token then redis.call('SET', f, ARGV[3]) end
local field = d and redis.call('HGET', d, owner)
if field then
  local space = string.find(field, ' ', 1, true)
  if tonumber(string.sub(field, 1, (space or 0) - 1)) < token then
    redis.call('HSET', d, owner, ARGV[3] .. (space and string.sub(field, space) or ''))
  end
end
return 1
`;

/**
 * KEYS: x r s f d. Read-only snapshot: {limit (1 unless a semaphore), fence
 * counter or false, then for each live holder: owner, mode letter, ms left,
 * its field in d or false}. Its tail is empty when the key is free.
 */
const INSPECT = `
${HELPERS}
local x, r, s, f, d = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local v = redis.call('GET', x)
local k = kind(v)
local out = {1, redis.call('GET', f)}
if k == 'x' then
  -- Without the mark of a waiter (see WAITED).
  local o = string.gsub(v, '%+$', '')
  for _, e in ipairs({o, 'x', redis.call('PTTL', x), redis.call('HGET', d, o)}) do out[#out + 1] = e end
elseif k then
  if k == 's' then out[1] = tonumber(string.sub(v, 2)) or 0 end
  local all = redis.call('ZRANGEBYSCORE', k == 'r' and r or s, '(' .. now(), '+inf', 'WITHSCORES')
  for i = 1, #all, 2 do
    out[#out + 1] = all[i]
    out[#out + 1] = k
    out[#out + 1] = tonumber(all[i + 1]) - now()
    out[#out + 1] = redis.call('HGET', d, all[i])
  end
end
return out
`;

/**
 * Fair queue: refreshes the entries of one client's waiters of a key at once.
 * KEYS: q qe qn. ARGV: waiterTtl, then the members (mode letter + owner).
 * Only entries still queued are refreshed (a granted or purged one is not
 * added back). Returns how many were refreshed.
 */
const REFRESH_QUEUE = `
${HELPERS}
local q, qe, qn = KEYS[1], KEYS[2], KEYS[3]
local ttl = tonumber(ARGV[1])
local expiry, n = now() + ttl, 0
-- In slices: Lua's unpack has a bound on how many values it passes.
for i = 2, #ARGV, 1000 do
  local args = {}
  for j = i, math.min(i + 999, #ARGV) do
    args[#args + 1] = expiry
    args[#args + 1] = ARGV[j]
  end
  n = n + redis.call('ZADD', qe, 'XX', 'CH', unpack(args))
end
keep(q, ttl)
keep(qe, ttl)
keep(qn, ttl)
return n
`;

/**
 * Admin: frees the key whoever holds it. KEYS: x r s d c q qe. ARGV: publish
 * command, tag. Deletes the holder marker, both holder sets and the holders'
 * fields, and keeps the counter `f`: the evicted holders' extensions and
 * releases find nothing of theirs, and every later grant's token is higher.
 * When something was held, wakes the waiters as a release that frees the
 * key does (fair: the head of the queue). Returns 1 when something was held.
 */
const FORCE_RELEASE = `
${HELPERS}
local x, r, s, d, c, q, qe = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local publish = ARGV[1]
local k = kind(redis.call('GET', x))
local held = k == 'x'
if k == 'r' or k == 's' then
  held = redis.call('ZCOUNT', k == 'r' and r or s, '(' .. now(), '+inf') > 0
end
redis.call('DEL', x, r, s, d)
if not held then return 0 end
purgeQueue(q, qe)
if not wakeHead(q, c, publish) then redis.call(publish, c, 'x' .. ARGV[2]) end
return 1
`;

/** A Lua script, sent by EVALSHA (the connection loads it with SCRIPT LOAD first). */
export interface Script {
  readonly lua: string;
  readonly sha: string;
}

function script(lua: string): Script {
  return { lua, sha: createHash("sha1").update(lua).digest("hex") };
}

/** Every script this package runs. */
export const scripts = {
  acquire: script(ACQUIRE),
  fairAcquire: script(FAIR_ACQUIRE),
  release: script(RELEASE),
  extend: script(EXTEND),
  fence: script(FENCE),
  inspect: script(INSPECT),
  forceRelease: script(FORCE_RELEASE),
  refreshQueue: script(REFRESH_QUEUE),
} as const;
