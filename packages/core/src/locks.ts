import { setMaxListeners } from "node:events";
import { onAbort } from "./abort.js";
import { timeoutError, waitForGrant } from "./acquire.js";
import type { Attempt, Backend, Grant, LockRequest } from "./backend.js";
import { BackendCalls } from "./calls.js";
import { monotonicNow } from "./clock.js";
import {
  ELECTION_OPTIONS,
  type Election,
  type ElectionHost,
  type ElectionOptions,
  KeyElection,
  LEAD_OPTIONS,
  type LeadOptions,
  leadLoop,
  validateElectionOptions,
} from "./election.js";
import { invalidArgument, lockClosed } from "./errors.js";
import { observeAcquire, observingAcquires } from "./events.js";
import { acceptGrant } from "./grant.js";
import { attachClient, type LossTarget } from "./host.js";
import { KeyWaits } from "./key-wait.js";
import { MAX_NAMESPACE_BYTES, typeName, validateKey } from "./keys.js";
import { HeldLease, type Lease, type LeaseHost } from "./lease.js";
import {
  type AcquireAllOptions,
  acquireInOrder,
  type MultiLease,
  validateKeySet,
} from "./multi.js";
import {
  type AcquireOptions,
  MAX_TIMER_MS,
  type ResolvedOptions,
  resolveOptions,
  type TryAcquireOptions,
  ttlFloor,
  validateHolder,
  validateTtl,
} from "./options.js";
import { newOwnerToken } from "./owner.js";
import { Request } from "./request.js";
import { settledWithin } from "./settle.js";
import { type LockState, lockState } from "./state.js";

/**
 * Options of `createLocks`.
 *
 * @group Options
 */
export interface LocksOptions {
  /** Prefix of every key on the server, so apps sharing a server never collide. Default `"default"`. */
  namespace?: string;
  /** Default lease time in ms (default 30 000). */
  ttlMs?: number;
  /** Default of `autoExtend` for every acquire (default true). */
  autoExtend?: boolean;
}

/**
 * A lock client over one backend.
 *
 * @group Client
 * @sortStrategy source-order
 */
export interface Locks extends AsyncDisposable {
  /** The backend this client uses. */
  readonly backend: Backend;
  readonly namespace: string;
  /** Waits for `key` (up to `timeoutMs`) and returns the lease. */
  acquire(key: string, options?: AcquireOptions): Promise<Lease>;
  /** One attempt that never waits: the lease, or null when the key is taken. */
  tryAcquire(key: string, options?: TryAcquireOptions): Promise<Lease | null>;
  /** Runs `fn` while holding `key`, and releases after it settles. */
  withLock<T>(
    key: string,
    fn: (lease: Lease) => T | Promise<T>,
    options?: AcquireOptions,
  ): Promise<T>;
  /**
   * Takes several keys, all or none (Redisson's MultiLock): in one canonical
   * order, so callers whose sets overlap never deadlock, within one
   * `timeoutMs` for the whole set.
   */
  acquireAll(keys: readonly string[], options?: AcquireAllOptions): Promise<MultiLease>;
  /** Who holds `key` now: each holder's label, mode, fencing token and expiry, and the key's limit. Takes no lock. */
  inspect(key: string): Promise<LockState>;
  /**
   * Admin: frees `key` whoever holds it; resolves true when it was held. Later
   * grants get higher fencing tokens, so an evicted holder is fenced; its
   * `lease.signal` aborts where the backend can tell (at the latest when its
   * next extension is refused; see the backend's docs page).
   */
  forceRelease(key: string): Promise<boolean>;
  /** Leader election over `key`: `campaign`, `leader` and `observe`. */
  election(key: string, options?: ElectionOptions): Election;
  /**
   * Runs `fn(term)` whenever this client leads the election over `key`:
   * campaigns, runs `fn` (`term.signal` aborts when leadership is lost),
   * releases the term once `fn` settles, and campaigns again, until
   * `options.signal` aborts; then it resolves. `fn` throwing while still
   * leading rejects `lead`; close() rejects it with `LOCK_CLOSED`.
   */
  lead(key: string, fn: (term: Lease) => unknown, options?: LeadOptions): Promise<void>;
  /** Releases every lease it holds, rejects its waiting acquires with `LOCK_CLOSED`, closes the backend. */
  close(): Promise<void>;
}

const DEFAULT_TTL_MS = 30_000;

/**
 * Creates a lock client over `backend`.
 *
 * @group Client
 */
export function createLocks(backend: Backend, options: LocksOptions = {}): Locks {
  return new LockClient(backend, options);
}

class LockClient implements Locks, LeaseHost, LossTarget<unknown> {
  readonly backend: Backend;
  readonly calls: BackendCalls;
  readonly namespace: string;
  readonly #defaults: { ttlMs: number; autoExtend: boolean };
  readonly #leases = new Set<HeldLease>();
  readonly #waiting = new Set<AbortController>();
  /** Waits after a first attempt: close() ends them, then waits for them to finish. */
  readonly #waits = new Set<Wait>();
  /** Waits by notification and polling, one loop per key. */
  readonly #keyWaits: KeyWaits;
  readonly #closeController = new AbortController();
  readonly #cleanups = new Set<Promise<unknown>>();
  /** Work of acquires that gave up while it still ran (an attempt in flight, a wait ending). */
  readonly #abandoned = new Set<Promise<unknown>>();
  readonly #delayedReleases = new Set<() => void>();
  /** Rejecters of the hot path's first attempts in flight, for close(). */
  readonly #firstAttempts = new Set<(reason: unknown) => void>();
  readonly #host: ReturnType<typeof attachClient>;
  #closing: Promise<void> | undefined;

  constructor(backend: Backend, options: LocksOptions) {
    assertBackend(backend);
    if (typeof options !== "object" || options === null) {
      throw invalidArgument("options", `must be an object, got ${typeName(options)}`);
    }
    this.backend = backend;
    this.calls = new BackendCalls(backend);
    this.#keyWaits = new KeyWaits(this.calls);
    this.namespace =
      options.namespace === undefined
        ? "default"
        : validateKey(options.namespace, "namespace", MAX_NAMESPACE_BYTES);
    const autoExtend = options.autoExtend ?? true;
    if (typeof autoExtend !== "boolean") {
      throw invalidArgument("autoExtend", `must be a boolean, got ${typeName(autoExtend)}`);
    }
    this.#defaults = {
      ttlMs:
        options.ttlMs === undefined
          ? DEFAULT_TTL_MS
          : validateTtl(options.ttlMs, ttlFloor(backend.capabilities)),
      autoExtend,
    };
    this.#host = attachClient(backend, this);
    // Every waiter of this client may listen to it at once: no leak warning for that.
    setMaxListeners(0, this.#closeController.signal);
  }

  acquire(key: string, options?: AcquireOptions): Promise<Lease> {
    return this.#acquire(key, options, true) as Promise<Lease>;
  }

  tryAcquire(key: string, options?: TryAcquireOptions): Promise<Lease | null> {
    return this.#acquire(key, options, false);
  }

  async withLock<T>(
    key: string,
    fn: (lease: Lease) => T | Promise<T>,
    options?: AcquireOptions,
  ): Promise<T> {
    if (typeof fn !== "function")
      throw invalidArgument("fn", `must be a function, got ${typeName(fn)}`);
    const lease = await this.acquire(key, options);
    try {
      return await fn(lease);
    } finally {
      await lease.release();
    }
  }

  async acquireAll(keys: readonly string[], options?: AcquireAllOptions): Promise<MultiLease> {
    if (this.#closing !== undefined) throw lockClosed();
    validateKeySet(keys);
    if (options !== undefined && options !== null && "minHoldMs" in options) {
      throw invalidArgument("options.minHoldMs", "is not a known option of acquireAll");
    }
    return acquireInOrder(keys, options, (key, o) => this.acquire(key, o));
  }

  async inspect(key: string): Promise<LockState> {
    if (this.#closing !== undefined) throw lockClosed();
    validateKey(key);
    return lockState(key, await this.calls.inspect(this.#keyRef(key)));
  }

  async forceRelease(key: string): Promise<boolean> {
    if (this.#closing !== undefined) throw lockClosed();
    validateKey(key);
    // Only the leases held when the call began were evicted: one granted while it ran (a waiter
    // of this client that the eviction let in) holds the key after it.
    const evicted = [...this.#leases].filter((lease) => lease.key === key);
    const freed = await this.calls.forceRelease(this.#keyRef(key));
    // This client's own holders of the key were evicted: no need to wait for their next extension.
    for (const lease of evicted) lease.markLost("the key was force-released");
    return freed;
  }

  election(key: string, options?: ElectionOptions): Election {
    if (this.#closing !== undefined) throw lockClosed();
    validateKey(key);
    validateElectionOptions(options, ELECTION_OPTIONS);
    validateHolder(options?.holder);
    if (options?.ttlMs !== undefined) validateTtl(options.ttlMs, ttlFloor(this.capabilities));
    return new KeyElection(this.#electionHost, key, { ...options });
  }

  async lead(key: string, fn: (term: Lease) => unknown, options?: LeadOptions): Promise<void> {
    if (typeof fn !== "function")
      throw invalidArgument("fn", `must be a function, got ${typeName(fn)}`);
    validateElectionOptions(options, LEAD_OPTIONS);
    const { signal, ...electionOptions } = options ?? {};
    const election = this.election(key, electionOptions);
    await leadLoop(election, fn, signal, this.#closeController.signal);
    // A campaign the signal ended may still hold a grant in flight: lead() returns once it is handed back.
    await this.#settled();
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  get capabilities(): Backend["capabilities"] {
    return this.backend.capabilities;
  }

  /** @internal A loss the backend reported for one of its holds: ignored when not this client's. */
  lost(hold: unknown, reason: string, cause?: unknown): void {
    if (hold === undefined) return;
    for (const lease of this.#leases) {
      if (lease.hold === hold) lease.markLost(reason, cause);
    }
  }

  /** @internal The backend's session or connection died: every lease of this client is lost. */
  lostAll(reason: string, cause?: unknown): void {
    for (const lease of [...this.#leases]) lease.markLost(reason, cause);
  }

  /** @internal */
  leaseEnded(lease: HeldLease): void {
    this.#leases.delete(lease);
  }

  /** @internal A minimum hold on a backend without TTL: released when the time is up, or at close(). */
  releaseLater(request: LockRequest, hold: unknown, ms: number): Promise<void> {
    // The close signal, not `#closing`: close() releases the leases it holds before `#closing` is set.
    if (this.#closeController.signal.aborted) return this.calls.release(request, hold);
    const release = (): void => {
      clearTimeout(timer);
      this.#delayedReleases.delete(release);
      this.#releaseQuietly(request, hold);
    };
    // Unref'd: the session that holds the lock already keeps the process alive while it is open.
    const timer = setTimeout(release, ms).unref();
    this.#delayedReleases.add(release);
    return Promise.resolve();
  }

  /** What elections of this client use; campaign options are checked by the election first. */
  readonly #electionHost: ElectionHost = {
    closed: this.#closeController.signal,
    acquire: (key, options) => this.acquire(key, options),
    inspect: (key) => this.inspect(key),
    watch: (request, onChange) => this.calls.subscribe(request, onChange),
    request: (key) => this.#keyRef(key),
  };

  /** A request that names `key` (for inspect, forceRelease and watching a key); it takes nothing. */
  #keyRef(key: string): LockRequest {
    const { ttlMs } = this.#defaults;
    return new Request(key, this.namespace, newOwnerToken(), "exclusive", 1, ttlMs);
  }

  #acquire(key: string, options: AcquireOptions | undefined, wait: boolean): Promise<Lease | null> {
    let request: LockRequest;
    let resolved: ResolvedOptions;
    try {
      if (this.#closing !== undefined) throw lockClosed();
      validateKey(key);
      resolved = resolveOptions(options, this.#defaults, this.backend.capabilities, wait);
      resolved.signal?.throwIfAborted();
      request = new Request(
        key,
        this.namespace,
        newOwnerToken(),
        resolved.mode,
        resolved.limit,
        resolved.ttlMs,
        resolved.holder,
      );
    } catch (error) {
      return Promise.reject(error);
    }
    const outcome = this.#run(request, resolved, wait);
    if (!observingAcquires()) return outcome;
    const { namespace, mode, limit } = request;
    const event = { key, namespace, backend: this.backend.name, mode, limit };
    return observeAcquire(outcome, event, resolved.signal);
  }

  #run(request: LockRequest, resolved: ResolvedOptions, wait: boolean): Promise<Lease | null> {
    if (resolved.signal === undefined && resolved.timeoutMs === Number.POSITIVE_INFINITY) {
      return this.#unbounded(request, resolved, wait);
    }
    return this.#bounded(request, resolved, wait);
  }

  /**
   * The hot path: an acquire with neither timeout nor signal, which only close()
   * can end. No controller, no timer and no abort listener (each costs more than
   * a whole uncontended cycle): close() rejects the first attempts still in
   * flight through `#firstAttempts`, and the waits share the client's close signal.
   */
  #unbounded(request: LockRequest, options: ResolvedOptions, wait: boolean): Promise<Lease | null> {
    return new Promise((resolve, reject) => {
      const start = monotonicNow();
      this.#firstAttempts.add(reject);
      this.calls.tryAcquire(request).then(
        (attempt) => {
          // False once close() rejected this acquire: `#grant` then hands a grant back.
          const pending = this.#firstAttempts.delete(reject);
          let lease: Lease | undefined;
          try {
            lease = this.#leaseFrom(request, options, attempt, start);
          } catch (error) {
            if (pending) reject(error);
            return;
          }
          if (!pending) return;
          if (lease !== undefined || !wait) resolve(lease ?? null);
          else resolve(this.#waitFor(request, options, this.#closeController.signal));
        },
        (error: unknown) => {
          // The outcome is unknown (the command may have run): clean up by owner.
          this.#releaseQuietly(request, undefined);
          if (this.#firstAttempts.delete(reject)) reject(error);
        },
      );
    });
  }

  /** An acquire with a timeout or a signal: both bound the first attempt too, not only the wait. */
  async #bounded(
    request: LockRequest,
    options: ResolvedOptions,
    wait: boolean,
  ): Promise<Lease | null> {
    const start = monotonicNow();
    const cancel = new AbortController();
    const { signal, timeoutMs } = options;
    const stopSignal = signal === undefined ? undefined : onAbort(signal, (r) => cancel.abort(r));
    // timeoutMs 0 means "one attempt": the attempt itself is the bound.
    const timer =
      timeoutMs === Number.POSITIVE_INFINITY || timeoutMs === 0
        ? undefined
        : setTimeout(
            () => cancel.abort(timeoutError(request.key, timeoutMs)),
            Math.max(0, Math.min(timeoutMs - (monotonicNow() - start), MAX_TIMER_MS)),
          );
    this.#waiting.add(cancel);
    try {
      const lease = await untilAborted(this.#attempt(request, options), cancel.signal, (work) =>
        this.#abandon(work),
      );
      if (lease !== undefined) return lease;
      if (!wait) return null;
      if (timeoutMs === 0) throw timeoutError(request.key, 0);
      return await this.#waitFor(request, options, cancel.signal);
    } catch (error) {
      // Rejection is always the cancel reason when one exists: timeouts, aborts and close win over echoes.
      if (cancel.signal.aborted) throw cancel.signal.reason;
      throw error;
    } finally {
      this.#waiting.delete(cancel);
      if (timer !== undefined) clearTimeout(timer);
      stopSignal?.();
    }
  }

  /** One non-blocking attempt: the lease, or undefined when the key is taken. */
  #attempt(request: LockRequest, options: ResolvedOptions): Promise<Lease | undefined> {
    const start = monotonicNow();
    return this.calls.tryAcquire(request).then(
      (attempt) => this.#leaseFrom(request, options, attempt, start),
      (error: unknown) => {
        // The outcome is unknown (the command may have run): clean up by owner.
        this.#releaseQuietly(request, undefined);
        throw error;
      },
    );
  }

  /** The lease for a granted attempt that started at `start`, or undefined. */
  #leaseFrom(
    request: LockRequest,
    options: ResolvedOptions,
    attempt: Attempt,
    start: number,
  ): Lease | undefined {
    if (!attempt.granted) return undefined;
    const deadline = acceptGrant(this.capabilities, request, attempt, start);
    if (deadline !== undefined) return this.#grant(request, options, attempt, deadline);
    this.#releaseQuietly(request, attempt.hold);
    return undefined;
  }

  /**
   * Waits after a failed first attempt until granted, or rejects with the
   * reason as soon as `cancel` aborts or close() starts, even while a backend
   * call hangs; a grant that comes later is handed back. No listener is added
   * to the client's own close signal (thousands of waits may share it):
   * close() ends the waits itself.
   */
  #waitFor(request: LockRequest, options: ResolvedOptions, cancel: AbortSignal): Promise<Lease> {
    if (this.#closing !== undefined) return Promise.reject(lockClosed());
    return new Promise((resolve, reject) => {
      const wait = new Wait(reject);
      const stop =
        cancel === this.#closeController.signal
          ? undefined
          : onAbort(cancel, (reason) => {
              wait.giveUp(reason);
              this.#abandon(wait.done);
            });
      wait.done = waitForGrant(this.calls, this.#keyWaits, request, cancel, (hold) =>
        this.#releaseQuietly(request, hold),
      ).then(
        ({ grant, deadline }) => {
          this.#waits.delete(wait);
          stop?.();
          if (wait.ended) {
            this.#releaseQuietly(request, grant.hold);
            return;
          }
          wait.ended = true;
          try {
            resolve(this.#grant(request, options, grant, deadline));
          } catch (error) {
            reject(error);
          }
        },
        (error: unknown) => {
          this.#waits.delete(wait);
          stop?.();
          wait.giveUp(cancel.aborted ? cancel.reason : error);
        },
      );
      this.#waits.add(wait);
      if (wait.ended) this.#abandon(wait.done);
    });
  }

  #grant(request: LockRequest, options: ResolvedOptions, grant: Grant, deadline: number): Lease {
    if (this.#closing !== undefined || options.signal?.aborted) {
      // Granted after the caller gave up: hand it back, report the reason.
      this.#releaseQuietly(request, grant.hold);
      throw this.#closing !== undefined ? lockClosed() : options.signal?.reason;
    }
    const lease = new HeldLease(this, request, grant, deadline, options);
    this.#leases.add(lease);
    return lease;
  }

  #abandon(work: Promise<unknown>): void {
    this.#abandoned.add(work);
    const forget = (): void => void this.#abandoned.delete(work);
    work.then(forget, forget);
  }

  /** Resolves once the acquires that gave up have finished and handed back what they were granted late. */
  async #settled(): Promise<void> {
    // Twice: finishing abandoned work starts the clean-ups that hand its grants back.
    for (let round = 0; round < 2; round++) {
      await Promise.allSettled([...this.#abandoned, ...this.#cleanups]);
    }
  }

  #releaseQuietly(request: LockRequest, hold: unknown): void {
    const cleanup = this.calls.release(request, hold).catch(() => undefined);
    this.#cleanups.add(cleanup);
    void cleanup.finally(() => this.#cleanups.delete(cleanup));
  }

  async #close(): Promise<void> {
    const closed = lockClosed();
    // A backend shared by several clients is closed with the last of them.
    const last = this.#host.detach(this);
    this.#closeController.abort(closed);
    for (const waiter of this.#waiting) waiter.abort(closed);
    for (const reject of this.#firstAttempts) reject(closed);
    this.#firstAttempts.clear();
    for (const release of [...this.#delayedReleases]) release();
    const releases = [...this.#leases].map((lease) => lease.release());
    // A server that stopped answering must not hold close() up: what is not released
    // within the grace period frees itself (TTL, or the session the backend closes next).
    const waits = [...this.#waits];
    for (const wait of waits) wait.giveUp(closed);
    // Each wait's own end (its unsubscribe included) comes before the backend closes.
    const ended = waits.map((wait) => wait.done);
    const pending = [
      ...releases,
      ...this.#cleanups,
      ...ended,
      this.#keyWaits.ended(),
      this.calls.idle(),
    ];
    await settledWithin(pending, CLOSE_GRACE_MS);
    await this.calls.close(last);
  }
}

/** A wait after a first attempt: close() may end it early; `done` settles once it has finished. */
class Wait {
  ended = false;
  done: Promise<void> = Promise.resolve();
  readonly #reject: (reason: unknown) => void;

  constructor(reject: (reason: unknown) => void) {
    this.#reject = reject;
  }

  giveUp(reason: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.#reject(reason);
  }
}

/** How long close() waits for its releases before it closes the backend anyway. */
const CLOSE_GRACE_MS = 250;

/**
 * Settles like `attempt`, or rejects with the reason as soon as `signal`
 * aborts; a lease granted after that is handed back, never reported.
 */
function untilAborted(
  attempt: Promise<Lease | undefined>,
  signal: AbortSignal,
  abandon: (work: Promise<unknown>) => void,
): Promise<Lease | undefined> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const stop = onAbort(signal, (reason) => {
      settled = true;
      reject(reason);
      abandon(
        attempt.then(
          (lease) => lease?.release(),
          () => undefined,
        ),
      );
    });
    attempt.then(
      (lease) => {
        stop();
        if (!settled) resolve(lease);
      },
      (error: unknown) => {
        stop();
        if (!settled) reject(error);
      },
    );
  });
}

function assertBackend(backend: unknown): asserts backend is Backend {
  const b = backend as Partial<Backend> | null;
  const ok =
    typeof b === "object" &&
    b !== null &&
    typeof b.tryAcquire === "function" &&
    typeof b.extend === "function" &&
    typeof b.release === "function" &&
    typeof b.close === "function" &&
    typeof b.capabilities === "object" &&
    b.capabilities !== null;
  if (!ok)
    throw invalidArgument("backend", "must be a lock backend (see @locks/core's Backend contract)");
}
