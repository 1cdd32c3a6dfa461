import { onAbort } from "./abort.js";
import type { Attempt, KeyEvent, LockRequest, Unsubscribe } from "./backend.js";
import type { BackendCalls } from "./calls.js";
import { monotonicNow } from "./clock.js";
import { type AcceptedGrant, acceptGrant } from "./grant.js";
import { Waker } from "./waker.js";

/*
 * Waiting by notification and polling, for every backend without a store
 * queue (and every wait a queue declines). The waiters of one key in one
 * client share one subscription and one poll loop, so a thousand waiters
 * cost the store what one does: one attempt per change of the key, and
 * while nothing happens, one slow safety poll per key.
 */

/** Polling bounds without notifications, or while they may be missed. */
const POLL_MIN_MS = 2;
const POLL_MAX_MS = 100;
const POLL_UNSURE_MAX_MS = 1_000;
/**
 * With healthy notifications, a poll at the holder's expiry (which a store
 * need not announce), and at the latest this often: the bound on a wake-up
 * lost without the backend knowing.
 */
const SAFETY_POLL_MS = 5_000;

/** What the loop does after an attempt: attempt again at once, back off, or sleep (a refusal's `retryAfterMs`). */
type Next = "now" | "backoff" | number | undefined;

interface Failed {
  readonly failed: unknown;
}

const ABANDONED = Symbol("abandoned");

/** One waiting acquire: a node of its key's FIFO, so that leaving is O(1) wherever it stands. */
interface Waiter {
  readonly request: LockRequest;
  readonly resolve: (grant: AcceptedGrant) => void;
  readonly reject: (reason: unknown) => void;
  /** Hands back a grant this waiter can no longer take (undefined: an attempt whose outcome is unknown). */
  readonly releaseQuietly: (hold: unknown) => void;
  stopListening: () => void;
  prev: Waiter | undefined;
  next: Waiter | undefined;
  queued: boolean;
}

/** The waits of one client, by key. */
export class KeyWaits {
  readonly #calls: BackendCalls;
  readonly #byKey = new Map<string, KeyWait>();
  readonly #running = new Set<Promise<void>>();

  constructor(calls: BackendCalls) {
    this.#calls = calls;
  }

  /**
   * Waits for `request` behind the client's earlier waiters of its key:
   * resolves with an accepted grant, or rejects with `cancel.reason` once it
   * aborts, or with the error of this waiter's attempt.
   */
  wait(
    request: LockRequest,
    cancel: AbortSignal,
    releaseQuietly: (hold: unknown) => void,
  ): Promise<AcceptedGrant> {
    if (cancel.aborted) return Promise.reject(cancel.reason);
    let keyWait = this.#byKey.get(request.scoped);
    if (keyWait === undefined) {
      // Forgotten the moment its loop ends, before it unsubscribes: a later waiter starts anew.
      const created = new KeyWait(this.#calls, request, () => this.#byKey.delete(request.scoped));
      this.#byKey.set(request.scoped, created);
      const running = created.run().finally(() => this.#running.delete(running));
      this.#running.add(running);
      keyWait = created;
    }
    return keyWait.enqueue(request, cancel, releaseQuietly);
  }

  /** Resolves once every key's loop has ended and stopped its subscription. */
  async ended(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }
}

/** The waiters of one key: a FIFO, one subscription and one loop attempting for the head. */
class KeyWait {
  readonly #calls: BackendCalls;
  readonly #key: LockRequest;
  #head: Waiter | undefined;
  #tail: Waiter | undefined;
  /** The subscription; undefined without one (the backend has no `subscribe`). */
  #unsubscribe: Unsubscribe | undefined;
  /** Notifications may be missed (the backend said "unsure"): poll meanwhile. */
  #unsure = false;
  /** The loop's sleep, ended by a change reported since the current attempt began. */
  readonly #waker = new Waker();
  /** Stops waiting for the head's attempt in flight (its waiter gave up). */
  #abandon: (() => void) | undefined;
  /** The current poll interval without (healthy) notifications. */
  #delay = POLL_MIN_MS;

  readonly #forget: () => void;

  constructor(calls: BackendCalls, key: LockRequest, forget: () => void) {
    this.#calls = calls;
    this.#key = key;
    this.#forget = forget;
  }

  enqueue(
    request: LockRequest,
    cancel: AbortSignal,
    releaseQuietly: (hold: unknown) => void,
  ): Promise<AcceptedGrant> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        request,
        resolve,
        reject,
        releaseQuietly,
        stopListening: noop,
        prev: this.#tail,
        next: undefined,
        queued: true,
      };
      if (this.#tail === undefined) this.#head = waiter;
      else this.#tail.next = waiter;
      this.#tail = waiter;
      waiter.stopListening = onAbort(cancel, (reason) => this.#settle(waiter, reject, reason));
    });
  }

  async run(): Promise<void> {
    try {
      // Subscribed before the first attempt, so a release between the two is never missed.
      this.#unsubscribe = await this.#calls.subscribe(this.#key, this.#onEvent);
    } catch (error) {
      this.#forget();
      for (let w = this.#head; w !== undefined; w = this.#head) this.#settle(w, w.reject, error);
      return;
    }
    try {
      while (this.#head !== undefined) {
        const next = await this.#attemptForHead();
        if (next !== "now" && this.#head !== undefined) {
          await this.#waker.sleep(this.#pollAfter(next));
        }
      }
    } finally {
      this.#forget();
      this.#waker.dispose();
      if (this.#unsubscribe !== undefined) await Promise.resolve(this.#unsubscribe()).catch(noop);
    }
  }

  /**
   * One attempt for the waiter at the head, and what comes next: "now" (the
   * next waiter attempts at once: a grant that may leave room, a failed or
   * abandoned attempt), "backoff" (a grant handed back: retry soon), or the
   * refusal's `retryAfterMs` (undefined: none).
   */
  async #attemptForHead(): Promise<Next> {
    const waiter = this.#head as Waiter;
    this.#waker.reset();
    const start = monotonicNow();
    const pending = this.#calls.tryAcquire(waiter.request);
    const outcome = await new Promise<Attempt | Failed | typeof ABANDONED>((resolve) => {
      // A waiter that gives up does not leave the others behind an attempt that hangs.
      this.#abandon = () => resolve(ABANDONED);
      pending.then(resolve, (error: unknown) => resolve({ failed: error }));
    });
    this.#abandon = undefined;
    if (outcome === ABANDONED) {
      pending.then(
        (attempt) => attempt.granted && waiter.releaseQuietly(attempt.hold),
        () => waiter.releaseQuietly(undefined),
      );
      return "now";
    }
    if ("failed" in outcome) {
      // The outcome is unknown (the command may have run): clean up by owner.
      waiter.releaseQuietly(undefined);
      this.#settle(waiter, waiter.reject, outcome.failed);
      return "now";
    }
    if (!outcome.granted) return outcome.retryAfterMs;
    const deadline = acceptGrant(this.#calls.backend.capabilities, waiter.request, outcome, start);
    if (deadline === undefined || !waiter.queued) {
      // Granted too late to trust: hand it back, and retry soon (a store that answers
      // synchronously would otherwise never let a timer run).
      waiter.releaseQuietly(outcome.hold);
      return "backoff";
    }
    this.#settle(waiter, waiter.resolve, { grant: outcome, deadline });
    this.#delay = POLL_MIN_MS;
    const { mode, limit } = waiter.request;
    if (mode === "shared" || limit > 1) return "now";
    // The change this attempt answered was this grant: the next comes with its release.
    this.#waker.reset();
    return undefined;
  }

  /** How long to sleep after an attempt (see `Next`). */
  #pollAfter(next: Exclude<Next, "now">): number {
    const retryAfterMs = next === "backoff" ? undefined : next;
    let bound: number;
    if (this.#unsubscribe !== undefined && !this.#unsure && next !== "backoff") {
      bound = SAFETY_POLL_MS;
    } else {
      bound = jitter(this.#delay);
      this.#delay = Math.min(this.#delay * 2, this.#unsure ? POLL_UNSURE_MAX_MS : POLL_MAX_MS);
    }
    return retryAfterMs !== undefined && retryAfterMs >= 0
      ? Math.min(bound, retryAfterMs + 1)
      : bound;
  }

  readonly #onEvent = (event?: KeyEvent): void => {
    this.#unsure = event === "unsure";
    this.#delay = POLL_MIN_MS;
    this.#waker.wake();
  };

  /** Unlinks `waiter` and settles its promise with `settle(value)`; the last one out ends the loop. */
  #settle<T>(waiter: Waiter, settle: (value: T) => void, value: T): void {
    if (!waiter.queued) return;
    waiter.queued = false;
    waiter.stopListening();
    const wasHead = waiter === this.#head;
    if (wasHead) this.#abandon?.();
    if (waiter.prev === undefined) this.#head = waiter.next;
    else waiter.prev.next = waiter.next;
    if (waiter.next === undefined) this.#tail = waiter.prev;
    else waiter.next.prev = waiter.prev;
    waiter.prev = waiter.next = undefined;
    settle(value);
    // A new head may fit where the old one did not (a reader behind a writer that gave up),
    // and the last one out ends the loop.
    if (wasHead) this.#waker.wake();
  }
}

/** Spreads pollers of different clients apart so that they do not poll in lockstep. */
function jitter(ms: number): number {
  return ms * (0.5 + Math.random());
}

function noop(): void {}
