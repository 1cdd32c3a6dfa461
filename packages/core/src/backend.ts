/**
 * The contract between `@locks/core` and a backend. A backend holds only what
 * is specific to its store: one non-blocking attempt to take a key, extend,
 * release and close, plus optional hooks. Waiting, timeouts, abort, the
 * watchdog, leases, validation and errors are built once, in the core.
 *
 * @module
 */

/** `"exclusive"`: one holder. `"shared"`: many holders in shared mode, none in exclusive mode. */
export type LockMode = "exclusive" | "shared";

/**
 * What a backend promises. The conformance suite reads this manifest, runs
 * the tests each capability implies, runs a negative test where a flag is
 * false, and fails a backend that declares a capability it does not honour.
 */
export interface Capabilities {
  /** Who can contend: async tasks of one process, processes of one host, or machines of a cluster. */
  readonly scope: "process" | "host" | "cluster";
  /** The store frees a lock whose holder stopped extending it after `ttlMs`. */
  readonly ttl: boolean;
  /** Grants carry fencing tokens that strictly increase per key. */
  readonly fencing: boolean;
  /** `mode: "shared"` (readers/writer) is supported. */
  readonly shared: boolean;
  /** `limit > 1` (counting semaphore) is supported. */
  readonly semaphore: boolean;
  /** Waiters are granted in the order they started waiting (FIFO). */
  readonly fair: boolean;
  /** Waiters are woken by a release notification, not only by polling. */
  readonly notify: boolean;
  /**
   * Optional: the shortest `ttlMs` this backend can honour (a store whose
   * leases are whole seconds, a round trip to several servers). The core
   * refuses a shorter `ttlMs` with INVALID_ARGUMENT before any I/O; it never
   * goes below its own floor, `MIN_TTL_MS`, whatever the backend declares.
   */
  readonly minTtlMs?: number;
}

/** One acquire, as the core hands it to the backend. The same object is passed to extend and release. */
export interface LockRequest {
  /** The key as the user gave it (validated: 1 to 1024 UTF-8 bytes). */
  readonly key: string;
  /** The namespace of the `Locks` client; part of the key on the server. */
  readonly namespace: string;
  /**
   * A random 128-bit token (32 hex characters) unique to this acquire. Extend
   * and release MUST act only on a lock held by this owner.
   */
  readonly owner: string;
  readonly mode: LockMode;
  /** Maximum number of concurrent holders (1 unless a semaphore). */
  readonly limit: number;
  /** Lease time in ms. A backend with `capabilities.ttl === false` ignores it. */
  readonly ttlMs: number;
}

/** The outcome of one attempt to take a key. */
export type Attempt =
  | {
      readonly granted: true;
      /** Strictly greater than the token of every earlier grant of this key (0n when `fencing` is false). */
      readonly fencingToken: bigint;
      /**
       * Optional: a monotonic instant (`performance.now()` scale) until which the
       * backend is sure the lock is held, when it knows better than the core's
       * own estimate (`attempt start + ttlMs - drift`), e.g. Redlock.
       */
      readonly validUntil?: number;
    }
  | {
      readonly granted: false;
      /** Optional hint: when the current holder's lease ends, to bound polling. */
      readonly retryAfterMs?: number;
    };

/** How long a blocking acquire may wait. */
export interface WaitOptions {
  /**
   * Aborted on timeout, user abort or close; `signal.reason` says which. It
   * may be shared by many waits of one client: listen with `onAbort` from
   * `@locks/core` (one real listener per signal) and stop when the wait ends.
   */
  readonly signal: AbortSignal;
}

/** Stops a subscription. */
export type Unsubscribe = () => void | Promise<void>;

/**
 * A loss the backend learnt of by itself (session closed, lease revoked, key
 * deleted by someone else). Without `owner`, every lock taken through this
 * backend instance is lost.
 */
export interface LossReport {
  readonly owner?: string;
  readonly reason: string;
  readonly cause?: unknown;
}

/** What a backend reports about a key, for tools such as `locks status`. */
export interface KeyStatus {
  readonly held: boolean;
  /**
   * The limit the current holders took the key with: above 1 for a
   * semaphore (whose holders have mode "exclusive"), 1 otherwise.
   * Undefined when the backend cannot tell.
   */
  readonly limit?: number;
  readonly holders: ReadonlyArray<{
    readonly owner?: string;
    readonly mode?: LockMode;
    readonly fencingToken?: bigint;
    readonly expiresInMs?: number;
  }>;
}

/**
 * A lock backend. Methods MUST NOT validate user input (the core did) and
 * MUST throw `LockError` with code `BACKEND_UNAVAILABLE` (cause: the original
 * error) when the store cannot be reached. A semaphore backend MUST refuse a
 * request whose `limit` differs from the one the key's current holders use,
 * with `limitMismatch(requested, current)` (INVALID_ARGUMENT).
 */
export interface Backend {
  /** A short name for messages and diagnostics: "thread", "redis", ... */
  readonly name: string;
  /** Frozen manifest of what this backend honours. */
  readonly capabilities: Capabilities;

  /** One non-blocking attempt to take `req.key`. Never waits for a holder. */
  tryAcquire(req: LockRequest): Promise<Attempt>;

  /**
   * Optional blocking acquire, for stores that keep their own queue of
   * waiters (fairness). It resolves with a grant, or rejects with
   * `wait.signal.reason` once the signal aborts, leaving nothing behind
   * (no queue entry, no lock taken after giving up). With `capabilities.ttl`
   * it SHOULD return `validUntil`: the core cannot tell when, during the
   * wait, the store started the lease, and otherwise dates it from the
   * start of the wait.
   */
  acquire?(req: LockRequest, wait: WaitOptions): Promise<Attempt & { granted: true }>;

  /** Extends the lock held by `req.owner` to `ttlMs` from now. Resolves false when it is no longer held. */
  extend(req: LockRequest, ttlMs: number): Promise<boolean>;

  /** Releases the lock held by `req.owner`, and nothing else. Idempotent. */
  release(req: LockRequest): Promise<void>;

  /**
   * Optional: calls `onChange` when `req.key` may have become free (a release
   * notification). Notifications are a hint: the core still polls, bounded.
   */
  subscribe?(req: LockRequest, onChange: () => void): Unsubscribe | Promise<Unsubscribe>;

  /** Optional: registers a listener for losses the backend detects by itself. */
  onLoss?(listener: (report: LossReport) => void): Unsubscribe;

  /** Optional: who holds `key` now. */
  inspect?(namespace: string, key: string): Promise<KeyStatus>;

  /** Releases what this instance holds and closes the clients it created (never ones it was given). */
  close(): Promise<void>;
}
