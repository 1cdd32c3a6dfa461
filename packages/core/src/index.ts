/**
 * `@locks/core`: one lock API over many backends.
 *
 * @packageDocumentation
 */
export { onAbort } from "./abort.js";
export type {
  Attempt,
  Backend,
  Capabilities,
  KeyStatus,
  LockMode,
  LockRequest,
  LossReport,
  Unsubscribe,
  WaitOptions,
} from "./backend.js";
export { driftAllowance, monotonicNow } from "./clock.js";
export {
  backendUnavailable,
  invalidArgument,
  isLockError,
  LockError,
  type LockErrorCode,
  LockLostError,
  LockTimeoutError,
  limitMismatch,
  lockClosed,
  socketErrorWords,
} from "./errors.js";
export { type AcquireEvent, type LeaseEvent, LOCK_CHANNELS } from "./events.js";
export {
  assertHistory,
  type CheckOptions,
  checkHistory,
  History,
  type HistoryViolation,
  type HoldRecord,
  historyNow,
  holdEnd,
} from "./history.js";
export { keyDigest, MAX_KEY_BYTES, scopedKey, validateKey } from "./keys.js";
export type { Lease } from "./lease.js";
export { createLocks, type Locks, type LocksOptions } from "./locks.js";
export type { AcquireAllOptions, MultiLease } from "./multi.js";
export { type AcquireOptions, MIN_TTL_MS, type TryAcquireOptions } from "./options.js";
export { newOwnerToken } from "./owner.js";
export { settledWithin } from "./settle.js";
