import {
  type Attempt,
  type Backend,
  type Capabilities,
  check,
  defineOptions,
  invalidArgument,
  type KeyEvent,
  type KeyRef,
  type KeyStatus,
  type LockRequest,
  type Unsubscribe,
  WakeRegistry,
} from "@locks/core/backend";
import { Redis } from "ioredis";

// Each script runs atomically on the server: the check and its effect are one step.

// A held key's value is "<owner> <token> <label>": the owner token is 32
// hex characters, so the owner check compares the first 32 bytes.

/** Takes a free key for ARGV[1] (the owner, labelled ARGV[3]) for ARGV[2] ms, with the next fencing token. */
const ACQUIRE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('PTTL', KEYS[1])} end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token .. ' ' .. ARGV[3], 'PX', ARGV[2])
return {1, token}`;

/** Moves the expiry, only while ARGV[1] holds the key. */
const EXTEND = `
if string.sub(redis.call('GET', KEYS[1]) or '', 1, 32) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])`;

/** Frees the key, only while ARGV[1] holds it, and tells the waiters on channel ARGV[2]. */
const RELEASE = `
if string.sub(redis.call('GET', KEYS[1]) or '', 1, 32) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '')
return 1`;

/** Frees the key whoever holds it (the token counter stays), and tells the waiters. */
const FORCE_RELEASE = `
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[1], '')
return 1`;

// The names of a lock on the server; `request.scoped` is one string per
// (namespace, key), and each name starts differently, so none can be another.
const lockName = (scoped: string) => `lock:${scoped}`;
const fenceName = (scoped: string) => `fence:${scoped}`;
const channelName = (scoped: string) => `free:${scoped}`;

const capabilities: Capabilities = Object.freeze({
  scope: "cluster", // any process that reaches the server contends
  ttl: true, // PX: the server frees an abandoned lock
  fencing: true, // INCR of a counter per key, kept as long as the server keeps data
  shared: false,
  semaphore: false,
  fair: false, // waiters race for a freed key
  notify: true, // PUBLISH on release
  minTtlMs: 250, // a lease must outlast a few round trips
});

const parseOptions = defineOptions({ url: check.string });

export interface TinyRedisOptions {
  /** `redis://host:port`: the backend makes (and closes) its own connections. */
  readonly url: string;
}

/** Exclusive locks on one Redis server: the protocol above, nothing else. */
export function tinyRedisBackend(options: TinyRedisOptions): Backend {
  // Unknown keys and wrong types are refused here, before any I/O.
  const { url } = parseOptions(options);
  if (url === undefined) throw invalidArgument("options.url", "is required");
  // A command fails at once while the server is unreachable (the core reports
  // BACKEND_UNAVAILABLE) and is never sent again after a reconnect: a late
  // SET NX would take a lock that nobody waits for any more.
  const client = new Redis(url, { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false });
  // Pub/sub needs a connection of its own. Each channel is subscribed to
  // while someone waits for its key, and only then.
  const subscriber = client.duplicate();
  const subscribed = new Map<string, Promise<unknown>>();
  const wakes = new WakeRegistry({
    first(channel) {
      const done = subscriber.subscribe(channel);
      done.catch(() => {}); // the waiter that caused it sees the error
      subscribed.set(channel, done);
    },
    last(channel) {
      subscribed.delete(channel);
      subscriber.unsubscribe(channel).catch(() => {});
    },
  });
  subscriber.on("message", (channel: string) => wakes.wake(channel));
  // Messages published while the subscriber is away are lost: the core polls
  // until it is back, then looks again.
  subscriber.on("close", () => wakes.wakeAll("unsure"));
  subscriber.on("ready", () => wakes.wakeAll("changed"));

  return {
    name: "tiny-redis",
    capabilities,

    async tryAcquire(request: LockRequest): Promise<Attempt> {
      const [granted, value] = (await client.eval(
        ACQUIRE,
        2,
        lockName(request.scoped),
        fenceName(request.scoped),
        request.owner,
        request.ttlMs,
        request.holder ?? "", // labels are never empty: "" is none
      )) as [number, number];
      if (granted === 1) return { granted: true, fencingToken: BigInt(value) };
      return { granted: false, retryAfterMs: Math.max(value, 0) };
    },

    // No hold needed: the owner token stored in the key is the handle.
    async extend(request: LockRequest, _hold: unknown, ttlMs: number): Promise<boolean> {
      const extended = await client.eval(EXTEND, 1, lockName(request.scoped), request.owner, ttlMs);
      return extended === 1;
    },

    // Owner-checked, so the same call serves a known hold and an unknown outcome.
    async release(request: LockRequest): Promise<void> {
      await client.eval(
        RELEASE,
        1,
        lockName(request.scoped),
        request.owner,
        channelName(request.scoped),
      );
    },

    async subscribe(key: KeyRef, onChange: (event?: KeyEvent) => void): Promise<Unsubscribe> {
      const channel = channelName(key.scoped);
      const remove = wakes.add(channel, { wake: onChange });
      try {
        // Resolve once the server confirmed: the core's next attempt comes after it.
        await subscribed.get(channel);
      } catch (error) {
        remove();
        throw error;
      }
      return remove;
    },

    async inspect(key: KeyRef): Promise<KeyStatus> {
      const name = lockName(key.scoped);
      const [value, ttl] = await Promise.all([client.get(name), client.pttl(name)]);
      if (value === null) return { holders: [] };
      const [owner, token] = value.split(" ", 2) as [string, string];
      const label = value.slice(owner.length + token.length + 2);
      const holder = {
        holder: label === "" ? undefined : label,
        owner,
        mode: "exclusive" as const,
        fencingToken: BigInt(token),
        expiresInMs: Math.max(ttl, 0),
      };
      return { limit: 1, holders: [holder] };
    },

    // The evicted holder's next extension finds the key gone: the core reports the loss.
    async forceRelease(key: KeyRef): Promise<boolean> {
      const freed = await client.eval(
        FORCE_RELEASE,
        1,
        lockName(key.scoped),
        channelName(key.scoped),
      );
      return freed === 1;
    },

    async close(): Promise<void> {
      // The core released every lease and aborted every wait before this.
      subscriber.disconnect();
      client.disconnect();
    },
  };
}
