/**
 * `@locks/thread`: locks between the async tasks of one thread (on a FIFO
 * in-memory table) and between the worker_threads of one process (on a
 * `SharedArrayBuffer`).
 *
 * @packageDocumentation
 */
export { type ThreadBackendOptions, threadBackend } from "./factory.js";
export {
  createSharedLockTable,
  type SharedLockTable,
  type SharedLockTableOptions,
} from "./table.js";
export { releaseOnExit } from "./worker-exit.js";
