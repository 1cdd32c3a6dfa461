import {
  type Attempt,
  type Backend,
  type Capabilities,
  driftAllowance,
  type Grant,
  type KeyStatus,
  type LockRequest,
  limitMismatch,
  monotonicNow,
  onAbort,
  scopedKey,
  type WaitOptions,
} from "@locks/core/backend";
import {
  createState,
  dispatch,
  drop,
  enqueue,
  forgetIfIdle,
  grantableNow,
  type Hold,
  type KeyState,
  otherLimit,
  reapExpired,
  stateFor,
  take,
  unlink,
  type Waiter,
} from "./key-state.js";
import { registry } from "./registry.js";

const NOT_GRANTED: Attempt<Hold> = Object.freeze({ granted: false });
const DONE: Promise<void> = Promise.resolve();
const TRUE: Promise<boolean> = Promise.resolve(true);
const FALSE: Promise<boolean> = Promise.resolve(false);

/**
 * Locks between the async tasks of one isolate (one thread). Every instance
 * of the isolate shares one table (see registry.ts); each grant's `hold` is
 * the table's own record of it, so an instance keeps nothing of its own.
 */
export class IsolateBackend implements Backend<Hold> {
  readonly name = "thread";
  readonly capabilities: Capabilities;
  readonly #ttl: boolean;

  constructor(ttl: boolean) {
    this.#ttl = ttl;
    this.capabilities = Object.freeze({
      scope: "process",
      ttl,
      fencing: true,
      shared: true,
      semaphore: true,
      fair: true,
      notify: true,
    });
  }

  tryAcquire(req: LockRequest): Promise<Attempt<Hold>> {
    const shared = req.mode === "shared";
    let state = registry.states.get(req.scoped);
    if (state === undefined) state = createState(req.scoped);
    else {
      const current = otherLimit(state, req.limit);
      if (current !== undefined) return Promise.reject(limitMismatch(req.limit, current));
      if (!grantableNow(state, shared, req.limit)) return Promise.resolve(NOT_GRANTED);
    }
    return Promise.resolve(grant(state, req, shared, this.#ttl));
  }

  /** The key's FIFO queue: the store's own, so waiters are granted in arrival order. */
  acquire(req: LockRequest, wait: WaitOptions): Promise<Grant<Hold>> {
    const { signal } = wait;
    if (signal.aborted) return Promise.reject(signal.reason);
    const shared = req.mode === "shared";
    const state = stateFor(req.scoped);
    const current = otherLimit(state, req.limit);
    if (current !== undefined) return Promise.reject(limitMismatch(req.limit, current));
    if (grantableNow(state, shared, req.limit)) {
      return Promise.resolve(grant(state, req, shared, this.#ttl));
    }
    return new Promise<Grant<Hold>>((resolve, reject) => {
      const waiter = new QueuedAcquire(state, req, shared, this.#ttl, resolve, reject);
      enqueue(state, waiter);
      waiter.stopListening = onAbort(signal, (reason) => waiter.leave(reason));
    });
  }

  extend(_req: LockRequest, hold: Hold, ttlMs: number): Promise<boolean> {
    if (!hold.live) return FALSE;
    if (!this.#ttl) return TRUE;
    const now = monotonicNow();
    if (hold.deadline <= now) {
      // Expired but not yet noticed: the store had already freed it.
      reapExpired(hold.state, now);
      dispatch(hold.state);
      return FALSE;
    }
    hold.deadline = now + ttlMs;
    return TRUE;
  }

  release(req: LockRequest, hold: Hold | undefined): Promise<void> {
    const target = hold ?? registry.states.get(req.scoped)?.holds.find((h) => h.owner === req.owner);
    if (target === undefined || !target.live) return DONE;
    const state = target.state;
    drop(target);
    if (state.head === undefined && state.expiring === 0) forgetIfIdle(state);
    else dispatch(state);
    return DONE;
  }

  inspect(namespace: string, key: string): Promise<KeyStatus> {
    const state = registry.states.get(scopedKey(namespace, key));
    if (state === undefined) return Promise.resolve({ held: false, holders: [] });
    const now = monotonicNow();
    if (state.expiring > 0 && reapExpired(state, now)) dispatch(state);
    const holders = state.holds.map((hold) => ({
      owner: hold.owner,
      mode: hold.shared ? ("shared" as const) : ("exclusive" as const),
      fencingToken: hold.fencingToken,
      ...(hold.deadline === Number.POSITIVE_INFINITY
        ? {}
        : { expiresInMs: Math.max(0, hold.deadline - now) }),
    }));
    if (holders.length === 0) return Promise.resolve({ held: false, holders });
    return Promise.resolve({ held: true, limit: state.limit, holders });
  }

  /** Nothing to close: the table is the isolate's, and the core released every hold and ended every wait. */
  close(): Promise<void> {
    return DONE;
  }
}

/** Takes the key for `req` (which fits) and says so to the core. */
function grant(state: KeyState, req: LockRequest, shared: boolean, ttl: boolean): Grant<Hold> {
  if (!ttl) {
    const hold = take(state, req.owner, shared, req.limit, Number.POSITIVE_INFINITY);
    return { granted: true, fencingToken: hold.fencingToken, hold };
  }
  // The store's TTL starts now, at the grant, which may be long after the
  // acquire began (a queued waiter): `validUntil` says so.
  const deadline = monotonicNow() + req.ttlMs;
  const hold = take(state, req.owner, shared, req.limit, deadline);
  return {
    granted: true,
    fencingToken: hold.fencingToken,
    validUntil: deadline - driftAllowance(req.ttlMs),
    hold,
  };
}

/**
 * A blocking acquire waiting in a key's queue. A class rather than closures:
 * this is the contended path, where allocations show.
 */
class QueuedAcquire implements Waiter {
  prev: Waiter | undefined;
  next: Waiter | undefined;
  stopListening: () => void = noop;
  readonly limit: number;

  constructor(
    readonly state: KeyState,
    readonly request: LockRequest,
    readonly shared: boolean,
    readonly ttl: boolean,
    readonly resolve: (grant: Grant<Hold>) => void,
    readonly reject: (reason: unknown) => void,
  ) {
    this.limit = request.limit;
  }

  grant(state: KeyState): void {
    this.stopListening();
    this.resolve(grant(state, this.request, this.shared, this.ttl));
  }

  refuse(reason: Error): void {
    this.stopListening();
    this.reject(reason);
  }

  /** Leaves the queue and rejects with `reason` (the wait's signal aborted). */
  leave(reason: unknown): void {
    this.stopListening();
    unlink(this.state, this);
    this.reject(reason);
    // This waiter may have been the head that held others back (a writer before readers).
    dispatch(this.state);
  }
}

function noop(): void {}
