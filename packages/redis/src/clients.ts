import { settledWithin } from "@locks/core/backend";
import { Cluster, type Redis, type RedisOptions } from "ioredis";

/**
 * How long a client of ours may take to close its socket. A server that
 * stopped answering (SIGSTOP, partition) never acknowledges the close:
 * ioredis destroys the socket after this long instead of its default 2 s,
 * so `close()` does not wait for a dead server.
 */
export const DISCONNECT_WAIT_MS = 100;

/**
 * The options RELIABILITY.md requires of a client that sends lock commands:
 * a lock command is never queued while disconnected nor replayed after a
 * reconnect (a late `SET NX` would grab a lock nobody waits for any more).
 * Commands fail fast instead, with BACKEND_UNAVAILABLE.
 */
export const SAFE_CLIENT_OPTIONS = {
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  lazyConnect: true,
  disconnectTimeout: DISCONNECT_WAIT_MS,
} as const satisfies RedisOptions;

/**
 * The required options `client` lacks, by name (empty when it is safe for
 * lock commands). For a Cluster the offline queue is the Cluster's own
 * option and the resend is each node connection's (`redisOptions`).
 */
export function unsafeOptions(client: Redis | Cluster): string[] {
  const missing: string[] = [];
  if (isCluster(client)) {
    const { options } = client as Cluster;
    if (options.enableOfflineQueue !== false) missing.push("enableOfflineQueue");
    if (options.redisOptions?.autoResendUnfulfilledCommands !== false) {
      missing.push("redisOptions.autoResendUnfulfilledCommands");
    }
    return missing;
  }
  const { options } = client as Redis;
  if (options.enableOfflineQueue !== false) missing.push("enableOfflineQueue");
  if (options.autoResendUnfulfilledCommands !== false)
    missing.push("autoResendUnfulfilledCommands");
  return missing;
}

/**
 * A new client like `client` (same servers, credentials, TLS, `keyPrefix`)
 * with the safe options: what the backend sends lock commands through when
 * the client it was given lacks them. The given client is never modified.
 */
export function safeDuplicate(client: Redis | Cluster): Redis | Cluster {
  if (isCluster(client)) {
    const cluster = client as Cluster;
    return cluster.duplicate([], {
      enableOfflineQueue: false,
      lazyConnect: true,
      redisOptions: {
        ...cluster.options.redisOptions,
        autoResendUnfulfilledCommands: false,
        maxRetriesPerRequest: 0,
        disconnectTimeout: DISCONNECT_WAIT_MS,
      },
    });
  }
  return (client as Redis).duplicate({ ...SAFE_CLIENT_OPTIONS });
}

export function isCluster(client: Redis | Cluster): boolean {
  return client instanceof Cluster || (client as { isCluster?: boolean }).isCluster === true;
}

/** `host:port` (or the socket path) of a client, for messages; a Cluster's startup nodes. */
export function serverName(client: Redis | Cluster): string {
  if (isCluster(client)) {
    const nodes = (client as unknown as { startupNodes?: unknown[] }).startupNodes ?? [];
    // Startup nodes are objects, or "host:port" strings and port numbers.
    const names = nodes.map((node) => {
      const { host = "localhost", port = 6379 } = node as { host?: string; port?: number };
      return typeof node === "object" ? `${host}:${port}` : String(node);
    });
    return `cluster ${names.join(",")}`;
  }
  const { path, host, port } = (client as Redis).options;
  return path ? path : `${host ?? "localhost"}:${port ?? 6379}`;
}

/**
 * Closes a client of ours and resolves once its sockets are closed, without
 * waiting for a server that stopped answering: no QUIT round trip (a FIN
 * says the same), and a socket the server does not close within
 * `DISCONNECT_WAIT_MS` is destroyed. Nothing of the client (socket, timer)
 * is left when it resolves.
 */
export async function shutDown(client: Redis | Cluster): Promise<void> {
  if (client.status === "end") return;
  const ended = new Promise<void>((resolve) => client.once("end", () => resolve()));
  client.disconnect();
  await settledWithin(ended, DISCONNECT_WAIT_MS);
  // `status` changed while we waited (TypeScript narrowed it before).
  if ((client.status as string) === "end") return;
  // A Redis client's one socket can be destroyed at once; a Cluster's node connections carry
  // DISCONNECT_WAIT_MS as their own disconnectTimeout, and ioredis destroys them.
  if (!isCluster(client)) (client as Redis).stream?.destroy();
  await settledWithin(ended, DISCONNECT_WAIT_MS * 2);
}
