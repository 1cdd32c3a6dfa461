import { onAbort } from "@locks/core";
import { ExponentialBackoff, type IBackoff } from "cockatiel";

/** Bounds of every retry delay of the backend (reads, clean-ups, keepalives, watches). */
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 1_000;

/* Every timer the backend waits on that is not a lease's: back-offs, sleeps and bounds. */

/**
 * The one back-off of the backend: cockatiel's exponential back-off with
 * decorrelated jitter, from about {@link RETRY_MIN_MS} up to `maxMs`. Read
 * `duration`, wait, then continue with `next()`; start over after a success.
 */
export function retryBackoff(maxMs = RETRY_MAX_MS): IBackoff<unknown> {
  return new ExponentialBackoff({
    initialDelay: RETRY_MIN_MS,
    maxDelay: Math.max(RETRY_MIN_MS, maxMs),
  }).next();
}

/**
 * The back-off of etcd3's own retry of a failed request on the next member:
 * short, since each request is bounded by its deadline.
 */
export function requestRetryBackoff(): ExponentialBackoff<unknown> {
  return new ExponentialBackoff({ initialDelay: 20, maxDelay: 250 });
}

/**
 * Resolves after `ms`, or rejects with the reason of the first of `signals`
 * to abort; either way its timer is gone, so no sleep outlives close().
 */
export function sleep(ms: number, ...signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const stops: Array<() => void> = [];
    const finish = (error?: unknown): void => {
      clearTimeout(timer);
      for (const stop of stops) stop();
      if (error === undefined) resolve();
      else reject(error);
    };
    const timer = setTimeout(finish, ms);
    for (const signal of signals) {
      stops.push(onAbort(signal, (reason) => finish(reason ?? new Error("aborted"))));
    }
  });
}
