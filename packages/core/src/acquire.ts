import { onAbort } from "./abort.js";
import type { Attempt, Capabilities, Grant, LockRequest, Unsubscribe } from "./backend.js";
import type { BackendCalls } from "./calls.js";
import { driftAllowance, monotonicNow } from "./clock.js";
import { LockTimeoutError } from "./errors.js";

/** A grant the core accepted, and the monotonic instant its lease is presumed lost. */
export interface AcceptedGrant {
  readonly grant: Grant;
  readonly deadline: number;
}

/** Polling bounds. With notifications polling is only the fallback for a missed one. */
const POLL_MIN_MS = 2;
const POLL_MAX_MS = 100;
const POLL_FALLBACK_WITH_NOTIFY_MS = 1_000;

/**
 * The deadline of a grant, or undefined when the reply came back too late to
 * trust (the Redis docs' validity time): the caller releases it.
 */
export function acceptGrant(
  capabilities: Capabilities,
  request: LockRequest,
  grant: Grant,
  start: number,
  queued = false,
): number | undefined {
  if (!capabilities.ttl) return Number.POSITIVE_INFINITY;
  let deadline = start + request.ttlMs - driftAllowance(request.ttlMs);
  // A grant from the store's queue may come long after the wait began: only the backend
  // knows when its lease started. Without `validUntil` it is dated from the wait's start.
  const known = grant.validUntil;
  if (known !== undefined && (queued || known < deadline)) deadline = known;
  return monotonicNow() < deadline ? deadline : undefined;
}

/**
 * The slow path of `acquire`, entered after a first attempt failed: waits for
 * the key in the backend's own queue when it has one and takes the wait,
 * otherwise by notification plus bounded polling. `cancel` aborts on timeout,
 * the user's signal or close; its reason is what the caller rejects with.
 * `releaseQuietly` hands back a grant that came too late (hold undefined: an
 * attempt whose outcome is unknown).
 */
export async function waitForGrant(
  calls: BackendCalls,
  request: LockRequest,
  cancel: AbortSignal,
  releaseQuietly: (hold: unknown) => void,
): Promise<AcceptedGrant> {
  const capabilities = calls.backend.capabilities;
  for (;;) {
    const start = monotonicNow();
    let grant: Grant | undefined;
    try {
      grant = await calls.acquire(request, { signal: cancel });
    } catch (error) {
      // A failed call may still have taken the key: clean up by owner, then report it.
      releaseQuietly(undefined);
      throw error;
    }
    // The backend has no queue, or declines this wait: the core polls.
    if (grant === undefined) break;
    const deadline = acceptGrant(capabilities, request, grant, start, true);
    if (deadline !== undefined && !cancel.aborted) return { grant, deadline };
    releaseQuietly(grant.hold);
    cancel.throwIfAborted();
    // A store that answers synchronously would otherwise loop without ever letting a
    // timer (the timeout, the watchdog) or a signal handler run.
    await yieldToEventLoop();
  }
  return pollForGrant(calls, request, cancel, releaseQuietly);
}

async function pollForGrant(
  calls: BackendCalls,
  request: LockRequest,
  cancel: AbortSignal,
  releaseQuietly: (hold: unknown) => void,
): Promise<AcceptedGrant> {
  const capabilities = calls.backend.capabilities;
  const waker = new Waker(cancel);
  let unsubscribe: Unsubscribe | undefined;
  try {
    // Subscribe before the next attempt, so a release between the two is never missed.
    unsubscribe = await calls.subscribe(request, waker.wake);
    let delay = POLL_MIN_MS;
    for (;;) {
      cancel.throwIfAborted();
      waker.reset();
      const start = monotonicNow();
      let attempt: Attempt;
      try {
        attempt = await calls.tryAcquire(request);
      } catch (error) {
        releaseQuietly(undefined);
        throw error;
      }
      if (attempt.granted) {
        const deadline = acceptGrant(capabilities, request, attempt, start);
        if (deadline !== undefined && !cancel.aborted) return { grant: attempt, deadline };
        // Granted too late to trust: back off like a refusal (a store that answers
        // synchronously would otherwise never let a timer run).
        releaseQuietly(attempt.hold);
      }
      const notified = unsubscribe !== undefined && !attempt.granted;
      const bound = notified ? POLL_FALLBACK_WITH_NOTIFY_MS : jitter(delay);
      const hint = attempt.granted ? undefined : attempt.retryAfterMs;
      await waker.sleep(hint !== undefined && hint >= 0 ? Math.min(bound, hint + 1) : bound);
      delay = Math.min(delay * 2, POLL_MAX_MS);
    }
  } finally {
    waker.dispose();
    if (unsubscribe !== undefined) await Promise.resolve(unsubscribe()).catch(() => undefined);
  }
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Spreads pollers apart so that waiters on one key do not poll in lockstep. */
function jitter(ms: number): number {
  return ms * (0.5 + Math.random());
}

/** A sleep that ends early on a notification or on cancel. */
export class Waker {
  readonly #cancel: AbortSignal;
  #notified = false;
  #resolve: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #stopListening: () => void;

  constructor(cancel: AbortSignal) {
    this.#cancel = cancel;
    this.#stopListening = onAbort(cancel, () => this.wake());
  }

  /** Bound so backends can call it as a plain callback. */
  readonly wake = (): void => {
    this.#notified = true;
    const resolve = this.#resolve;
    this.#resolve = undefined;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    resolve?.();
  };

  /** Forgets notifications that arrived before the attempt about to start. */
  reset(): void {
    this.#notified = false;
  }

  sleep(ms: number): Promise<void> {
    if (this.#notified || this.#cancel.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#timer = setTimeout(this.wake, ms);
    });
  }

  dispose(): void {
    this.#stopListening();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** The reason a wait gave up after `timeoutMs`. */
export function timeoutError(key: string, timeoutMs: number): LockTimeoutError {
  return new LockTimeoutError(`timed out after ${timeoutMs} ms waiting for lock "${key}"`);
}
