/**
 * `@locks/core/backend`: the backend contract and a toolkit for backend
 * authors. A backend is its store's protocol; what several stores need
 * (option parsing, wake-ups, keep-alive, background retry, abortable sleeps,
 * error helpers) is here, once.
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
