import {
  type Backend,
  type Capabilities,
  check,
  defineOptions,
  invalidArgument,
} from "@locks/core/backend";
import { IsolateBackend } from "./isolate.js";
import { isSharedLockTable, type SharedLockTable } from "./table.js";
import { TableBackend } from "./table-backend.js";

/** Options of `threadBackend`. */
export interface ThreadBackendOptions {
  /**
   * Let the store itself free a lock whose holder stopped extending it, after
   * the lease's `ttlMs` (default false). Off, a lease lasts until released,
   * no timer runs per lease, and `lease.expiresAt` is undefined. On, each
   * lease gets a watchdog (extension at a third of its TTL), as with the
   * server backends. Not available with `table`.
   */
  ttl?: boolean;
  /**
   * Lock across worker_threads through this shared table (from
   * `createSharedLockTable()`, passed to each worker in `workerData` or a
   * message). Without it, locks are shared by the async tasks of this thread
   * only.
   */
  table?: SharedLockTable;
}

const parseOptions = defineOptions({
  ttl: check.boolean,
  table: check.instance<SharedLockTable>(
    "a table made by createSharedLockTable()",
    isSharedLockTable,
  ),
});

/**
 * A lock backend for the async tasks of one thread (default), or for the
 * worker_threads of one process when given a shared `table`.
 *
 * ```ts
 * const locks = createLocks(threadBackend());
 * ```
 *
 * @group Factory
 */
export function threadBackend(options: ThreadBackendOptions = {}): Backend {
  const { ttl = false, table } = parseOptions(options);
  if (table === undefined) return new IsolateBackend(capabilities(ttl, true));
  if (ttl) {
    throw invalidArgument(
      "options.ttl",
      "is not supported with a shared table: threads share no clock-safe way to expire each other's holds",
    );
  }
  // Woken waiters race for a key of the table: its grants are not in arrival order.
  return new TableBackend(table, capabilities(false, false));
}

function capabilities(ttl: boolean, fair: boolean): Capabilities {
  return Object.freeze({
    scope: "process",
    ttl,
    fencing: true,
    shared: true,
    semaphore: true,
    fair,
    notify: true,
  });
}
