import { invalidArgument } from "@locks/core";
import type { Cluster, Redis, RedisOptions } from "ioredis";

/** Options every configuration accepts. */
export interface RedisCommonOptions {
  /**
   * First part of every key and channel on the server (default `"locks"`), so
   * ACLs can grant exactly `locks:*`. Must not contain `{` or `}` (the hash tag).
   */
  prefix?: string;
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

/** Validated settings shared by every configuration. */
export interface CommonSettings {
  readonly prefix: string;
  readonly commandTimeoutMs: number;
}

/** What the factory builds, after validation. */
export type ResolvedOptions =
  | (CommonSettings & {
      readonly kind: "server";
      readonly client: Redis | Cluster | undefined;
      readonly url: string | undefined;
      readonly redisOptions: RedisOptions | undefined;
      readonly fair: boolean;
      readonly waiterTtlMs: number;
    })
  | (CommonSettings & {
      readonly kind: "redlock";
      readonly clients: readonly Redis[] | undefined;
      readonly urls: readonly string[] | undefined;
      readonly redisOptions: RedisOptions | undefined;
      readonly instanceTimeoutMs: number | undefined;
    });

const KNOWN = new Set([
  "client",
  "clients",
  "url",
  "urls",
  "redisOptions",
  "prefix",
  "commandTimeoutMs",
  "fair",
  "waiterTtlMs",
  "instanceTimeoutMs",
]);
const TARGETS = ["client", "url", "clients", "urls"] as const;

/** Validates the factory's options before any I/O; throws INVALID_ARGUMENT naming the option. */
export function resolveOptions(options: unknown): ResolvedOptions {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw invalidArgument("options", "must be an object with one of client, url, clients, urls");
  }
  const o = options as Record<string, unknown>;
  for (const name of Object.keys(o)) {
    if (!KNOWN.has(name)) throw invalidArgument(`options.${name}`, "is not a known option");
  }
  const given = TARGETS.filter((name) => o[name] !== undefined);
  if (given.length !== 1) {
    throw invalidArgument(
      "options",
      given.length === 0
        ? "must have one of client, url (one server or Cluster), clients, urls (Redlock)"
        : `must have only one of client, url, clients, urls, got ${given.join(" and ")}`,
    );
  }
  const common: CommonSettings = {
    prefix: prefixOption(o.prefix),
    commandTimeoutMs: positiveMs(o.commandTimeoutMs, "commandTimeoutMs") ?? 5_000,
  };
  const redisOptions = redisOptionsOption(o.redisOptions);
  if (redisOptions !== undefined && o.client !== undefined) {
    throw invalidArgument(
      "redisOptions",
      "is only used with url or urls (configure your own client instead)",
    );
  }
  if (redisOptions !== undefined && o.clients !== undefined) {
    throw invalidArgument(
      "redisOptions",
      "is only used with url or urls (configure your own clients instead)",
    );
  }

  if (o.client !== undefined || o.url !== undefined) {
    if (o.instanceTimeoutMs !== undefined) {
      throw invalidArgument("instanceTimeoutMs", "is a Redlock option (clients or urls)");
    }
    if (o.fair !== undefined && typeof o.fair !== "boolean") {
      throw invalidArgument("fair", `must be a boolean, got ${typeof o.fair}`);
    }
    const fair = o.fair === true;
    const waiterTtlMs = positiveMs(o.waiterTtlMs, "waiterTtlMs");
    if (waiterTtlMs !== undefined && !fair)
      throw invalidArgument("waiterTtlMs", "is only used with fair: true");
    if (waiterTtlMs !== undefined && waiterTtlMs < 30)
      throw invalidArgument("waiterTtlMs", "must be at least 30 ms");
    return {
      ...common,
      kind: "server",
      client: o.client === undefined ? undefined : clientOption(o.client, "client", true),
      url: o.url === undefined ? undefined : urlOption(o.url, "url"),
      redisOptions,
      fair,
      waiterTtlMs: waiterTtlMs ?? 5_000,
    };
  }

  if (o.fair !== undefined)
    throw invalidArgument("fair", "is not supported with Redlock (clients or urls)");
  if (o.waiterTtlMs !== undefined)
    throw invalidArgument("waiterTtlMs", "is not supported with Redlock");
  let clients: Redis[] | undefined;
  let urls: string[] | undefined;
  if (o.clients !== undefined) {
    const list = listOption(o.clients, "clients");
    clients = list.map((c, i) => clientOption(c, `clients[${i}]`, false) as Redis);
    if (new Set(clients).size !== clients.length) {
      throw invalidArgument(
        "clients",
        "must not contain the same client twice (each member is one vote)",
      );
    }
  } else {
    urls = listOption(o.urls, "urls").map((u, i) => urlOption(u, `urls[${i}]`));
  }
  return {
    ...common,
    kind: "redlock",
    clients,
    urls,
    redisOptions,
    instanceTimeoutMs: positiveMs(o.instanceTimeoutMs, "instanceTimeoutMs"),
  };
}

function prefixOption(value: unknown): string {
  if (value === undefined) return "locks";
  if (typeof value !== "string" || value.length === 0) {
    throw invalidArgument("prefix", "must be a non-empty string");
  }
  if (/[{}]/.test(value))
    throw invalidArgument("prefix", 'must not contain "{" or "}" (they make the hash tag)');
  if (Buffer.byteLength(value) > 256)
    throw invalidArgument("prefix", "must be at most 256 UTF-8 bytes");
  return value;
}

function positiveMs(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > 2_147_483_647) {
    throw invalidArgument(name, "must be a positive finite number of milliseconds");
  }
  return Math.ceil(value);
}

function urlOption(value: unknown, name: string): string {
  if (typeof value !== "string" || !/^rediss?:\/\//.test(value)) {
    throw invalidArgument(name, 'must be a "redis://" or "rediss://" URL string');
  }
  return value;
}

function listOption(value: unknown, name: string): unknown[] {
  if (!Array.isArray(value) || value.length === 0)
    throw invalidArgument(name, "must be a non-empty array");
  return value;
}

function redisOptionsOption(value: unknown): RedisOptions | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalidArgument("redisOptions", "must be an object of ioredis options");
  }
  return value as RedisOptions;
}

function clientOption(value: unknown, name: string, clusterAllowed: boolean): Redis | Cluster {
  const c = value as Partial<Redis> | null;
  const looksLikeClient =
    typeof c === "object" &&
    c !== null &&
    typeof c.evalsha === "function" &&
    typeof c.duplicate === "function" &&
    typeof c.status === "string";
  if (!looksLikeClient) throw invalidArgument(name, "must be an ioredis Redis or Cluster client");
  if (!clusterAllowed && (value as { isCluster?: boolean }).isCluster === true) {
    throw invalidArgument(
      name,
      "must be a single-server client: Redlock needs independent servers, not a Cluster",
    );
  }
  return value as Redis | Cluster;
}
