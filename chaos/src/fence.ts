import { redisCommand } from "@locks/testkit";

/**
 * The fenced resource: a Redis hash that accepts a write only when its token
 * is greater than the highest token it has accepted. Tokens are compared as
 * decimal strings (length first), so no precision is lost above 2^53.
 */
const SCRIPT = `
local cur = redis.call('HGET', KEYS[1], 'token')
local t = ARGV[1]
if cur and (#cur > #t or (#cur == #t and cur >= t)) then return 0 end
redis.call('HSET', KEYS[1], 'token', t, 'value', ARGV[2])
return 1`;

/** Writes `value` under `token`; true when accepted, false when refused as stale. */
export async function fencedWrite(
  url: string,
  key: string,
  token: string,
  value: string,
): Promise<boolean> {
  const reply = await redisCommand(url, ["EVAL", SCRIPT, "1", key, token, value], {
    timeoutMs: 5_000,
  });
  return reply === 1;
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
