import { redisCommand } from "@locks/testkit";

/**
 * The fenced resource: a Redis hash that accepts a write only when its token
 * is greater than the highest token it has accepted. Tokens are compared as
 * decimal strings (length first), so no precision is lost above 2^53. Each
 * accepted write gets the store's own sequence number: the order in which the
 * store accepted writes, which the order their answers reached the clients
 * (each on its own loaded event loop) is not.
 */
const SCRIPT = `
local cur = redis.call('HGET', KEYS[1], 'token')
local t = ARGV[1]
if cur and (#cur > #t or (#cur == #t and cur >= t)) then return 0 end
redis.call('HSET', KEYS[1], 'token', t, 'value', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'seq', 1)`;

/** Writes `value` under `token`: the store's acceptance sequence number, or 0 when refused as stale. */
export async function fencedWrite(
  url: string,
  key: string,
  token: string,
  value: string,
): Promise<number> {
  const reply = await redisCommand(url, ["EVAL", SCRIPT, "1", key, token, value], {
    timeoutMs: 5_000,
  });
  return typeof reply === "number" ? reply : 0;
}

/** The store's current token and value. */
export async function fenceState(
  url: string,
  key: string,
): Promise<{ token: string | null; value: string | null }> {
  const reply = await redisCommand(url, ["HMGET", key, "token", "value"]);
  const [token, value] = Array.isArray(reply) ? reply : [null, null];
  return {
    token: typeof token === "string" ? token : null,
    value: typeof value === "string" ? value : null,
  };
}
