import { sleep } from "./sleep.js";

/**
 * Bounds of `retryInBackground`.
 *
 * @group Keep-alive
 */
export interface RetryOptions {
  /** Stops retrying when it aborts (usually `host.closing`). */
  readonly signal: AbortSignal;
  /** First delay in ms, doubled after each failure up to `maxDelayMs`. Default 50. */
  readonly firstDelayMs?: number;
  /** Default 2 000. */
  readonly maxDelayMs?: number;
  /** Gives up after this many ms in all. Default: until `signal` aborts. */
  readonly giveUpAfterMs?: number;
}

/**
 * Runs `task` until it succeeds, with capped exponential back-off, in the
 * background: for clean-ups that must happen eventually (delete a key whose
 * release failed, unlock after a reconnect). The returned promise never
 * rejects: it resolves true once `task` succeeded, false once it gave up.
 *
 * @group Keep-alive
 */
export async function retryInBackground(
  task: () => Promise<unknown>,
  options: RetryOptions,
): Promise<boolean> {
  const { signal, firstDelayMs = 50, maxDelayMs = 2_000 } = options;
  const giveUpAt = performance.now() + (options.giveUpAfterMs ?? Number.POSITIVE_INFINITY);
  let delay = firstDelayMs;
  while (!signal.aborted) {
    try {
      await task();
      return true;
    } catch {
      const left = giveUpAt - performance.now();
      if (left <= 0) return false;
      const slept = await sleep(Math.min(delay, left), signal).then(
        () => true,
        () => false,
      );
      if (!slept) return false;
      delay = Math.min(delay * 2, maxDelayMs);
    }
  }
  return false;
}
