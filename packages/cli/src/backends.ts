import { lstatSync, mkdirSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { isAbsolute, join } from "node:path";
import type { Backend } from "@locks/core";
import type { BackendSpec } from "./backend-url.js";
import { UsageError } from "./usage-error.js";

/**
 * The per-user directory of the default file backend:
 * `$XDG_RUNTIME_DIR/locks`, or else `<os tmpdir>/locks-<uid>`.
 *
 * @group Backend URLs
 */
export function defaultLockDirectory(env: NodeJS.ProcessEnv = process.env): string {
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime !== undefined && isAbsolute(runtime)) return join(runtime, "locks");
  const uid = process.getuid?.() ?? userInfo().username;
  return join(tmpdir(), `locks-${uid}`);
}

/**
 * Makes the backend a spec names. Each backend package is imported only when
 * its scheme is used, so `locks run` on files never loads a Redis, etcd,
 * PostgreSQL or MySQL client.
 */
export async function openBackend(spec: BackendSpec): Promise<Backend> {
  switch (spec.kind) {
    case "file": {
      if (spec.isDefault) preparePrivateDirectory(spec.directory);
      const { fileBackend } = await import("@locks/file");
      return fileBackend({ directory: spec.directory });
    }
    case "redis": {
      const { redisBackend } = await import("@locks/redis");
      const [url] = spec.urls;
      return spec.urls.length === 1 && url !== undefined
        ? redisBackend({ url })
        : redisBackend({ urls: spec.urls });
    }
    case "etcd": {
      const { etcdBackend } = await import("@locks/etcd");
      return etcdBackend(
        spec.auth === undefined ? { hosts: spec.hosts } : { hosts: spec.hosts, auth: spec.auth },
      );
    }
    case "postgres": {
      const { postgresBackend } = await import("@locks/postgres");
      return postgresBackend({ connectionString: spec.connectionString });
    }
    case "mysql": {
      const { mysqlBackend } = await import("@locks/mysql");
      return mysqlBackend({ uri: spec.uri });
    }
  }
}

/** A short description for messages: "file backend in /run/user/1000/locks", "redis backend". */
export function describeBackend(spec: BackendSpec): string {
  switch (spec.kind) {
    case "file":
      return `file backend in ${spec.directory}`;
    case "redis":
      return spec.urls.length === 1
        ? "redis backend"
        : `redis backend (Redlock over ${spec.urls.length} servers)`;
    case "etcd":
      return "etcd backend";
    case "postgres":
      return "postgres backend";
    case "mysql":
      return "mysql backend";
  }
}

/** Where a key lives, for messages: `namespace "default", redis backend`. */
export function describeLocation(spec: BackendSpec, namespace: string): string {
  return `namespace ${JSON.stringify(namespace)}, ${describeBackend(spec)}`;
}

/**
 * Creates the default directory readable by this user only, and refuses one
 * that another user made (in a shared tmpdir, someone could pre-create it to
 * read or break our locks).
 */
function preparePrivateDirectory(directory: string): void {
  try {
    mkdirSync(directory, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new UsageError(
      `cannot create the lock directory ${directory}: ${(error as Error).message}; pass --backend file:///some/directory`,
    );
  }
  const stat = lstatSync(directory);
  const uid = process.getuid?.();
  if (!stat.isDirectory() || (uid !== undefined && stat.uid !== uid)) {
    throw new UsageError(
      `the lock directory ${directory} is not a directory owned by you; pass --backend file:///some/directory`,
    );
  }
}
