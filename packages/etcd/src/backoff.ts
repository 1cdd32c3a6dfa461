import { ExponentialBackoff, type IBackoff } from "cockatiel";

/**
 * The back-off of the backend's own retries (a waiter's reads and watches):
 * cockatiel's exponential back-off with decorrelated jitter, from about 50 ms
 * up to 1 s. Read `duration`, wait, then continue with `next()`; start over
 * after a success.
 */
export function retryBackoff(): IBackoff<unknown> {
  return new ExponentialBackoff({ initialDelay: 50, maxDelay: 1_000 }).next();
}

/**
 * The back-off of etcd3's own retry of a failed request on the next member:
 * short, since each request is bounded by its deadline.
 */
export function requestRetryBackoff(): ExponentialBackoff<unknown> {
  return new ExponentialBackoff({ initialDelay: 20, maxDelay: 250 });
}
