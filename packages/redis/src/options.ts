import { type Check, check, defineOptions, invalidArgument } from "@locks/core/backend";
import type { Cluster, Redis, RedisOptions } from "ioredis";

/** Options every configuration accepts. */
export interface RedisCommonOptions {
  /**
   * Longest wait for one reply in ms (default 5 000). A command without a
   * reply by then fails with BACKEND_UNAVAILABLE; its outcome is unknown, so
   * the core cleans up by owner. It is not cut to the lock's TTL: a reply
   * later than the lease is a grant the core refuses as too late, not a sign
   * that the server is down.
   */
  commandTimeoutMs?: number;
}

/** Options of the fair (FIFO) mode of a single server or Cluster. */
export interface RedisFairOptions {
  /**
   * Grant in arrival order (FIFO), as Redisson's fair lock: waiters queue on
   * the server. Default false (waiters race; faster handoffs).
   */
  fair?: boolean;
  /**
   * Fair mode: a waiter's queue entry expires this long (ms) after its last
   * refresh (default 5 000; refreshed every third of it), so a crashed waiter
   * blocks the queue at most this long.
   */
  waiterTtlMs?: number;
}

/** One server or a Redis Cluster, through a client you own (never closed by the backend). */
export interface RedisClientBackendOptions extends RedisCommonOptions, RedisFairOptions {
  /**
   * An ioredis `Redis` or `Cluster`, never modified nor closed. Created with
   * `enableOfflineQueue: false` and `autoResendUnfulfilledCommands: false` (a
   * Cluster: its `enableOfflineQueue: false` and
   * `redisOptions.autoResendUnfulfilledCommands: false`), it carries the lock
   * commands, only while `client.status` is `"ready"` (otherwise
   * BACKEND_UNAVAILABLE). Without them (ioredis' defaults) a lock command could
   * be queued, or replayed after a reconnect and hold the key for an acquire
   * that already failed: the backend then sends lock commands through a
   * duplicate of it with those options, which `close()` closes.
   */
  client: Redis | Cluster;
  clients?: never;
  url?: never;
  urls?: never;
}

/** One server, through a client the backend creates from `url` and closes in `close()`. */
export interface RedisUrlBackendOptions extends RedisCommonOptions, RedisFairOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://...`. */
  url: string;
  /**
   * Extra ioredis options. The backend always sets `enableOfflineQueue: false`,
   * `autoResendUnfulfilledCommands: false`, `maxRetriesPerRequest: 0`,
   * `lazyConnect: true` and `disconnectTimeout: 100`.
   */
  redisOptions?: RedisOptions;
  client?: never;
  clients?: never;
  urls?: never;
}

/** Options of Redlock only. */
export interface RedlockTimingOptions {
  /**
   * Longest wait for one member's reply in ms, short compared to the TTL as
   * the Redlock algorithm asks (default: TTL / 10, between 200 and 500 ms: a
   * member answering in 100 ms on a loaded machine is not down). A member
   * that is down is skipped at once.
   */
  instanceTimeoutMs?: number;
}

/** Redlock over independent servers, through clients you own (never closed by the backend). */
export interface RedlockClientsBackendOptions extends RedisCommonOptions, RedlockTimingOptions {
  /**
   * Independent single-server `Redis` clients, one per member (3 or 5 usually),
   * never modified nor closed; one that lacks the safe options is wrapped as
   * `RedisClientBackendOptions.client` says.
   */
  clients: readonly Redis[];
  client?: never;
  url?: never;
  urls?: never;
}

/** Redlock over independent servers, through clients the backend creates and closes. */
export interface RedlockUrlsBackendOptions extends RedisCommonOptions, RedlockTimingOptions {
  /** One URL per member. */
  urls: readonly string[];
  /** Extra ioredis options (the safe options of `RedisUrlBackendOptions.redisOptions` always apply). */
  redisOptions?: RedisOptions;
  client?: never;
  clients?: never;
  url?: never;
}

/** Options of `redisBackend`: exactly one of `client`, `url`, `clients`, `urls`. */
export type RedisBackendOptions =
  | RedisClientBackendOptions
  | RedisUrlBackendOptions
  | RedlockClientsBackendOptions
  | RedlockUrlsBackendOptions;

/** An ioredis client, Redis or Cluster (duck-typed: another copy of ioredis may have made it). */
function isClient(value: object): boolean {
  const c = value as Partial<Redis>;
  return (
    typeof c.evalsha === "function" &&
    typeof c.duplicate === "function" &&
    typeof c.status === "string"
  );
}

const url = ((value, name) => {
  if (typeof value !== "string" || !/^rediss?:\/\//.test(value)) {
    throw invalidArgument(name, 'must be a "redis://" or "rediss://" URL string');
  }
  return value;
}) as Check<string>;

const ms = check.integer(1, 2_147_483_647);

const parse = defineOptions({
  client: check.instance<Redis | Cluster>("an ioredis Redis or Cluster client", isClient),
  clients: check.list(
    check.instance<Redis>(
      "a single-server ioredis client (Redlock needs independent servers, not a Cluster)",
      (value) => isClient(value) && (value as { isCluster?: boolean }).isCluster !== true,
    ),
  ),
  url,
  urls: check.list(url),
  redisOptions: check.instance<RedisOptions>(
    "an object of ioredis options",
    (value) => !Array.isArray(value),
  ),
  commandTimeoutMs: ms,
  fair: check.boolean,
  waiterTtlMs: check.integer(30, 2_147_483_647),
  instanceTimeoutMs: ms,
});

/** Validated options: exactly one of `client`, `url`, `clients`, `urls`, and only the options it takes. */
export type ResolvedOptions = ReturnType<typeof parse>;

/** Options that only some configurations take: when each is misplaced, and why. */
const PLACES: ReadonlyArray<
  [keyof ResolvedOptions, (o: ResolvedOptions, redlock: boolean) => boolean, string]
> = [
  [
    "redisOptions",
    (o) => o.client !== undefined || o.clients !== undefined,
    "is only used with url or urls (configure your own client instead)",
  ],
  ["instanceTimeoutMs", (_, redlock) => !redlock, "is a Redlock option (clients or urls)"],
  ["fair", (_, redlock) => redlock, "is not supported with Redlock (clients or urls)"],
  ["waiterTtlMs", (o) => o.fair !== true, "is only used with fair: true"],
];

/** Validates the factory's options before any I/O; throws INVALID_ARGUMENT naming the option. */
export function resolveOptions(options: unknown): ResolvedOptions {
  const o = parse(options);
  const given = (["client", "url", "clients", "urls"] as const).filter(
    (name) => o[name] !== undefined,
  );
  if (given.length !== 1) {
    throw invalidArgument(
      "options",
      given.length === 0
        ? "must have one of client, url (one server or Cluster), clients, urls (Redlock)"
        : `must have only one of client, url, clients, urls, got ${given.join(" and ")}`,
    );
  }
  if (o.clients !== undefined && new Set(o.clients).size !== o.clients.length) {
    throw invalidArgument(
      "options.clients",
      "must not contain the same client twice (each member is one vote)",
    );
  }
  const redlock = o.clients !== undefined || o.urls !== undefined;
  for (const [name, misplaced, why] of PLACES) {
    if (o[name] !== undefined && misplaced(o, redlock))
      throw invalidArgument(`options.${name}`, why);
  }
  return o;
}
