/**
 * The contract between `@locks/core` and a backend. A backend holds only what
 * is specific to its store: one non-blocking attempt to take a key, extend,
 * release and close, plus optional hooks. Waiting, timeouts, abort, the
 * watchdog, leases, validation and errors are built once, in the core.
 *
 * @module
 */

/**
 * `"exclusive"`: one holder. `"shared"`: many holders in shared mode, none in exclusive mode.
 *
 * @group Options
 */
export type LockMode = "exclusive" | "shared";

/**
 * What a backend promises. The conformance suite reads this manifest, runs
 * the tests each capability implies, runs a negative test where a flag is
 * false, and fails a backend that declares a capability it does not honour.
 *
 * @group Backend contract
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

/**
 * A key, as `inspect` and `forceRelease` receive it: the naming half of a `LockRequest`.
 *
 * @group Backend contract
 */
export interface KeyRef {
  /** The key as the user gave it (validated: 1 to 1024 UTF-8 bytes, well-formed). */
  readonly key: string;
  /** The namespace of the `Locks` client; part of the key on the server. */
  readonly namespace: string;
  /**
   * `namespace` and `key` as one string that no other pair maps to (see
   * `scopedKey`): the name of the lock for stores with free-form keys.
   */
  readonly scoped: string;
  /**
   * SHA-256 of `scoped`, computed once per request on first read: fixed-size
   * names for files, numeric lock ids, hash tags.
   */
  readonly digest: Buffer;
}

/**
 * One acquire, as the core hands it to the backend, and back to it with every later call for that lock.
 *
 * @group Backend contract
 */
export interface LockRequest extends KeyRef {
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
  /**
   * The holder's label (1 to 256 UTF-8 bytes), or undefined when the user
   * gave none. A backend with `inspect` stores it with the lock and reports it.
   */
  readonly holder: string | undefined;
}

/**
 * A granted attempt.
 *
 * @group Backend contract
 */
export interface Grant<Hold = unknown> {
  readonly granted: true;
  /** Strictly greater than the token of every earlier grant of this key (0n when `fencing` is false). */
  readonly fencingToken: bigint;
  /**
   * Optional: a monotonic instant (`performance.now()` scale) until which the
   * backend is sure the lock is held, when it knows better than the core's
   * own estimate (`attempt start + ttlMs - drift`), e.g. Redlock.
   */
  readonly validUntil?: number;
  /**
   * The backend's own handle on this held lock (what it needs to extend,
   * release, or report the loss of it). The core passes it back with every
   * later call for this lock, so a backend keeps no owner-to-lock map.
   */
  readonly hold?: Hold;
}

/**
 * The outcome of one attempt to take a key.
 *
 * @group Backend contract
 */
export type Attempt<Hold = unknown> =
  | Grant<Hold>
  | {
      readonly granted: false;
      /**
       * Optional hint: ms until the current holder's lease ends (when the
       * store frees an abandoned lock). Waiters poll again then, at the
       * latest, so report it whenever the store knows it cheaply.
       */
      readonly retryAfterMs?: number;
    };

/**
 * How long a blocking acquire may wait.
 *
 * @group Backend contract
 */
export interface WaitOptions {
  /**
   * Aborted on timeout, user abort or close; `signal.reason` says which. It
   * may be shared by many waits of one client: listen with `onAbort` from
   * `@locks/core/backend` (one real listener per signal) and stop when the wait ends.
   */
  readonly signal: AbortSignal;
}

/**
 * What a subscription reports. `"changed"`: the key may have become free (a
 * release, a deletion, an expiry the store announces, or the notification
 * channel came back, after which anything may have been missed). `"unsure"`:
 * from now on notifications may be missed (the channel dropped, a heartbeat
 * was missed, a watch was cancelled) until the next `"changed"`.
 *
 * @group Backend contract
 */
export type KeyEvent = "changed" | "unsure";

/**
 * Stops a subscription.
 *
 * @group Backend contract
 */
export type Unsubscribe = () => void | Promise<void>;

/**
 * What the core gives a backend at `bind()`: the one way back into the core.
 *
 * @group Backend contract
 */
export interface BackendHost<Hold = unknown> {
  /**
   * Reports that the lock behind `hold` is lost (its key was deleted, its
   * session lease revoked): the core aborts that lease's signal with a
   * `LockLostError` and releases it through the backend once.
   */
  lost(hold: Hold, reason: string, cause?: unknown): void;
  /** Reports that every lock held through this backend instance is lost (its session or connection died). */
  lostAll(reason: string, cause?: unknown): void;
  /** Aborts when the client starts closing: end background work (reconnects, retries, sleeps) on it. */
  readonly closing: AbortSignal;
}

/**
 * One holder of a key, as `inspect` reports it.
 *
 * @group Backend contract
 */
export interface HolderStatus {
  /** The holder's label (`LockRequest.holder`), when it gave one. */
  readonly holder: string | undefined;
  /** `request.owner` of the grant, where the store keeps it. */
  readonly owner?: string;
  /** A semaphore's holders are "exclusive" (see `KeyStatus.limit`). */
  readonly mode: LockMode;
  /** The grant's fencing token (0n when `fencing` is false). */
  readonly fencingToken: bigint;
  /** How long the store keeps the lock from now, without an extension; undefined without TTL. */
  readonly expiresInMs: number | undefined;
}

/**
 * What a backend reports about a key (`Locks.inspect`, `locks status`).
 *
 * @group Backend contract
 */
export interface KeyStatus {
  /** Every live holder; empty when the key is free. */
  readonly holders: readonly HolderStatus[];
  /**
   * The limit the current holders took the key with: above 1 for a
   * semaphore (whose holders have mode "exclusive"), 1 otherwise.
   * Undefined when the key is free or the backend cannot tell.
   */
  readonly limit?: number;
}

/**
 * A lock backend: its store's protocol and nothing else. Methods MUST NOT
 * validate user input (the core did). A semaphore backend MUST refuse a
 * request whose `limit` differs from the one the key's current holders use,
 * with `limitMismatch(requested, current)`.
 *
 * What the core promises in return (its own tests hold it to each):
 * - **Holds.** What a grant returns as `hold` comes back with every later
 *   call for that lock: `extend`, `release`, and `host.lost` is keyed by it.
 * - **Errors.** Anything a method throws or rejects with that is not a
 *   `LockError` reaches the user as BACKEND_UNAVAILABLE, with it as `cause`:
 *   a backend maps errors only to say something better.
 * - **Losses.** A lease the core declares lost (its deadline passed, an
 *   extension refused, `host.lost`) is released through `release` exactly
 *   once, so a backend needs no TTL timer of its own.
 * - **Unknown outcomes.** When an attempt failed (it may have taken the key)
 *   the core calls `release(request, undefined)`: clean up by
 *   `request.owner`. A grant that came too late to trust is released with
 *   its hold.
 * - **Waits.** The core drives every wait: its timeout, the user's signal
 *   and close() all arrive as one `signal`; `acquire` may decline (resolve
 *   undefined) and the core polls with `subscribe` instead.
 * - **Close.** Once `close()` is called the core calls nothing else. Before
 *   it, every lease is released and every call in flight has settled, or a
 *   bounded grace period (250 ms) has passed.
 *
 * @group Backend contract
 */
export interface Backend<Hold = unknown> {
  /** A short name for messages and diagnostics: "thread", "redis", ... */
  readonly name: string;
  /** Frozen manifest of what this backend honours. */
  readonly capabilities: Capabilities;

  /** Optional: called once by `createLocks`, before any other call, with the host to report losses to. */
  bind?(host: BackendHost<Hold>): void;

  /** One non-blocking attempt to take `request.key`. Never waits for a holder. */
  tryAcquire(request: LockRequest): Promise<Attempt<Hold>>;

  /**
   * Optional blocking acquire, for stores that keep their own queue of
   * waiters (fairness). It resolves with a grant, or undefined to decline
   * (the core then waits by `subscribe` and polling), or rejects with
   * `wait.signal.reason` once the signal aborts, leaving nothing behind
   * (no queue entry, no lock taken after giving up). With `capabilities.ttl`
   * it SHOULD return `validUntil`: the core cannot tell when, during the
   * wait, the store started the lease, and otherwise dates it from the
   * start of the wait.
   */
  acquire?(request: LockRequest, wait: WaitOptions): Promise<Grant<Hold> | undefined>;

  /** Extends the lock behind `hold` to `ttlMs` from now. Resolves false when it is no longer held. */
  extend(request: LockRequest, hold: Hold, ttlMs: number): Promise<boolean>;

  /**
   * Releases the lock behind `hold`, and nothing else; with `hold`
   * undefined, whatever `request.owner` may hold of `request.key`. Idempotent.
   */
  release(request: LockRequest, hold: Hold | undefined): Promise<void>;

  /**
   * Optional: tells the core when `key` may have become free, so that
   * waiters need not poll. The core calls it once per key while any of its
   * waiters waits for the key (they share it), and stops it when the last
   * one leaves. `onChange()` (or `"changed"`): attempt now. `"unsure"`:
   * notifications may be missed until the next `"changed"`; the core polls
   * meanwhile. While the channel is healthy the core only polls slowly, at
   * the holder's `retryAfterMs`, for an expiry the store does not announce.
   */
  subscribe?(key: KeyRef, onChange: (event?: KeyEvent) => void): Unsubscribe | Promise<Unsubscribe>;

  /**
   * Optional: who holds `key` now, with each holder's label, mode, token and
   * expiry. Takes no lock and changes nothing.
   */
  inspect?(key: KeyRef): Promise<KeyStatus>;

  /**
   * Optional (admin): frees `key` whoever holds it; resolves true when
   * anything was held. Every later grant's token MUST be higher than the
   * evicted holders' (they are fenced), and `extend` of an evicted hold
   * MUST resolve false. Where the store tells the evicted holder's backend
   * (a connection it kills, a watch), it reports `host.lost`.
   */
  forceRelease?(key: KeyRef): Promise<boolean>;

  /** Closes the clients this instance created (never ones it was given), and every timer and socket it opened. */
  close(): Promise<void>;
}
