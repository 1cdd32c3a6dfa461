import type { Capabilities, LockMode, LockRequest } from "./backend.js";
import type { BackendCalls } from "./calls.js";
import { driftAllowance, monotonicNow, toEpochMs } from "./clock.js";
import { LockError, LockLostError } from "./errors.js";
import { channels, type LeaseEvent } from "./events.js";
import { ttlFloor, validateTtl } from "./options.js";
import { Watchdog } from "./watchdog.js";

/**
 * A held lock. Release it with `release()` or `await using`.
 *
 * @group Leases
 * @sortStrategy source-order
 */
export interface Lease extends AsyncDisposable {
  /** The key as given to `acquire`, without the namespace. */
  readonly key: string;
  readonly mode: LockMode;
  /**
   * Strictly greater than the token of every earlier grant of this key. Pass it
   * to the protected resource and have it refuse tokens lower than the highest
   * it has seen: that keeps it safe from a holder that woke up after its lease ran out.
   */
  readonly fencingToken: bigint;
  /** Local, conservative estimate (epoch ms) of when the lease runs out; undefined without a TTL. */
  readonly expiresAt: number | undefined;
  /**
   * A synchronous check, for just before a write: false once the lease was
   * released or lost, and false once its local deadline has passed even if
   * the watchdog's timer has not run yet (a holder that just resumed from a
   * pause). Reading it then declares the lease lost and aborts `signal`.
   */
  readonly held: boolean;
  /**
   * Aborts the moment the holder can no longer be sure it holds the lock (its
   * reason is a `LockLostError`), and on release (reason code `LOCK_RELEASED`).
   */
  readonly signal: AbortSignal;
  /** Extends the lease by `ttlMs` (default: its TTL) from now. Rejects with `LockLostError` when no longer held. */
  extend(ttlMs?: number): Promise<void>;
  /** Releases the lock; idempotent; resolves for a lost lease; never touches another holder's lock. */
  release(): Promise<void>;
}

/** What a lease needs from the client that made it. */
export interface LeaseHost {
  readonly calls: BackendCalls;
  readonly capabilities: Capabilities;
  leaseEnded(lease: HeldLease): void;
  /** Releases the lock after `ms` (a minimum hold without server-side TTL), or at close(). */
  releaseLater(request: LockRequest, hold: unknown, ms: number): Promise<void>;
}

/** How a lease behaves, from the acquire's options. */
export interface LeaseOptions {
  readonly autoExtend: boolean;
  readonly minHoldMs: number;
}

type State = "held" | "released" | "lost";

/** @internal The one implementation of `Lease`. */
export class HeldLease implements Lease {
  readonly fencingToken: bigint;
  /** The backend's handle on this lock, passed back with every call for it. */
  readonly hold: unknown;
  readonly #host: LeaseHost;
  readonly #request: LockRequest;
  #ttlMs: number;
  /** Monotonic instant at which the lease is presumed lost; Infinity without TTL. */
  #deadline: number;
  #state: State = "held";
  #endReason: LockError | undefined;
  // Created only when someone reads `signal`: an AbortController costs more than a whole uncontended cycle.
  #controller: AbortController | undefined;
  #released: Promise<void> | undefined;
  #watchdog: Watchdog | undefined;
  readonly #grantedAt = monotonicNow();
  readonly #minHoldMs: number;

  constructor(
    host: LeaseHost,
    request: LockRequest,
    grant: { readonly fencingToken: bigint; readonly hold?: unknown },
    deadline: number,
    options: LeaseOptions,
  ) {
    this.#host = host;
    this.#request = request;
    this.fencingToken = grant.fencingToken;
    this.hold = grant.hold;
    this.#ttlMs = request.ttlMs;
    this.#deadline = deadline;
    this.#minHoldMs = options.minHoldMs;
    if (deadline !== Number.POSITIVE_INFINITY) {
      this.#watchdog = new Watchdog(this, options.autoExtend);
      this.#watchdog.arm(monotonicNow(), deadline, this.#ttlMs);
    }
  }

  get key(): string {
    return this.#request.key;
  }

  get mode(): LockMode {
    return this.#request.mode;
  }

  get expiresAt(): number | undefined {
    return this.#deadline === Number.POSITIVE_INFINITY ? undefined : toEpochMs(this.#deadline);
  }

  /** @internal Monotonic deadline, for the watchdog. */
  get deadline(): number {
    return this.#deadline;
  }

  get held(): boolean {
    if (this.#state === "held" && monotonicNow() >= this.#deadline) {
      this.markLost("the lease's TTL passed without an extension");
    }
    return this.#state === "held";
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#state !== "held") this.#controller.abort(this.#reason());
    }
    return this.#controller.signal;
  }

  extend(ttlMs?: number): Promise<void> {
    let ttl: number;
    try {
      ttl =
        ttlMs === undefined ? this.#ttlMs : validateTtl(ttlMs, ttlFloor(this.#host.capabilities));
    } catch (error) {
      return Promise.reject(error);
    }
    return this.renew(ttl);
  }

  /** @internal Shared by `extend()` and the watchdog. */
  async renew(ttlMs: number): Promise<void> {
    if (this.#state === "held" && monotonicNow() >= this.#deadline) {
      this.markLost("the lease's TTL passed without an extension");
    }
    if (this.#state !== "held") throw this.#lostReason();
    const start = monotonicNow();
    let stillHeld: boolean;
    try {
      stillHeld = await this.#host.calls.extend(this.#request, this.hold, ttlMs);
    } catch (error) {
      if (channels.extend.hasSubscribers)
        this.#publish(channels.extend, { ok: false, durationMs: monotonicNow() - start, error });
      throw error;
    }
    if (channels.extend.hasSubscribers)
      this.#publish(channels.extend, { ok: stillHeld, durationMs: monotonicNow() - start });
    if (this.#state !== "held") throw this.#lostReason();
    if (!stillHeld) {
      this.markLost("the extension was refused: the lock is no longer held by this lease");
      throw this.#lostReason();
    }
    if (this.#deadline !== Number.POSITIVE_INFINITY) {
      this.#ttlMs = ttlMs;
      this.#deadline = start + ttlMs - driftAllowance(ttlMs);
      this.#watchdog?.arm(start, this.#deadline, ttlMs);
    }
  }

  release(): Promise<void> {
    // Set once the lease ends, whether released or lost: the backend hears of it once.
    if (this.#released !== undefined) return this.#released;
    this.#end("released", undefined);
    if (channels.release.hasSubscribers) this.#publish(channels.release, {});
    // No clock read without a minimum hold: a release is the hot path.
    const holdLeft = this.#minHoldMs > 0 ? this.#grantedAt + this.#minHoldMs - monotonicNow() : 0;
    this.#released =
      holdLeft > 0
        ? this.#holdUntilMinimum(holdLeft)
        : this.#host.calls.release(this.#request, this.hold);
    return this.#released;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }

  /**
   * Released before its minimum hold: with server-side TTL the store keeps the
   * key for what remains (never less than the backend's floor) and frees it
   * itself; without, the client releases it when the time is up.
   */
  async #holdUntilMinimum(holdLeft: number): Promise<void> {
    if (!this.#host.capabilities.ttl) {
      await this.#host.releaseLater(this.#request, this.hold, holdLeft);
      return;
    }
    const ttl = Math.max(Math.ceil(holdLeft), ttlFloor(this.#host.capabilities));
    // False: no longer held, nothing left to keep. A failure leaves the lease to its TTL.
    await this.#host.calls.extend(this.#request, this.hold, ttl);
  }

  /**
   * @internal Marks the lease lost (idempotent), aborts its signal with a
   * `LockLostError`, and releases it through the backend: once, whoever
   * declared the loss, so no backend needs a TTL timer of its own.
   */
  markLost(reason: string, cause?: unknown): void {
    if (this.#state !== "held") return;
    const error = new LockLostError(`lock "${this.key}" lost: ${reason}`, { cause });
    this.#end("lost", error);
    // A clean-up only: a later release() resolves with it and must not throw at the user.
    this.#released = this.#host.calls.release(this.#request, this.hold).catch(() => undefined);
    if (channels.lost.hasSubscribers) this.#publish(channels.lost, { error });
  }

  #publish(
    target: { publish(message: unknown): void },
    extra: Pick<LeaseEvent, "ok" | "durationMs" | "error">,
  ): void {
    const { key, namespace, mode } = this.#request;
    const event: LeaseEvent = {
      key,
      namespace,
      backend: this.#host.calls.backend.name,
      mode,
      fencingToken: this.fencingToken,
      heldMs: monotonicNow() - this.#grantedAt,
      ...extra,
    };
    target.publish(event);
  }

  #end(state: "released" | "lost", reason: LockError | undefined): void {
    this.#state = state;
    this.#endReason = reason;
    this.#watchdog?.stop();
    this.#host.leaseEnded(this);
    if (this.#controller !== undefined) this.#controller.abort(this.#reason());
  }

  #reason(): LockError {
    this.#endReason ??= new LockError("LOCK_RELEASED", `lock "${this.key}" was released`);
    return this.#endReason;
  }

  #lostReason(): LockLostError {
    const reason = this.#reason();
    return reason instanceof LockLostError
      ? reason
      : new LockLostError(`lock "${this.key}" is no longer held: it was released`);
  }
}
