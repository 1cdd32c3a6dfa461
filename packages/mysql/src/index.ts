/**
 * `@locks/mysql`: MySQL and MariaDB named locks (`GET_LOCK`) for `@locks/core`.
 *
 * ```ts
 * import { createLocks } from "@locks/core";
 * import { mysqlBackend } from "@locks/mysql";
 *
 * const locks = createLocks(mysqlBackend({ uri: process.env.MYSQL_URL }));
 * ```
 *
 * @packageDocumentation
 */
import type { Backend } from "@locks/core/backend";
import { MysqlBackend } from "./backend.js";
import { type MysqlBackendOptions, resolveOptions } from "./options.js";

export type { MysqlBackendOptions } from "./options.js";

/**
 * A lock backend on MySQL or MariaDB named locks. Give it a `uri`: it opens
 * its own session connection and closes it in `close()`; or a `pool`, from
 * which it keeps one connection; or a `connection`, which it never closes.
 *
 * Bad options throw `INVALID_ARGUMENT` here, before any I/O.
 *
 * @group Factory
 */
export function mysqlBackend(options: MysqlBackendOptions): Backend {
  return new MysqlBackend(resolveOptions(options));
}
