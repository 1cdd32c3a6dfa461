import type { Grant, LockRequest } from "./backend.js";
import type { BackendCalls } from "./calls.js";
import { monotonicNow } from "./clock.js";
import { LockTimeoutError } from "./errors.js";
import { type AcceptedGrant, acceptGrant } from "./grant.js";
import type { KeyWaits } from "./key-wait.js";

/**
 * The slow path of `acquire`, entered after a first attempt failed: waits for
 * the key in the backend's own queue when it has one and takes the wait,
 * otherwise behind the client's other waiters of the key (`KeyWaits`).
 * `cancel` aborts on timeout, the user's signal or close; its reason is what
 * the caller rejects with.
 * `releaseQuietly` hands back a grant that came too late (hold undefined: an
 * attempt whose outcome is unknown).
 */
export function waitForGrant(
  calls: BackendCalls,
  keyWaits: KeyWaits,
  request: LockRequest,
  cancel: AbortSignal,
  releaseQuietly: (hold: unknown) => void,
): Promise<AcceptedGrant> {
  // No queue: straight to the key's waiters (no suspended frame per waiter).
  if (calls.backend.acquire === undefined) return keyWaits.wait(request, cancel, releaseQuietly);
  return waitInQueue(calls, keyWaits, request, cancel, releaseQuietly);
}

async function waitInQueue(
  calls: BackendCalls,
  keyWaits: KeyWaits,
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
  return keyWaits.wait(request, cancel, releaseQuietly);
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The reason a wait gave up after `timeoutMs`. */
export function timeoutError(key: string, timeoutMs: number): LockTimeoutError {
  return new LockTimeoutError(`timed out after ${timeoutMs} ms waiting for lock "${key}"`);
}
