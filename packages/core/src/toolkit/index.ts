/**
 * `@locks/core/backend`: the backend contract and a toolkit for backend
 * authors. A backend is its store's protocol; what several stores need
 * (option parsing, wake-ups, keep-alive, background retry, abortable sleeps,
 * error helpers) is here, once.
 *
 * @groupDescription Backend contract
 * What a backend implements is `Backend` (documented with `Capabilities` on
 * `@locks/core`, which exports both); here, what the core hands it and gets back.
 *
 * @groupDescription References
 * Exported here too, so a backend imports from one place; documented on `@locks/core`.
 *
 * @groupDescription Option parsing
 * A factory's options, refused with `INVALID_ARGUMENT` naming the option before any I/O.
 *
 * @groupDescription Keys
 * How a namespace and a key become one name in the store, owner tokens, and
 * requests built as the core builds them (for tests and tools).
 *
 * @groupDescription Waiting
 * Wake-ups, queues and abortable sleeps, so that a backend has no wait loop of its own.
 *
 * @groupDescription Keep-alive
 * A session proven alive by beats, retries in the background, and the monotonic clock.
 *
 * @groupDescription Error helpers
 * The `LockError`s a backend throws, with the codes and messages users see.
 *
 * @packageDocumentation
 */
export { onAbort } from "../abort.js";
export type {
  Attempt,
  Backend,
  BackendHost,
  Capabilities,
  Grant,
  HolderStatus,
  KeyEvent,
  KeyRef,
  KeyStatus,
  LockMode,
  LockRequest,
  Unsubscribe,
  WaitOptions,
} from "../backend.js";
export { driftAllowance, monotonicNow } from "../clock.js";
export {
  backendUnavailable,
  invalidArgument,
  isLockError,
  LockError,
  limitMismatch,
  lockClosed,
  socketErrorWords,
} from "../errors.js";
export { keyDigest, scopedKey, validateKey } from "../keys.js";
export { validateHolder } from "../options.js";
export { newOwnerToken } from "../owner.js";
export { createRequest, type RequestFields } from "../request.js";
export { settledWithin } from "../settle.js";
export { Liveness, type LivenessOptions } from "./liveness.js";
export { type Check, check, defineOptions, type OptionSchema, type OptionsOf } from "./options.js";
export { QueueLines } from "./queue-lines.js";
export { type RetryOptions, retryInBackground } from "./retry.js";
export { singleFlight } from "./single-flight.js";
export { raceAbort, sleep } from "./sleep.js";
export { type Wakeable, type WakeHooks, WakeRegistry } from "./wakes.js";
