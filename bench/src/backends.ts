import type { Backend } from "@locks/core";

/** The backends the waiting suite measures, by name; only the one asked for is loaded. */
export const SERVER_BACKENDS = ["redis", "redis fair", "etcd", "postgres", "mysql"] as const;
export type ServerBackend = (typeof SERVER_BACKENDS)[number];

/**
 * A new backend instance (its own connections) of `name` on the server (or in
 * the directory, for "file") at `target`. Only the backend asked for is
 * loaded: a child starts as fast as a service using one backend.
 */
export async function backendFor(name: string, target: string): Promise<Backend> {
  switch (name) {
    case "thread":
      return (await import("@locks/thread")).threadBackend();
    case "file":
      return (await import("@locks/file")).fileBackend({ directory: target });
    case "redis":
      return (await import("@locks/redis")).redisBackend({ url: target });
    case "redis fair":
      return (await import("@locks/redis")).redisBackend({ url: target, fair: true });
    case "etcd":
      return (await import("@locks/etcd")).etcdBackend({ hosts: target.split(",") });
    case "postgres":
      return (await import("@locks/postgres")).postgresBackend({ connectionString: target });
    case "mysql":
      return (await import("@locks/mysql")).mysqlBackend({ uri: target });
    default:
      throw new Error(`unknown backend ${name}`);
  }
}

/** Epoch ms with sub-ms precision, comparable between processes of one machine. */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}
