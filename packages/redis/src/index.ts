/**
 * `@locks/redis`: locks on one Redis server, a Redis Cluster, or Redlock over
 * independent servers, for `@locks/core`.
 *
 * @packageDocumentation
 */
import type { Backend } from "@locks/core/backend";
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
 *
 * @group Factory
 */
export function redisBackend(options: RedisBackendOptions): Backend {
  const o = resolveOptions(options);
  const timeoutMs = o.commandTimeoutMs ?? 5_000;
  const connect = (url: string): Connection => Connection.create(url, o.redisOptions, timeoutMs);
  if (o.client !== undefined || o.url !== undefined) {
    const connection =
      o.client !== undefined ? Connection.given(o.client, timeoutMs) : connect(o.url as string);
    return new ServerBackend(connection, {
      commandTimeoutMs: timeoutMs,
      fair: o.fair === true,
      waiterTtlMs: o.waiterTtlMs ?? 5_000,
    });
  }
  const connections =
    o.clients !== undefined
      ? o.clients.map((client) => Connection.given(client, timeoutMs))
      : (o.urls ?? []).map(connect);
  return new RedlockBackend(connections, {
    commandTimeoutMs: timeoutMs,
    instanceTimeoutMs: o.instanceTimeoutMs,
  });
}
