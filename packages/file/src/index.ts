/**
 * `@locks/file`: locks between the processes of one machine, as lock
 * directories under one directory, on proper-lockfile.
 *
 * @packageDocumentation
 */
import type { Backend } from "@locks/core";
import { FileBackend } from "./backend.js";
import { type FileBackendOptions, resolveFileOptions } from "./options.js";

export type { FileBackendOptions } from "./options.js";

/**
 * A lock backend on the file system, for processes of one machine
 * (`scope: "host"`): one lock directory per key under `directory`, kept fresh
 * by proper-lockfile, fencing tokens that survive restarts, waiters woken by
 * a watch on the directory, shared mode and semaphores. Holder labels are
 * stored in the lock's records, where `inspect` from any process reads them;
 * `forceRelease` evicts every holder, whose lease is lost within a second.
 *
 * Options are checked before any I/O: a bad one throws INVALID_ARGUMENT. The
 * directory is created on first use; when it cannot be created or written,
 * calls reject with BACKEND_UNAVAILABLE.
 *
 * @example
 * ```ts
 * import { createLocks } from "@locks/core";
 * import { fileBackend } from "@locks/file";
 *
 * const locks = createLocks(fileBackend({ directory: "/run/lock/myapp" }), { ttlMs: 10_000 });
 * await locks.withLock("nightly-report", async (lease) => {
 *   // one process of this machine at a time
 * });
 * await locks.close();
 * ```
 *
 * @group Factory
 */
export function fileBackend(options: FileBackendOptions): Backend {
  return new FileBackend(resolveFileOptions(options));
}
