/**
 * `@locks/core`: one lock API over many backends. Backend authors import
 * from `@locks/core/backend`; tests from `@locks/core/history` and
 * `@locks/core/conformance`. The sections below come in the order a program
 * meets them; the guide's pages say why each works the way it does.
 *
 * @groupDescription Client
 * `createLocks` makes a client over one backend; its `acquire`,
 * `tryAcquire`, `withLock` and `close` are what most programs call.
 *
 * @groupDescription Leases
 * What `acquire` returns: the fencing token to pass to the resource, the
 * signal that aborts when the lock may be lost, extend and release.
 *
 * @groupDescription Errors
 * Every error is a `LockError`; check its `code`, not `instanceof`.
 *
 * @groupDescription Options
 * The options of `createLocks`, `acquire`, `tryAcquire` and `withLock`.
 *
 * @groupDescription Several keys
 * `acquireAll`: several keys, all or none, in one canonical order.
 *
 * @groupDescription Who holds it
 * What `inspect` reports; it takes no lock.
 *
 * @groupDescription Leader election
 * `election` and `lead`, built on a lease of one key: the term is the lease.
 *
 * @groupDescription Web Locks API
 * `navigator.locks`' API over any backend.
 *
 * @groupDescription Observability
 * The `node:diagnostics_channel` channels the core publishes on.
 *
 * @groupDescription Backend contract
 * For backend authors (also exported by `@locks/core/backend`, with the toolkit).
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
