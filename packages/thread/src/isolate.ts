import {
  type Attempt,
  type Backend,
  type Capabilities,
  driftAllowance,
  type KeyStatus,
  type LockRequest,
  type LossReport,
  limitMismatch,
  lockClosed,
  monotonicNow,
  onAbort,
  scopedKey,
  type Unsubscribe,
  type WaitOptions,
} from "@locks/core";
import {
  createState,
  dispatch,
  drop,
  enqueue,
  forgetIfIdle,
  grantableNow,
  type Hold,
  type HoldOwner,
  type KeyState,
  otherLimit,
  reapExpired,
  stateFor,
  take,
  unlink,
  type Waiter,
} from "./key-state.js";
import { registry } from "./registry.js";

type Grant = Attempt & { granted: true };

const NOT_GRANTED: Attempt = Object.freeze({ granted: false });
const DONE: Promise<void> = Promise.resolve();
const TRUE: Promise<boolean> = Promise.resolve(true);
const FALSE: Promise<boolean> = Promise.resolve(false);

/**
 * Locks between the async tasks of one isolate (one thread). Every instance
 * of the isolate shares one table (see registry.ts); an instance only tracks
 * which holds and waiters are its own, for owner checks and `close()`.
 */
export class IsolateBackend implements Backend, HoldOwner {
  readonly name = "thread";
  readonly capabilities: Capabilities;
  readonly #ttl: boolean;
  /** This instance's live holds, by owner token. */
  readonly #holds = new Map<string, Hold>();
  /** This instance's queued acquires. */
  readonly #waiters = new Set<QueuedAcquire>();
  /** Their abort signals: one listener per signal (the core may share one across waits). */
  readonly #lossListeners = new Set<(report: LossReport) => void>();
  #closed = false;

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

  tryAcquire(req: LockRequest): Promise<Attempt> {
    if (this.#closed) return Promise.reject(lockClosed("thread backend"));
    const id = scopedKey(req.namespace, req.key);
    const shared = req.mode === "shared";
    let state = registry.states.get(id);
    if (state === undefined) state = createState(id);
    else {
      const current = otherLimit(state, req.limit);
      if (current !== undefined) return Promise.reject(limitMismatch(req.limit, current));
      if (!grantableNow(state, shared, req.limit)) return Promise.resolve(NOT_GRANTED);
    }
    return Promise.resolve(this.#take(state, req, shared));
  }

  acquire(req: LockRequest, wait: WaitOptions): Promise<Grant> {
    if (this.#closed) return Promise.reject(lockClosed("thread backend"));
    const { signal } = wait;
    if (signal.aborted) return Promise.reject(signal.reason);
    const shared = req.mode === "shared";
    const state = stateFor(scopedKey(req.namespace, req.key));
    const current = otherLimit(state, req.limit);
    if (current !== undefined) return Promise.reject(limitMismatch(req.limit, current));
    if (grantableNow(state, shared, req.limit))
      return Promise.resolve(this.#take(state, req, shared));
    return new Promise<Grant>((resolve, reject) => {
      const waiter = new QueuedAcquire(this, state, req, shared, signal, resolve, reject);
      this.#waiters.add(waiter);
      enqueue(state, waiter);
      waiter.stopListening = onAbort(signal, (reason) => waiter.leave(reason));
    });
  }

  extend(req: LockRequest, ttlMs: number): Promise<boolean> {
    const hold = this.#holds.get(req.owner);
    if (hold === undefined || !hold.live) return FALSE;
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

  release(req: LockRequest): Promise<void> {
    const hold = this.#holds.get(req.owner);
    if (hold === undefined) return DONE;
    this.#holds.delete(req.owner);
    const state = hold.state;
    drop(hold);
    if (state.head === undefined && state.expiring === 0) forgetIfIdle(state);
    else dispatch(state);
    return DONE;
  }

  // onLoss and close are arrow properties: wrappers (instrumentation, the
  // suite's call counter) may call them with a Proxy as `this`, on which
  // #private fields throw.
  readonly onLoss = (listener: (report: LossReport) => void): Unsubscribe => {
    this.#lossListeners.add(listener);
    return () => {
      this.#lossListeners.delete(listener);
    };
  };

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

  readonly close = (): Promise<void> => {
    if (this.#closed) return DONE;
    this.#closed = true;
    const closed = lockClosed("thread backend");
    // One by one: a waiter leaving may let a later one of this instance in (its hold is freed below).
    for (const waiter of [...this.#waiters]) if (this.#waiters.has(waiter)) waiter.leave(closed);
    for (const hold of [...this.#holds.values()]) {
      drop(hold);
      dispatch(hold.state);
    }
    this.#holds.clear();
    this.#lossListeners.clear();
    return DONE;
  };

  /** @internal HoldOwner: the store freed one of this instance's holds after its TTL. */
  expired(hold: Hold): void {
    if (this.#holds.get(hold.owner) !== hold) return;
    this.#holds.delete(hold.owner);
    if (this.#lossListeners.size === 0) return;
    const report: LossReport = {
      owner: hold.owner,
      reason: "its TTL passed without an extension and the lock was freed",
    };
    // Listeners run user code (lease signal handlers): never in the middle of a queue update.
    queueMicrotask(() => {
      for (const listener of this.#lossListeners) listener(report);
    });
  }

  /** @internal A queued acquire of this instance reached the head of its queue and fits. */
  admitted(waiter: QueuedAcquire, state: KeyState): Grant {
    this.#waiters.delete(waiter);
    waiter.stopListening();
    return this.#take(state, waiter.request, waiter.shared);
  }

  /** @internal A queued acquire of this instance gave up (abort or close). */
  left(waiter: QueuedAcquire): void {
    this.#waiters.delete(waiter);
    waiter.stopListening();
  }

  #take(state: KeyState, req: LockRequest, shared: boolean): Grant {
    if (!this.#ttl) {
      const hold = take(state, req.owner, shared, req.limit, Number.POSITIVE_INFINITY, this);
      this.#holds.set(req.owner, hold);
      return { granted: true, fencingToken: hold.fencingToken };
    }
    // The store's TTL starts now, at the grant, which may be long after the
    // acquire began (a queued waiter): `validUntil` says so.
    const deadline = monotonicNow() + req.ttlMs;
    const hold = take(state, req.owner, shared, req.limit, deadline, this);
    this.#holds.set(req.owner, hold);
    return {
      granted: true,
      fencingToken: hold.fencingToken,
      validUntil: deadline - driftAllowance(req.ttlMs),
    };
  }
}

/**
 * A blocking acquire waiting in a key's queue. A class rather than closures:
 * this is the contended path, where allocations show.
 */
class QueuedAcquire implements Waiter {
  prev: Waiter | undefined;
  stopListening: () => void = noop;
  next: Waiter | undefined;
  readonly limit: number;

  constructor(
    readonly backend: IsolateBackend,
    readonly state: KeyState,
    readonly request: LockRequest,
    readonly shared: boolean,
    readonly signal: AbortSignal,
    readonly resolve: (grant: Grant) => void,
    readonly reject: (reason: unknown) => void,
  ) {
    this.limit = request.limit;
  }

  grant(state: KeyState): void {
    this.resolve(this.backend.admitted(this, state));
  }

  refuse(reason: Error): void {
    this.backend.left(this);
    this.reject(reason);
  }

  /** Leaves the queue and rejects with `reason` (abort or close). */
  leave(reason: unknown): void {
    this.backend.left(this);
    unlink(this.state, this);
    this.reject(reason);
    // This waiter may have been the head that held others back (a writer before readers).
    dispatch(this.state);
  }
}

function noop(): void {}
