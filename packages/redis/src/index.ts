/**
 * `@locks/redis`: locks on one Redis server, a Redis Cluster, or Redlock over
 * independent servers, for `@locks/core`.
 *
 * @packageDocumentation
 */
import type { Backend } from "@locks/core";
import { Connection } from "./connection.js";
import { type RedisBackendOptions, resolveOptions } from "./options.js";
import { RedlockBackend } from "./redlock.js";
import { ServerBackend } from "./server.js";

export type {
  RedisBackendOptions,
  RedisClientBackendOptions,
  RedisCommonOptions,
  RedisFairOptions,
  RedisUrlBackendOptions,
  RedlockClientsBackendOptions,
  RedlockTimingOptions,
  RedlockUrlsBackendOptions,
} from "./options.js";

/**
 * A Redis lock backend.
 *
 * - `{ client }`: one server or a Redis Cluster, through your ioredis client
 *   (never closed by the backend). `{ url }`: the same, with a client the
 *   backend makes and closes.
 * - `{ clients: [a, b, c, d, e] }` / `{ urls: [...] }`: Redlock over
 *   independent servers; a lock needs a majority of them.
 *
 * Options are checked before any I/O: a bad one throws INVALID_ARGUMENT.
 *
 * @example
 * ```ts
 * const locks = createLocks(redisBackend({ client: new Redis(url) }), { namespace: "billing" });
 * ```
 */
export function redisBackend(options: RedisBackendOptions): Backend {
  const resolved = resolveOptions(options);
  const common = { prefix: resolved.prefix, commandTimeoutMs: resolved.commandTimeoutMs };
  if (resolved.kind === "server") {
    const connection =
      resolved.client !== undefined
        ? Connection.given(resolved.client, resolved.commandTimeoutMs)
        : Connection.create(
            resolved.url as string,
            resolved.redisOptions,
            resolved.commandTimeoutMs,
          );
    return new ServerBackend(connection, {
      ...common,
      fair: resolved.fair,
      waiterTtlMs: resolved.waiterTtlMs,
    });
  }
  const connections =
    resolved.clients !== undefined
      ? resolved.clients.map((client) => Connection.given(client, resolved.commandTimeoutMs))
      : (resolved.urls ?? []).map((url) =>
          Connection.create(url, resolved.redisOptions, resolved.commandTimeoutMs),
        );
  return new RedlockBackend(connections, {
    ...common,
    instanceTimeoutMs: resolved.instanceTimeoutMs,
  });
}
