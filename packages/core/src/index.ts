/**
 * `@locks/core`: one lock API over many backends. Backend authors import
 * from `@locks/core/backend`; tests from `@locks/core/history` and
 * `@locks/core/conformance`.
 *
 * @packageDocumentation
 */
export type { Backend, Capabilities, HolderStatus, KeyStatus, LockMode } from "./backend.js";
export type {
  CampaignOptions,
  Election,
  ElectionOptions,
  Leader,
  LeadOptions,
  ObserveOptions,
} from "./election.js";
export {
  isLockError,
  LockError,
  type LockErrorCode,
  LockLostError,
  LockTimeoutError,
} from "./errors.js";
export { type AcquireEvent, type LeaseEvent, LOCK_CHANNELS } from "./events.js";
export type { Lease } from "./lease.js";
export { createLocks, type Locks, type LocksOptions } from "./locks.js";
export type { AcquireAllOptions, MultiLease } from "./multi.js";
export { type AcquireOptions, MIN_TTL_MS, type TryAcquireOptions } from "./options.js";
export type { LockHolder, LockState } from "./state.js";
export {
  createLockManager,
  type LockGrantedCallback,
  type LockInfo,
  type LockManager,
  type LockManagerRequestOptions,
  type LockManagerSnapshot,
  type WebLock,
} from "./web-locks.js";
