import {
  type Attempt,
  type Backend,
  type BackendHost,
  type Capabilities,
  driftAllowance,
  type Grant,
  type HolderStatus,
  type KeyRef,
  type KeyStatus,
  type LockRequest,
  limitMismatch,
  monotonicNow,
  onAbort,
  type WaitOptions,
} from "@locks/core/backend";
import { registry } from "./registry.js";

/*
 * The in-isolate lock table: per key, who holds it and who waits, in arrival
 * order. The grant rule is async-mutex's weighted semaphore rule (the head
 * of the queue is served while it fits; nobody passes a head that does not
 * fit), written out here because async-mutex 0.5 cannot take a single
 * waiter out of its queue (see README, "How it works").
 */

/** One settled promise for every refusal: a refused attempt allocates nothing. */
const REFUSED: Promise<Attempt<Hold>> = Promise.resolve(Object.freeze({ granted: false }));
const DONE: Promise<void> = Promise.resolve();

/**
 * One live grant, and the backend's `hold` for it: the core passes it back to
 * extend and release, so no instance needs to know who holds what. It is
 * also the `Grant` the attempt resolves with (one object per grant, not two).
 */
export class Hold implements Grant<Hold> {
  readonly granted = true;
  readonly hold: Hold = this;
  /** With TTL: the store's deadline less the drift allowance (see `grant`). */
  validUntil: number | undefined = undefined;
  /** Position in `state.holds`, for O(1) removal. */
  index = -1;
  /** False once released, expired or force-released: nothing may act on it any more. */
  live = true;
  readonly shared: boolean;

  constructor(
    readonly state: KeyState,
    readonly request: LockRequest,
    readonly fencingToken: bigint,
    /** Monotonic instant the store frees it; Infinity without TTL. */
    public deadline: number,
    /**
     * The host of the backend instance that granted it: instances share one
     * registry, and a force-release tells each evicted hold's own client.
     */
    readonly host: BackendHost<Hold> | undefined,
  ) {
    this.shared = request.mode === "shared";
  }
}

/** Holders and waiters of one key. Deleted from the registry as soon as it has neither. */
export class KeyState {
  /** Exclusive holders (more than one only for a semaphore). */
  exclusive = 0;
  /** Shared holders (readers). */
  shared = 0;
  /** Holds with a finite deadline (TTL). */
  expiring = 0;
  /** The limit the current holders took the key with (1 for readers); set by the first of them. */
  limit = 1;
  readonly holds: Hold[] = [];
  head: QueuedAcquire | undefined;
  tail: QueuedAcquire | undefined;
  /** Wakes the queue when the earliest holder's TTL passes (only while someone waits). */
  timer: NodeJS.Timeout | undefined;
  /**
   * The signal the queue listens to once for all its waiters that share it
   * (the core gives every wait of a client without timeout or signal the
   * client's close signal), instead of one listener per waiter.
   */
  signal: AbortSignal | undefined;
  /** Waiters that wait on `signal`, through the queue's one listener. */
  signalWaiters = 0;
  stopSignal: () => void = noop;

  constructor(readonly id: string) {}

  /** Whether a new holder of this mode and limit fits beside the current holders. */
  fits(shared: boolean, limit: number): boolean {
    return shared ? this.exclusive === 0 : this.shared === 0 && this.exclusive < limit;
  }
}

/**
 * Locks between the async tasks of one isolate (one thread). Every instance
 * of the isolate shares one table (see registry.ts); each grant's `hold` is
 * the table's own record of it, so an instance keeps nothing of its own.
 */
export class IsolateBackend implements Backend<Hold> {
  readonly name = "thread";
  readonly capabilities: Capabilities;
  readonly #ttl: boolean;
  #host: BackendHost<Hold> | undefined;

  constructor(capabilities: Capabilities) {
    this.capabilities = capabilities;
    this.#ttl = capabilities.ttl;
  }

  bind(host: BackendHost<Hold>): void {
    this.#host = host;
  }

  tryAcquire(req: LockRequest): Promise<Attempt<Hold>> {
    return this.#attempt(stateFor(req.scoped), req) ?? REFUSED;
  }

  /** The key's FIFO queue: the store's own, so waiters are granted in arrival order. */
  acquire(req: LockRequest, wait: WaitOptions): Promise<Grant<Hold>> {
    const { signal } = wait;
    if (signal.aborted) return Promise.reject(signal.reason);
    const state = stateFor(req.scoped);
    const decided = this.#attempt(state, req);
    if (decided !== undefined) return decided;
    return new Promise<Grant<Hold>>((resolve, reject) => {
      const waiter = new QueuedAcquire(state, req, this.#ttl, this.#host, resolve, reject);
      enqueue(state, waiter);
      listen(state, waiter, signal);
    });
  }

  extend(_req: LockRequest, hold: Hold, ttlMs: number): Promise<boolean> {
    if (this.#ttl && hold.live) {
      const now = monotonicNow();
      if (hold.deadline > now) hold.deadline = now + ttlMs;
      // Expired but not yet noticed: the store had already freed it (dispatch frees it now).
      else dispatch(hold.state);
    }
    return Promise.resolve(hold.live);
  }

  release(req: LockRequest, hold: Hold | undefined): Promise<void> {
    const target =
      hold ?? registry.states.get(req.scoped)?.holds.find((h) => h.request.owner === req.owner);
    if (target === undefined || !target.live) return DONE;
    drop(target);
    dispatch(target.state);
    return DONE;
  }

  /** Every live holder of the key, from the registry (expired holds are freed first). */
  inspect(key: KeyRef): Promise<KeyStatus> {
    const state = registry.states.get(key.scoped);
    if (state !== undefined && state.expiring > 0) dispatch(state);
    if (state === undefined || state.holds.length === 0) return Promise.resolve({ holders: [] });
    const now = monotonicNow();
    const holders = state.holds.map(
      (hold): HolderStatus => ({
        holder: hold.request.holder,
        owner: hold.request.owner,
        mode: hold.request.mode,
        fencingToken: hold.fencingToken,
        expiresInMs:
          hold.deadline === Number.POSITIVE_INFINITY ? undefined : Math.max(0, hold.deadline - now),
      }),
    );
    return Promise.resolve({ holders, limit: state.limit });
  }

  /**
   * Frees every hold of the key, tells each evicted hold's own client
   * (`host.lost`, so its lease's signal aborts now), then serves the queue.
   * Tokens come from one counter of the isolate, so every later grant's is
   * higher; an evicted hold is no longer live, so its extend resolves false
   * and its release does nothing.
   */
  forceRelease(key: KeyRef): Promise<boolean> {
    const state = registry.states.get(key.scoped);
    if (state === undefined) return Promise.resolve(false);
    const now = monotonicNow();
    const evicted = [...state.holds];
    // Expired holds are freed too, but they were no longer held.
    const held = evicted.some((hold) => hold.deadline > now);
    for (const hold of evicted) drop(hold);
    for (const hold of evicted) hold.host?.lost(hold, "the key was force-released");
    dispatch(state);
    return Promise.resolve(held);
  }

  /** A grant, or a refusal when the key is held with another limit; undefined when `req` must wait. */
  #attempt(state: KeyState, req: LockRequest): Promise<Grant<Hold>> | undefined {
    if (state.holds.length > 0 && state.limit !== req.limit) {
      return Promise.reject(limitMismatch(req.limit, state.limit));
    }
    // Nobody passes a waiter.
    if (state.head !== undefined || !state.fits(req.mode === "shared", req.limit)) return undefined;
    return Promise.resolve(grant(state, req, this.#ttl, this.#host));
  }

  /** Nothing to close: the table is the isolate's, and the core released every hold and ended every wait. */
  close(): Promise<void> {
    return DONE;
  }
}

/**
 * A blocking acquire waiting in a key's queue. A class rather than closures:
 * this is the contended path, where allocations show.
 */
class QueuedAcquire {
  prev: QueuedAcquire | undefined;
  next: QueuedAcquire | undefined;
  /** Its own abort listener; undefined while it waits through the queue's (`KeyState.signal`). */
  stopListening: (() => void) | undefined = undefined;

  constructor(
    readonly state: KeyState,
    readonly request: LockRequest,
    readonly ttl: boolean,
    readonly host: BackendHost<Hold> | undefined,
    readonly resolve: (grant: Grant<Hold>) => void,
    readonly reject: (reason: unknown) => void,
  ) {}

  /** Called once, synchronously, when the waiter reached the head and fits (already unlinked). */
  grant(): void {
    this.stopWaiting();
    this.resolve(grant(this.state, this.request, this.ttl, this.host));
  }

  /** Leaves the queue and rejects with `reason` (the wait's signal aborted). */
  leave(reason: unknown): void {
    this.stopWaiting();
    unlink(this.state, this);
    this.reject(reason);
    // This waiter may have been the head that held others back (a writer before readers).
    dispatch(this.state);
  }

  /** Stops listening for an abort: its own listener, or its share of the queue's. */
  stopWaiting(): void {
    if (this.stopListening !== undefined) this.stopListening();
    else if (--this.state.signalWaiters === 0) unlisten(this.state);
  }
}

function noop(): void {}

/**
 * Listens for the abort of `waiter`'s wait: through the queue's listener
 * when it waits on the queue's signal (or the queue has none yet), else
 * through one of its own.
 */
function listen(state: KeyState, waiter: QueuedAcquire, signal: AbortSignal): void {
  if (state.signal === undefined) {
    state.signal = signal;
    state.stopSignal = onAbort(signal, (reason) => abortWaiters(state, signal, reason));
  }
  if (signal === state.signal) state.signalWaiters++;
  else waiter.stopListening = onAbort(signal, (reason) => waiter.leave(reason));
}

function unlisten(state: KeyState): void {
  state.stopSignal();
  state.stopSignal = noop;
  state.signal = undefined;
  state.signalWaiters = 0;
}

/** The queue's signal aborted: every waiter waiting through it leaves, then the queue is served. */
function abortWaiters(state: KeyState, signal: AbortSignal, reason: unknown): void {
  if (state.signal !== signal) return;
  let left = state.signalWaiters;
  unlisten(state);
  // Until the last of them: a signal only one waiter had costs no walk past it.
  for (let waiter = state.head; waiter !== undefined && left > 0; ) {
    const next = waiter.next;
    if (waiter.stopListening === undefined) {
      unlink(state, waiter);
      waiter.reject(reason);
      left--;
    }
    waiter = next;
  }
  dispatch(state);
}

/**
 * The state of `id`, created when missing; holds whose TTL has passed are
 * freed first (and the queue served), so every check sees live holders only.
 */
function stateFor(id: string): KeyState {
  let state = registry.states.get(id);
  if (state === undefined) {
    state = new KeyState(id);
    registry.states.set(id, state);
  } else if (state.expiring > 0) {
    serve(state);
  }
  return state;
}

/** Takes the key for `req` (which fits), with the next fencing token of the isolate. */
function grant(
  state: KeyState,
  req: LockRequest,
  ttl: boolean,
  host: BackendHost<Hold> | undefined,
): Grant<Hold> {
  const shared = req.mode === "shared";
  // The first holder sets the limit the others must use (readers: 1).
  if (state.holds.length === 0) state.limit = req.limit;
  // The store's TTL starts now, at the grant, which may be long after the
  // acquire began (a queued waiter): `validUntil` says so.
  const deadline = ttl ? monotonicNow() + req.ttlMs : Number.POSITIVE_INFINITY;
  registry.fence += 1n;
  const hold = new Hold(state, req, registry.fence, deadline, host);
  if (shared) state.shared++;
  else state.exclusive++;
  hold.index = state.holds.push(hold) - 1;
  if (!ttl) return hold;
  state.expiring++;
  hold.validUntil = deadline - driftAllowance(req.ttlMs);
  return hold;
}

/** Ends a hold (release or expiry). The caller dispatches the queue afterwards. */
function drop(hold: Hold): void {
  hold.live = false;
  const state = hold.state;
  if (hold.shared) state.shared--;
  else state.exclusive--;
  if (hold.deadline !== Number.POSITIVE_INFINITY) state.expiring--;
  const last = state.holds.pop()!;
  if (last !== hold) {
    state.holds[hold.index] = last;
    last.index = hold.index;
  }
  hold.index = -1;
}

function enqueue(state: KeyState, waiter: QueuedAcquire): void {
  waiter.prev = state.tail;
  if (state.tail === undefined) state.head = waiter;
  else state.tail.next = waiter;
  state.tail = waiter;
  armExpiry(state);
}

function unlink(state: KeyState, waiter: QueuedAcquire): void {
  if (waiter.prev === undefined) state.head = waiter.next;
  else waiter.prev.next = waiter.next;
  if (waiter.next === undefined) state.tail = waiter.prev;
  else waiter.next.prev = waiter.prev;
  waiter.prev = undefined;
  waiter.next = undefined;
}

/**
 * Frees the holds whose TTL has passed (nobody is told: the core's own
 * deadline for a lease ends before the store's, so its watchdog declared the
 * lease lost already), serves the queue from its head while the head fits
 * (strict FIFO, so a waiting writer is never passed by later readers), and
 * re-arms the expiry timer.
 */
function serve(state: KeyState): void {
  if (state.expiring > 0) {
    const now = monotonicNow();
    for (let i = state.holds.length - 1; i >= 0; i--) {
      if (state.holds[i]!.deadline <= now) drop(state.holds[i]!);
    }
  }
  let waiter = state.head;
  while (
    waiter !== undefined &&
    state.fits(waiter.request.mode === "shared", waiter.request.limit)
  ) {
    unlink(state, waiter);
    waiter.grant();
    waiter = state.head;
  }
  armExpiry(state);
}

/** After anything changed on a key: serves it, and forgets it when nobody holds or waits for it. */
function dispatch(state: KeyState): void {
  serve(state);
  if (state.holds.length === 0 && state.head === undefined) {
    if (state.timer !== undefined) clearTimeout(state.timer);
    state.timer = undefined;
    if (registry.states.get(state.id) === state) registry.states.delete(state.id);
  }
}

/**
 * Keeps a timer at the earliest holder deadline while someone waits, so the
 * queue moves when a TTL passes even if nobody releases. The timer is ref'd:
 * a waiting acquire keeps the process alive, as a pending socket read would.
 */
function armExpiry(state: KeyState): void {
  if (state.timer !== undefined) clearTimeout(state.timer);
  state.timer = undefined;
  if (state.head === undefined || state.expiring === 0) return;
  let earliest = Number.POSITIVE_INFINITY;
  for (const hold of state.holds) if (hold.deadline < earliest) earliest = hold.deadline;
  // +1: timers may fire up to a millisecond early against performance.now().
  const delay = Math.max(0, Math.ceil(earliest - monotonicNow()) + 1);
  state.timer = setTimeout(() => {
    state.timer = undefined;
    dispatch(state);
  }, delay);
}
