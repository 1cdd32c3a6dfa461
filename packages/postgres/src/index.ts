/**
 * `@locks/postgres`: PostgreSQL session-level advisory locks for `@locks/core`.
 *
 * ```ts
 * import { createLocks } from "@locks/core";
 * import { postgresBackend } from "@locks/postgres";
 *
 * const locks = createLocks(postgresBackend({ connectionString: process.env.DATABASE_URL }));
 * ```
 *
 * @packageDocumentation
 */
import type { Backend } from "@locks/core/backend";
import { PostgresBackend } from "./backend.js";
import { type PostgresBackendOptions, resolveOptions } from "./options.js";

export type { PostgresBackendOptions } from "./options.js";

/**
 * A lock backend on PostgreSQL advisory locks. Give it a `connectionString`
 * (or `clientConfig`): it opens its own connections and closes them in
 * `close()`; or a connected `client`, which it never closes.
 *
 * Bad options throw `INVALID_ARGUMENT` here, before any I/O; the first
 * connection is opened by the first call.
 *
 * @group Factory
 */
export function postgresBackend(options: PostgresBackendOptions): Backend {
  return new PostgresBackend(resolveOptions(options));
}
