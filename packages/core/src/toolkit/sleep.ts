import { onAbort } from "../abort.js";

/**
 * Resolves after `ms`, or rejects with `signal.reason` as soon as it aborts;
 * either way no timer or listener is left behind.
 *
 * @group Waiting
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      resolve();
    }, ms);
    const stop = onAbort(signal, (reason) => {
      clearTimeout(timer);
      reject(reason);
    });
  });
}

/**
 * Settles like `promise`, or rejects with `signal.reason` as soon as `signal`
 * aborts. `promise` keeps running: give it the signal too, or clean up after it.
 *
 * @group Waiting
 */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const stop = onAbort(signal, reject);
    promise.then(
      (value) => {
        stop();
        resolve(value);
      },
      (error: unknown) => {
        stop();
        reject(error);
      },
    );
  });
}
